"""Occlusion sensitivity (Zeiler & Fergus Fig. 7): a grey square slid over the image;
at each position, (b) the total activation of the feature map that responds most
to the unoccluded image, (d) the probability of the correct class, (e) the most
probable class; and (c) that map's projection for a few occluder positions.
"Grey" is the mean pixel: zero in the net's input after mean subtraction."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..viz.figures import _fig_bytes, signed_to_rgb
from .classifier import prob_key, probabilities
from .common import Figure, safe_name


@dataclasses.dataclass
class Occlusion:
    layer: str
    feature_map: int
    label: int
    positions_y: np.ndarray        # top-left corners of the occluder
    positions_x: np.ndarray
    size: int
    activation: np.ndarray         # (ny, nx) total activation of the map
    probability: np.ndarray        # (ny, nx) of the label
    best_class: np.ndarray         # (ny, nx)
    unoccluded_activation: float
    unoccluded_probability: float
    image: np.ndarray              # RGB (H, W, 3) as the net sees it
    projections: list              # [(y, x, projection RGB)]

    def figures(self, stem: str, labels=None) -> list[Figure]:
        import matplotlib.pyplot as plt
        name = lambda i: labels[i] if labels and i < len(labels) else f"class {i}"  # noqa: E731
        fig, ax = plt.subplots(1, 4, figsize=(16, 3.8))
        ax[0].imshow(self.image)
        y, x = self.projections[0][:2] if self.projections else (0, 0)
        ax[0].add_patch(plt.Rectangle((x, y), self.size, self.size, color=(0.5, 0.5, 0.5)))
        ax[0].set_title("(a) image, one occluder position", fontsize=9)
        extent = _extent(self)
        im = ax[1].imshow(self.activation, extent=extent, cmap="viridis")
        ax[1].set_title(f"(b) total activation of {self.layer} map {self.feature_map}", fontsize=9)
        plt.colorbar(im, ax=ax[1], fraction=0.046)
        im = ax[2].imshow(self.probability, extent=extent, cmap="viridis", vmin=0)
        ax[2].set_title(f"(d) p({name(self.label)})", fontsize=9)
        plt.colorbar(im, ax=ax[2], fraction=0.046)
        classes, inv = np.unique(self.best_class, return_inverse=True)
        im = ax[3].imshow(inv.reshape(self.best_class.shape), extent=extent, cmap="tab20",
                          vmin=0, vmax=max(19, len(classes) - 1))
        ax[3].set_title("(e) most probable class", fontsize=9)
        handles = [plt.Rectangle((0, 0), 1, 1, color=plt.cm.tab20(i / max(19, len(classes) - 1)))
                   for i in range(len(classes))]
        ax[3].legend(handles[:8], [name(int(c)) for c in classes[:8]], fontsize=7, loc="lower left")
        for a in ax:
            a.set_xticks([])
            a.set_yticks([])
        main = Figure(f"{stem}_occlusion.png", _fig_bytes(fig),
                      f"occluder {self.size}px: unoccluded activation {self.unoccluded_activation:.4g}, "
                      f"p = {self.unoccluded_probability:.3f}")
        figs = [main]
        if self.projections:
            fig, ax = plt.subplots(1, len(self.projections), figsize=(3 * len(self.projections), 3.2), squeeze=False)
            for a, (y, x, p) in zip(ax[0], self.projections):
                a.imshow(p)
                a.add_patch(plt.Rectangle((x, y), self.size, self.size, fill=False, color="k", lw=1))
                a.set_title(f"occluder at ({y}, {x})", fontsize=8)
                a.set_xticks([])
                a.set_yticks([])
            fig.suptitle(f"(c) projection of the strongest unit of {self.layer} map {self.feature_map}", fontsize=9)
            figs.append(Figure(f"{stem}_occlusion_projections.png", _fig_bytes(fig),
                               "(c) the map's strongest unit projected to pixels, for a few occluder positions"))
        return figs


def _extent(r: Occlusion):
    half = r.size / 2
    return (r.positions_x[0] + half, r.positions_x[-1] + half, r.positions_y[-1] + half, r.positions_y[0] + half)


def run(net, image: str, pre, layer_key: str, label: int | None = None, size: int = 0, stride: int = 0,
        batch: int = 16, n_projections: int = 3, show_progress: bool = True) -> Occlusion:
    from .common import progress
    input_name = net.inputs[0]
    shape = net.graph.inputs[input_name]
    h, w = shape[2:]
    size = size or max(4, h // 5)
    stride = stride or max(1, size // 2)
    pkey = prob_key(net)
    x0, rgb = pre.prepare(image)
    net.reshape(**{input_name: (1,) + tuple(shape[1:])})
    net.forward(**{input_name: x0[None]})
    act0 = net.layer_outputs[layer_key][0]
    fmap = int(act0.reshape(act0.shape[0], -1).max(axis=1).argmax())
    probs0 = probabilities(net, net.layer_outputs[pkey], pkey)[0]
    label = int(probs0.argmax()) if label is None else int(label)
    ys = np.arange(0, h - size + 1, stride)
    xs = np.arange(0, w - size + 1, stride)
    grid = [(y, x) for y in ys for x in xs]
    net.reshape(**{input_name: (batch,) + tuple(shape[1:])})
    acts, probs, best = [], [], []
    bar = progress(len(grid), "occlusion", show_progress)
    for start in range(0, len(grid), batch):
        chunk = grid[start:start + batch]
        xb = np.repeat(x0[None], batch, axis=0)
        for i, (y, x) in enumerate(chunk):
            xb[i, :, y:y + size, x:x + size] = 0
        out = net.evaluate([layer_key, pkey], **{input_name: xb})
        a = out[layer_key][:len(chunk), fmap]
        p = probabilities(net, out[pkey][:len(chunk)], pkey)
        acts.append(a.reshape(len(chunk), -1).sum(axis=1))
        probs.append(p[:, label])
        best.append(p.argmax(axis=1))
        bar.update(len(chunk))
    bar.close()
    activation = np.concatenate(acts).reshape(len(ys), len(xs))
    result = Occlusion(layer_key, fmap, label, ys, xs, size, activation,
                       np.concatenate(probs).reshape(len(ys), len(xs)),
                       np.concatenate(best).reshape(len(ys), len(xs)),
                       float(act0[fmap].sum()), float(probs0[label]), rgb, [])
    # (c): the occluder positions that change the map most, least, and in between
    order = np.argsort(activation.ravel())
    picks = [order[0], order[len(order) // 2], order[-1]][:n_projections]
    net.reshape(**{input_name: (1,) + tuple(shape[1:])})
    for flat in picks:
        y, x = int(ys[flat // len(xs)]), int(xs[flat % len(xs)])
        xo = x0.copy()
        xo[:, y:y + size, x:x + size] = 0
        net.forward(**{input_name: xo[None]})
        a = net.layer_outputs[layer_key][0, fmap]
        uy, ux = np.unravel_index(int(a.argmax()), a.shape)
        p = net.project(layer_key, (0, fmap, uy, ux))[0]
        result.projections.append((y, x, signed_to_rgb(p)))
    return result


def figure_stem(image: str) -> str:
    import os
    return safe_name(os.path.splitext(os.path.basename(image))[0])
