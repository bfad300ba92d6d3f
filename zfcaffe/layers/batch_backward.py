"""The backward rule shared by the forks' batch-statistics BN layers (SegNet's and ENet's
LEARN mode, PSPNet's non-frozen BN): dx = inv_std * (g - mean(g) - x_hat * mean(x_hat * g)),
g = gamma * dy, the means over the batch's N items and H, W of each channel.

The means run over the whole batch, so the items are coupled: a seed in item 0 gives
gradients in item 1. The engine's rows are projections (`ctx.items`: the forward row of
each), so such a layer needs every projection to span the whole batch: with a batch of
one, each row is its own projection; with N > 1, the rows must be whole batches in
order (items 0..N-1, repeated per projection), as `net.backward({key: diff})` with one
row per image gives them. Anything else is refused in one line: the part of the
projection in the other images has nowhere to go.
"""
from __future__ import annotations

import numpy as np


def batch_span(layer, ctx) -> int:
    """How many rows each projection spans at this layer: 1 (a batch of one) or N."""
    n = ctx.full(layer.bottoms[0]).shape[0]
    items = np.asarray(ctx.items, np.int64)
    if n == 1 and np.all(items == 0):
        return 1
    if len(items) % n == 0 and np.array_equal(items, np.tile(np.arange(n), len(items) // n)):
        return n
    raise layer.error(f"its backward pass couples the {n} images of the batch (batch statistics), so a "
                      f"projection must span the whole batch; expected rows for images 0..{n - 1} in order "
                      f"(net.backward({{key: diff}}, one row per image) or a batch of 1), got rows for images "
                      f"{items.tolist()[:8]}{' ...' if len(items) > 8 else ''}")


def batch_stat_backward(dy: np.ndarray, x_hat: np.ndarray, gamma: np.ndarray, inv_std: np.ndarray,
                        span: int) -> np.ndarray:
    """dx for rows grouped in projections of `span` rows; gamma and inv_std per channel (C,).
    float64 inside, float32 out."""
    rows, c = dy.shape[:2]
    shape = (rows // span, span) + dy.shape[1:]
    per_channel = (c,) + (1,) * (dy.ndim - 2)
    g = dy.astype(np.float64).reshape(shape) * np.asarray(gamma, np.float64).reshape(per_channel)
    xh = np.asarray(x_hat, np.float64).reshape(shape)
    axes = (1,) + tuple(range(3, len(shape)))          # the batch and the spatial axes, per channel
    mean_g = g.mean(axis=axes, keepdims=True)
    mean_xg = (xh * g).mean(axis=axes, keepdims=True)
    dx = np.asarray(inv_std, np.float64).reshape(per_channel) * (g - mean_g - xh * mean_xg)
    return dx.reshape(dy.shape).astype(np.float32)
