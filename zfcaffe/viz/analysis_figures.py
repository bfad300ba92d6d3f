"""Figures of the dataset analyses (zfcaffe.analyses results -> PNGs)."""
from __future__ import annotations

import os

import numpy as np

from ..analyses.common import safe_name
from ..analyses.evolution import iteration
from .figures import Figure, figure_png

def top9_grid(name: str, tiles) -> Figure:
    """The paper's layout: per map (a row), a 3x3 block of its top activations
    projected to pixels for each mode, beside the 3x3 block of image patches."""
    from ..imaging import tile_blocks
    from .figures import image_grid

    def block(images: np.ndarray, valid: np.ndarray) -> np.ndarray:
        empty = np.full_like(images[0], 235)      # fewer images than k: a light-grey slot
        return tile_blocks([(img if ok else empty).astype(np.float32) / 255 for img, ok in zip(images, valid)])

    modes = list(tiles.projections)
    k = tiles.valid.shape[1]
    cells = [[block(tiles.projections[m][i], tiles.valid[i]) for m in modes] +
             [block(tiles.patches[i], tiles.valid[i])] for i in range(len(tiles.maps))]
    png = image_grid(cells, [f"map {m}" for m in tiles.maps], modes + ["image patches"],
                     f"{name}: each map's top-{k} activations over the dataset")
    return Figure(f"top9_{safe_name(name)}.png", png,
                  f"{name}: for each feature map, its {k} strongest activations over the dataset projected "
                  f"to pixels ({', '.join(modes)}) beside the image patches under them")


def occlusion_figures(r, stem: str, labels=None) -> list[Figure]:
    import matplotlib.pyplot as plt
    name = labels or (lambda i: f"class {i}")  # zfcaffe.labels.Labels
    fig, ax = plt.subplots(1, 4, figsize=(16, 3.8))
    ax[0].imshow(r.image)
    y, x = r.projections[0][:2] if r.projections else (0, 0)
    ax[0].add_patch(plt.Rectangle((x, y), r.size, r.size, color=(0.5, 0.5, 0.5)))
    ax[0].set_title("(a) image, one occluder position", fontsize=9)
    extent = _extent(r)
    im = ax[1].imshow(r.activation, extent=extent, cmap="viridis")
    ax[1].set_title(f"(b) total activation of {r.layer} map {r.feature_map}", fontsize=9)
    plt.colorbar(im, ax=ax[1], fraction=0.046)
    im = ax[2].imshow(r.probability, extent=extent, cmap="viridis", vmin=0)
    ax[2].set_title(f"(d) p({name(r.label)})", fontsize=9)
    plt.colorbar(im, ax=ax[2], fraction=0.046)
    classes, inv = np.unique(r.best_class, return_inverse=True)
    im = ax[3].imshow(inv.reshape(r.best_class.shape), extent=extent, cmap="tab20",
                      vmin=0, vmax=max(19, len(classes) - 1))
    ax[3].set_title("(e) most probable class", fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=plt.cm.tab20(i / max(19, len(classes) - 1)))
               for i in range(len(classes))]
    ax[3].legend(handles[:8], [name(int(c)) for c in classes[:8]], fontsize=7, loc="lower left")
    for a in ax:
        a.set_xticks([])
        a.set_yticks([])
    main = Figure(f"{stem}_occlusion.png", figure_png(fig),
                  f"occluder {r.size}px: unoccluded activation {r.unoccluded_activation:.4g}, "
                  f"p = {r.unoccluded_probability:.3f}")
    figs = [main]
    if r.projections:
        fig, ax = plt.subplots(1, len(r.projections), figsize=(3 * len(r.projections), 3.2), squeeze=False)
        for a, (y, x, p) in zip(ax[0], r.projections):
            a.imshow(p)
            a.add_patch(plt.Rectangle((x, y), r.size, r.size, fill=False, color="k", lw=1))
            a.set_title(f"occluder at ({y}, {x})", fontsize=8)
            a.set_xticks([])
            a.set_yticks([])
        fig.suptitle(f"(c) projection of the strongest unit of {r.layer} map {r.feature_map}", fontsize=9)
        figs.append(Figure(f"{stem}_occlusion_projections.png", figure_png(fig),
                           "(c) the map's strongest unit projected to pixels, for a few occluder positions"))
    return figs


