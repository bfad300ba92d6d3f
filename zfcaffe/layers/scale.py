"""Scale and Bias: per-axis multiply/add with a learned blob or a second bottom."""
from __future__ import annotations

import numpy as np

from .base import Layer, canonical_axis, count, register


class _AxisOp(Layer):
    """Shared shape logic: the operand covers in_shape[axis : axis + num_axes]."""

    def backward_reads(self):
        return list(self.bottoms) if len(self.bottoms) > 1 else []   # one bottom: the parameters only

    def n_bottoms(self):
        return (1, 2)

    def _operand_shape(self, in_shapes):
        s = in_shapes[0]
        if len(in_shapes) == 2:
            op = tuple(in_shapes[1])
            axis = 0 if len(op) == 0 else canonical_axis(self.axis_param, len(s), self)
        else:
            axis = canonical_axis(self.axis_param, len(s), self) if s else 0
            n = self.num_axes
            if n < -1:
                raise self.error(f"num_axes {n} must be >= -1")
            op = tuple(s[axis:]) if n == -1 else tuple(s[axis:axis + n])
        if tuple(s[axis:axis + len(op)]) != op:
            raise self.error(f"operand shape {list(op)} does not match input {list(s)} at axis {axis}")
        self.axis, self.op_shape = axis, op
        return op

    def _broadcast(self):
        rank = len(self.in_shapes[0])
        return (*self.op_shape, *(1,) * (rank - self.axis - len(self.op_shape)))

    def output_shapes(self, in_shapes):
        self._operand_shape(in_shapes)
        return [tuple(in_shapes[0])]

    def macs(self):
        return count(self.out_shapes[0])

    def _reduce_to_operand(self, a):
        """Sum over the axes a per-image (axis 0) operand does not cover, keeping rows."""
        axes = tuple(range(len(self.op_shape), a.ndim))
        return a.sum(axis=axes) if axes else a

    def _operand(self, e, ins, blob_index, bottom_op: bool):
        shape = self._broadcast()
        if bottom_op:
            return e.op("Reshape", [ins[1], e.ints(shape)])
        return e.weight(self, blob_index, self.blobs[blob_index].reshape(shape))


@register("Scale")
class Scale(_AxisOp):
    def setup(self, lp):
        p = lp.scale_param
        self.axis_param, self.num_axes, self.bias_term = p.axis, p.num_axes, p.bias_term

    def param_shapes(self, in_shapes):
        op = self._operand_shape(in_shapes)
        shapes = [] if len(in_shapes) == 2 else [op]
        return shapes + [op] if self.bias_term else shapes

    def summary(self):
        return "with bias" if self.bias_term else ""

    def backward(self, ctx, top_diffs):
        top = top_diffs[0]
        if len(self.bottoms) == 1:
            return [top * self.blobs[0].reshape(self._broadcast())]
        if self.axis == 0:  # a factor per image (squeeze-and-excitation style)
            factor = ctx.data(self.bottoms[1])
            factor = factor.reshape(factor.shape + (1,) * (top.ndim - factor.ndim))
            return [top * factor, self._reduce_to_operand(top * ctx.data(self.bottoms[0]))]
        # a factor shared by all images carries no per-image signal back
        return [top * ctx.full(self.bottoms[1]).reshape(self._broadcast()), None]

    def emit(self, e, ins, outs):
        two = len(ins) == 2
        src = e.producer.get(ins[0])
        if e.faithful and self.bias_term and not two and self.axis == 1 and len(self.op_shape) == 1 \
                and src is not None and src.op_type == "Div":
            # BatchNorm's Scale as ONNX BatchNormalization with mean 0 and variance + epsilon
            # exactly 1 in float32 (epsilon 1e-5, which cuDNN accepts unclamped): ONNX Runtime's
            # CPU kernel multiplies, then adds, rounding each as Caffe does (bit for bit,
            # tested), in one pass over the blob instead of two. Only after a division: after
            # a convolution it would be folded into the weights.
            c, eps = self.op_shape[0], np.float32(1e-5)
            e.op("BatchNormalization", [ins[0], e.weight(self, 0, self.blobs[0].reshape(c)),
                                        e.weight(self, 1, self.blobs[1].reshape(c)), e.const(np.zeros(c)),
                                        e.const(np.full(c, np.float32(1) - eps))], outs[0], epsilon=float(eps))
            return
        factor = self._operand(e, ins, 0, two)
        y = e.op("Mul", [ins[0], factor], None if self.bias_term else outs[0])
        if self.bias_term:
            e.op("Add", [y, self._operand(e, ins, 0 if two else 1, False)], outs[0])


@register("Bias")
class Bias(_AxisOp):
    def setup(self, lp):
        p = lp.bias_param
        self.axis_param, self.num_axes = p.axis, p.num_axes

    def param_shapes(self, in_shapes):
        op = self._operand_shape(in_shapes)
        return [] if len(in_shapes) == 2 else [op]

    def backward(self, ctx, top_diffs):
        top = top_diffs[0]
        if len(self.bottoms) == 1:
            return [top]
        return [top, self._reduce_to_operand(top) if self.axis == 0 else None]

    def emit(self, e, ins, outs):
        e.op("Add", [ins[0], self._operand(e, ins, 0, len(ins) == 2)], outs[0])
