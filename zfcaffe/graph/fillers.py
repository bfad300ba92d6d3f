"""Caffe's weight fillers, for nets opened without weights (as Caffe would init them)."""
from __future__ import annotations

import numpy as np

from .. import caffe_pb2


def fill(filler: caffe_pb2.FillerParameter, shape: tuple, rng: np.random.Generator) -> np.ndarray:
    """The blob Caffe's filler would make; ValueError names a parameter it refuses."""
    n = int(np.prod(shape)) if shape else 1
    if n == 0:
        return np.zeros(shape, np.float32)
    fan_in = n // shape[0] if shape else 1
    fan_out = n // shape[1] if len(shape) > 1 else n
    t = filler.type
    values = [filler.value, filler.min, filler.max, filler.mean, filler.std]
    if not all(np.isfinite(values)):
        raise ValueError(f"{t} filler with a parameter that is not a finite number")
    if t == "constant":
        return np.full(shape, filler.value, np.float32)
    if t == "uniform":
        if filler.min > filler.max:
            raise ValueError(f"uniform filler with min {filler.min:g} > max {filler.max:g}")
        return rng.uniform(filler.min, filler.max, shape).astype(np.float32)
    if t == "gaussian":
        if filler.std < 0:
            raise ValueError(f"gaussian filler with std {filler.std:g} < 0")
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
