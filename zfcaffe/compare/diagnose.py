"""The usual causes of a converted model disagreeing with Caffe, each tested: the first
diverging layer is recomputed the other way (NumPy, on zfcaffe's recorded bottoms) and
compared with the other side's value."""
from __future__ import annotations

import math

import numpy as np

from ..caffe_pb2 import LRNParameter, PoolingParameter

P = PoolingParameter


# -- the layers, computed the ways converters get them ----------------------------------------------------
def pooled_size(size: int, k: int, s: int, p: int, ceil: bool) -> int:
    n = (math.ceil if ceil else math.floor)((size + 2 * p - k) / s) + 1
    if p and (n - 1) * s >= size + p:   # Caffe drops a last window that starts in the padding
        n -= 1
    return n


def pool(x: np.ndarray, method: int, kernel, stride, pad, ceil: bool = True, divisor: str = "caffe") -> np.ndarray:
    """Caffe's pooling in NumPy (float64). divisor for AVE: "caffe" (the window clipped to
    [-pad, size + pad)), "kernel" (always kh*kw), "inside" (only the cells in the image)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    oh, ow = pooled_size(h, kh, sh, ph, ceil), pooled_size(w, kw, sw, pw, ceil)
    x = x.astype(np.float64)
    out = np.empty((n, c, oh, ow))
    for i in range(oh):
        h0 = i * sh - ph
        h1 = min(h0 + kh, h + ph)
        for j in range(ow):
            w0 = j * sw - pw
            w1 = min(w0 + kw, w + pw)
            area = (h1 - h0) * (w1 - w0)
            a0, a1, b0, b1 = max(h0, 0), min(h1, h), max(w0, 0), min(w1, w)
            win = x[:, :, a0:a1, b0:b1]
            if method == P.MAX:
                out[:, :, i, j] = win.max(axis=(2, 3)) if win.size else -np.inf
            else:
                d = {"caffe": area, "kernel": kh * kw, "inside": max((a1 - a0) * (b1 - b0), 1)}[divisor]
                out[:, :, i, j] = win.sum(axis=(2, 3)) / d
    return out


def lrn(x: np.ndarray, region: int, size: int, alpha: float, beta: float, k: float,
        divide_alpha: bool = True) -> np.ndarray:
    """Caffe's LRN in NumPy (float64); divide_alpha=False: alpha not divided by the window
    size (the classic converter slip)."""
    x = x.astype(np.float64)
    sq = x * x
    half = (size - 1) // 2
    if region == LRNParameter.ACROSS_CHANNELS:
        c = x.shape[1]
        padded = np.pad(sq, ((0, 0), (half, half), (0, 0), (0, 0)))
        acc = sum(padded[:, i:i + c] for i in range(size))
        scale = k + (alpha / size if divide_alpha else alpha) * acc
    else:
        avg = pool(sq, P.AVE, (size, size), (1, 1), (half, half))
        scale = 1 + (alpha if divide_alpha else alpha * size * size) * avg
    return x * scale ** -beta


def batchnorm(x: np.ndarray, mean, var, factor: float, eps: float, use_factor: bool = True,
              eps_inside: bool = True, eps_in_factor: bool = False) -> np.ndarray:
    x = x.astype(np.float64)
    f = (0.0 if factor == 0 else 1.0 / factor) if use_factor else 1.0
    shape = (1, -1) + (1,) * (x.ndim - 2)
    m = (np.asarray(mean, np.float64) * f).reshape(shape)
    v = (np.asarray(var, np.float64) * (1.0 / (factor + 1e-5) if eps_in_factor else f)).reshape(shape)
    return (x - m) / (np.sqrt(v + eps) if eps_inside else np.sqrt(v) + eps)


# -- the causes ---------------------------------------------------------------------------------------------
def _rel(ours_like: np.ndarray, other: np.ndarray) -> float | None:
    from .core import comparable, measure
    b = comparable(ours_like, other)
    return None if b is None else measure(ours_like, b)[0]


def _cause(cause: str, test: str, recomputed: np.ndarray | None, other: np.ndarray, tol: float) -> dict:
    if recomputed is None:
        return {"cause": cause, "test": test, "rel": None, "matches": False, "result": "not testable here"}
    rel = _rel(recomputed, other)
    if rel is None:
        res = f"shape {list(recomputed.shape)}, the other side's {list(other.shape)}: does not match"
        return {"cause": cause, "test": test, "rel": None, "matches": False, "result": res}
    ok = rel <= max(tol, 2e-6)
    return {"cause": cause, "test": test, "rel": rel, "matches": bool(ok),
            "result": (f"matches (max|diff|/max|ref| {rel:.2g})" if ok else f"does not match ({rel:.2g})")}


def _pool_causes(layer, x, other, tol) -> list[dict]:
    out = []
    k, s, p = layer.kernel, layer.stride, layer.pad
    ceil = layer.ceil_mode
    shape_floor = tuple(pooled_size(n, kk, ss, pp, not ceil) for n, kk, ss, pp in zip(x.shape[2:], k, s, p))
    other_way = "down (floor)" if ceil else "up (ceil)"
    out.append(_cause(f"pooling output size rounded {other_way}, Caffe rounds {'up' if ceil else 'down'}",
                      f"{'MAX' if layer.method == P.MAX else 'AVE'} pooling recomputed with {other_way} rounding: "
                      f"{list(shape_floor)} instead of {list(layer.out_shapes[0][2:])}",
                      pool(x, layer.method, k, s, p, ceil=not ceil), other, tol))
    if layer.method == P.AVE and any(p):
        for d, what in (("kernel", "the whole kernel (padding counted everywhere, ONNX count_include_pad=1)"),
                        ("inside", "only the cells inside the image (ONNX count_include_pad=0)")):
            for c in (ceil, not ceil):
                rounding = "" if c == ceil else f", rounded {other_way}"
                out.append(_cause(f"AVE-pool divisor: {what}{rounding}", f"AVE pooling recomputed dividing by {what}{rounding}",
                                  pool(x, P.AVE, k, s, p, ceil=c, divisor=d), other, tol))
    return out


def _lrn_causes(layer, x, other, tol) -> list[dict]:
    a, n = layer.alpha, layer.size
    across = layer.region == LRNParameter.ACROSS_CHANNELS
    out = [_cause(f"LRN alpha not divided by the window size ({'local_size' if across else 'local_size²'})",
                  f"LRN recomputed with alpha {a:g} used as it is", lrn(x, layer.region, n, a, layer.beta, layer.k, False),
                  other, tol)]
    other_region = LRNParameter.WITHIN_CHANNEL if across else LRNParameter.ACROSS_CHANNELS
    out.append(_cause("LRN normalising region swapped (ACROSS_CHANNELS vs WITHIN_CHANNEL)",
                      "LRN recomputed over the other region", lrn(x, other_region, n, a, layer.beta, layer.k), other, tol))
    if across and layer.k != 1:
        out.append(_cause(f"LRN k taken as 1 (the file says {layer.k:g})", "LRN recomputed with k = 1",
                          lrn(x, layer.region, n, a, layer.beta, 1.0), other, tol))
    return out


def _bn_causes(layer, x, other, tol, then=None) -> list[dict]:
    mean, var, factor = (np.asarray(b, np.float64).ravel() for b in layer.blobs[:3])
    f, eps = float(factor[0]), float(layer.eps)
    after = " (then its Scale)" if then else ""
    then = then or (lambda y: y)
    out = [_cause(f"BatchNorm's scale factor (third blob, {f:g}) not applied to the mean and variance",
                  "BatchNorm recomputed without dividing by the scale factor" + after,
                  then(batchnorm(x, mean, var, f, eps, use_factor=False)), other, tol)]
    for e in (1e-5, 1e-3, 0.0):
        if not math.isclose(e, eps, rel_tol=1e-3):
            out.append(_cause(f"BatchNorm eps {e:g} instead of {eps:g}", f"BatchNorm recomputed with eps {e:g}" + after,
                              then(batchnorm(x, mean, var, f, e)), other, tol))
    out.append(_cause(f"BatchNorm variance divided by (scale factor + 1e-5) instead of {f:g}",
                      "BatchNorm recomputed with var / (s + 1e-5)" + after,
                      then(batchnorm(x, mean, var, f, eps, eps_in_factor=True)), other, tol))
    out.append(_cause("BatchNorm eps added outside the square root", "BatchNorm recomputed as (x - m) / (sqrt(v) + eps)" + after,
                      then(batchnorm(x, mean, var, f, eps, eps_inside=False)), other, tol))
    return out


def _scale_of(layer):
    """y -> Scale(y) in NumPy for a channel Scale layer with its own blobs; None otherwise."""
    if len(layer.bottoms) != 1 or not layer.blobs:
        return None
    gamma = np.asarray(layer.blobs[0], np.float64).ravel()
    beta = np.asarray(layer.blobs[1], np.float64).ravel() if len(layer.blobs) > 1 else 0.0

    def apply(y):
        if gamma.size != y.shape[1]:
            return None
        shape = (1, -1) + (1,) * (y.ndim - 2)
        return y * gamma.reshape(shape) + (beta.reshape(shape) if np.ndim(beta) else 0.0)
    return apply


def causes(net, key: str, ours: dict, theirs: dict, tol: float, holds: str | None = None,
           small: bool = False) -> list[dict]:
    """The usual causes at a diverging key, each recomputed and compared. holds: the later
    key the other side's value really holds (BatchNorm fused with its Scale). small: the
    difference is below tol (where a drift starts): a cause matches when it explains it
    to float rounding."""
    out = _causes(net, key, ours, theirs, tol / 20 if small else tol, holds)
    layer = net.graph.producer(key).name
    hits = [c["rel"] for c in out if c["matches"] and c["rel"] is not None]
    for c in out:
        c["layer"] = layer
        if c["matches"] and c["rel"] is not None and c["rel"] > 10 * min(hits) + 1e-9:
            # closer than Caffe's way, yet explaining the difference far less than the best guess
            c["matches"] = False
            c["result"] = f"closer ({c['rel']:.2g}), but not as close as the best guess ({min(hits):.2g})"
    return out


def _causes(net, key, ours, theirs, tol, holds):
    g = net.graph
    layer = g.producer(key)
    other = np.asarray(theirs[key].value, np.float64)
    bottoms = [ours[b] for b in layer.bottoms]
    out: list[dict] = []
    if holds is not None and layer.type == "BatchNorm" and len(layer.blobs) >= 3:
        scale = _scale_of(g.producer(holds))
        if scale is not None:
            return _bn_causes(layer, bottoms[0], other, tol, then=scale)
    if layer.type == "Pooling" and layer.method in (P.MAX, P.AVE):
        out += _pool_causes(layer, bottoms[0], other, tol)
    elif layer.type == "LRN":
        out += _lrn_causes(layer, bottoms[0], other, tol)
    elif layer.type == "BatchNorm" and len(layer.blobs) >= 3:
        out += _bn_causes(layer, bottoms[0], other, tol)
    elif layer.type == "Crop" and len(bottoms) == 2:
        x, ref = bottoms
        starts = [0] * x.ndim
        for i in range(layer.axis, x.ndim):
            starts[i] = layer.offs[i - layer.axis]
        cut = x[tuple(slice(s0, s0 + n) for s0, n in zip(starts, ref.shape))]
        out.append(_cause(f"Crop cuts the axes before axis {layer.axis} too (to the reference blob's "
                          f"{list(ref.shape[:layer.axis])})",
                          "Crop recomputed over every axis, offset 0 below axis", np.asarray(cut, np.float64), other, tol))
    elif layer.type == "Scale" and layer.bottoms[0] not in g.inputs:
        below = g.producer(layer.bottoms[0])
        scale = _scale_of(layer)
        if below.type == "BatchNorm" and len(below.blobs) >= 3 and scale is not None:
            # a converter that folds BatchNorm into its Scale has no value for the BatchNorm alone
            out += _bn_causes(below, ours[below.bottoms[0]], other, tol, then=scale)
    # the channel order: this layer fed the input with its channels reversed
    fed = [b for b in layer.bottoms if b in g.inputs and ours[b].ndim == 4 and ours[b].shape[1] == 3]
    if fed:
        values = {b: (ours[b][:, ::-1].copy() if b in fed else ours[b]) for b in layer.bottoms}
        i = g.layers.index(layer)
        try:
            swapped = net.forward_span(i, i, values)[key]
        except Exception:  # noqa: BLE001 - a layer that cannot run alone is not testable
            swapped = None
        out.append(_cause("channel order: the other side's input is RGB where Caffe's is BGR (or the reverse)",
                          f"'{layer.name}' recomputed by zfcaffe on its input with the channels reversed",
                          swapped, other, tol))
    # a missing layer: the other side's value is this layer's input, as if the layer were not there
    for b in layer.bottoms:
        if _rel(ours[b], other) is not None:
            out.append(_cause(f"a missing layer: the other side skips '{layer.name}' ({layer.type})",
                              f"the other side's value compared with the input of '{layer.name}' ('{b}')",
                              np.asarray(ours[b], np.float64), other, tol))
            break
    return out


def input_checks(net, side, inputs, fed, ours, theirs, first, tol, other_rgb, mean) -> list[str]:
    """Input-wide checks, each a rerun of the other side: does it match better with the
    channels swapped, or with its own mean (the input given with the mean added back)?"""
    from .core import comparable, measure, swap_channels
    if not getattr(side, "reruns", False):
        return []
    keys = [k for k in theirs if k in ours]
    order = {k: i for i, k in enumerate(k for l in net.graph.compute_layers for k in l.tops)}
    keys.sort(key=order.__getitem__)

    def worst(values) -> tuple[float, int]:
        """(the error at the first diverging key, how many keys are within tol)."""
        good, at = 0, float("inf")
        for k in keys:
            if k not in values:
                continue
            b = comparable(ours[k], values[k].value)
            rel = measure(ours[k], b)[0] if b is not None else float("inf")
            good += rel <= tol
            if k == first:
                at = rel
        return at, good

    base_at, base_good = worst(theirs)
    out = []
    trials = [("with the channels swapped" + (" back (fed as Caffe's order)" if other_rgb else ""),
               inputs if other_rgb else swap_channels(inputs))]
    if mean is not None:
        m = np.asarray(mean, np.float32)
        m = m.reshape((1, -1, 1, 1)) if m.ndim == 1 else m[None]
        if other_rgb and m.shape[1] == 3:
            m = m[:, ::-1]   # the other side's channels are reversed, its mean with them
        name = net.inputs[0]
        raw = dict(fed)
        raw[name] = (fed[name] + m).astype(np.float32)
        trials.append(("fed the input without Caffe's mean subtracted (it subtracts its own)", raw))
    for what, x in trials:
        try:
            values = side.values(net, x, ours)
        except Exception as e:  # noqa: BLE001 - a check, not the comparison
            out.append(f"{what}: not run ({e})")
            continue
        at, good = worst(values)
        if good > base_good or at < base_at * 0.5:
            out.append(f"the other side matches better {what}: {good} of {len(keys)} layers within tolerance "
                       f"(instead of {base_good}); at the first divergence max|diff|/max|ref| {at:.3g} (was {base_at:.3g})")
        else:
            out.append(f"{what}: no better ({good} of {len(keys)} layers within tolerance, was {base_good})")
    return out
