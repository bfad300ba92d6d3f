"""DeepDream (Mordvintsev et al. 2015), as the Caffe notebook does it: gradient
ascent on half the squared activations of a layer, with normalised steps, random
jitter, and octaves (the image is dreamt at growing scales, the detail carried up)."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..optvis import objectives
from ..optvis.render import NormalizedAscent, gradient
from ..optvis.transforms import jitter


@dataclasses.dataclass
class Dream:
    layer: str
    image: np.ndarray            # the dreamt input (C, H, W)
    values: list[float]          # the objective at every step (octave after octave)
    octave_ends: list[int]       # index in values where each octave ended

    def arrays(self) -> dict[str, np.ndarray]:
        return {"image": self.image, "values": np.array(self.values), "octave_ends": np.array(self.octave_ends)}


def _resize(x: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(c, np.float32), "F").resize((w, h),
                                                                                                  Image.BILINEAR))
                     for c in x])


def _trunk(net, key: str):
    """The net up to the layer that makes `key` (loaded anew, the layers above it left
    out): each step runs only what the objective needs, and the layers above (an
    InnerProduct, a fixed-size pooling) no longer fix the input's size."""
    from ..net import Net
    layers = net.graph.layers
    end = next(i for i, l in enumerate(layers) if key in l.tops)
    if end == len(layers) - 1:
        return net
    return Net(net.graph.path, net.graph.weights_path, input_shapes=dict(net.graph.inputs),
               stop_before=layers[end + 1].name, allow_missing_weights=net.graph.weights_path is None)


def deepdream(net, x: np.ndarray, layer: str, low: np.ndarray, high: np.ndarray, octaves: int = 3,
              octave_scale: float = 1.4, steps: int = 10, step_size: float = 1.5, jitter_px: int = 4,
              seed: int = 0) -> Dream:
    """Dream x (C, H, W, in the net's input space) at `layer`, on the net loaded up to
    that layer, reshaped for each octave."""
    from ..analyses.common import shown_key
    key = shown_key(net, layer)
    rng = np.random.default_rng(seed)
    c, h, w = x.shape
    name = net.inputs[0]
    sizes = [(max(8, round(h / octave_scale ** i)), max(8, round(w / octave_scale ** i))) for i in range(octaves)]
    net = _trunk(net, key)
    original = dict(net.graph.inputs)
    objective = objectives.layer_l2(key)
    step = NormalizedAscent(step_size)
    base = [_resize(x, *s) for s in sizes]
    detail = np.zeros_like(base[-1])
    values, ends = [], []
    try:
        for i in reversed(range(octaves)):
            bh, bw = sizes[i]
            if detail.shape[1:] != (bh, bw):
                detail = _resize(detail, bh, bw)
            net.reshape(**{name: (1, c, bh, bw)})
            img = base[i] + detail
            lo, hi = _resize(low, bh, bw), _resize(high, bh, bw)
            for _ in range(steps):
                t = jitter(jitter_px)
                shifted, adjoint = t(img, rng)
                value, grad = gradient(net, objective, np.ascontiguousarray(shifted, np.float32))
                step.step(img, adjoint(grad))
                np.clip(img, lo, hi, out=img)
                values.append(value)
            ends.append(len(values))
            detail = img - base[i]
        return Dream(key, img.astype(np.float32), values, ends)
    finally:
        net.reshape(**original)
