"""Correspondence (Zeiler & Fergus Table 7 / Fig. 8): mask the same object part in
several images and measure how consistently the feature vectors change.

For image i and layer l: eps_i = x_i - x~_i (original minus masked features).
Delta_l = mean over pairs i != j of the Hamming distance between sign(eps_i) and
sign(eps_j), as a fraction of the vector length: lower means the part is masked
the same way in every image, i.e. the net has an implicit notion of that part.
Random masks of the same size, at the same random place in every image, are the
baseline."""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np


def delta(eps: np.ndarray) -> float:
    """Mean pairwise Hamming distance of sign vectors, as a fraction of their length."""
    s = np.sign(eps.reshape(eps.shape[0], -1))
    pairs = list(itertools.combinations(range(len(s)), 2))
    if not pairs:
        return 0.0
    return float(np.mean([(s[i] != s[j]).mean() for i, j in pairs]))


@dataclasses.dataclass
class Correspondence:
    layers: list[str]
    parts: list[str]
    table: np.ndarray        # (len(parts) + 1, len(layers)): Delta per part, last row random
    random_std: np.ndarray   # (len(layers),) spread of the random baseline over trials
    boxes: dict              # part -> list of input-space boxes per image
    examples: list           # [(RGB image with part masked)]

    def arrays(self) -> dict[str, np.ndarray]:
        return {"delta": self.table, "random_std": self.random_std}

    def rows(self) -> list[list[str]]:
        out = [[p] + [f"{v:.4f}" for v in row] for p, row in zip(self.parts, self.table)]
        out.append(["random (same size)"] + [f"{v:.4f} ± {s:.4f}" for v, s in zip(self.table[-1], self.random_std)])
        return out


def run(net, paths: list[str], pre, layer_keys: list[str], parts: dict[str, list], trials: int = 5,
        seed: int = 0) -> Correspondence:
    """parts: part name -> one input-space box (x0, y0, x1, y1) per image."""
    input_name = net.inputs[0]
    shape = net.graph.inputs[input_name]
    h, w = shape[2:]
    prepared = [pre.prepare(p) for p in paths]
    xs = np.stack([x for x, _ in prepared])
    net.set_batch(len(paths))
    base = net.evaluate(layer_keys, **{input_name: xs})

    def masked_delta(boxes) -> np.ndarray:
        xm = xs.copy()
        for i, (x0, y0, x1, y1) in enumerate(boxes):
            xm[i, :, max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)] = 0   # the mean pixel
        out = net.evaluate(layer_keys, **{input_name: xm})
        return np.array([delta(base[k] - out[k]) for k in layer_keys])

    rows = [masked_delta(boxes) for boxes in parts.values()]
    rng = np.random.default_rng(seed)
    first = next(iter(parts.values()))
    bw, bh = first[0][2] - first[0][0], first[0][3] - first[0][1]
    randoms = []
    for _ in range(trials):
        x0, y0 = int(rng.integers(0, max(1, w - bw))), int(rng.integers(0, max(1, h - bh)))
        randoms.append(masked_delta([(x0, y0, x0 + bw, y0 + bh)] * len(paths)))
    randoms = np.array(randoms)
    table = np.vstack(rows + [randoms.mean(axis=0)])
    examples = []
    for (_, rgb), (x0, y0, x1, y1) in zip(prepared[:6], first):
        rgb = rgb.copy()
        rgb[max(y0, 0):y1, max(x0, 0):x1] = 0.5
        examples.append(rgb)
    return Correspondence(list(layer_keys), list(parts), table, randoms.std(axis=0), dict(parts), examples)
