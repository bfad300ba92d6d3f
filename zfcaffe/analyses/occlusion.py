"""Occlusion sensitivity (Zeiler & Fergus Fig. 7): a grey square slid over the image;
at each position, (b) the total activation of the feature map that responds most
to the unoccluded image, (d) the probability of the correct class, (e) the most
probable class; and (c) that map's projection for a few occluder positions.
"Grey" is the mean pixel: zero in the net's input after mean subtraction."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..imaging import signed_to_rgb
from ..errors import ZfcaffeError
from .heads import require_class_head
from .common import progress, strongest_units


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

    def arrays(self) -> dict[str, np.ndarray]:
        return {"activation": self.activation, "probability": self.probability, "best_class": self.best_class,
                "positions_y": self.positions_y, "positions_x": self.positions_x}


def run(net, image: str, pre, layer_key: str, label: int | None = None, size: int = 0, stride: int = 0,
        batch: int = 16, n_projections: int = 3, show_progress: bool = True,
        class_output: str | None = None) -> Occlusion:
    input_name = net.inputs[0]
    shape = net.graph.inputs[input_name]
    h, w = shape[2:]
    size = size or max(4, h // 5)
    stride = stride or max(1, size // 2)
    if not 1 <= size <= min(h, w):
        raise ZfcaffeError(f"--size {size}: the occluder must fit the {h}x{w} input")
    if len(net.graph.shapes[layer_key]) != 4:
        raise ZfcaffeError(f"layer '{layer_key}' has shape {list(net.graph.shapes[layer_key])}; occlusion follows a "
                           "feature map, expected a spatial layer (N x C x H x W)")
    head = require_class_head(net, class_output)
    pkey = head.key
    x0, rgb = pre.prepare(image)
    net.set_batch(1)
    net.forward(**{input_name: x0[None]})
    act0 = net.layer_outputs[layer_key][0]
    fmap = strongest_units(act0, 1)[0][0]
    probs0 = head.probabilities(net.layer_outputs[pkey])[0]
    label = int(probs0.argmax()) if label is None else int(label)
    head.check_label(label)
    ys = np.arange(0, h - size + 1, stride)
    xs = np.arange(0, w - size + 1, stride)
    grid = [(y, x) for y in ys for x in xs]
    net.set_batch(batch)
    acts, probs, best = [], [], []
    bar = progress(len(grid), "occlusion", show_progress)
    for start in range(0, len(grid), batch):
        chunk = grid[start:start + batch]
        xb = np.repeat(x0[None], batch, axis=0)
        for i, (y, x) in enumerate(chunk):
            xb[i, :, y:y + size, x:x + size] = 0
        out = net.evaluate([layer_key, pkey], **{input_name: xb})
        a = out[layer_key][:len(chunk), fmap]
        p = head.probabilities(out[pkey][:len(chunk)])
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
    net.set_batch(1)
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
