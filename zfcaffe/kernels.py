"""Numba kernels for the backward passes and tiling (imported lazily by their users, so
that loading a net or converting it never pays Numba's start-up): scatter and gather
between feature maps and their windows. Each has a plain-NumPy twin in the tests.

All kernels add into `out` (they are used to accumulate) and work on float32.
They run on one thread on purpose: the backward passes interleave them with NumPy's
multi-threaded GEMMs, whose BLAS threads keep spinning for a while after each call;
a second thread pool fighting them made the whole pass 3-4x slower. The GEMMs
carry the parallelism.
"""
from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def col2im_add(col, out, y0, x0, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w):
    """out[c, iy, ix] += col[c, ky, kx, py, px] for every window position (py, px) of
    the output region starting at (y0, x0): the adjoint of im2col (Caffe's col2im)."""
    C, KH, KW, PH, PW = col.shape
    H, W = out.shape[1], out.shape[2]
    for c in range(C):
        for ky in range(KH):
            for kx in range(KW):
                for py in range(PH):
                    iy = (y0 + py) * stride_h - pad_h + ky * dil_h
                    if iy < 0 or iy >= H:
                        continue
                    for px in range(PW):
                        ix = (x0 + px) * stride_w - pad_w + kx * dil_w
                        if 0 <= ix < W:
                            out[c, iy, ix] += col[c, ky, kx, py, px]


@njit(cache=True)
def im2col(x, KH, KW, OH, OW, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w):
    """col[c, ky, kx, oy, ox] = x[c, oy*s - p + ky*d, ...] (zero outside)."""
    C, H, W = x.shape
    col = np.zeros((C, KH, KW, OH, OW), dtype=x.dtype)
    for c in range(C):
        for ky in range(KH):
            for kx in range(KW):
                for oy in range(OH):
                    iy = oy * stride_h - pad_h + ky * dil_h
                    if iy < 0 or iy >= H:
                        continue
                    for ox in range(OW):
                        ix = ox * stride_w - pad_w + kx * dil_w
                        if 0 <= ix < W:
                            col[c, ky, kx, oy, ox] = x[c, iy, ix]
    return col


