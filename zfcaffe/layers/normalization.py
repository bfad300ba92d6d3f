"""Normalization layers: LRN (across and within channels), BatchNorm, MVN."""
from __future__ import annotations

import numpy as np

from .. import caffe_pb2
from .base import Layer, count, register
from .pooling import caffe_ave_divisor


def _per_channel(values: np.ndarray, rank: int) -> np.ndarray:
    """(C,) -> (C, 1, ..., 1) so it broadcasts over N x C x spatial."""
    return np.asarray(values, np.float32).reshape((-1,) + (1,) * (rank - 2))


def _negative_power(e, base: str, beta: float) -> str:
    """base ** -beta; the usual beta 0.75 as 1 / (sqrt(b) * sqrt(sqrt(b))), which is
    vectorised where a general Pow is not."""
    if beta == 0.75:
        root = e.op("Sqrt", [base])
        return e.op("Reciprocal", [e.op("Mul", [root, e.op("Sqrt", [root])])])
    return e.op("Pow", [base, e.const(-beta)])


@register("LRN")
class LRN(Layer):
    """ACROSS_CHANNELS: x / (k + alpha/size * sum over `size` channels of x^2)^beta.
    WITHIN_CHANNEL: x / (1 + alpha * avg over a size x size window of x^2)^beta, with
    Caffe's AVE-pooling divisor and k ignored."""

    def setup(self, lp):
        p = lp.lrn_param
        self.size, self.alpha, self.beta, self.k = p.local_size, p.alpha, p.beta, p.k
        self.region = p.norm_region
        if self.size % 2 == 0:
            raise self.error(f"local_size {self.size} must be odd")

    def output_shapes(self, in_shapes):
        if len(in_shapes[0]) != 4:
            raise self.error(f"input has shape {list(in_shapes[0])}; expected N x C x H x W")
        return [tuple(in_shapes[0])]

    def macs(self):
        return count(self.out_shapes[0]) * (self.size if self.region == 0 else self.size ** 2 + 3)

    def summary(self):
        region = caffe_pb2.LRNParameter.NormRegion.Name(self.region)
        return f"{region} size {self.size} alpha {self.alpha:g} beta {self.beta:g}"

    def backward(self, ctx, top_diffs):
        top = top_diffs[0]
        if ctx.mode == "deconvnet":
            return [top]  # Zeiler & Fergus pass the signal through contrast normalisation
        if self.region == caffe_pb2.LRNParameter.ACROSS_CHANNELS:
            from ..kernels import lrn_across_backward  # Numba loads lazily
            x, y = (np.ascontiguousarray(ctx.data(k), np.float32) for k in (self.bottoms[0], self.tops[0]))
            return [lrn_across_backward(x, y, np.ascontiguousarray(top, np.float32), self.size,
                                        float(self.alpha), float(self.beta), float(self.k))]
        x = ctx.data(self.bottoms[0]).astype(np.float64)
        # WITHIN_CHANNEL: y = x * s^-beta with s = 1 + alpha * avgpool(x^2) (Caffe's divisor).
        from ..kernels import ave_unpool_add  # Numba loads lazily
        rows, c, h, w = x.shape
        pad = (self.size - 1) // 2
        sq = (x * x).reshape(rows * c, h, w)
        # the forward average, recomputed with the same window rule
        div = np.outer(caffe_ave_divisor(h, h, self.size, 1, pad), caffe_ave_divisor(w, w, self.size, 1, pad))
        padded = np.pad(sq, ((0, 0), (pad, pad), (pad, pad)))
        win = np.lib.stride_tricks.sliding_window_view(padded, (self.size, self.size), axis=(1, 2))
        avg = (win.sum(axis=(-1, -2)) / div).reshape(rows, c, h, w)
        s = 1 + self.alpha * avg
        d_avg = (top * x * -self.beta * self.alpha * s ** (-self.beta - 1)).astype(np.float32)
        d_sq = np.zeros((rows * c, h, w), np.float32)
        ave_unpool_add(np.ascontiguousarray(d_avg.reshape(rows * c, h, w)), d_sq, self.size, self.size,
                       1, 1, pad, pad)
        bottom = top * s ** -self.beta + 2 * x * d_sq.reshape(rows, c, h, w)
        return [bottom.astype(np.float32)]

    def emit(self, e, ins, outs):
        x = ins[0]
        n, c, h, w = self.in_shapes[0]
        if self.region == caffe_pb2.LRNParameter.ACROSS_CHANNELS:
            # The window sum over channels as an average pool over a (C, H*W) plane:
            # ONNX Runtime's own LRN kernel is several times slower than these ops. Its
            # rounding differs from Caffe's by ulps; every oracle projection still matches
            # or is flagged (the recording used ONNX Runtime's kernel until that was measured).
            # (0 and -1 and Shape(x) keep the graph valid for other batch and image sizes)
            sq = e.op("Reshape", [e.op("Mul", [x, x]), e.ints([0, 1, c, -1])])
            pre = (self.size - 1) // 2
            avg = e.op("AveragePool", [sq], kernel_shape=[self.size, 1], strides=[1, 1],
                       pads=[pre, 0, self.size - 1 - pre, 0], count_include_pad=1)
            base = e.op("Add", [e.op("Mul", [avg, e.const(self.alpha)]), e.const(self.k)])
            base = e.op("Reshape", [base, e.op("Shape", [x])])
            e.op("Mul", [x, _negative_power(e, base, self.beta)], outs[0])
            return
        pad = (self.size - 1) // 2
        sq = e.op("Mul", [x, x])
        padded = e.op("Pad", [sq, e.ints([0, 0, pad, pad, 0, 0, pad, pad])])
        avg = e.op("AveragePool", [padded], kernel_shape=[self.size] * 2, strides=[1, 1])
        fix = self.size ** 2 / np.outer(caffe_ave_divisor(h, h, self.size, 1, pad),
                                        caffe_ave_divisor(w, w, self.size, 1, pad))
        avg = e.op("Mul", [avg, e.const(fix.reshape(1, 1, h, w))])
        base = e.op("Add", [e.op("Mul", [avg, e.const(self.alpha)]), e.const(1.0)])
        power = _negative_power(e, base, self.beta)
        e.op("Mul", [x, power], outs[0])


