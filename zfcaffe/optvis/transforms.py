"""Random transforms of the input applied at each step (Lucid's robustness
transforms, DVT's jitter), each returning the transformed input and the exact
adjoint that takes a gradient back."""
from __future__ import annotations

import numpy as np


def jitter(d: int):
    """Roll the image by up to d pixels each way (DeepDream's jitter)."""
    def apply(x, rng):
        dy, dx = (int(v) for v in rng.integers(-d, d + 1, 2))
        return np.roll(x, (dy, dx), axis=(-2, -1)), lambda g: np.roll(g, (-dy, -dx), axis=(-2, -1))
    return apply


def pad_shift(d: int, fill: float = 0.0):
    """Pad by d with `fill` (the mean image: 0 in the net's input) and cut the input's
    size back out at a random offset: a shift that brings in no wrapped-around edge."""
    def apply(x, rng):
        dy, dx = (int(v) for v in rng.integers(-d, d + 1, 2))
        out = np.full_like(x, fill)
        h, w = x.shape[-2:]
        ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
        xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
        out[..., yd, xd] = x[..., ys, xs]

        def adjoint(g):
            back = np.zeros_like(g)
            back[..., ys, xs] = g[..., yd, xd]
            return back
        return out, adjoint
    return apply


def _sample_grid(h: int, w: int, matrix: np.ndarray):
    """For each output pixel, its source position under `matrix` (about the centre):
    the four neighbours and bilinear weights (zero outside the image)."""
    cy, cx = (h - 1) / 2, (w - 1) / 2
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    src = matrix @ np.stack([(yy - cy).ravel(), (xx - cx).ravel()])
    sy, sx = src[0] + cy, src[1] + cx
    y0, x0 = np.floor(sy).astype(int), np.floor(sx).astype(int)
    taps = []
    for oy in (0, 1):
        for ox in (0, 1):
            yi, xi = y0 + oy, x0 + ox
            wgt = (1 - np.abs(sy - yi)) * (1 - np.abs(sx - xi))
            ok = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
            taps.append((np.where(ok, yi * w + xi, 0), np.where(ok, wgt, 0.0)))
    return taps


def _warp(matrix_of):
    def apply(x, rng):
        h, w = x.shape[-2:]
        taps = _sample_grid(h, w, matrix_of(rng))
        flat = x.reshape(x.shape[:-2] + (h * w,))
        out = sum(flat[..., idx] * wgt for idx, wgt in taps).reshape(x.shape).astype(x.dtype)

        def adjoint(g):
            gf = g.reshape(g.shape[:-2] + (h * w,))
            back = np.zeros(gf.shape, np.float64)
            for lead in np.ndindex(gf.shape[:-1]):
                for idx, wgt in taps:
                    back[lead] += np.bincount(idx, gf[lead] * wgt, minlength=h * w)
            return back.reshape(g.shape).astype(g.dtype)
        return out, adjoint
    return apply


def scale(factors=(0.95, 1.05)):
    """Zoom about the centre by a random factor from `factors` (bilinear)."""
    return _warp(lambda rng: np.eye(2) / float(rng.choice(factors)))


def rotate(degrees=(-5, 5)):
    """Rotate about the centre by a random angle from `degrees` (bilinear)."""
    def matrix(rng):
        a = np.deg2rad(float(rng.choice(degrees)))
        return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return _warp(matrix)


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of each channel (DVT's blur regulariser: applied to the
    image every few steps, not in the gradient's path)."""
    radius = max(1, int(3 * sigma))
    t = np.arange(-radius, radius + 1)
    k = np.exp(-t * t / (2 * sigma * sigma))
    k /= k.sum()
    pad = [(0, 0)] * (x.ndim - 2) + [(radius, radius), (radius, radius)]
    p = np.pad(x, pad, mode="reflect")
    p = sum(k[i] * p[..., :, i:i + x.shape[-1]] for i in range(len(k)))
    return sum(k[i] * p[..., i:i + x.shape[-2], :] for i in range(len(k))).astype(x.dtype)


def standard_transforms(fill: float = 0.0):
    """Lucid's standard robustness transforms at a fixed size: a shift of up to 8
    pixels (Lucid pads by 12 and crops 8 at random), a zoom by 0.9-1.1, a rotation by
    up to 10 degrees (no rotation a third of the time), and a last shift of up to 4;
    `fill` (the mean image: 0 in the net's input) comes in at the borders. The input
    keeps its size, so the net is never reshaped."""
    return [pad_shift(8, fill), scale(tuple(1 + (i - 5) / 50 for i in range(11))),
            rotate(tuple(range(-10, 11)) + (0,) * 5), pad_shift(4, fill)]
