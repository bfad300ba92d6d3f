"""Eltwise: PROD, SUM (with per-bottom coefficients) and MAX of same-shaped bottoms."""
from __future__ import annotations

import numpy as np

from .. import caffe_pb2
from .base import Layer, count, register

E = caffe_pb2.EltwiseParameter


@register("Eltwise")
class Eltwise(Layer):
    def backward_reads(self):
        return [] if self.operation == E.SUM else list(self.bottoms)

    def setup(self, lp):
        p = lp.eltwise_param
        self.operation = p.operation
        self.coeff = list(p.coeff)
        if self.coeff and self.operation != E.SUM:
            raise self.error("coeff is only allowed for SUM")

    def n_bottoms(self):
        return (2, 1 << 30)

    def output_shapes(self, in_shapes):
        if any(tuple(s) != tuple(in_shapes[0]) for s in in_shapes):
            raise self.error(f"bottoms have different shapes {[list(s) for s in in_shapes]}")
        if self.coeff and len(self.coeff) != len(in_shapes):
            raise self.error(f"{len(self.coeff)} coefficients for {len(in_shapes)} bottoms")
        return [tuple(in_shapes[0])]

    def macs(self):
        return count(self.out_shapes[0]) * (len(self.in_shapes) - 1)

    def summary(self):
        s = E.EltwiseOp.Name(self.operation)
        return s + (f" coeff {self.coeff}" if self.coeff else "")

    def emit(self, e, ins, outs):
        if self.operation == E.PROD:
            y = ins[0]
            for i, x in enumerate(ins[1:]):
                y = e.op("Mul", [y, x], outs[0] if i == len(ins) - 2 else None)
        elif self.operation == E.MAX:
            e.op("Max", ins, outs[0])
        else:
            terms = [x if not self.coeff or self.coeff[i] == 1 else e.op("Mul", [x, e.const(self.coeff[i])])
                     for i, x in enumerate(ins)]
            e.op("Add" if len(terms) == 2 else "Sum", terms, outs[0])

    def backward(self, ctx, top_diffs):
        top = top_diffs[0]
        n = len(self.bottoms)
        if self.operation == E.SUM:
            return [top * np.float32(self.coeff[i]) if self.coeff else top for i in range(n)]
        xs = [ctx.data(b) for b in self.bottoms]
        if self.operation == E.PROD:
            out = []
            for i in range(n):
                others = np.ones_like(top)
                for j, x in enumerate(xs):
                    if j != i:
                        others = others * x
                out.append(top * others)
            return out
        # MAX routes to the bottom Caffe's forward picked: bottoms 0 and 1 compare with
        # '>' (a tie goes to 1), later bottoms replace only when strictly greater.
        best = np.where(xs[0] > xs[1], 0, 1)
        value = np.maximum(xs[0], xs[1])
        runner_up = np.minimum(xs[0], xs[1])
        for i in range(2, n):
            greater = xs[i] > value
            best = np.where(greater, i, best)
            runner_up = np.where(greater, value, np.maximum(runner_up, xs[i]))
            value = np.where(greater, xs[i], value)
        # the winner was decided by rounding where the runner-up is within both values'
        # rounding bounds of it (the larger bound, twice, covers the pair)
        if np.any(top):
            bound = 2 * np.maximum.reduce([ctx.bound(b) for b in self.bottoms])
            ctx.check_decision(self.name, value - runner_up, 0.0, top, bound)
        return [np.where(best == i, top, 0).astype(np.float32) for i in range(n)]