@register("BatchNorm")
class BatchNorm(Layer):
    """(x - mean/s) / sqrt(var/s + eps), s = the third blob (the moving-average
    normaliser; 0 means 0). Without use_global_stats in TEST, Caffe uses the
    stored statistics; use_global_stats: false asks for the batch's own."""

    def backward_reads(self):
        return []  # with the stored statistics the backward is a per-channel scale

    def setup(self, lp):
        p = lp.batch_norm_param
        self.eps = p.eps
        self.use_global_stats = p.use_global_stats if p.HasField("use_global_stats") else True

    def param_shapes(self, in_shapes):
        c = in_shapes[0][1] if len(in_shapes[0]) > 1 else 1
        return [(c,), (c,), (1,)]

    def macs(self):
        return 2 * count(self.out_shapes[0])

    def summary(self):
        return f"eps {self.eps:g}" + ("" if self.use_global_stats else " batch statistics")

    def folded(self):
        """Per-channel mean and std in Caffe's own float32 arithmetic."""
        mean, var, factor = (np.asarray(b, np.float32).ravel() for b in self.blobs[:3])
        sf = np.float32(0) if factor[0] == 0 else np.float32(1) / factor[0]
        std = np.sqrt(var * sf + np.float32(self.eps))
        return mean * sf, std

    def backward(self, ctx, top_diffs):
        top = top_diffs[0]
        rank = len(self.in_shapes[0])
        if self.use_global_stats:
            return [top / _per_channel(self.folded()[1], rank)]
        raise self.error("backward through batch statistics (use_global_stats: false) mixes the "
                         "images of a batch; not supported")

    def emit(self, e, ins, outs):
        rank = len(self.in_shapes[0])
        if self.use_global_stats:
            mean, std = self.folded()
            if e.faithful:  # Caffe's order of operations: (x - mean) / std
                # x + (-mean) rounds as x - mean does, and ONNX Runtime folds it into a
                # convolution without bias (or with a zero one, as BatchNorm leaves it in
                # training), whose bias is added to the finished sum: Caffe's rounding, one
                # pass less. Into a non-zero bias it would fold as b - mean, rounded first.
                src = e.producer.get(ins[0])
                bias = e.weights.get(src.input[2]) if src is not None and src.op_type == "Conv" \
                    and len(src.input) > 2 else None
                if bias is not None and bias.any():
                    centred = e.op("Sub", [ins[0], e.weight(self, 0, _per_channel(mean, rank))])
                else:
                    centred = e.op("Add", [ins[0], e.weight(self, 0, _per_channel(-mean, rank))])
                e.op("Div", [centred, e.weight(self, 1, _per_channel(std, rank))], outs[0])
                return
            # x * (1/std) + (-mean/std): a per-channel Mul and Add that ONNX Runtime
            # folds into the preceding convolution.
            inv_std = 1 / std.astype(np.float64)
            y = e.op("Mul", [ins[0], e.weight(self, 1, _per_channel(inv_std, rank))])
            e.op("Add", [y, e.weight(self, 0, _per_channel(-mean * inv_std, rank))], outs[0])
            return
        axes = [0] + list(range(2, rank))
        mean = e.op("ReduceMean", [ins[0], e.ints(axes)], keepdims=1)
        centred = e.op("Sub", [ins[0], mean])
        var = e.op("ReduceMean", [e.op("Mul", [centred, centred]), e.ints(axes)], keepdims=1)
        std = e.op("Sqrt", [e.op("Add", [var, e.const(self.eps)])])
        e.op("Div", [centred, std], outs[0])


