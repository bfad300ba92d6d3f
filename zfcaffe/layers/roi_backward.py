"""Backward rules of the ROI layers (rcnn.py's ROIPooling and PSROIPooling), in NumPy.

The signal above a ROI layer has one row per projection, each belonging to a ROI (a
row of the `rois` input); below it, each row belongs to that ROI's image. The engine
keeps one `items` array per pass, so the ROI layer re-bases it (`rebase_items`) once
its signal has gone down to the feature map: every layer after it in the backward
pass reads the image rows. The ROI of each projection stays in `ctx.roi_items` for a
second ROI layer of the same pass (R-FCN's class and box branches).

ROIPooling: rbgirshick/caffe-fast-rcnn@4115385d src/caffe/layers/roi_pooling_layer.cu
(ROIPoolBackward; the CPU backward is NOT_IMPLEMENTED in the fork). PSROIPooling:
Microsoft/caffe@1a2be8ec src/caffe/layers/psroi_pooling_layer.cu
(PSROIPoolingBackwardAtomic).
"""
from __future__ import annotations

import numpy as np

F32 = np.float32
#: without zfcaffe/rounding.py's bounds: a bin whose runner-up is this close (relative)
#: to its maximum is a near-tie (the max-pool rule of the BVLC layers)
NEAR_TIE = 1e-6


def c_round(v: np.ndarray) -> np.ndarray:
    """C round() of float32 values (halves away from zero), exact in float64."""
    d = np.asarray(v, np.float64)
    return np.sign(d) * np.floor(np.abs(d) + 0.5)


def roi_items(ctx) -> np.ndarray:
    """The ROI (row of the rois input) each projection row belongs to."""
    rows = getattr(ctx, "roi_items", None)
    return ctx.items if rows is None else rows


def rebase_items(ctx, image_rows: np.ndarray) -> None:
    """From here down the pass, projection row r belongs to image image_rows[r]."""
    if getattr(ctx, "roi_items", None) is None:
        ctx.roi_items = np.asarray(ctx.items, np.int64).copy()
    ctx.items = np.asarray(image_rows, np.int64)
    # the context's per-key row cache and its whole-batch shortcut were for the ROI rows
    if isinstance(getattr(ctx, "_cache", None), dict):
        ctx._cache.clear()
    if hasattr(ctx, "_whole"):
        ctx._whole = False


def roi_pool_bins(rois: np.ndarray, scale: float, pooled: tuple[int, int], h: int, w: int):
    """roi_pooling_layer.cpp's box and bins, in its float32 arithmetic: corners
    (x1, y1, x2, y2) [R] each (C round of the float32 product), bin sizes (bin_h, bin_w)
    [R] float32, and the clipped bounds hs, he [R, PH], ws, we [R, PW]."""
    sc = F32(scale)
    corners = c_round(rois[:, 1:5].astype(F32) * sc).astype(np.int64)
    x1, y1, x2, y2 = corners.T
    bins, bounds = [], []
    for lo, hi, n, size in ((y1, y2, pooled[0], h), (x1, x2, pooled[1], w)):
        size_f = (np.maximum(hi - lo + 1, 1).astype(F32) / F32(n)).astype(F32)
        p = np.arange(n, dtype=F32)
        start = np.floor(p[None] * size_f[:, None]).astype(np.int64) + lo[:, None]
        end = np.ceil((p + 1)[None] * size_f[:, None]).astype(np.int64) + lo[:, None]
        bins.append(size_f)
        bounds += [np.clip(start, 0, size), np.clip(end, 0, size)]
    return (x1, y1, x2, y2), bins, bounds


