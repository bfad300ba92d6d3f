"""Pictures as arrays, no plotting: tiles of filters and activations (pycaffe's
vis_square), receptive-field patches, and projections as RGB. The figures and the
report (zfcaffe.viz) are drawn from these."""
from __future__ import annotations

import math

import numpy as np

from . import checks
from .errors import ZfcaffeTypeError, ZfcaffeValueError


def normalize(a: np.ndarray, per_item: bool = False) -> np.ndarray:
    """Scale to [0, 1], over the whole array or each item (first axis) on its own."""
    a = checks.array("normalize(a", a)
    if a.size == 0 or per_item and a.ndim < 1:
        raise ZfcaffeValueError(f"normalize(a=...): an array of shape {list(a.shape)}; expected at least one value"
                                + (" per item" if per_item else ""))
    axes = tuple(range(1, a.ndim)) if per_item else None
    lo = a.min(axis=axes, keepdims=per_item)
    hi = a.max(axis=axes, keepdims=per_item)
    return (a - lo) / np.maximum(hi - lo, 1e-12)


def vis_square(data: np.ndarray, pad: int = 1, background: float = 1.0, per_item: bool = False) -> np.ndarray:
    """(N, h, w) or (N, h, w, 3) -> one (H, W[, 3]) image of the N tiles on a square grid."""
    data = _tiles("vis_square(data", data)
    pad = checks.integer("vis_square(pad", pad, lo=0, hi=1 << 16)
    background = checks.number("vis_square(background", background)
    data = normalize(data, per_item)
    color = data.ndim == 4
    out = _square_grid(data if color else data[..., None], pad, background)
    return out if color else out[..., 0]


def grid_columns(n: int) -> int:
    """The columns of the square-ish grid that n tiles are laid on (row after row)."""
    return int(math.ceil(math.sqrt(n)))


def _square_grid(tiles: np.ndarray, pad: int, background: float) -> np.ndarray:
    """(N, h, w, c) tiles on the smallest square-ish grid, `pad` pixels of background between."""
    n, h, w, c = tiles.shape
    cols = grid_columns(n)
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
    weights = checks.array("filter_tiles(weights", weights, ndim=4, expected="(O, C, kh, kw) of a convolution")
    if weights.size == 0:
        raise ZfcaffeValueError(f"filter_tiles(weights=...): an array of shape {list(weights.shape)}; expected at "
                                "least one filter")
    checks.string("filter_tiles(mode", mode)
    if mode not in ("auto", "color", "channels", "sum"):
        raise ZfcaffeValueError(f"filter_tiles(mode={mode!r}): expected auto, color, channels or sum")
    o, c = weights.shape[:2]
    if mode == "auto":
        mode = "color" if c == 3 else "sum"
    if mode == "color":
        if c != 3:
            raise ZfcaffeValueError(f"filter_tiles(mode='color'): colour tiles need 3 input channels, these "
                                    f"filters have {c}")
        w = weights.transpose(0, 2, 3, 1)
        return vis_square(w[..., ::-1] if bgr else w, per_item=per_filter)
    if mode == "channels":
        return vis_square(weights.reshape(o * c, *weights.shape[2:]), per_item=per_filter)
    return vis_square(weights.sum(axis=1), per_item=per_filter)


def activation_tiles(maps: np.ndarray, per_map: bool = True) -> np.ndarray:
    """Tile the feature maps (C, h, w) of one image."""
    maps = checks.array("activation_tiles(maps", maps, ndim=3, expected="(C, h, w): the maps of one image")
    return vis_square(maps, per_item=per_map)


def tile_blocks(images: list[np.ndarray], pad: int = 2) -> np.ndarray:
    """Already-normalised (h, w, 3) images of one size on a square grid (white gaps)."""
    if isinstance(images, (str, bytes)) or not hasattr(images, "__iter__"):
        raise ZfcaffeTypeError(f"tile_blocks(images={images!r:.40}): expected a list of (h, w, 3) images")
    images = [checks.array(f"tile_blocks(images[{i}]", im, ndim=3, expected="(h, w, 3)") for i, im in enumerate(images)]
    if not images or any(im.shape != images[0].shape or im.shape[2] != 3 or im.size == 0 for im in images):
        raise ZfcaffeValueError(f"tile_blocks(images=...): shapes {[list(im.shape) for im in images[:4]]}; expected "
                                "at least one image, all (h, w, 3) of one size")
    pad = checks.integer("tile_blocks(pad", pad, lo=0, hi=1 << 16)
    return np.clip(_square_grid(np.stack(images), pad, 1.0), 0, 1)