def evolution_figures(r) -> list[Figure]:
    from .figures import image_grid
    cols = []
    for snap in r.snapshots:
        it = iteration(snap)[0]
        cols.append(f"iter {it}" if it >= 0 else os.path.basename(snap))
    png = image_grid(r.projections, [f"map {m}" for m in r.maps], cols,
                     f"{r.layer}: strongest activation over the dataset, per snapshot (deconvnet)")
    return [Figure(f"evolution_{safe_name(r.layer)}.png", png,
                   f"{r.layer}: each row a feature map, each column a training snapshot")]


def invariance_figures(r, stem: str, labels=None) -> list[Figure]:
    import matplotlib.pyplot as plt
    kinds = list(r.sweeps)
    fig, ax = plt.subplots(3, len(kinds), figsize=(4.2 * len(kinds), 8.5), squeeze=False)
    name = labels(r.label) if labels else f"class {r.label}"
    for j, kind in enumerate(kinds):
        for i, layer in enumerate(r.layers):
            ax[i, j].plot(r.sweeps[kind], r.distances[kind][i], "o-", ms=3)
            ax[i, j].set_title(f"{layer}: distance to the original", fontsize=8)
        ax[2, j].plot(r.sweeps[kind], r.probability[kind], "o-", ms=3, color="C1")
        ax[2, j].set_ylim(0, 1.02)
        ax[2, j].set_title(f"p({name})", fontsize=8)
        ax[2, j].set_xlabel(kind, fontsize=8)
    fig.tight_layout()
    return [Figure(f"{stem}_invariance.png", figure_png(fig),
                   "feature-vector distance to the untransformed image at two layers, and the true class's "
                   "probability, under translation, scaling and rotation")]


def correspondence_figures(r) -> list[Figure]:
    import matplotlib.pyplot as plt
    n = len(r.examples)
    fig, ax = plt.subplots(1, max(n, 1), figsize=(2.2 * max(n, 1), 2.4), squeeze=False)
    for a, img in zip(ax[0], r.examples):
        a.imshow(img)
        a.set_xticks([])
        a.set_yticks([])
    fig.suptitle(f"masked '{r.parts[0]}'" if r.parts else "", fontsize=9)
    return [Figure("correspondence_masks.png", figure_png(fig), "the first part masked in each image")]


def occlusion_scan_figure(r, images: list[np.ndarray], titles: list[str], labels=None) -> Figure:
    """A row per image: the image as the net sees it, p(its class) under the occluder
    (on one 0-1 scale for all), the total activation of its strongest map."""
    import matplotlib.pyplot as plt
    name = labels or (lambda i: f"class {i}")
    n = len(images)
    fig, ax = plt.subplots(n, 3, figsize=(9, 2.9 * n), squeeze=False)
    extent = _extent(r)
    for i, (img, title) in enumerate(zip(images, titles)):
        v = {k: a[i] for k, a in r.values.items()}
        ax[i, 0].imshow(img)
        ax[i, 0].set_title(title, fontsize=8)
        im = ax[i, 1].imshow(v["probability"], extent=extent, cmap="viridis", vmin=0, vmax=1)
        ax[i, 1].set_title(f"p({name(int(v['label']))}): {float(v['unoccluded_probability']):.3f} unoccluded",
                           fontsize=8)
        plt.colorbar(im, ax=ax[i, 1], fraction=0.046)
        im = ax[i, 2].imshow(v["activation"], extent=extent, cmap="viridis")
        ax[i, 2].set_title(f"{r.layer} map {int(v['feature_map'])}: total activation", fontsize=8)
        plt.colorbar(im, ax=ax[i, 2], fraction=0.046)
        for a in ax[i]:
            a.set_xticks([])
            a.set_yticks([])
    return Figure("occlusion_scan.png", figure_png(fig),
                  f"occluder {r.size}px over {n} images: where hiding a part lowers the class's probability")


def _extent(r):
    half = r.size / 2
    return (r.positions_x[0] + half, r.positions_x[-1] + half, r.positions_y[-1] + half, r.positions_y[0] + half)
