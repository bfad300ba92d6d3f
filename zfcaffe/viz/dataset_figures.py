"""Figures of the dataset analyses: the t-SNE map with thumbnails, and the linear
probe's accuracy against depth."""
from __future__ import annotations

import numpy as np

from .figures import Figure, figure_png

THUMB = 40          # thumbnail side on the map, in pixels
CANVAS = 1600       # the thumbnail map's side


def _colours(n: int) -> np.ndarray:
    import matplotlib.pyplot as plt
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return np.array([cmap(i % cmap.N)[:3] for i in range(max(n, 1))])


def _thumbnail(path: str) -> np.ndarray | None:
    """The image as a THUMB x THUMB RGB array in [0, 1], or None (a .npy input, or a
    file that no longer opens: the map keeps its dot)."""
    from ..preprocess import open_image
    if path.lower().endswith(".npy"):
        return None
    try:
        with open_image(path) as im:
            return np.asarray(im.convert("RGB").resize((THUMB, THUMB)), np.float32) / 255
    except Exception:  # noqa: BLE001 - a figure never fails for one unreadable thumbnail
        return None


def thumbnail_canvas(coords: np.ndarray, paths: list[str], labels: np.ndarray, colours: np.ndarray,
                     cells: int = 32) -> np.ndarray:
    """Thumbnails laid on a cells x cells grid over the map: in each occupied cell the
    image nearest its centre, framed in its class colour (Karpathy's t-SNE grids)."""
    canvas = np.ones((CANVAS, CANVAS, 3), np.float32)
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    unit = (coords - lo) / np.maximum(hi - lo, 1e-12)                 # [0, 1]^2
    cell = np.minimum((unit * cells).astype(int), cells - 1)
    step = (CANVAS - THUMB) / (cells - 1)
    for cy, cx in {tuple(c) for c in cell[:, ::-1]}:
        members = np.flatnonzero((cell[:, 1] == cy) & (cell[:, 0] == cx))
        centre = (np.array([cx, cy]) + 0.5) / cells
        i = members[np.argmin(((unit[members] - centre) ** 2).sum(axis=1))]
        thumb = _thumbnail(paths[i])
        y, x = int(round((cells - 1 - cy) * step)), int(round(cx * step))   # y up, as the scatter
        if labels[i] >= 0:
            canvas[y:y + THUMB, x:x + THUMB] = colours[labels[i] % len(colours)]
        if thumb is not None:
            canvas[y + 2:y + THUMB - 2, x + 2:x + THUMB - 2] = thumb[2:-2, 2:-2]
    return canvas


def tsne_figure(layer: str, coords: np.ndarray, paths: list[str], labels: np.ndarray,
                classes: list[str] | None, method: str) -> Figure:
    import matplotlib.pyplot as plt
    known = labels >= 0
    n_classes = int(labels.max()) + 1 if known.any() else 0
    colours = _colours(n_classes)
    fig, ax = plt.subplots(1, 2, figsize=(20, 10), gridspec_kw={"width_ratios": [1, 1]})
    if known.any():
        for c in range(n_classes):
            sel = labels == c
            if sel.any():
                name = classes[c] if classes and c < len(classes) else f"class {c}"
                ax[0].scatter(coords[sel, 0], coords[sel, 1], s=8, color=colours[c], label=name)
        ax[0].legend(fontsize=8, markerscale=2, loc="best", ncol=1 + n_classes // 20)
    if (~known).any():
        ax[0].scatter(coords[~known, 0], coords[~known, 1], s=8, color="0.4", label="no label")
    ax[0].set_title(f"{layer}: {len(coords)} images ({method})", fontsize=11)
    ax[1].imshow(thumbnail_canvas(coords, paths, labels, colours))
    ax[1].set_title("the same map, one image per grid cell (framed in its class colour)", fontsize=11)
    for a in ax:
        a.set_xticks([])
        a.set_yticks([])
    return Figure("tsne.png", figure_png(fig),
                  f"t-SNE of the {layer} codes: images the layer codes alike lie together")


def probe_figure(results, chance: float) -> Figure:
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(results) + 2), 4))
    x = np.arange(len(results))
    acc = np.array([r.accuracy for r in results])
    ax.errorbar(x, acc, yerr=[r.std for r in results], marker="o", capsize=4, label="linear probe (CV accuracy)")
    ax.axhline(chance, color="0.5", linestyle="--", label=f"chance (most frequent class) {chance:.2f}")
    ax.set_xticks(x, [f"{r.layer}\n({r.size})" for r in results], fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("accuracy")
    ax.set_xlabel("layer (code size), input to output")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return Figure("probe.png", figure_png(fig), "linear-probe accuracy of each layer's codes against depth")
