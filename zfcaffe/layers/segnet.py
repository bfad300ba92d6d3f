"""SegNet's and ENet's layers: BN (scale/shift, or batch statistics), Upsample
(max-unpooling through a pooling mask) and the DenseImageData data layer.

Transcribed from alexgkendall/caffe-segnet@344c113bf1832886f1cbe9f33ffe28a3beeaf412
(branch segnet-cleaned) src/caffe/layers/bn_layer.cpp, upsample_layer.cpp,
dense_image_data_layer.cpp. TimoSaemann/caffe-enet@22d356c956cdc5e752e6d40612e4f6c60fc8f471
has the same bn_layer.cpp and upsample_layer.cpp (only the #includes differ), so ENet's
`BN` and `Upsample` are these classes too; its schema differs only in field numbers
(upsample_param 147, dense_image_data_param 46) and DenseImageData's label_divide_factor.
"""
from __future__ import annotations

import numpy as np

from .. import caffe_pb2
from .base import INT64, Layer, count, register
from .data import _InputLayer

BN_MODE = caffe_pb2.BNParameter.BNMode
#: bn_layer.cpp: var_eps_ = 1e-9, not a parameter
SEGNET_BN_EPS = np.float32(1e-9)


@register("BN", fork="segnet", when=None)
class SegNetBN(Layer):
    """SegNet's (and ENet's) BN: two blobs, scale and shift, each 1 x C x 1 x 1.

    alexgkendall/caffe-segnet@344c113b src/caffe/layers/bn_layer.cpp (Forward_cpu).
    INFERENCE: y = x * scale + shift (SegNet's compute_bn_statistics.py folds the
    statistics into the blobs). LEARN, the default, also in TEST phase: the statistics
    of the batch itself over N, H, W: mean = mean over N of the spatial means,
    var = E[x^2] - mean^2 (so computed), y = (x - mean) / sqrt(var + 1e-9) * scale + shift,
    with optional tops #1 the batch mean and #2 the batch variance (1 x C x 1 x 1, without
    eps). The fallback `BN` variant: PSPNet's BN is told apart by its own fields."""

    def setup(self, lp):
        p = lp.bn_param
        self.mode = p.bn_mode
        self.n_tops = len(lp.top)
        most = 3 if self.mode == BN_MODE.LEARN else 1
        if self.n_tops > most:
            raise self.error(f"has {self.n_tops} tops; expected at most {most} in bn_mode "
                             f"{BN_MODE.Name(self.mode)} (LEARN: output, batch mean, batch variance)")

    def backward_reads(self):
        return list(self.bottoms) if self.mode == BN_MODE.LEARN else []

    def output_shapes(self, in_shapes):
        s = tuple(in_shapes[0])
        if len(s) != 4:
            raise self.error(f"input has shape {list(s)}; expected N x C x H x W")
        return [s] + [(1, s[1], 1, 1)] * (self.n_tops - 1)

    def param_shapes(self, in_shapes):
        c = in_shapes[0][1]
        return [(1, c, 1, 1), (1, c, 1, 1)]

    def fillers(self):
        """Caffe fills the blobs with bn_param's scale_filler and shift_filler."""
        return [self.lp.bn_param.scale_filler, self.lp.bn_param.shift_filler]

    def geometry(self, in_geoms):
        return [in_geoms[0]] + [None] * (self.n_tops - 1)

    def macs(self):
        return count(self.in_shapes[0]) * (2 if self.mode == BN_MODE.INFERENCE else 6)

    def summary(self):
        return BN_MODE.Name(self.mode) + (" (batch statistics)" if self.mode == BN_MODE.LEARN else "")

    def backward(self, ctx, top_diffs):
        """bn_layer.cpp Backward_cpu, in every mode. INFERENCE: dy * scale. LEARN: the full
        batch-norm gradient through the batch statistics, dx = (g - mean(g) - x_hat *
        mean(x_hat * g)) / sqrt(var + 1e-9), g = scale * dy, means over N, H, W: the items
        of the batch are coupled (batch_backward.py). The mean and variance tops carry no
        signal (the fork's backward ignores their diffs)."""
        dy = top_diffs[0]
        if dy is None:
            return [None]
        scale = np.asarray(self.blobs[0], np.float32).reshape(-1)
        if self.mode == BN_MODE.INFERENCE:
            return [dy * scale.reshape(1, -1, 1, 1)]
        from .batch_backward import batch_span, batch_stat_backward
        span = batch_span(self, ctx)
        x = np.asarray(ctx.full(self.bottoms[0]), np.float32)
        # the forward's statistics, in its float32 steps: E[x] and E[x^2] over N, H, W, var = E[x^2] - E[x]^2
        mean = x.mean(axis=(2, 3), dtype=np.float32).mean(axis=0, dtype=np.float32)
        ex2 = (x * x).mean(axis=(2, 3), dtype=np.float32).mean(axis=0, dtype=np.float32)
        std = np.sqrt(ex2 - mean * mean + SEGNET_BN_EPS).astype(np.float32)
        x_hat = (x - mean.reshape(1, -1, 1, 1)) / std.reshape(1, -1, 1, 1)
        return [batch_stat_backward(dy, x_hat[ctx.items], scale, 1.0 / std.astype(np.float64), span)]

    def emit(self, e, ins, outs):
        x = ins[0]
        scale, shift = e.weight(self, 0), e.weight(self, 1)
        if self.mode == BN_MODE.INFERENCE:
            # caffe_mul then caffe_add: two roundings, as here
            e.op("Add", [e.op("Mul", [x, scale]), shift], outs[0])
            return
        # EX: the spatial mean of each (n, c), then the mean over the batch; E(X^2) alike
        mean = e.op("ReduceMean", [e.op("ReduceMean", [x, e.ints([2, 3], "axes")], keepdims=1),
                                   e.ints([0], "axes")], outs[1] if self.n_tops > 1 else None, keepdims=1)
        ex2 = e.op("ReduceMean", [e.op("ReduceMean", [e.op("Mul", [x, x]), e.ints([2, 3], "axes")], keepdims=1),
                                  e.ints([0], "axes")], keepdims=1)
        var = e.op("Sub", [ex2, e.op("Mul", [mean, mean])], outs[2] if self.n_tops > 2 else None)
        std = e.op("Sqrt", [e.op("Add", [var, e.const(SEGNET_BN_EPS, "eps")])])
        y = e.op("Div", [e.op("Sub", [x, mean]), std])
        e.op("Add", [e.op("Mul", [y, scale]), shift], outs[0])


