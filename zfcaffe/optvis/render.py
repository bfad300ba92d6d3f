"""The one render loop: make the input from the parameters, transform it at random,
run the recording forward pass, evaluate the objective, run the engine's backward
(`backprop`) from the objective's diffs, take the gradient back through the
transform and the parameterisation, and step (gradient ascent)."""
from __future__ import annotations

import collections
import dataclasses

import numpy as np


@dataclasses.dataclass
class Render:
    image: np.ndarray                 # the final input (C, H, W), untransformed
    values: list[float]               # the objective at every step
    snapshots: dict[int, np.ndarray]  # step -> input, at the requested thresholds


class Adam:
    """Adam for ascent (Kingma & Ba), on any array."""

    def __init__(self, lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
        self.lr, self.b1, self.b2, self.eps = lr, b1, b2, eps
        self.m = self.v = None
        self.t = 0

    def step(self, theta: np.ndarray, grad: np.ndarray) -> None:
        if self.m is None:
            self.m, self.v = np.zeros_like(grad), np.zeros_like(grad)
        self.t += 1
        self.m = self.b1 * self.m + (1 - self.b1) * grad
        self.v = self.b2 * self.v + (1 - self.b2) * grad * grad
        m = self.m / (1 - self.b1 ** self.t)
        v = self.v / (1 - self.b2 ** self.t)
        theta += (self.lr * m / (np.sqrt(v) + self.eps)).astype(theta.dtype)


class NormalizedAscent:
    """DeepDream's step: the gradient divided by its mean magnitude, times lr."""

    def __init__(self, lr: float):
        self.lr = lr

    def step(self, theta: np.ndarray, grad: np.ndarray) -> None:
        theta += (self.lr / max(float(np.abs(grad).mean()), 1e-12) * grad).astype(theta.dtype)


def trunk(net, keys):
    """The net cut after the last layer that makes one of `keys`: every step's forward
    and backward then run only up to the target (an early layer's step is cheap). The
    cut net is loaded anew with the same options and shares the net's weight arrays
    (net surgery included); the net itself where nothing follows the target."""
    layers = net.graph.layers
    order = {k: i for i, l in enumerate(layers) for k in l.tops}
    needed = [order[k] for k in keys if k in order and k not in net.graph.inputs]
    if not needed or max(needed) >= len(layers) - 1:
        return net
    from ..net import Net
    cut = Net(net.graph.path, net.graph.weights_path, **{**net.options, "input_shapes": dict(net.graph.inputs),
                                                         "stop_before": layers[max(needed) + 1].name})
    for layer in cut.graph.layers:
        if layer.blobs:
            layer.blobs = net.graph.layer(layer.name).blobs
    return cut


def gradient(net, objective, x: np.ndarray) -> tuple[float, np.ndarray]:
    """The objective and its gradient with respect to the input x (C, H, W), through a
    recording forward pass and the engine's backward (true gradients)."""
    input_key = net.inputs[0]
    net.forward(**{input_key: x[None]})
    values = collections.ChainMap({input_key: x[None]}, net.layer_outputs)
    value, diffs = objective(values)
    direct = diffs.pop(input_key, None)
    grad = np.zeros((1,) + x.shape, np.float32) if direct is None else np.asarray(direct, np.float32)
    if diffs:
        grad = grad + net.backward(diffs, "backprop", flag_rounding=False).get(input_key, 0)
    return value, grad[0]


def step(net, objective, param, transforms, optimizer, rng) -> float:
    """One step: the input from the parameters, transformed at random, the objective
    and its gradient, taken back through the transforms and the parameterisation, and
    the optimizer's step (ascent) on the parameters. Returns the objective."""
    x = param.image()
    adjoints = []
    for t in transforms:
        x, adjoint = t(x, rng)
        adjoints.append(adjoint)
    value, grad = gradient(net, objective, np.ascontiguousarray(x, np.float32))
    for adjoint in reversed(adjoints):
        grad = adjoint(grad)
    optimizer.step(param.theta, param.adjoint(grad))
    param.project()
    return value


def render(net, objective, param, transforms=(), steps: int = 100, optimizer=None, regularize=None,
           thresholds=(), seed: int = 0, progress: bool = False, desc: str = "render") -> Render:
    """Maximise `objective` over `param` for `steps` steps, on the net cut after the
    layers the objective reads (trunk). regularize(step, theta), if given, runs after
    each step (DVT's blur, clipping of small values)."""
    from ..analyses.common import progress as progress_bar
    rng = np.random.default_rng(seed)
    optimizer = optimizer or Adam(0.05)
    net = trunk(net, objective.keys)
    net.set_batch(1)
    values, snapshots = [], {}
    bar = progress_bar(steps, desc, progress)
    for i in range(1, steps + 1):
        values.append(step(net, objective, param, transforms, optimizer, rng))
        if regularize is not None:
            regularize(i, param.theta)
        if i in thresholds:
            snapshots[i] = param.image().copy()
        bar.update()
    bar.close()
    return Render(param.image().copy(), values, snapshots)