@register("MVN")
class MVN(Layer):
    """Mean (and variance) normalisation per channel or per image:
    (x - mean) / (std + eps)."""

    def setup(self, lp):
        p = lp.mvn_param
        self.normalize_variance, self.across_channels, self.eps = \
            p.normalize_variance, p.across_channels, p.eps

    def macs(self):
        return 3 * count(self.out_shapes[0])

    def backward(self, ctx, top_diffs):
        top = top_diffs[0].astype(np.float64)
        rank = len(self.in_shapes[0])
        axes = tuple(range(1 if self.across_channels else 2, rank))
        if not self.normalize_variance:
            return [(top - top.mean(axis=axes, keepdims=True)).astype(np.float32)]
        # Caffe's rule: (dy - mean(dy) - y * mean(y * dy)) / (std + eps)
        x = ctx.data(self.bottoms[0]).astype(np.float64)
        y = ctx.data(self.tops[0]).astype(np.float64)
        c = x - x.mean(axis=axes, keepdims=True)
        std = np.sqrt((c * c).mean(axis=axes, keepdims=True)) + self.eps
        d = top - top.mean(axis=axes, keepdims=True) - y * (y * top).mean(axis=axes, keepdims=True)
        return [(d / std).astype(np.float32)]

    def emit(self, e, ins, outs):
        rank = len(self.in_shapes[0])
        axes = list(range(1 if self.across_channels else 2, rank))
        mean = e.op("ReduceMean", [ins[0], e.ints(axes)], keepdims=1)
        centred = e.op("Sub", [ins[0], mean], None if self.normalize_variance else outs[0])
        if not self.normalize_variance:
            return
        var = e.op("ReduceMean", [e.op("Mul", [centred, centred]), e.ints(axes)], keepdims=1)
        std = e.op("Add", [e.op("Sqrt", [var]), e.const(self.eps)])
        e.op("Div", [centred, std], outs[0])
