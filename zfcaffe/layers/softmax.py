"""Softmax, ArgMax and Reduction: layers that collapse an axis."""
from __future__ import annotations

import numpy as np

from .. import caffe_pb2
from .base import WHOLE, Layer, canonical_axis, count, register

R = caffe_pb2.ReductionParameter


@register("Softmax")
class Softmax(Layer):
    def backward_reads(self):
        return list(self.tops)

    def setup(self, lp):
        self.axis_param = lp.softmax_param.axis

    def output_shapes(self, in_shapes):
        self.axis = canonical_axis(self.axis_param, len(in_shapes[0]), self)
        return [tuple(in_shapes[0])]

    def macs(self):
        return 3 * count(self.out_shapes[0])

    def emit(self, e, ins, outs):
        e.op("Softmax", ins, outs[0], axis=self.axis)

    def backward(self, ctx, top_diffs):
        top, y = top_diffs[0], ctx.data(self.tops[0])
        return [((top - (top * y).sum(axis=self.axis, keepdims=True)) * y).astype(np.float32)]


@register("ArgMax")
class ArgMax(Layer):
    """Indices (and with out_max_val the values) of the top_k maxima, as floats."""

    def setup(self, lp):
        p = lp.argmax_param
        self.out_max_val, self.top_k = p.out_max_val, p.top_k
        self.axis_param = p.axis if p.HasField("axis") else None

    def output_shapes(self, in_shapes):
        s = in_shapes[0]
        if self.axis_param is None:
            if self.top_k > count(s[1:]):
                raise self.error(f"top_k {self.top_k} exceeds {count(s[1:])} values per item")
            return [(s[0], 2 if self.out_max_val else 1, self.top_k)]
        self.axis = canonical_axis(self.axis_param, len(s), self)
        out = list(s)
        out[self.axis] = self.top_k
        return [tuple(out)]

    def geometry(self, in_geoms):
        return [None]

    def backward(self, ctx, top_diffs):
        return [None]  # Caffe defines no gradient for ArgMax

    def emit(self, e, ins, outs):
        s = self.in_shapes[0]
        x, axis = ins[0], self.axis_param
        if axis is None:
            x, axis = e.op("Reshape", [x, e.ints([s[0], count(s[1:])])]), 1
        else:
            axis = self.axis
        vals, idx = e.node("TopK", [x, e.ints([self.top_k])], 2, axis=axis, largest=1, sorted=1)
        fidx = e.op("Cast", [idx], to=1)
        if self.axis_param is None:
            parts = [fidx, vals] if self.out_max_val else [fidx]
            parts = [e.op("Unsqueeze", [p, e.ints([1])]) for p in parts]
            e.op("Concat", parts, outs[0], axis=1)
        else:
            e.op("Identity", [vals if self.out_max_val else fidx], outs[0])


@register("Reduction")
class Reduction(Layer):
    """SUM / ASUM / SUMSQ / MEAN over all axes from `axis` on, times coeff."""

    def backward_reads(self):
        return list(self.bottoms)

    def setup(self, lp):
        p = lp.reduction_param
        self.operation, self.axis_param, self.coeff = p.operation, p.axis, p.coeff

    def output_shapes(self, in_shapes):
        s = in_shapes[0]
        self.axis = canonical_axis(self.axis_param, len(s), self) if s else 0
        return [tuple(s[:self.axis])]

    def geometry(self, in_geoms):
        return [WHOLE if in_geoms[0] is not None and self.axis < 2 else in_geoms[0]]

    def macs(self):
        return count(self.in_shapes[0])

    def summary(self):
        return f"{R.ReductionOp.Name(self.operation)} from axis {self.axis_param}"

    def backward(self, ctx, top_diffs):
        if self.axis == 0:
            raise self.error("backward through a reduction over the batch axis is not supported")
        top = top_diffs[0]
        shape = top.shape + (1,) * (len(self.in_shapes[0]) - self.axis)
        t = (top * np.float32(self.coeff)).reshape(shape)
        x = ctx.data(self.bottoms[0])
        if self.operation == R.SUM:
            d = np.broadcast_to(t, x.shape)
        elif self.operation == R.ASUM:
            d = t * np.sign(x)
        elif self.operation == R.SUMSQ:
            d = 2 * t * x
        else:
            d = np.broadcast_to(t / count(self.in_shapes[0][self.axis:]), x.shape)
        return [np.ascontiguousarray(d, dtype=np.float32)]

    def emit(self, e, ins, outs):
        s = self.in_shapes[0]
        rows = count(s[:self.axis])
        x = e.op("Reshape", [ins[0], e.ints([rows, -1])])
        op = {R.SUM: "ReduceSum", R.ASUM: "ReduceL1", R.SUMSQ: "ReduceSumSquare",
              R.MEAN: "ReduceMean"}[self.operation]
        y = e.op(op, [x, e.ints([1])], keepdims=0)
        if self.coeff != 1:
            y = e.op("Mul", [y, e.const(self.coeff)])
        e.op("Reshape", [y, e.ints(self.out_shapes[0])], outs[0])
