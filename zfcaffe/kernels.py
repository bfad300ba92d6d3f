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
def mark_near_ties(x, items, top, switches, KH, KW, stride_h, stride_w, pad_h, pad_w, rel, marks):
    """Mark (marks[r, c, oy, ox] = 1) and count the windows that carry signal (top != 0)
    whose runner-up differs from their maximum by no more than rel * |maximum| (exact
    ties excluded: they go to the first maximum everywhere). There the switch was
    decided by float rounding. x is the whole forward input (N, C, H, W); row r of
    top/switches/marks belongs to image items[r]."""
    R, C, OH, OW = top.shape
    H, W = x.shape[2], x.shape[3]
    n = 0
    for r in range(R):
        for c in range(C):
            plane = x[items[r], c]
            for oy in range(OH):
                hs = oy * stride_h - pad_h
                for ox in range(OW):
                    if top[r, c, oy, ox] == 0:
                        continue
                    s = switches[r, c, oy, ox]
                    m = plane[s // W, s % W]
                    if m == 0:  # rel * |m| is 0: only an exact tie could be that close
                        continue
                    ws = ox * stride_w - pad_w
                    second = -np.inf
                    for iy in range(max(hs, 0), min(hs + KH, H)):
                        for ix in range(max(ws, 0), min(ws + KW, W)):
                            if iy * W + ix != s and plane[iy, ix] > second:
                                second = plane[iy, ix]
                    gap = m - second
                    if gap > 0 and gap <= rel * abs(m):
                        marks[r, c, oy, ox] = 1
                        n += 1
    return n