@njit(cache=True)
def max_unpool_add(top, switches, out):
    """out[p, switch] += top[p, ...] per plane p: max-pool backward through the
    recorded argmax positions (h * W + w within the plane)."""
    P, OH, OW = top.shape
    W = out.shape[2]
    for p in range(P):
        for oy in range(OH):
            for ox in range(OW):
                d = top[p, oy, ox]
                if d != 0:
                    s = switches[p, oy, ox]
                    if s >= 0:
                        out[p, s // W, s % W] += d


@njit(cache=True)
def ave_unpool_add(top, out, KH, KW, stride_h, stride_w, pad_h, pad_w):
    """Caffe's AVE pooling backward: each top value, divided by its window size
    (clipped to [-pad, size + pad)), spread over the window clipped to the image."""
    P, OH, OW = top.shape
    H, W = out.shape[1], out.shape[2]
    for p in range(P):
        for oy in range(OH):
            hs = oy * stride_h - pad_h
            he = min(hs + KH, H + pad_h)
            for ox in range(OW):
                d = top[p, oy, ox]
                if d == 0:
                    continue
                ws = ox * stride_w - pad_w
                we = min(ws + KW, W + pad_w)
                d = d / ((he - hs) * (we - ws))
                for iy in range(max(hs, 0), min(he, H)):
                    for ix in range(max(ws, 0), min(we, W)):
                        out[p, iy, ix] += d


def nonzero_box(a: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box (y0, y1, x0, x1) of the non-zero entries of a (C, H, W) array."""
    mask = np.any(a != 0, axis=0)
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


@njit(cache=True)
def tile_into(images, out, rows, cols, pad):
    """Copy N (h, w, c) images into a rows x cols grid with `pad` pixels between."""
    n, h, w, c = images.shape
    for i in range(n):
        r, q = i // cols, i % cols
        y0, x0 = r * (h + pad), q * (w + pad)
        for y in range(h):
            for x in range(w):
                for k in range(c):
                    out[y0 + y, x0 + x, k] = images[i, y, x, k]


@njit(cache=True)
def mark_near_ties(x, items, bound, top, switches, KH, KW, stride_h, stride_w, pad_h, pad_w, margin, marks):
    """Mark (marks[r, c, oy, ox] = 1) and count the windows that carry signal (top != 0)
    where another input j could be the maximum under another rounding: x[switch] - x[j]
    <= margin * (bound[switch] + bound[j]), an exact tie included when either value is
    rounded (a tie of two exact values, such as a rectified region's zeros, is a tie in
    every evaluation). x is the whole forward input (N, C, H, W); row r of
    bound/top/switches/marks belongs to image items[r]."""
    R, C, OH, OW = top.shape
    H, W = x.shape[2], x.shape[3]
    xf = x.reshape(-1)
    bf = bound.reshape(-1)
    tf, sf, mf = top.reshape(-1), switches.reshape(-1), marks.reshape(-1)
    n = 0
    for r in range(R):
        for c in range(C):
            base = (items[r] * C + c) * H * W
            bbase = (r * C + c) * H * W
            o = (r * C + c) * OH * OW
            for oy in range(OH):
                hs = oy * stride_h - pad_h
                y0, y1 = max(hs, 0), min(hs + KH, H)
                for ox in range(OW):
                    if tf[o] != 0:
                        s = sf[o]
                        m = xf[base + s]
                        bm = bf[bbase + s]
                        ws = ox * stride_w - pad_w
                        x0, x1 = max(ws, 0), min(ws + KW, W)
                        hit = False
                        for iy in range(y0, y1):
                            for ix in range(x0, x1):
                                j = iy * W + ix
                                if j != s:
                                    band = margin * (bm + bf[bbase + j])
                                    if band > 0 and m - xf[base + j] <= band:
                                        hit = True
                        if hit:
                            mf[o] = 1
                            n += 1
                    o += 1
    return n


@njit(cache=True)
def lrn_across_backward(x, y, top, size, alpha, beta, k):
    """Caffe's cross-channel LRN backward (CrossChannelBackward), float64 inside:
    bottom = top * scale^-beta - 2 alpha beta / size * x * sum_w(top * y / scale), where
    scale = k + alpha / size * sum_w(x^2) and sum_w runs over channels
    c - (size-1)/2 ... c + size/2 (zero beyond the ends)."""
    N, C, H, W = x.shape
    pre = (size - 1) // 2
    out = np.empty(x.shape, np.float32)
    scale = np.empty((C, H, W), np.float64)
    ratio = np.empty((C, H, W), np.float64)
    a = alpha / size
    for n in range(N):
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    s = 0.0
                    for q in range(max(c - pre, 0), min(c - pre + size, C)):
                        v = np.float64(x[n, q, i, j])
                        s += v * v
                    scale[c, i, j] = k + a * s
                    ratio[c, i, j] = np.float64(top[n, c, i, j]) * y[n, c, i, j] / scale[c, i, j]
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    r = 0.0
                    for q in range(max(c - pre, 0), min(c - pre + size, C)):
                        r += ratio[q, i, j]
                    sc = scale[c, i, j]
                    # the usual beta 0.75 as 1 / (sqrt(s) * sqrt(sqrt(s))): far cheaper than pow
                    power = 1.0 / (np.sqrt(sc) * np.sqrt(np.sqrt(sc))) if beta == 0.75 else sc ** -beta
                    out[n, c, i, j] = top[n, c, i, j] * power - 2.0 * a * beta * x[n, c, i, j] * r
    return out


@njit(cache=True)
def mark_near_decisions(x, threshold, signal, bound, margin, marks):
    """Mark (marks[s] = 1) and count the positions whose signal is not zero and whose x
    lies within margin * bound[s] of the threshold (bound > 0; equality included): an
    elementwise decision another rounding may take the other way. Flat arrays."""
    n = 0
    for s in range(x.shape[0]):
        if signal[s] != 0:
            band = margin * bound[s]
            if band > 0 and abs(x[s] - threshold) <= band:
                marks[s] = 1
                n += 1
    return n


@njit(cache=True)
def max_pool_switches(x, KH, KW, stride_h, stride_w, pad_h, pad_w, out):
    """Caffe's max-pool mask: out[p, oy, ox] = y * W + x of the first maximum, in
    row-major order, of the window clipped to the plane x[p] (PoolingLayer's MAX)."""
    P, H, W = x.shape
    OH, OW = out.shape[1], out.shape[2]
    for p in range(P):
        for oy in range(OH):
            hs = oy * stride_h - pad_h
            he = min(hs + KH, H)
            hs = max(hs, 0)
            for ox in range(OW):
                ws = ox * stride_w - pad_w
                we = min(ws + KW, W)
                ws = max(ws, 0)
                best = -np.inf
                arg = -1
                for iy in range(hs, he):
                    for ix in range(ws, we):
                        v = x[p, iy, ix]
                        if v > best:
                            best = v
                            arg = iy * W + ix
                out[p, oy, ox] = arg
