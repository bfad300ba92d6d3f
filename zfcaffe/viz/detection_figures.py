"""Detections drawn over the input image: the boxes with their class names and scores,
and one detection's trace (the box's neighbourhood, the projections of its unit and
its Grad-CAM, side by side). All coordinates are the net's input pixels."""
from __future__ import annotations

import numpy as np

from ..analyses.detections import clip_box
from ..imaging import signed_to_rgb
from .figures import figure_png, plt

#: distinct, readable box colours (matplotlib's tab10), one per class index
_COLOURS = plt.get_cmap("tab10").colors


def _colour(label: int):
    return _COLOURS[int(label) % len(_COLOURS)]


def _rgb(image: np.ndarray) -> np.ndarray:
    """(H, W), (H, W, 1) or (H, W, 3) in [0, 1] -> (H, W, 3)."""
    img = np.clip(np.asarray(image, np.float32), 0, 1)
    if img.ndim == 2:
        img = img[..., None]
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img[..., :3]


def _draw_box(ax, box, colour, text: str | None, fontsize: float = 9, width: float = 2.0):
    from matplotlib.patches import Rectangle
    x0, y0, x1, y1 = box
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=width))
    if text:
        # the label sits on the box's top edge, inside the picture where the box touches the top
        ax.text(x0, max(y0, 0), text, fontsize=fontsize, color="white", va="bottom" if y0 > 14 else "top",
                ha="left", clip_on=True,
                bbox=dict(facecolor=colour, edgecolor="none", alpha=0.85, pad=1.5))


def boxes_figure(image: np.ndarray, detections, title: str = "") -> bytes:
    """The image (H, W[, C]) in [0, 1] with each detection's box, '#index name score'
    above it; PNG bytes. Later (weaker) boxes are drawn first, so the best is on top."""
    img = _rgb(image)
    h, w = img.shape[:2]
    scale = max(1.0, 480 / max(h, w))            # small inputs drawn larger so the labels stay readable
    fig = plt.figure(figsize=(w * scale / 100, h * scale / 100 + (0.35 if title else 0)), dpi=100)
    ax = fig.add_axes((0, 0, 1, h * scale / (h * scale + (35 if title else 0))))
    ax.imshow(img, interpolation="nearest", extent=(0, w, h, 0))
    for d in reversed(list(detections)):
        _draw_box(ax, clip_box(d.box, w, h), _colour(d.label), f"#{d.index} {d.name} {d.score:.2f}")
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10, y=0.995, va="top")
    return figure_png(fig)


def _crop(a: np.ndarray, near) -> np.ndarray:
    x0, y0, x1, y1 = near
    return a[y0:y1, x0:x1]


def trace_figure(image: np.ndarray, trace) -> bytes:
    """One detection's trace, cut to its neighbourhood: the image with the box, each
    projection of the box's unit (grey is zero), and the Grad-CAM over the image, with
    the unit's line and the Grad-CAM mass inside the box as caption; PNG bytes."""
    d, near = trace.detection, trace.neighbourhood
    x0, y0, x1, y1 = near
    img = _rgb(image)
    bx0, by0, bx1, by1 = clip_box(d.box, img.shape[1], img.shape[0])
    box = (bx0 - x0, by0 - y0, bx1 - x0, by1 - y0)
    img = _crop(img, near)
    panels = [("image", img, None)]
    for mode, p in trace.projections.items():
        panels.append((mode, signed_to_rgb(np.asarray(p)[:, y0:y1, x0:x1]), None))
    panels.append((f"Grad-CAM at {trace.cam_layer}", img * 0.45, _crop(trace.gradcam, near)))
    ch, cw = img.shape[:2]
    side = 2.6
    aspect = ch / max(cw, 1)
    height = side * aspect + 0.95          # the panels, their titles (0.3 in) and the caption (0.65 in)
    fig, axes = plt.subplots(1, len(panels), figsize=(side * len(panels), height), dpi=100, squeeze=False)
    for ax, (name, picture, heat) in zip(axes[0], panels):
        ax.imshow(picture, interpolation="nearest", extent=(0, cw, ch, 0))
        if heat is not None:
            ax.imshow(heat, cmap="jet", alpha=0.55, vmin=0, vmax=1, interpolation="bilinear", extent=(0, cw, ch, 0))
        _draw_box(ax, box, _colour(d.label), None, width=1.5)
        ax.set_title(name, fontsize=9)
        ax.set_xlim(0, cw)
        ax.set_ylim(ch, 0)
        ax.axis("off")
    u = trace.unit
    fig.suptitle(f"#{d.index} {d.name} {d.score:.3f}: {u.what} = {u.value:.4g}\n"
                 f"unit {u.key}{list(u.index)}; Grad-CAM mass in the box {trace.mass_in_box:.0%}",
                 fontsize=9, y=0.02, va="bottom")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.65 / height, top=1 - 0.3 / height, wspace=0.05)
    return figure_png(fig)
