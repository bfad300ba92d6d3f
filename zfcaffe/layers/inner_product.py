"""InnerProduct (fully connected) and Embed (a lookup table)."""
from __future__ import annotations

from .base import WHOLE, Layer, canonical_axis, count, register


@register("InnerProduct")
class InnerProduct(Layer):
    def backward_reads(self):
        return []  # the adjoint needs the parameters only

    def setup(self, lp):
        p = lp.inner_product_param
        self.num_output = p.num_output
        self.bias_term = p.bias_term
        self.axis_param = p.axis
        self.transpose = p.transpose
        if not self.num_output:
            raise self.error("inner_product_param.num_output is missing or 0")

    def output_shapes(self, in_shapes):
        s = in_shapes[0]
        self.axis = canonical_axis(self.axis_param, len(s), self)
        self.k = count(s[self.axis:])
        return [(*s[:self.axis], self.num_output)]

    def param_shapes(self, in_shapes):
        w = (self.k, self.num_output) if self.transpose else (self.num_output, self.k)
        return [w, (self.num_output,)] if self.bias_term else [w]

    def geometry(self, in_geoms):
        return [WHOLE if in_geoms[0] is not None else None]

    def macs(self):
        return count(self.out_shapes[0]) * self.k

    def summary(self):
        return f"{self.num_output}" + (" transposed" if self.transpose else "")

    def backward(self, ctx, top_diffs):
        top = top_diffs[0]
        rows = top.shape[0]
        t = top.reshape(-1, self.num_output)
        w = self.blobs[0]
        bottom = t @ (w.T if self.transpose else w)
        return [bottom.reshape((rows,) + tuple(self.in_shapes[0][1:]))]

    def emit(self, e, ins, outs):
        x = ins[0]
        in_shape = self.in_shapes[0]
        rows = count(in_shape[:self.axis])
        if len(in_shape) != 2 or self.axis != 1:
            # -1 rows when the rows are the batch: the graph stays valid for other batch sizes
            x = e.op("Reshape", [x, e.ints([-1 if self.axis == 1 else rows, self.k])])
        inputs = [x, e.weight(self, 0)]
        if self.bias_term:
            inputs.append(e.weight(self, 1))
        final = self.out_shapes[0]
        direct = final == (rows, self.num_output)
        y = e.op("Gemm", inputs, outs[0] if direct else None, transB=0 if self.transpose else 1)
        if not direct:
            e.op("Reshape", [y, e.ints(final)], outs[0])


@register("Embed")
class Embed(Layer):
    def setup(self, lp):
        p = lp.embed_param
        self.num_output, self.input_dim, self.bias_term = p.num_output, p.input_dim, p.bias_term
        if not self.num_output or not self.input_dim:
            raise self.error("embed_param needs num_output and input_dim")

    def output_shapes(self, in_shapes):
        return [(*in_shapes[0], self.num_output)]

    def param_shapes(self, in_shapes):
        w = (self.input_dim, self.num_output)
        return [w, (self.num_output,)] if self.bias_term else [w]

    def geometry(self, in_geoms):
        return [None]

    def backward(self, ctx, top_diffs):
        return [None]  # indices carry no gradient

    def emit(self, e, ins, outs):
        idx = e.op("Cast", [ins[0]], to=7)  # int64
        y = e.op("Gather", [e.weight(self, 0), idx], None if self.bias_term else outs[0], axis=0)
        if self.bias_term:
            e.op("Add", [y, e.weight(self, 1)], outs[0])
