"""Caffe's weight fillers, for nets opened without weights (as Caffe would init them)."""
from __future__ import annotations

import numpy as np

from .. import caffe_pb2


def fill(filler: caffe_pb2.FillerParameter, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    n = int(np.prod(shape)) if shape else 1
    fan_in = n // shape[0] if shape else 1
    fan_out = n // shape[1] if len(shape) > 1 else n
    t = filler.type
    if t == "constant":
        return np.full(shape, filler.value, np.float32)
    if t == "uniform":
        return rng.uniform(filler.min, filler.max, shape).astype(np.float32)
    if t == "gaussian":
        return rng.normal(filler.mean, filler.std, shape).astype(np.float32)
    if t in ("xavier", "msra"):
        norm = {0: fan_in, 1: fan_out, 2: (fan_in + fan_out) / 2}[filler.variance_norm]
        if t == "xavier":
            scale = np.sqrt(3.0 / norm)
            return rng.uniform(-scale, scale, shape).astype(np.float32)
        return rng.normal(0, np.sqrt(2.0 / norm), shape).astype(np.float32)
    if t == "bilinear":  # FCN's upsampling kernels
        k = shape[-1]
        f = np.ceil(k / 2.0)
        c = (2 * f - 1 - f % 2) / (2.0 * f)
        og = np.arange(k)
        w1 = 1 - np.abs(og / f - c)
        return np.broadcast_to(np.outer(w1, w1), shape).astype(np.float32).copy()
    return np.zeros(shape, np.float32)
