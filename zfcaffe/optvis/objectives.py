"""Objectives: functions of the recorded values (blob keys, the input included) to
maximise, each returning its value and its diffs by key; composable with + and *
(a number). Every one is the sum over the batch."""
from __future__ import annotations

import numpy as np


class Objective:
    """fn(values) -> (value, {key: diff}); `keys` are the blobs it reads."""

    def __init__(self, fn, keys: tuple[str, ...], name: str):
        self.fn, self.keys, self.name = fn, tuple(keys), name

    def __call__(self, values: dict[str, np.ndarray]) -> tuple[float, dict[str, np.ndarray]]:
        return self.fn(values)

    def __add__(self, other: "Objective") -> "Objective":
        def fn(values):
            va, da = self(values)
            vb, db = other(values)
            diffs = dict(da)
            for k, d in db.items():
                diffs[k] = diffs[k] + d if k in diffs else d
            return va + vb, diffs
        return Objective(fn, self.keys + other.keys, f"{self.name} + {other.name}")

    def __mul__(self, weight: float) -> "Objective":
        w = float(weight)

        def fn(values):
            v, d = self(values)
            return w * v, {k: (w * x).astype(np.float32) for k, x in d.items()}
        return Objective(fn, self.keys, f"{w:g} * {self.name}")

    __rmul__ = __mul__

    def __neg__(self) -> "Objective":
        return self * -1.0

    def __sub__(self, other: "Objective") -> "Objective":
        return self + (-other)


def _one_hot(shape, index) -> np.ndarray:
    d = np.zeros(shape, np.float32)
    d[index] = 1
    return d


def neuron(key: str, channel: int, y: int | None = None, x: int | None = None) -> Objective:
    """One unit: (c, y, x) of a spatial blob (the centre when y, x are None), or c of a vector."""
    def fn(values):
        a = values[key]
        index = (slice(None), channel)
        if a.ndim == 4:
            index += (a.shape[2] // 2 if y is None else y, a.shape[3] // 2 if x is None else x)
        d = np.zeros(a.shape, np.float32)
        d[index] = 1
        return float(a[index].sum()), {key: d}
    return Objective(fn, (key,), f"neuron {key}[{channel}]")


def channel(key: str, c: int) -> Objective:
    """The mean activation of one feature map (Lucid's channel objective)."""
    def fn(values):
        a = values[key]
        plane = a[:, c]
        d = np.zeros(a.shape, np.float32)
        d[:, c] = 1.0 / plane[0].size
        return float(plane.mean(axis=tuple(range(1, plane.ndim))).sum()), {key: d}
    return Objective(fn, (key,), f"channel {key}[{c}]")


def layer_l2(key: str) -> Objective:
    """DeepDream: half the squared activations of a layer; its diff is the activation."""
    def fn(values):
        a = values[key]
        return float(0.5 * np.square(a, dtype=np.float64).sum()), {key: np.asarray(a, np.float32).copy()}
    return Objective(fn, (key,), f"L2 of {key}")


def class_logit(key: str, label: int) -> Objective:
    """A class score before the softmax (Simonyan et al.: the softmax's normalisation
    would also raise the score by lowering the others)."""
    def fn(values):
        a = values[key].reshape(len(values[key]), -1)
        return float(a[:, label].sum()), {key: _one_hot(values[key].shape, (slice(None), label))}
    return Objective(fn, (key,), f"class {label} score ({key})")


def log_probability(key: str, label: int, softmaxed: bool) -> Objective:
    """log p(label) from scores (softmaxed here) or probabilities."""
    def fn(values):
        v = values[key].reshape(len(values[key]), -1).astype(np.float64)
        if softmaxed:
            p = np.exp(v - v.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            d = -p
            d[:, label] += 1
        else:
            p = v
            d = np.zeros_like(v)
            d[:, label] = 1 / np.maximum(p[:, label], 1e-30)
        return float(np.log(np.maximum(p[:, label], 1e-30)).sum()), {key: d.reshape(values[key].shape)
                                                                      .astype(np.float32)}
    return Objective(fn, (key,), f"log p(class {label})")


def feature_match(key: str, target: np.ndarray) -> Objective:
    """Minus the squared distance to a target code, relative to the code's norm
    (Mahendran & Vedaldi's data term)."""
    target = np.asarray(target, np.float64)
    norm = max(float(np.square(target).sum()), 1e-30)

    def fn(values):
        diff = values[key].astype(np.float64) - target
        return -float(np.square(diff).sum()) / norm, {key: (-2 * diff / norm).astype(np.float32)}
    return Objective(fn, (key,), f"match {key}")


def total_variation(input_key: str, beta: float = 2.0) -> Objective:
    """Minus the total variation sum((dx^2 + dy^2)^(beta/2)) of the input (a prior
    for natural images), with its diff."""
    def fn(values):
        x = values[input_key].astype(np.float64)
        dx = np.zeros_like(x)
        dy = np.zeros_like(x)
        dx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
        dy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
        sq = dx * dx + dy * dy
        value = float(np.power(sq + 1e-8, beta / 2).sum())
        w = beta * np.power(sq + 1e-8, beta / 2 - 1)        # d/d(dx) of (dx^2+dy^2)^(beta/2) is w * dx
        g = np.zeros_like(x)
        g[..., :, 1:] += w[..., :, :-1] * dx[..., :, :-1]
        g[..., :, :-1] -= w[..., :, :-1] * dx[..., :, :-1]
        g[..., 1:, :] += w[..., :-1, :] * dy[..., :-1, :]
        g[..., :-1, :] -= w[..., :-1, :] * dy[..., :-1, :]
        return -value, {input_key: (-g).astype(np.float32)}
    return Objective(fn, (input_key,), "total variation")


def lp_norm(input_key: str, p: float = 2.0) -> Objective:
    """Minus sum |x|^p of the input: Simonyan's L2 decay (p = 2), Mahendran's alpha-norm."""
    def fn(values):
        x = values[input_key].astype(np.float64)
        return -float(np.power(np.abs(x), p).sum()), \
            {input_key: (-p * np.power(np.abs(x), p - 1) * np.sign(x)).astype(np.float32)}
    return Objective(fn, (input_key,), f"L{p:g} norm")
