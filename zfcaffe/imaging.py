"""Pictures as arrays, no plotting: tiles of filters and activations (pycaffe's
vis_square), receptive-field patches, and projections as RGB. The figures and the
report (zfcaffe.viz) are drawn from these."""
from __future__ import annotations

import math

import numpy as np


def normalize(a: np.ndarray, per_item: bool = False) -> np.ndarray:
    """Scale to [0, 1], over the whole array or each item (first axis) on its own."""
    a = np.asarray(a, np.float32)
    axes = tuple(range(1, a.ndim)) if per_item else None
    lo = a.min(axis=axes, keepdims=per_item)
    hi = a.max(axis=axes, keepdims=per_item)
    return (a - lo) / np.maximum(hi - lo, 1e-12)


def vis_square(data: np.ndarray, pad: int = 1, background: float = 1.0, per_item: bool = False) -> np.ndarray:
    """(N, h, w) or (N, h, w, 3) -> one (H, W[, 3]) image of the N tiles on a square grid."""
    data = normalize(data, per_item)
    color = data.ndim == 4
    out = _square_grid(data if color else data[..., None], pad, background)
    return out if color else out[..., 0]


def _square_grid(tiles: np.ndarray, pad: int, background: float) -> np.ndarray:
    """(N, h, w, c) tiles on the smallest square-ish grid, `pad` pixels of background between."""
    n, h, w, c = tiles.shape
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    out = np.full((rows * (h + pad) - pad, cols * (w + pad) - pad, c), background, np.float32)
    from .kernels import tile_into  # Numba loads lazily
    tile_into(np.ascontiguousarray(tiles, dtype=np.float32), out, rows, cols, pad)
    return out


def filter_tiles(weights: np.ndarray, mode: str = "auto", per_filter: bool = False, bgr: bool = True) -> np.ndarray:
    """Tile a convolution's filters (O, C, kh, kw).

    mode "color": 3-channel filters as colour images (BGR weights shown as RGB);
    "channels": every input channel of every filter as a grey tile (O*C tiles);
    "sum": each filter summed over its input channels; "auto": colour for 3 input
    channels, else sum.
    """
    o, c = weights.shape[:2]
    if mode == "auto":
        mode = "color" if c == 3 else "sum"
    if mode == "color":
        if c != 3:
            raise ValueError(f"colour tiles need 3 input channels, these filters have {c}")
        w = weights.transpose(0, 2, 3, 1)
        return vis_square(w[..., ::-1] if bgr else w, per_item=per_filter)
    if mode == "channels":
        return vis_square(weights.reshape(o * c, *weights.shape[2:]), per_item=per_filter)
    return vis_square(weights.sum(axis=1), per_item=per_filter)


def activation_tiles(maps: np.ndarray, per_map: bool = True) -> np.ndarray:
    """Tile the feature maps (C, h, w) of one image."""
    return vis_square(maps, per_item=per_map)


def tile_blocks(images: list[np.ndarray], pad: int = 2) -> np.ndarray:
    """Already-normalised (h, w, 3) images of one size on a square grid (white gaps)."""
    return np.clip(_square_grid(np.stack(images), pad, 1.0), 0, 1)


def signed_to_rgb(p: np.ndarray) -> np.ndarray:
    """A projection (3, h, w) in BGR input order -> RGB in [0, 1], zero at grey."""
    p = np.asarray(p, np.float64)
    rgb = p[::-1].transpose(1, 2, 0) if p.shape[0] == 3 else np.repeat(p[0][..., None], 3, axis=2)
    m = np.abs(rgb).max()
    return rgb / (2 * m) + 0.5 if m > 0 else np.full_like(rgb, 0.5)


def cut(img: np.ndarray, box: tuple[int, int, int, int], fill: float) -> np.ndarray:
    """img[y0:y1, x0:x1] with `fill` where the box leaves the image."""
    y0, y1, x0, x1 = box
    h, w = img.shape[:2]
    out = np.full((y1 - y0, x1 - x0) + img.shape[2:], fill, img.dtype)
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = img[sy0:sy1, sx0:sx1]
    return out


def effective_box(p: np.ndarray, box: tuple[int, int, int, int], floor: float = 0.02) -> tuple[int, int, int, int]:
    """The part of the receptive-field box where the projection is not negligible
    (|p| >= floor * max), made square: deep units' theoretical fields are far wider
    than what they respond to, and the paper shows what they respond to."""
    mag = np.abs(p).max(axis=0)
    y0, y1, x0, x1 = box
    h, w = mag.shape
    sub = mag[max(y0, 0):min(y1, h), max(x0, 0):min(x1, w)]
    if sub.size == 0 or sub.max() == 0:
        return box
    ys, xs = np.nonzero(sub >= floor * sub.max())
    ey0, ey1 = ys.min() + max(y0, 0), ys.max() + 1 + max(y0, 0)
    ex0, ex1 = xs.min() + max(x0, 0), xs.max() + 1 + max(x0, 0)
    side = max(ey1 - ey0, ex1 - ex0, 8)
    cy, cx = (ey0 + ey1) // 2, (ex0 + ex1) // 2
    return cy - side // 2, cy - side // 2 + side, cx - side // 2, cx - side // 2 + side
