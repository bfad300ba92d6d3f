"""PNG figures with matplotlib (Agg: no display needed)."""
from __future__ import annotations

import dataclasses
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.image  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def png_bytes_of_array(img: np.ndarray, cmap: str = "gray", min_side: int = 384) -> bytes:
    """A [0, 1] image as PNG bytes, enlarged by whole-pixel repetition to at least
    `min_side` pixels so that 7x7 filters stay visible."""
    buf = io.BytesIO()
    arr = np.clip(img, 0, 1)
    factor = max(1, -(-min_side // max(arr.shape[:2])))
    if factor > 1:
        arr = arr.repeat(factor, axis=0).repeat(factor, axis=1)
    matplotlib.image.imsave(buf, arr, cmap=cmap if arr.ndim == 2 else None, format="png")
    return buf.getvalue()


@dataclasses.dataclass
class Figure:
    name: str          # file name in the output folder
    png: bytes
    caption: str


def figure_png(fig, tight: bool = True) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return buf.getvalue()


def image_grid(cells: list[list[np.ndarray]], row_labels: list[str], col_labels: list[str], title: str,
               gap: int = 6) -> bytes:
    """Equal-sized images (uint8 or [0, 1]) on a grid, shown pixel for pixel (never
    smoothed), with a label left of each row and above each column. The cells are
    laid into one canvas drawn once: an axes per cell took matplotlib ~0.1 s each
    (visualize --top 99999 spent minutes on them)."""
    h, w = cells[0][0].shape[:2]
    rows, cols = len(cells), max(len(r) for r in cells)
    left, head, col_head = 96, 28, 30
    width = left + cols * (w + gap)
    height = head + col_head + rows * (h + gap)
    canvas = np.ones((rows * (h + gap) - gap, cols * (w + gap) - gap, 3), np.float32)   # white gaps
    for r, row in enumerate(cells):
        for c, img in enumerate(row):
            canvas[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = _rgb(img)
    dpi = 100
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    fig.text(0.5, 1 - 6 / height, title, ha="center", va="top", fontsize=10)
    bottom = height - head - col_head - canvas.shape[0]
    ax = fig.add_axes((left / width, bottom / height, canvas.shape[1] / width, canvas.shape[0] / height))
    ax.imshow(canvas, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    for r in range(rows):
        y = height - head - col_head - r * (h + gap) - h
        fig.text((left - 8) / width, (y + h / 2) / height, row_labels[r], ha="right", va="center", fontsize=8)
    y = height - head - col_head
    for c in range(min(cols, len(col_labels), len(cells[0]))):
        x = left + c * (w + gap)
        fig.text((x + w / 2) / width, (y + 4) / height, col_labels[c], ha="center", va="bottom", fontsize=8)
    return figure_png(fig, tight=False)


def _rgb(img: np.ndarray) -> np.ndarray:
    """One cell as RGB in [0, 1], as imshow would show it (a grey cell through viridis,
    scaled to its own range)."""
    a = np.asarray(img)
    a = a.astype(np.float32) / 255 if a.dtype == np.uint8 else np.asarray(a, np.float32)
    if a.ndim == 2:
        lo, hi = float(np.nanmin(a)) if a.size else 0.0, float(np.nanmax(a)) if a.size else 0.0
        a = plt.get_cmap("viridis")((a - lo) / (hi - lo) if hi > lo else np.zeros_like(a))[..., :3]
    elif a.shape[2] == 4:
        a = a[..., :3]
    elif a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    return np.clip(a, 0, 1)


def predictions_figure(image: np.ndarray, top: list[tuple[str, float]], title: str,
                       chart_title: str = "") -> bytes:
    """The input as the net saw it, beside its most probable classes (when the net
    has a class output; else the input alone)."""
    fig, axes = plt.subplots(1, 2 if top else 1, figsize=(8, 3.2) if top else (3.4, 3.4), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1.4]} if top else None)
    a = axes[0, 0]
    a.imshow(np.clip(image, 0, 1) if image.shape[-1] == 3 else image[..., 0], cmap="gray", vmin=0, vmax=1)
    a.set_xticks([])
    a.set_yticks([])
    a.set_title(title, fontsize=9)
    if top:
        b = axes[0, 1]
        names = [t[0] for t in top][::-1]
        vals = [t[1] for t in top][::-1]
        b.barh(range(len(vals)), vals, color="#4c72b0")
        for i, v in enumerate(vals):
            b.text(v, i, f" {v:.3g}", va="center", fontsize=8)
        b.set_yticks(range(len(vals)))
        b.set_yticklabels(names, fontsize=8)
        b.set_xlim(0, 1.15)
        b.set_title(chart_title or f"top-{len(top)}", fontsize=9)
    return figure_png(fig)


def vector_figure(name: str, values: np.ndarray) -> bytes:
    """All units of a non-spatial layer (an InnerProduct), by index."""
    fig, ax = plt.subplots(figsize=(8, 2.4))
    v = np.asarray(values).ravel()
    ax.plot(v, lw=0.6, color="#4c72b0")
    ax.set_xlim(0, max(v.size - 1, 1))
    ax.set_xlabel("unit", fontsize=8)
    ax.set_title(f"{name}: {v.size} units", fontsize=9)
    ax.tick_params(labelsize=7)
    return figure_png(fig)


def output_figure(name: str, kind: str, value: np.ndarray, labels=None) -> bytes | None:
    """A picture of one output of one item that is not class scores: an image, its
    feature maps, a segmentation (most probable class per position) or its values."""
    from ..imaging import activation_tiles
    v = np.asarray(value, np.float64)
    if kind == "maps":
        return png_bytes_of_array(activation_tiles(v[:64]), min_side=256)
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    if kind == "image":
        img = v[::-1].transpose(1, 2, 0) if v.shape[0] == 3 else v[0]
        lo, hi = img.min(), img.max()
        ax.imshow((img - lo) / max(hi - lo, 1e-12), cmap="gray", interpolation="nearest")
        ax.set_title(f"{name} as an image (range {lo:.3g} to {hi:.3g} shown as black to white)", fontsize=8)
        ax.set_axis_off()
    elif kind == "segmentation":
        best = v.argmax(axis=0)
        classes = np.unique(best)
        ax.imshow(best, cmap="tab20", vmin=0, vmax=max(19, v.shape[0] - 1), interpolation="nearest")
        ax.set_axis_off()
        name_of = labels or (lambda i: f"class {i}")
        handles = [plt.Rectangle((0, 0), 1, 1, color=plt.cm.tab20(int(c) / max(19, v.shape[0] - 1)))
                   for c in classes[:12]]
        ax.legend(handles, [name_of(int(c)) for c in classes[:12]], fontsize=7, loc="center left",
                  bbox_to_anchor=(1, 0.5))
        ax.set_title(f"{name}: most probable class per position", fontsize=8)
    elif kind == "vector":
        flat = v.ravel()
        ax.bar(range(flat.size), flat, color="#4c72b0")
        ax.set_xlabel("index", fontsize=8)
        ax.set_title(f"{name}: its {flat.size} values", fontsize=8)
    else:
        finite = v[np.isfinite(v)]        # a net with filler weights may overflow to inf or NaN
        ax.hist(finite, bins=50, color="#4c72b0")
        odd = v.size - finite.size
        ax.set_title(f"{name}: histogram of its {v.size} values" + (f" ({odd} not finite, left out)" if odd else ""),
                     fontsize=8)
    ax.tick_params(labelsize=7)
    return figure_png(fig)
