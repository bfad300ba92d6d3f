"""Plain NumPy (float64) references of Caffe's layer semantics, written from Caffe's
CPU loops. Slow and obvious on purpose: they are what the fast paths are held to."""
from __future__ import annotations

import math

import numpy as np


def conv(x, w, b=None, stride=(1, 1), pad=(0, 0), dil=(1, 1), group=1):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    oh = (h + 2 * pad[0] - (dil[0] * (kh - 1) + 1)) // stride[0] + 1
    ow = (wd + 2 * pad[1] - (dil[1] * (kw - 1) + 1)) // stride[1] + 1
    y = np.zeros((n, o, oh, ow))
    og = o // group
    for g in range(group):
        xs = xp[:, g * cg:(g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dil[0]: i * dil[0] + stride[0] * (oh - 1) + 1: stride[0],
                           j * dil[1]: j * dil[1] + stride[1] * (ow - 1) + 1: stride[1]]
                y[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, w[g * og:(g + 1) * og, :, i, j])
    if b is not None:
        y += b.reshape(1, -1, 1, 1)
    return y


def deconv(x, w, b=None, stride=(1, 1), pad=(0, 0), dil=(1, 1), group=1):
    """Caffe's Deconvolution: the adjoint of conv (col2im of W^T x)."""
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    oh = stride[0] * (h - 1) + dil[0] * (kh - 1) + 1 - 2 * pad[0]
    ow = stride[1] * (wd - 1) + dil[1] * (kw - 1) + 1 - 2 * pad[1]
    full = np.zeros((n, og * group, oh + 2 * pad[0], ow + 2 * pad[1]))
    cg = c // group
    for g in range(group):
        xs = x[:, g * cg:(g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                contrib = np.einsum("nchw,co->nohw", xs, w[g * cg:(g + 1) * cg, :, i, j])
                full[:, g * og:(g + 1) * og, i * dil[0]: i * dil[0] + stride[0] * (h - 1) + 1: stride[0],
                     j * dil[1]: j * dil[1] + stride[1] * (wd - 1) + 1: stride[1]] += contrib
    y = full[:, :, pad[0]:pad[0] + oh, pad[1]:pad[1] + ow]
    if b is not None:
        y = y + b.reshape(1, -1, 1, 1)
    return y


def pooled(size, k, s, p):
    out = int(math.ceil((size + 2 * p - k) / s)) + 1
    if p and (out - 1) * s >= size + p:
        out -= 1
    return out


def pool(x, k, s, p, method="MAX", any_pad=None):
    """Caffe's PoolingLayer::Forward_cpu; returns (top, mask) for MAX."""
    n, c, h, w = x.shape
    any_pad = any(p) if any_pad is None else any_pad
    oh = int(math.ceil((h + 2 * p[0] - k[0]) / s[0])) + 1
    ow = int(math.ceil((w + 2 * p[1] - k[1]) / s[1])) + 1
    if any_pad:
        if (oh - 1) * s[0] >= h + p[0]:
            oh -= 1
        if (ow - 1) * s[1] >= w + p[1]:
            ow -= 1
    y = np.zeros((n, c, oh, ow))
    mask = np.full((n, c, oh, ow), -1, np.int64)
    for ph in range(oh):
        for pw in range(ow):
            hs, ws = ph * s[0] - p[0], pw * s[1] - p[1]
            if method == "MAX":
                he, we = min(hs + k[0], h), min(ws + k[1], w)
                hs, ws = max(hs, 0), max(ws, 0)
                win = x[:, :, hs:he, ws:we].reshape(n, c, -1)
                arg = win.argmax(axis=2)  # first maximum, row-major
                y[:, :, ph, pw] = win.max(axis=2)
                ww = we - ws
                mask[:, :, ph, pw] = (hs + arg // ww) * w + ws + arg % ww
            else:
                he, we = min(hs + k[0], h + p[0]), min(ws + k[1], w + p[1])
                size = (he - hs) * (we - ws)
                hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
                y[:, :, ph, pw] = x[:, :, hs:he, ws:we].sum(axis=(2, 3)) / size
    return y, mask


def lrn_across(x, size, alpha, beta, k):
    n, c, h, w = x.shape
    sq = np.pad(x ** 2, ((0, 0), ((size - 1) // 2, size // 2), (0, 0), (0, 0)))
    scale = k + alpha / size * np.stack([sq[:, i:i + size].sum(axis=1) for i in range(c)], axis=1)
    return x * scale ** -beta


def lrn_within(x, size, alpha, beta):
    pad = (size - 1) // 2
    avg, _ = pool(x ** 2, (size, size), (1, 1), (pad, pad), "AVE")
    return x * (1 + alpha * avg) ** -beta


def softmax(x, axis=1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)
