"""Elementwise neuron layers: ReLU, PReLU, ELU, Sigmoid, TanH, AbsVal, BNLL,
Power, Exp, Log, Threshold, Clip, Swish."""
from __future__ import annotations

import math

import numpy as np

from .base import Layer, count, register


class _Neuron(Layer):
    """Elementwise layers: the backward pass is top_diff * f'(x)."""

    def macs(self):
        return count(self.out_shapes[0])

    def derivative(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        raise self.error("has no backward rule")

    def backward(self, ctx, top_diffs):
        x = ctx.data(self.bottoms[0])
        y = ctx.data(self.tops[0])
        return [(top_diffs[0] * self.derivative(x, y)).astype(np.float32)]


@register("ReLU")
class ReLU(_Neuron):
    def backward_reads(self):
        return list(self.bottoms)

    def setup(self, lp):
        self.negative_slope = lp.relu_param.negative_slope

    def summary(self):
        return f"slope {self.negative_slope:g}" if self.negative_slope else ""

    def backward(self, ctx, top_diffs):
        """The three modes differ only here:
        deconvnet: relu(top)  (Zeiler & Fergus: rectify the signal from above);
        backprop:  top * (x > 0), with the negative slope below 0 (the true gradient);
        guided:    top * (x > 0) * (top > 0)  (Springenberg et al.)."""
        top = top_diffs[0]
        if ctx.mode == "deconvnet":
            return [np.maximum(top, 0)]
        x = ctx.data(self.bottoms[0])
        ctx.check_decision(self.name, x, 0.0, top, self.bottoms[0])
        if ctx.mode == "guided":
            return [np.where((x > 0) & (top > 0), top, 0).astype(np.float32)]
        if self.negative_slope:
            return [np.where(x > 0, top, top * np.float32(self.negative_slope)).astype(np.float32)]
        return [np.multiply(top, x > 0, dtype=np.float32)]

    def emit(self, e, ins, outs):
        if self.negative_slope:
            e.op("LeakyRelu", ins, outs[0], alpha=float(self.negative_slope))
        else:
            e.op("Relu", ins, outs[0])


@register("PReLU")
class PReLU(_Neuron):
    def backward_reads(self):
        return list(self.bottoms)

    def setup(self, lp):
        self.channel_shared = lp.prelu_param.channel_shared

    def param_shapes(self, in_shapes):
        s = in_shapes[0]
        if len(s) < 2 and not self.channel_shared:
            raise self.error(f"input {list(s)} has no channel axis")
        return [()] if self.channel_shared else [(s[1],)]

    def backward(self, ctx, top_diffs):
        s = self.in_shapes[0]
        x = ctx.data(self.bottoms[0])
        ctx.check_decision(self.name, x, 0.0, top_diffs[0], self.bottoms[0])
        a = self.blobs[0].reshape((1,) if self.channel_shared else (1, s[1]) + (1,) * (len(s) - 2))
        return [np.where(x > 0, top_diffs[0], top_diffs[0] * a).astype(np.float32)]

    def emit(self, e, ins, outs):
        s = self.in_shapes[0]
        slope = self.blobs[0].reshape((1,) if self.channel_shared else (s[1],) + (1,) * (len(s) - 2))
        e.op("PRelu", [ins[0], e.weight(self, 0, slope)], outs[0])


@register("ELU")
class ELU(_Neuron):
    def setup(self, lp):
        self.alpha = lp.elu_param.alpha

    def derivative(self, x, y):
        return np.where(x > 0, 1, y + self.alpha)

    def emit(self, e, ins, outs):
        e.op("Elu", ins, outs[0], alpha=float(self.alpha))


@register("Sigmoid")
class Sigmoid(_Neuron):
    def derivative(self, x, y):
        return y * (1 - y)

    def emit(self, e, ins, outs):
        e.op("Sigmoid", ins, outs[0])


@register("TanH")
class TanH(_Neuron):
    def derivative(self, x, y):
        return 1 - y * y

    def emit(self, e, ins, outs):
        e.op("Tanh", ins, outs[0])


@register("AbsVal")
class AbsVal(_Neuron):
    def derivative(self, x, y):
        return np.sign(x)

    def emit(self, e, ins, outs):
        e.op("Abs", ins, outs[0])


@register("BNLL")
class BNLL(_Neuron):
    """log(1 + exp(x)), computed stably as Caffe does."""

    def derivative(self, x, y):
        e = np.exp(np.minimum(x, 50))  # Caffe's kBNLL_THRESHOLD
        return e / (e + 1)

    def emit(self, e, ins, outs):
        e.op("Softplus", ins, outs[0])


def _affine(e, x, scale: float, shift: float) -> str:
    if scale != 1:
        x = e.op("Mul", [x, e.const(scale)])
    if shift != 0:
        x = e.op("Add", [x, e.const(shift)])
    return x


@register("Power")
class Power(_Neuron):
    """(shift + scale * x) ^ power."""

    def setup(self, lp):
        p = lp.power_param
        self.power, self.scale, self.shift = p.power, p.scale, p.shift

    def summary(self):
        return f"({self.shift:g} + {self.scale:g}x)^{self.power:g}"

    def derivative(self, x, y):
        if self.power * self.scale == 0:
            return np.zeros_like(x)
        return self.power * self.scale * (self.shift + self.scale * x.astype(np.float64)) ** (self.power - 1)

    def emit(self, e, ins, outs):
        if self.power * self.scale == 0:
            # Caffe fills a constant: 1 for power 0, else shift^power.
            value = 1.0 if self.power == 0 else self.shift ** self.power
            zero = e.op("Mul", [ins[0], e.const(0.0)])
            e.op("Add", [zero, e.const(value)], outs[0])
            return
        y = _affine(e, ins[0], self.scale, self.shift)
        if self.power == 1:
            e.op("Identity", [y], outs[0])
        elif self.power == 2:
            e.op("Mul", [y, y], outs[0])
        else:
            e.op("Pow", [y, e.const(self.power)], outs[0])


@register("Exp")
class Exp(_Neuron):
    """base ^ (shift + scale * x); base -1 means e."""

    def setup(self, lp):
        p = lp.exp_param
        self.base, self.scale, self.shift = p.base, p.scale, p.shift
        if self.base != -1 and self.base <= 0:
            raise self.error(f"base {self.base} must be positive (or -1 for e)")

    def derivative(self, x, y):
        return y * (self.scale * (1.0 if self.base == -1 else math.log(self.base)))

    def emit(self, e, ins, outs):
        ln_base = 1.0 if self.base == -1 else math.log(self.base)
        y = _affine(e, ins[0], self.scale * ln_base, self.shift * ln_base)
        e.op("Exp", [y], outs[0])


@register("Log")
class Log(_Neuron):
    """log_base(shift + scale * x); base -1 means e."""

    def setup(self, lp):
        p = lp.log_param
        self.base, self.scale, self.shift = p.base, p.scale, p.shift
        if self.base != -1 and self.base <= 0:
            raise self.error(f"base {self.base} must be positive (or -1 for e)")

    def derivative(self, x, y):
        ln_base = 1.0 if self.base == -1 else math.log(self.base)
        return self.scale / ((self.shift + self.scale * x) * ln_base)

    def emit(self, e, ins, outs):
        y = e.op("Log", [_affine(e, ins[0], self.scale, self.shift)], outs[0] if self.base == -1 else None)
        if self.base != -1:
            e.op("Mul", [y, e.const(1.0 / math.log(self.base))], outs[0])


@register("Threshold")
class Threshold(_Neuron):
    """1 where x > threshold, else 0."""

    def setup(self, lp):
        self.threshold = lp.threshold_param.threshold

    def derivative(self, x, y):
        return np.zeros_like(x)  # a step: Caffe defines no gradient

    def emit(self, e, ins, outs):
        e.op("Cast", [e.op("Greater", [ins[0], e.const(self.threshold)])], outs[0], to=1)


@register("Clip")
class Clip(_Neuron):
    def backward_reads(self):
        return list(self.bottoms)

    def setup(self, lp):
        self.min, self.max = lp.clip_param.min, lp.clip_param.max

    def derivative(self, x, y):
        return (x >= self.min) & (x <= self.max)

    def backward(self, ctx, top_diffs):
        x = ctx.data(self.bottoms[0])
        for bound in (self.min, self.max):
            ctx.check_decision(self.name, x, bound, top_diffs[0], self.bottoms[0])
        return [(top_diffs[0] * self.derivative(x, None)).astype(np.float32)]

    def emit(self, e, ins, outs):
        e.op("Clip", [ins[0], e.const(self.min), e.const(self.max)], outs[0])


@register("Swish")
class Swish(_Neuron):
    """x * sigmoid(beta * x)."""

    def setup(self, lp):
        self.beta = lp.swish_param.beta

    def derivative(self, x, y):
        sig = 1 / (1 + np.exp(-self.beta * x))
        return self.beta * y + sig * (1 - self.beta * y)

    def emit(self, e, ins, outs):
        s = e.op("Sigmoid", [_affine(e, ins[0], self.beta, 0.0)])
        e.op("Mul", [ins[0], s], outs[0])