@register("Upsample", fork="segnet", when=lambda lp, hints: len(lp.bottom) == 2)
class SegNetUpsample(Layer):
    """SegNet's (and ENet's) Upsample: max-unpooling through a MAX Pooling's mask top.

    alexgkendall/caffe-segnet@344c113b src/caffe/layers/upsample_layer.cpp.
    bottom[0] values, bottom[1] the mask (float flat index h * W + w in the pooling
    input's plane). Output plane upsample_h x upsample_w when both are given, else
    H * scale_h - pad_out_h by W * scale_w - pad_out_w (`scale` for both unless
    scale_h/scale_w). The output is zeroed, then top[mask[i]] = bottom[i] for every
    input position i of a plane in row-major order: at a repeated index (overlapping
    pooling windows) the later write wins. An index >= the output plane size aborts
    Caffe (LOG(FATAL)); here ONNX Runtime refuses it (ScatterElements out of bounds).

    In ONNX: ScatterElements with reduction "max" writes each output position's last
    writer i (deterministic, unlike plain ScatterElements with repeated indices, which
    ONNX leaves undefined), then GatherElements takes bottom[i]; positions nobody wrote
    stay 0."""

    def setup(self, lp):
        p = lp.upsample_param
        if not ((p.HasField("upsample_h") and p.HasField("upsample_w"))
                or (not p.HasField("scale") and p.HasField("scale_h") and p.HasField("scale_w"))
                or (not p.HasField("scale_h") and not p.HasField("scale_w"))):
            raise self.error("expected upsample_h and upsample_w, else scale, or scale_h and scale_w (not both "
                             "scale and scale_h/scale_w)")
        self.size = None
        self.scale = None
        self.pad_out = (0, 0)
        if p.HasField("upsample_h") and p.HasField("upsample_w"):
            self.size = (p.upsample_h, p.upsample_w)
            if min(self.size) <= 1:
                raise self.error(f"upsample_h {p.upsample_h} and upsample_w {p.upsample_w}; expected both > 1")
        else:
            scale = p.scale if p.HasField("scale") else 2     # SegNet's default (the YOLO ports' differs)
            self.scale = (p.scale_h, p.scale_w) if p.HasField("scale_h") else (scale, scale)
            if min(self.scale) <= 1:
                raise self.error(f"scale {list(self.scale)}; expected > 1")
            self.pad_out = (int(p.pad_out_h), int(p.pad_out_w))
            for pad, s, a in zip(self.pad_out, self.scale, "hw"):
                if pad and s != 2:
                    raise self.error(f"pad_out_{a} requires scale_{a} == 2 (otherwise the output size is "
                                     "ill-defined)")

    def n_bottoms(self):
        return (2, 2)

    def output_shapes(self, in_shapes):
        x, mask = (tuple(s) for s in in_shapes)
        if len(x) != 4 or len(mask) != 4:
            raise self.error(f"inputs have shapes {list(x)} and {list(mask)}; expected N x C x H x W values "
                             "and a mask of the same shape")
        if x != mask:
            raise self.error(f"the mask has shape {list(mask)}; expected the values' shape {list(x)} (the "
                             "mask top of the MAX Pooling that made them)")
        if self.size is not None:
            out = self.size
        else:
            out = tuple(d * s - p for d, s, p in zip(x[2:], self.scale, self.pad_out))
        return [(x[0], x[1], *out)]

    def geometry(self, in_geoms):
        g = in_geoms[0]
        if g is None or g.whole:
            return [g]
        # each output unit holds (or is next to) a pooled unit's value: the pooling's
        # input grid again (its stride: the scale, or the rounded size ratio for
        # upsample_h/w, 23 -> 45 being 2); the field of view is the pooled unit's
        if self.scale is not None:
            ratio = self.scale
        else:
            ratio = tuple(max(1, round(o / i)) for o, i in zip(self.out_shapes[0][2:], self.in_shapes[0][2:]))
        return [g.upsample(ratio, ratio, (0, 0))]

    def macs(self):
        return count(self.in_shapes[0])

    def summary(self):
        if self.size is not None:
            return f"unpool to {self.size[0]}x{self.size[1]}"
        s = f"unpool x{self.scale[0]}" if self.scale[0] == self.scale[1] else f"unpool x{self.scale[0]}x{self.scale[1]}"
        return s + (f" - pad_out {self.pad_out[0]},{self.pad_out[1]}" if any(self.pad_out) else "")

    def forward(self, inputs):
        """Caffe's loop in NumPy (the reference the ONNX form is tested against)."""
        return [upsample_reference(inputs[0], inputs[1], self.out_shapes[0][2:], self)]

    def backward_reads(self):
        return [self.bottoms[1]]   # the mask

    def backward(self, ctx, top_diffs):
        """upsample_layer.cpp Backward_cpu, in every mode: the gather dbottom[i] =
        dtop[mask[i]]. Where overlapping pooling windows put one index in the mask twice,
        every duplicate receives the diff (not the adjoint of the forward, in which the
        later write wins). The mask input gets no signal."""
        dy = top_diffs[0]
        rows, c, oh, ow = dy.shape
        mask = np.asarray(ctx.data(self.bottoms[1]))
        idx = mask.reshape(rows, c, -1).astype(np.int64)
        dx = np.take_along_axis(np.ascontiguousarray(dy).reshape(rows, c, oh * ow), idx, axis=2)
        return [dx.reshape(mask.shape).astype(np.float32), None]

    def emit(self, e, ins, outs):
        x, mask = ins
        _, _, h, w = self.in_shapes[0]
        oh, ow = self.out_shapes[0][2:]
        flat = e.ints([0, 0, -1])
        values = e.op("Reshape", [x, flat])
        index = e.op("Cast", [e.op("Reshape", [mask, flat])], to=INT64)
        nc = e.op("Shape", [x], start=0, end=2)
        if e.dynamic:       # sizes from the input's shape, so the graph holds for other sizes
            hw = e.op("Shape", [x], start=2)
            plane_in = e.op("ReduceProd", [hw], keepdims=1)
            if self.size is not None:
                plane_out = e.ints([oh * ow])
                out_hw = e.ints([oh, ow])
            else:
                out_hw = e.op("Sub", [e.op("Mul", [hw, e.ints(self.scale)]), e.ints(self.pad_out)])
                plane_out = e.op("ReduceProd", [out_hw], keepdims=1)
            positions = e.op("Range", [e.ints(0, "start"), e.op("Squeeze", [plane_in]), e.ints(1, "step")])
            positions = e.op("Reshape", [positions, e.ints([1, 1, -1])])
        else:
            plane_out, out_hw = e.ints([oh * ow]), e.ints([oh, ow])
            positions = e.const(np.arange(h * w, dtype=np.int64).reshape(1, 1, -1), "positions", np.int64)
        positions = e.op("Expand", [positions, e.op("Shape", [index])])
        nobody = e.op("Expand", [e.const(np.full((1, 1, 1), -1, np.int64), "nobody", np.int64),
                                 e.op("Concat", [nc, plane_out], axis=0)])
        # the last input position written to each output position (Caffe: later write wins)
        last = e.op("ScatterElements", [nobody, index, positions], axis=2, reduction="max")
        taken = e.op("GatherElements", [values, e.op("Max", [last, e.ints(0, "zero")])], axis=2)
        written = e.op("GreaterOrEqual", [last, e.ints(0, "zero")])
        y = e.op("Where", [written, taken, e.const(0.0, "zero")])
        e.op("Reshape", [y, e.op("Concat", [nc, out_hw], axis=0)], outs[0])


