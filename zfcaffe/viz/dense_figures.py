"""Figures of dense outputs over the input image (H, W, 3) in [0, 1]: a segmentation's
class map with a legend of the classes present, a class's Grad-CAM and projections,
OpenPose's heatmaps with their peaks marked and named, a keypoint's Grad-CAM."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from ..errors import ZfcaffeError
from ..imaging import signed_to_rgb
from .figures import figure_png
from .method_figures import overlay

#: the legend lists at most this many classes (the most frequent first)
LEGEND_MAX = 20


def _image(image: np.ndarray, shape: tuple) -> np.ndarray:
    img = np.asarray(image, np.float64)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim == 3 and img.shape[2] == 1:             # a grey input shown grey
        img = np.repeat(img, 3, axis=2)
    if img.shape[:2] != tuple(shape):
        raise ZfcaffeError(f"image: shape {list(img.shape)}; expected the input's {shape[0]} x {shape[1]} pixels "
                           "(H, W, 3)")
    return np.clip(img, 0, 1)


def _namer(names):
    if names is None:
        return lambda i: f"class {i}"
    if callable(names):
        return names
    names = list(names)
    return lambda i: names[i] if 0 <= i < len(names) else f"class {i}"


def colour_map(cmap: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(H, W) classes -> (H, W, 3) in [0, 1] by the palette (a class past its end grey)."""
    pal = np.asarray(palette, np.float64) / 255
    out = np.full(cmap.shape + (3,), 0.5)
    ok = (cmap >= 0) & (cmap < len(pal))
    out[ok] = pal[cmap[ok]]
    return out


def class_map_figure(image: np.ndarray, cmap: np.ndarray, names=None, palette=None, title: str | None = None,
                     alpha: float = 0.55) -> bytes:
    """The class map over the image and alone, with a legend of the classes present
    (colour, name, index, share of the pixels), the most frequent first."""
    from .palettes import palette_for
    cmap = np.asarray(cmap)
    img = _image(image, cmap.shape)
    name = _namer(names)
    if palette is None:
        palette = palette_for(int(cmap.max()) + 1, names if isinstance(names, (list, tuple)) else None)
    colours = colour_map(cmap, palette)
    present, counts = np.unique(cmap, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.6 * max(0.6, min(1.6, cmap.shape[0] / cmap.shape[1] * 1.4))))
    axes[0].imshow((1 - alpha) * img + alpha * colours, interpolation="nearest")
    axes[0].set_title("class map over the input", fontsize=8)
    axes[1].imshow(colours, interpolation="nearest")
    axes[1].set_title("class map", fontsize=8)
    for ax in axes:
        ax.set_axis_off()
    pal = np.asarray(palette, np.float64) / 255
    shown = order[:LEGEND_MAX]
    handles = [plt.Rectangle((0, 0), 1, 1, color=pal[present[i]] if present[i] < len(pal) else (0.5, 0.5, 0.5))
               for i in shown]
    labels = [f"{name(int(present[i]))} ({int(present[i])}): {100 * counts[i] / cmap.size:.1f}%" for i in shown]
    if len(order) > LEGEND_MAX:
        handles.append(plt.Rectangle((0, 0), 1, 1, color="white"))
        more = len(order) - LEGEND_MAX
        labels.append(f"... {more} more class{'es' if more > 1 else ''}")
    axes[1].legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    fig.suptitle(title or f"segmentation: {len(present)} classes present", fontsize=10)
    return figure_png(fig)


def _outline(img: np.ndarray, mask: np.ndarray, colour=(1.0, 1.0, 0.0)) -> np.ndarray:
    """The image with the mask's edge pixels painted and its outside dimmed."""
    out = img * np.where(mask, 1.0, 0.55)[..., None]
    m = np.pad(mask, 1, mode="edge")
    edge = mask & ~(m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:])
    out[edge] = colour
    return out


