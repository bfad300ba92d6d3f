"""Caffe's weight fillers, for nets opened without weights (as Caffe would init them)."""
from __future__ import annotations

import os

import numpy as np

from .. import caffe_pb2

#: the most parameter values fillers make for one net (1 GiB of float32, seconds of
#: random numbers; VGG-16's 138M fit): a prototxt of a few bytes can ask for billions
#: (ZFCAFFE_MAX_FILL raises it)
MAX_FILL = 2**28

#: values drawn per chunk: the random numbers come as float64, never the whole blob at once
_CHUNK = 1 << 22


def fill_limit() -> int:
    try:
        return int(os.environ.get("ZFCAFFE_MAX_FILL", MAX_FILL))
    except ValueError:
        return MAX_FILL


def memory_available() -> int | None:
    """Bytes this process can still allocate: the system's available memory, and the
    headroom under an address-space cap (ulimit -v); None where neither is known."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/statm") as f:
                used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            avail = soft - used if avail is None else min(avail, soft - used)
    except (ImportError, OSError, ValueError, IndexError):
        pass
    return avail


def _drawn(draw, shape: tuple) -> np.ndarray:
    """draw(n) -> n float64 values, made chunk by chunk into a float32 blob: the same
    values as draw(count).astype(float32), without the float64 copy of the whole blob."""
    out = np.empty(shape, np.float32)
    flat = out.reshape(-1)
    for i in range(0, flat.size, _CHUNK):
        flat[i:i + _CHUNK] = draw(min(_CHUNK, flat.size - i))
    return out


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
        return _drawn(lambda k: rng.uniform(filler.min, filler.max, k), shape)
    if t == "gaussian":
        if filler.std < 0:
            raise ValueError(f"gaussian filler with std {filler.std:g} < 0")
        return _drawn(lambda k: rng.normal(filler.mean, filler.std, k), shape)
    if t in ("xavier", "msra"):
        norm = {0: fan_in, 1: fan_out, 2: (fan_in + fan_out) / 2}[filler.variance_norm]
        if t == "xavier":
            scale = np.sqrt(3.0 / norm)
            return _drawn(lambda k: rng.uniform(-scale, scale, k), shape)
        return _drawn(lambda k: rng.normal(0, np.sqrt(2.0 / norm), k), shape)
    if t == "bilinear":  # FCN's upsampling kernels
        k = shape[-1]
        f = np.ceil(k / 2.0)
        c = (2 * f - 1 - f % 2) / (2.0 * f)
        og = np.arange(k)
        w1 = 1 - np.abs(og / f - c)
        return np.broadcast_to(np.outer(w1, w1), shape).astype(np.float32).copy()
    return np.zeros(shape, np.float32)