def upsample_reference(x: np.ndarray, mask: np.ndarray, out_hw, who: Layer | None = None) -> np.ndarray:
    """upsample_layer.cpp Forward_cpu, vectorised: zeros, then top[mask[i]] = bottom[i]
    in row-major order per plane (NumPy's fancy assignment keeps the last of repeated
    indices, as the loop does)."""
    n, c, h, w = x.shape
    plane = int(out_hw[0]) * int(out_hw[1])
    idx = mask.reshape(n * c, h * w).astype(np.int64)
    if idx.size and (idx.max() >= plane or idx.min() < 0):
        bad = int(idx.max() if idx.max() >= plane else idx.min())
        message = (f"upsample top index {bad} out of range for a {out_hw[0]}x{out_hw[1]} output; expected the "
                   "output size of the pooling input that made the mask")
        raise who.error(message) if who is not None else ValueError(message)
    out = np.zeros((n * c, plane), x.dtype)
    rows = np.repeat(np.arange(n * c), h * w).reshape(n * c, h * w)
    out[rows.ravel(), idx.ravel()] = x.reshape(n * c, h * w).ravel()
    return out.reshape(n, c, int(out_hw[0]), int(out_hw[1]))


@register("DenseImageData")
class DenseImageData(_InputLayer):
    """SegNet's data layer (images and label images from a list file) as net inputs,
    as BVLC's ImageData. alexgkendall/caffe-segnet@344c113b
    src/caffe/layers/dense_image_data_layer.cpp DataLayerSetUp: data is batch_size x
    (3 if is_color else 1) x H x W, label batch_size x 1 x H x W, where H x W is
    transform_param.crop_size, else crop_height x crop_width, else new_height x
    new_width, else the first image's size (the caller gives it: input_shapes). The
    label is read only by the loss, so a deploy net leaves it out. No mean, no scaling
    here: the layer feeds pixels 0..255 (BGR) unless transform_param says otherwise."""

    def declared_shapes(self):
        p = self.lp.dense_image_data_param
        crop = self.lp.transform_param.crop_size
        if crop:
            h = w = crop
        elif p.crop_height and p.crop_width:
            h, w = p.crop_height, p.crop_width
        else:
            h, w = (p.new_height, p.new_width) if p.new_height and p.new_width else (None, None)
        n = p.batch_size
        data = (n, 3 if p.is_color else 1, h, w) if n and h else None
        label = (n, 1, h, w) if n and h else None
        return [data, label][:len(self.lp.top)]