def roi_pool_backward(layer, ctx, top: np.ndarray) -> np.ndarray:
    """ROIPoolBackward: each input element gets the sum of the top diffs of the bins whose
    argmax it is (argmax as the forward takes it: the first maximum, strict >), only for
    ROIs whose rounded, unclipped box contains it, and only for bins in the kernel's
    float32 "feasible set" floor((h - y1) / bin_h) <= ph < ceil((h - y1 + 1) / bin_h).
    A degenerate ROI (x2 < x1 or y2 < y1) passes nothing back. Near-ties: a bin whose
    runner-up may win under another rounding of the forward pass, noted as
    (roi, c, ph, pw)."""
    x = ctx.full(layer.bottoms[0])
    rois_all = np.asarray(ctx.full(layer.bottoms[1]), F32).reshape(-1, 5)
    rows = roi_items(ctx)
    rois = rois_all[rows]
    _, c, h, w = x.shape
    (x1, y1, x2, y2), (bin_h, bin_w), (hs, he, ws, we) = roi_pool_bins(rois, layer.spatial_scale, layer.pooled, h, w)
    images = rois[:, 0].astype(np.int64)          # int(roi[0]): truncation
    rebase_items(ctx, images)
    bound = None
    if hasattr(ctx, "bound"):                      # zfcaffe/rounding.py's bounds, rows as ctx.items now
        from ..rounding import MARGIN
        bound = np.asarray(ctx.bound(layer.bottoms[0]), F32)
    out = np.zeros((len(rows), c, h, w), F32)
    channels = np.arange(c)
    ties = []
    for r in range(len(rows)):
        if x2[r] < x1[r] or y2[r] < y1[r]:
            continue
        sig = top[r]
        for ph, pw in zip(*np.nonzero(np.any(sig != 0, axis=0))):
            h0, h1, w0, w1 = hs[r, ph], he[r, ph], ws[r, pw], we[r, pw]
            if h1 <= h0 or w1 <= w0:
                continue                           # an empty bin: argmax -1, no gradient
            region = x[images[r], :, h0:h1, w0:w1].reshape(c, -1)
            arg = region.argmax(axis=1)            # NumPy's first maximum = the strict > loop's
            yy, xx = h0 + arg // (w1 - w0), w0 + arg % (w1 - w0)
            # the kernel's feasible bins of each element, in its float32 division
            ph0 = np.floor((yy - y1[r]).astype(F32) / bin_h[r]).astype(np.int64)
            ph1 = np.ceil((yy - y1[r] + 1).astype(F32) / bin_h[r]).astype(np.int64)
            pw0 = np.floor((xx - x1[r]).astype(F32) / bin_w[r]).astype(np.int64)
            pw1 = np.ceil((xx - x1[r] + 1).astype(F32) / bin_w[r]).astype(np.int64)
            ph_, pw_ = layer.pooled
            ok = ((np.clip(ph0, 0, ph_) <= ph) & (ph < np.clip(ph1, 0, ph_))
                  & (np.clip(pw0, 0, pw_) <= pw) & (pw < np.clip(pw1, 0, pw_)))
            vals = np.where(ok, sig[:, ph, pw], F32(0))
            out[r, channels, yy, xx] += vals       # one element per channel: no repeats
            live = vals != 0
            if not live.any() or region.shape[1] < 2:
                continue
            best = region[channels, arg]
            gap = best[:, None] - region
            others = np.ones(region.shape, bool)
            others[channels, arg] = False
            if bound is not None:
                b = bound[r, :, h0:h1, w0:w1].reshape(c, -1)
                band = MARGIN * (b[channels, arg][:, None] + b)
                near = others & (band > 0) & (gap <= band)
            else:
                near = others & (gap <= NEAR_TIE * np.abs(best)[:, None]) & ~((best[:, None] == 0) & (region == 0))
            for ch in np.nonzero(near.any(axis=1) & live)[0]:
                ties.append((int(rows[r]), int(ch), int(ph), int(pw)))
    if ties:
        ctx.note_near_ties(layer.name, ties)
    return out


def psroi_bins(rois: np.ndarray, scale: float, group: int, h: int, w: int):
    """psroi_pooling_layer.cu's clipped bins hs, he, ws, we [R, G] (float32 box, the
    multiply-add p * bin + start rounded once, as nvcc's FMA contraction)."""
    sc = F32(scale)
    rounded = c_round(rois[:, 1:5].astype(F32))
    bounds = []
    for lo_col, hi_col, size in ((1, 3, h), (0, 2, w)):
        lo = (rounded[:, lo_col].astype(F32) * sc).astype(F32)
        hi = ((rounded[:, hi_col] + 1).astype(F32) * sc).astype(F32)
        extent = np.maximum(hi - lo, F32(0.1)).astype(F32)
        size_f = (extent / F32(group)).astype(F32).astype(np.float64)
        p = np.arange(group, dtype=np.float64)
        start = np.floor((p[None] * size_f[:, None] + lo[:, None].astype(np.float64)).astype(F32))
        end = np.ceil(((p + 1)[None] * size_f[:, None] + lo[:, None].astype(np.float64)).astype(F32))
        bounds += [np.clip(start.astype(np.int64), 0, size), np.clip(end.astype(np.int64), 0, size)]
    return bounds


def psroi_pool_backward(layer, ctx, top: np.ndarray) -> np.ndarray:
    """PSROIPoolingBackwardAtomic: each bin's diff / its area, to every cell of the bin in
    its position-sensitive channel (d * G + ph) * G + pw; an empty bin passes nothing."""
    rois_all = np.asarray(ctx.full(layer.bottoms[1]), F32).reshape(-1, 5)
    rows = roi_items(ctx)
    rois = rois_all[rows]
    _, c, h, w = layer.in_shapes[0]
    g, dim = layer.group_size, layer.output_dim
    hs, he, ws, we = psroi_bins(rois, layer.spatial_scale, g, h, w)
    rebase_items(ctx, rois[:, 0].astype(np.int64))
    out = np.zeros((len(rows), c, h, w), F32)
    d = np.arange(dim)
    for r in range(len(rows)):
        for ph in range(g):
            h0, h1 = hs[r, ph], he[r, ph]
            for pw in range(g):
                w0, w1 = ws[r, pw], we[r, pw]
                if h1 <= h0 or w1 <= w0:
                    continue
                vals = top[r, :, ph, pw]
                if not vals.any():
                    continue
                diff = (vals / F32((h1 - h0) * (w1 - w0))).astype(F32)
                out[r, (d * g + ph) * g + pw, h0:h1, w0:w1] += diff[:, None, None]
    return out