def _tiles(what: str, data) -> np.ndarray:
    """Tiles (N, h, w) or (N, h, w, 3), at least one and none empty."""
    data = checks.array(what, data)
    if data.ndim not in (3, 4) or data.ndim == 4 and data.shape[3] not in (1, 3) or data.size == 0:
        raise ZfcaffeValueError(f"{what}=...): an array of shape {list(data.shape)}; expected (N, h, w) grey or "
                                "(N, h, w, 3) colour tiles, at least one, none empty")
    return data


#: the percentile of |value| that a projection tile shows at full contrast (the
#: SmoothGrad convention): one hot pixel cannot grey out the rest of the tile
CONTRAST_PERCENTILE = 99.0


def contrast_scale(values: np.ndarray) -> float:
    """The |value| shown at full contrast: a high percentile, else the maximum."""
    mag = np.abs(values)
    scale = float(np.percentile(mag, CONTRAST_PERCENTILE)) if mag.size else 0.0
    return scale if scale > 0 else float(mag.max(initial=0.0))


def signed_to_rgb(p: np.ndarray) -> np.ndarray:
    """A projection (C, h, w) in the net's channel order (BGR for 3 channels) -> RGB in
    [0, 1]: zero at grey, the contrast_scale at black/white (beyond it clipped)."""
    p = np.asarray(p, np.float64)
    rgb = p[::-1].transpose(1, 2, 0) if p.shape[0] == 3 else np.repeat(p.mean(0)[..., None], 3, axis=2)
    m = contrast_scale(rgb)
    return np.clip(rgb / (2 * m) + 0.5, 0, 1) if m > 0 else np.full_like(rgb, 0.5)


def cut(img: np.ndarray, box: tuple[int, int, int, int], fill: float) -> np.ndarray:
    """img[y0:y1, x0:x1] with `fill` where the box leaves the image."""
    y0, y1, x0, x1 = box
    h, w = img.shape[:2]
    out = np.full((y1 - y0, x1 - x0) + img.shape[2:], fill, img.dtype)
    sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = img[sy0:sy1, sx0:sx1]
    return out


def _interval(mass: np.ndarray, share: float) -> tuple[int, int]:
    """The central interval of a 1-D mass holding `share` of it."""
    cum = np.cumsum(mass)
    total = cum[-1]
    lo = int(np.searchsorted(cum, total * (1 - share) / 2, side="right"))
    hi = int(np.searchsorted(cum, total * (1 + share) / 2, side="left")) + 1
    return lo, max(hi, lo + 1)


def energy_box(projections, height: int, width: int, share: float = 0.95,
               min_side: int = 8) -> tuple[int, int, int, int]:
    """The square box (y0, y1, x0, x1), inside the image, where the projections have
    their energy: the central `share` of the energy along each axis (every projection
    weighted equally), widened to a square of at least `min_side` pixels and moved
    into the image. Deep units' theoretical fields are far wider than what they
    respond to (and often wider than the image): the paper shows what they respond to."""
    energy = np.zeros((height, width), np.float64)
    for p in projections:
        e = np.square(np.asarray(p, np.float64)).sum(axis=0)
        if e.sum() > 0:
            energy += e / e.sum()
    side_cap = min(height, width)
    if energy.sum() == 0:
        y0, y1, x0, x1 = 0, side_cap, 0, side_cap
    else:
        y0, y1 = _interval(energy.sum(axis=1), share)
        x0, x1 = _interval(energy.sum(axis=0), share)
    side = min(max(y1 - y0, x1 - x0, min_side), side_cap)
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    top = int(min(max(round(cy - side / 2), 0), height - side))
    left = int(min(max(round(cx - side / 2), 0), width - side))
    return top, top + side, left, left + side


def resample(img: np.ndarray, size: int) -> np.ndarray:
    """(h, w, c) float -> (size, size, c): whole pixels repeated when enlarging (no
    smoothing invents detail), area-averaged when shrinking."""
    from PIL import Image
    h, w = img.shape[:2]
    method = Image.NEAREST if size >= max(h, w) else Image.BOX
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(img[:, :, c], np.float32), "F")
                                .resize((size, size), method)) for c in range(img.shape[2])], axis=2)


def projection_tile(p: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """One projection (C, H, W) in the box, as a (size, size, 3) uint8 tile: grey is
    zero, contrast from the tile's own high percentile of |value|."""
    y0, y1, x0, x1 = box
    crop = np.asarray(p[:, y0:y1, x0:x1], np.float32).transpose(1, 2, 0)
    return to_uint8(signed_to_rgb(resample(crop, size).transpose(2, 0, 1)))


def patch_tile(rgb: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """The image (H, W, 1|3) in [0, 1] under the box, as a (size, size, 3) uint8 tile."""
    y0, y1, x0, x1 = box
    crop = resample(np.asarray(rgb[y0:y1, x0:x1], np.float32), size)
    return to_uint8(crop if crop.shape[2] == 3 else np.repeat(crop, 3, axis=2))


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(img) * 255), 0, 255).astype(np.uint8)
