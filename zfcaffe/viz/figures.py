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


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def projection_grid(items: list[dict], title: str) -> bytes:
    """Zeiler & Fergus Fig. 2 for one image and layer: for each strongest feature map,
    its projection to pixels (top) above the image patch of its receptive field (bottom)."""
    n = len(items)
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n + 0.4, 3.6), squeeze=False)
    for i, it in enumerate(items):
        axes[0, i].imshow(it["projection"])
        axes[0, i].set_title(it["label"], fontsize=8)
        axes[1, i].imshow(it["patch"])
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("projection", fontsize=8)
    axes[1, 0].set_ylabel("image patch", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return figure_png(fig)


def predictions_figure(image: np.ndarray, top: list[tuple[str, float]], title: str) -> bytes:
    """The input as the net saw it, beside its top-5 classes."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(8, 3.2), gridspec_kw={"width_ratios": [1, 1.4]})
    a.imshow(np.clip(image, 0, 1) if image.shape[-1] == 3 else image[..., 0], cmap="gray")
    a.set_xticks([])
    a.set_yticks([])
    a.set_title(title, fontsize=9)
    if top:
        names = [t[0] for t in top][::-1]
        vals = [t[1] for t in top][::-1]
        b.barh(range(len(vals)), vals, color="#4c72b0")
        for i, v in enumerate(vals):
            b.text(v, i, f" {v:.3g}", va="center", fontsize=8)
        b.set_yticks(range(len(vals)))
        b.set_yticklabels(names, fontsize=8)
        b.set_xlim(0, max(1.0, max(vals)))
        b.set_title("top-5", fontsize=9)
    else:
        b.axis("off")
    return figure_png(fig)