def _panels(panels, title: str, marks=None) -> bytes:
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(3.0 * n, 3.3), squeeze=False)
    for i, (ax, (img, label)) in enumerate(zip(axes[0], panels)):
        ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
        ax.set_title(label, fontsize=8)
        ax.set_axis_off()
        if marks and i == 0:
            marks(ax)
    fig.suptitle(title, fontsize=10)
    return figure_png(fig)


def class_trace_figure(image: np.ndarray, trace) -> bytes:
    """A class's region, its Grad-CAM and its deconvnet/guided projections (a
    zfcaffe.analyses.segmentation.ClassTrace)."""
    img = _image(image, trace.region.shape)
    t = trace.trace
    panels = [(_outline(img, trace.region), f"region: {trace.region_from}"),
              (overlay(img, t.gradcam), f"Grad-CAM at {t.cam_layer} ({100 * trace.mass_in_region:.0f}% in region)")]
    panels += [(signed_to_rgb(p), f"{m} projection") for m, p in t.projections.items()]
    return _panels(panels, f"class {trace.label} ({trace.name}): summed score {t.value:.4g}")


def _heat01(m: np.ndarray) -> tuple[np.ndarray, float]:
    top = float(np.max(m))
    return (np.clip(m / top, 0, 1) if top > 0 else np.zeros_like(m)), top


def keypoints_figure(image: np.ndarray, maps: np.ndarray, peaks, parts=None, title: str | None = None,
                     columns: int = 5) -> bytes:
    """OpenPose's heatmaps over the image: one panel with every part's maximum and
    all peaks named, then one panel a part (its map scaled to its own maximum, its
    peaks marked). maps: (P[+1], H, W) at the input's size, background last."""
    maps = np.asarray(maps, np.float64)
    img = _image(image, maps.shape[1:])
    n_parts = len(parts) if parts is not None else maps.shape[0]
    name = (lambda i: parts[i] if i < len(parts) else "Background") if parts is not None else (lambda i: f"part {i}")
    cells = n_parts + 1
    rows = -(-cells // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.5 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    both, top = _heat01(maps[:n_parts].max(axis=0))
    ax = axes[0, 0]
    ax.imshow(overlay(img, both), interpolation="nearest")
    ax.set_title(f"all parts (max {top:.3g})", fontsize=7)
    for p in peaks:
        ax.plot([p.x], [p.y], "o", ms=4, mec="white", mfc="red", mew=0.8)
        ax.annotate(p.name, (p.x, p.y), xytext=(3, 3), textcoords="offset points", fontsize=6, color="white")
    for part in range(n_parts):
        ax = axes[(part + 1) // columns, (part + 1) % columns]
        heat, top = _heat01(maps[part])
        ax.imshow(overlay(img, heat), interpolation="nearest")
        mine = [p for p in peaks if p.part == part]
        for p in mine:
            ax.plot([p.x], [p.y], "+", ms=7, color="white", mew=1.2)
        ax.set_title(f"{part} {name(part)}: {len(mine)} peaks, max {top:.3g}", fontsize=7)
    fig.suptitle(title or f"keypoint heatmaps and peaks ({len(peaks)} peaks)", fontsize=10)
    return figure_png(fig)


def keypoint_trace_figure(image: np.ndarray, trace) -> bytes:
    """A keypoint's peak, its Grad-CAM and its projections (a
    zfcaffe.analyses.keypoints.KeypointTrace)."""
    t, p = trace.trace, trace.peak
    img = _image(image, t.gradcam.shape)

    def mark(ax):
        ax.plot([p.x], [p.y], "o", ms=6, mec="white", mfc="red", mew=1)

    panels = [(img, f"{p.name} at ({p.x:.0f}, {p.y:.0f})"), (overlay(img, t.gradcam), f"Grad-CAM at {t.cam_layer}")]
    panels += [(signed_to_rgb(q), f"{m} projection") for m, q in t.projections.items()]
    return _panels(panels, f"keypoint {p.name}: heatmap {p.value:.4g}", marks=mark)
