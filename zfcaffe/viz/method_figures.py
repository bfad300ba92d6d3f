"""Figures of the survey's methods (zfcaffe.methods results -> PNGs)."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..imaging import signed_to_rgb
from .figures import Figure, figure_png


def _panels(images: list[tuple[np.ndarray, str]], title: str, name: str, caption: str, curve=None) -> Figure:
    n = len(images) + (curve is not None)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.6), squeeze=False)
    for ax, (img, label) in zip(axes[0], images):
        ax.imshow(np.clip(img, 0, 1) if img.ndim == 3 else img, cmap=None if img.ndim == 3 else "inferno",
                  interpolation="nearest")
        ax.set_title(label, fontsize=8)
        ax.set_axis_off()
    if curve is not None:
        ax = axes[0, -1]
        values, label = curve
        ax.plot(values, lw=1)
        ax.set_xlabel("step", fontsize=8)
        ax.set_title(label, fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    return Figure(name, figure_png(fig), caption)


def overlay(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """A [0, 1] heat map over an RGB image (jet, half transparent)."""
    colour = plt.cm.jet(heat)[..., :3]
    return 0.5 * image + 0.5 * colour


def gradcam_figure(r, image: np.ndarray, stem: str, label_name: str) -> Figure:
    panels = [(image, "input"), (overlay(image, r.heatmap), f"{r.method} at {r.layer}")]
    if r.guided is not None:
        panels.append((signed_to_rgb(r.guided), f"guided {r.method}"))
    return _panels(panels, f"{r.method}: {label_name}", f"{stem}_gradcam.png",
                   f"{r.method} for class {r.label} ({label_name}) at {r.layer}, over the input"
                   + (", and guided backprop weighted by it" if r.guided is not None else ""))


def saliency_figure(results: list, image: np.ndarray, stem: str, label_name: str, smooth: int) -> Figure:
    panels = [(image, "input")]
    for r in results:
        panels.append((r.map / max(float(r.map.max()), 1e-30), f"{r.mode}: max |gradient| over channels"))
        panels.append((signed_to_rgb(r.gradient), f"{r.mode}: signed"))
    how = f", SmoothGrad over {smooth} noisy copies" if smooth else ""
    return _panels(panels, f"saliency: {label_name}{how}", f"{stem}_saliency.png",
                   f"the class score's gradient with respect to the input ({', '.join(r.mode for r in results)}"
                   f"{how}) for class {results[0].label} ({label_name})")


def classviz_figure(r, image: np.ndarray, snapshots: list[tuple[np.ndarray, str]]) -> Figure:
    return _panels(snapshots + [(image, f"final: {r.score:.3g} (start {r.start_score:.3g})")],
                   f"maximising {r.target}", "classviz.png",
                   f"the input that maximises {r.target}, "
                   + ("from a decorrelated Fourier image (Lucid's recipe)" if getattr(r, "param", "") == "fourier"
                      else "from the mean image") + ", and the objective per step",
                   curve=(r.values, "objective"))


def dream_figure(r, original: np.ndarray, dreamt: np.ndarray, stem: str) -> Figure:
    return _panels([(original, "input"), (dreamt, f"dreamt at {r.layer}")], f"DeepDream at {r.layer}",
                   f"{stem}_dream.png", f"DeepDream at {r.layer} ({len(r.octave_ends)} octaves), and its objective "
                   "per step", curve=(r.values, "L2 objective (per octave)"))


def invert_figure(r, original: np.ndarray, recon: np.ndarray, stem: str) -> Figure:
    return _panels([(original, "input"), (recon, f"from its {r.layer} code")],
                   f"inversion of {r.layer}: relative feature distance {r.distance:.3f}", f"{stem}_invert.png",
                   f"the image reconstructed from its code at {r.layer} (relative feature distance {r.distance:.3f})",
                   curve=(r.values, "objective"))


def fool_figure(r, start: np.ndarray, fooled: np.ndarray, perturbation: np.ndarray, stem: str, name: str,
                from_noise: bool) -> Figure:
    panels = [(start, "start" + (" (noise)" if from_noise else f": p = {r.start_probability:.3g}")),
              (fooled, f"p({name}) = {r.probability:.4f}")]
    if not from_noise:
        panels.append((signed_to_rgb(perturbation), f"perturbation, L-inf {r.linf:.2f} px"))
    return _panels(panels, f"fooling image: {name}", f"{stem}_fool.png",
                   f"an input the net calls {name} with p = {r.probability:.4f}"
                   + ("" if from_noise else f"; perturbation L-inf {r.linf:.2f}, L2 {r.l2:.1f} (0-255 pixels)"))
