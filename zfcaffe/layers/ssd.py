"""The SSD fork's geometry layers (weiliu89/caffe, branch ssd): Normalize, Permute,
PriorBox. (Its DetectionOutput is a host layer in ssd_detection.py.)

Transcribed from weiliu89/caffe@4817bf8b4200b35ada8ed0dc378dceaf38c539e4,
src/caffe/layers/{normalize,permute,prior_box}_layer.cpp (the CPU code).
"""
from __future__ import annotations

import math

import numpy as np

from .. import caffe_pb2
from .base import FLOAT, WHOLE, Layer, count, register


def _legacy(shape, index: int, who: Layer) -> int:
    """Caffe's Blob::LegacyShape: an axis past the end is 1; more than 4 axes are refused."""
    if len(shape) > 4:
        raise who.error(f"input has shape {list(shape)}; expected at most 4 axes (the fork reads "
                        "channels/height/width)")
    return int(shape[index]) if index < len(shape) else 1


def net_batch(ctx) -> int:
    """The batch of the net being projected (the largest first axis of its inputs)."""
    return max((int(s[0]) for s in ctx.net.graph.inputs.values() if len(s)), default=1)


def unfold_rows(layer: Layer, ctx, t: np.ndarray, shape: tuple, why: str) -> np.ndarray:
    """A signal of a blob whose first axis is not (or may not be) the batch, as
    (rows,) + shape: from the folded form (rows * shape[0],) + shape[1:], or from a seed's
    (rows,) + shape[1:] holding index items[r] of the first axis (see axis0_adjoint)."""
    n = net_batch(ctx)
    if n != 1:
        raise layer.error(f"{why}; backward passes through it need a batch of 1 (the net's is {n})")
    rows = len(ctx.items)
    if t.shape[0] == rows * shape[0]:
        return t.reshape((rows,) + tuple(shape))
    if t.shape[0] == rows:   # a seed at index items[r] of the first axis
        full = np.zeros((rows,) + tuple(shape), np.float32)
        full[np.arange(rows), ctx.items] = t
        return full
    raise layer.error(f"signal of {t.shape[0]} rows for {rows} projections of a {list(shape)} top; expected "
                      f"{rows} or {rows * shape[0]}")


def axis0_adjoint(layer: Layer, ctx, t: np.ndarray, inverse) -> np.ndarray:
    """The backward pass of a rearrangement that moves a blob's first axis (a Permute or
    Transpose whose order does not start with 0). The engine's signals have one row per
    projection in place of the batch axis; where a rearrangement moves the batch axis
    elsewhere, the rows are folded into the first axis instead: a signal is
    (rows * S0,) + shape[1:], S0 the blob's first axis. With a batch of 1 the two
    conventions agree on every blob whose first axis is the batch, so a net of batch 1
    (CTPN's, the only nets in the census that move the batch axis) projects through any
    number of such layers. A seed on a blob whose first axis is not the batch holds the
    unit at index items[r] of that axis. `inverse` maps (rows,) + top shape to
    (rows,) + bottom shape."""
    in_shape = tuple(layer.in_shapes[0])
    full = unfold_rows(layer, ctx, t, tuple(layer.out_shapes[0]), "moves the batch axis")
    rows = len(ctx.items)
    if in_shape[0] == 1 and np.any(ctx.items != 0):
        raise layer.error(f"a unit at index {int(ctx.items.max())} of a first axis that is not the batch cannot be "
                          "projected below here (the rows are batch items there); seed units (0, ...) of it")
    return np.ascontiguousarray(inverse(full)).reshape((rows * in_shape[0],) + in_shape[1:])


@register("Normalize")
class Normalize(Layer):
    """L2 normalisation with a learned scale: y = x / sqrt(sum x^2 + eps) * scale, eps inside
    the square root. across_spatial (default true) sums over C*H*W of each item, false over
    the channels at each position; channel_shared (default true) is one scalar scale (a
    0-axis blob, as the fork makes it), else one per channel. The scale blob is filled by
    norm_param.scale_filler (default constant 1.0) where the weights do not hold it.

    weiliu89/caffe@4817bf8b src/caffe/layers/normalize_layer.cpp"""

    def setup(self, lp):
        p = lp.norm_param
        self.across_spatial, self.channel_shared, self.eps = p.across_spatial, p.channel_shared, p.eps
        self.scale_filler = p.scale_filler if p.HasField("scale_filler") else \
            caffe_pb2.FillerParameter(type="constant", value=1.0)

    def output_shapes(self, in_shapes):
        s = in_shapes[0]
        if not 2 <= len(s) <= 4:
            raise self.error(f"input has shape {list(s)}; expected 2 to 4 axes (N x C [x H [x W]])")
        return [tuple(s)]

    def param_shapes(self, in_shapes):
        return [()] if self.channel_shared else [(int(in_shapes[0][1]),)]

    def fillers(self) -> list:
        """The fillers Caffe's LayerSetUp uses for the blobs (for a net without these weights)."""
        return [self.scale_filler]

    def macs(self):
        return 3 * count(self.out_shapes[0])

    def summary(self):
        where = "across C*H*W" if self.across_spatial else "across channels"
        scale = "shared scale" if self.channel_shared else "per-channel scale"
        return f"L2 {where}, {scale}, eps {self.eps:g}"

    def emit(self, e, ins, outs):
        x = ins[0]
        rank = len(self.in_shapes[0])
        axes = list(range(1, rank)) if self.across_spatial else [1]
        sumsq = e.op("ReduceSumSquare", [x, e.ints(axes, "axes")], keepdims=1)
        norm = e.op("Sqrt", [e.op("Add", [sumsq, e.const(self.eps, "eps")])])
        y = e.op("Div", [x, norm])
        scale = self.blobs[0]
        if self.channel_shared:
            s = e.weight(self, 0)
        else:
            s = e.weight(self, 0, np.asarray(scale, np.float32).reshape((-1,) + (1,) * (rank - 2)))
        e.op("Mul", [y, s], outs[0])

    def backward_reads(self):
        return list(self.bottoms)

    def _norm_axes(self, rank: int) -> tuple:
        return tuple(range(1, rank)) if self.across_spatial else (1,)

    def _scale(self, rank: int) -> np.ndarray:
        s = np.asarray(self.blobs[0], np.float64)
        return s.reshape(()) if self.channel_shared else s.reshape((1, -1) + (1,) * (rank - 2))

    def backward(self, ctx, top_diffs):
        """The true gradient, in every mode (the layer has no rectifier): with n = sqrt(sum
        x^2 + eps) over the layer's axes and s the scale, dx = s g / n - x sum(x s g) / n^3.
        (The fork's Backward_cpu computes s (g / n - x sum(x g) / n^3): the same for a
        shared scale, but not the gradient for a per-channel one.) In float64."""
        g = top_diffs[0].astype(np.float64)
        x = ctx.data(self.bottoms[0]).astype(np.float64)
        axes = self._norm_axes(x.ndim)
        n = np.sqrt((x * x).sum(axis=axes, keepdims=True) + self.eps)
        sg = g * self._scale(x.ndim)
        return [(sg / n - x * ((x * sg).sum(axis=axes, keepdims=True) / n ** 3)).astype(np.float32)]


@register("Permute")
class Permute(Layer):
    """A transpose. A partial `order` is completed with the missing axes in ascending
    order (`0 2` on 4-D is `0 2 1 3`); no order is the identity; repeated axes and axes
    past the input's are refused, as the fork's LayerSetUp does.

    weiliu89/caffe@4817bf8b src/caffe/layers/permute_layer.cpp"""

    def setup(self, lp):
        self.given = [int(o) for o in lp.permute_param.order]
        if len(set(self.given)) != len(self.given):
            raise self.error(f"permute_param.order {self.given} repeats an axis; expected each axis once")

    def output_shapes(self, in_shapes):
        s = in_shapes[0]
        bad = [o for o in self.given if o >= len(s)]
        if bad:
            raise self.error(f"permute_param.order names axis {bad[0]}; expected axes below {len(s)} "
                             f"(the input has shape {list(s)})")
        self.order = self.given + [i for i in range(len(s)) if i not in self.given]
        return [tuple(s[o] for o in self.order)]

    def summary(self):
        return "order " + " ".join(map(str, self.order))

    def geometry(self, in_geoms):
        g = in_geoms[0]
        if g is None or len(self.order) < 4 or self.order[2:4] == [2, 3]:
            return [g]
        return [WHOLE]       # the spatial axes moved: units are no longer a feature map

    def emit(self, e, ins, outs):
        if self.order == sorted(self.order):
            e.op("Identity", ins, outs[0])
        else:
            e.op("Transpose", ins, outs[0], perm=self.order)

    def backward_reads(self):
        return []

    def backward(self, ctx, top_diffs):
        """The inverse permutation, in every mode (see axis0_adjoint where the first axis moves)."""
        inv = list(np.argsort(self.order))
        t = top_diffs[0]
        if self.order[0] == 0:
            return [np.ascontiguousarray(t.transpose(inv))]
        return [axis0_adjoint(self, ctx, t, lambda a: a.transpose([0] + [i + 1 for i in inv]))]


@register("PriorBox")
class PriorBox(Layer):
    """SSD's default boxes for one feature map, [1, 2, H*W*num_priors*4]: channel 0 the
    boxes (xmin, ymin, xmax, ymax) normalised by the image size, channel 1 their 4
    variances. The values depend only on the parameters and the two bottoms' sizes, so
    they are computed once here and emitted as a constant.

    Fork semantics kept: min_size/max_size truncated to int; aspect ratios [1] + each new
    ratio (within 1e-6 of one in the list: skipped) followed by its reciprocal when flip
    (default true); per location and min_size: the min square, the sqrt(min*max) square,
    then one box per ratio != 1; clip default false; variance 1 value repeated, 4 values,
    or none = 0.1; step (or step_h/step_w) default image size / feature size per axis;
    img_size (or img_h/img_w) replaces the image size for the step and the normalisation.
    The second bottom (the image) is read only for its size, and only without img_size
    (the fork's header misspells ExactNumBottomBlobs, so one bottom passes its check).

    weiliu89/caffe@4817bf8b src/caffe/layers/prior_box_layer.cpp"""

    def setup(self, lp):
        p = lp.prior_box_param
        if not len(p.min_size):
            raise self.error("prior_box_param has no min_size; expected at least one")
        if any(not m > 0 for m in p.min_size):
            raise self.error(f"min_size {list(p.min_size)}; expected every min_size > 0")
        if any(not m < float("inf") for m in list(p.min_size) + list(p.max_size)):   # int(min_size) below
            raise self.error(f"min_size {list(p.min_size)}, max_size {list(p.max_size)}; expected finite sizes")
        self.min_sizes = [float(np.float32(m)) for m in p.min_size]
        ratios = [1.0]
        if any(not (0 < ar < float("inf")) for ar in p.aspect_ratio):   # 1/ar and sqrt(ar) below
            raise self.error(f"aspect_ratio {list(p.aspect_ratio)}; expected every aspect_ratio > 0 and finite")
        for ar in p.aspect_ratio:
            ar = float(np.float32(ar))
            if any(abs(ar - r) < 1e-6 for r in ratios):
                continue
            ratios.append(ar)
            if p.flip:
                ratios.append(float(np.float32(1.0 / ar)))
        self.ratios = ratios
        self.num_priors = len(ratios) * len(self.min_sizes)
        self.max_sizes = [float(np.float32(m)) for m in p.max_size]
        if self.max_sizes:
            if len(self.max_sizes) != len(self.min_sizes):
                raise self.error(f"{len(self.max_sizes)} max_size for {len(self.min_sizes)} min_size; "
                                 "expected one max_size per min_size")
            for lo, hi in zip(self.min_sizes, self.max_sizes):
                if not hi > lo:
                    raise self.error(f"max_size {hi:g} <= min_size {lo:g}; expected max_size > min_size")
            self.num_priors += len(self.max_sizes)
        self.clip, self.flip = p.clip, p.flip
        var = list(p.variance)
        if len(var) > 1 and len(var) != 4:
            raise self.error(f"{len(var)} variance values; expected 1 or 4 (or none: 0.1)")
        if any(not v > 0 for v in var):
            raise self.error(f"variance {var}; expected every value > 0")
        self.variance = [float(np.float32(v)) for v in var] if var else [float(np.float32(0.1))]
        if p.HasField("img_h") or p.HasField("img_w"):
            if p.HasField("img_size"):
                raise self.error("both img_size and img_h/img_w are given; expected one of them")
            if not (p.img_h > 0 and p.img_w > 0):
                raise self.error(f"img_h {p.img_h}, img_w {p.img_w}; expected both > 0")
            self.img_hw = (p.img_h, p.img_w)
        elif p.HasField("img_size"):
            if not p.img_size > 0:
                raise self.error("img_size 0; expected img_size > 0")
            self.img_hw = (p.img_size, p.img_size)
        else:
            self.img_hw = None
        if p.HasField("step_h") or p.HasField("step_w"):
            if p.HasField("step"):
                raise self.error("both step and step_h/step_w are given; expected one of them")
            if not (p.step_h > 0 and p.step_w > 0):
                raise self.error(f"step_h {p.step_h:g}, step_w {p.step_w:g}; expected both > 0")
            self.step_hw = (p.step_h, p.step_w)
        elif p.HasField("step"):
            if not p.step > 0:
                raise self.error(f"step {p.step:g}; expected step > 0")
            self.step_hw = (p.step, p.step)
        else:
            self.step_hw = None
        self.offset = p.offset

    def n_bottoms(self):
        return (1, 1 << 30) if self.img_hw else (2, 1 << 30)

    def output_shapes(self, in_shapes):
        h, w = _legacy(in_shapes[0], 2, self), _legacy(in_shapes[0], 3, self)
        if len(in_shapes) > 1:
            _legacy(in_shapes[1], 0, self)
        n = h * w * self.num_priors * 4
        if n <= 0:
            raise self.error(f"input has shape {list(in_shapes[0])}; expected a non-empty H x W feature map")
        return [(1, 2, n)]

    def geometry(self, in_geoms):
        return [None]      # boxes, not a feature map

    def summary(self):
        def ints(values):   # the sizes the fork uses: truncated to int
            return ",".join(f"{int(m)}" + (f"(={m:g})" if m != int(m) else "") for m in values)
        sizes = "min " + ints(self.min_sizes) + (" max " + ints(self.max_sizes) if self.max_sizes else "")
        ratios = ",".join(f"{r:.3g}" for r in self.ratios[1:])
        return f"{self.num_priors} priors/pos: {sizes}" + (f" ar {ratios}" if ratios else "") + \
            (" clip" if self.clip else "")

    def _sizes(self):
        """(img_h, img_w, step_h, step_w) as the fork's Forward_cpu takes them."""
        lh, lw = _legacy(self.in_shapes[0], 2, self), _legacy(self.in_shapes[0], 3, self)
        if self.img_hw:
            img_h, img_w = self.img_hw
        else:
            img_h, img_w = _legacy(self.in_shapes[1], 2, self), _legacy(self.in_shapes[1], 3, self)
        if self.step_hw:
            step_h, step_w = (np.float32(s) for s in self.step_hw)
        else:
            step_h, step_w = np.float32(img_h) / np.float32(lh), np.float32(img_w) / np.float32(lw)
        return lh, lw, img_h, img_w, step_h, step_w

    def half_sizes(self) -> np.ndarray:
        """(num_priors, 2): each box's width and height in pixels, in the fork's order."""
        out = []
        for s, m in enumerate(self.min_sizes):
            lo = int(m)                       # int min_size_ = min_sizes_[s]
            out.append((lo, lo))
            if self.max_sizes:
                side = np.float32(math.sqrt(lo * int(self.max_sizes[s])))
                out.append((side, side))
            for ar in self.ratios:
                if abs(ar - 1.0) < 1e-6:
                    continue
                out.append((np.float32(lo * math.sqrt(ar)), np.float32(lo / math.sqrt(ar))))
        return np.asarray(out, np.float64)

    def priors(self) -> np.ndarray:
        """The layer's output, [1, 2, H*W*num_priors*4] float32."""
        lh, lw, img_h, img_w, step_h, step_w = self._sizes()
        off = np.float32(self.offset)
        cx = ((np.arange(lw, dtype=np.float32) + off) * step_w).astype(np.float64)
        cy = ((np.arange(lh, dtype=np.float32) + off) * step_h).astype(np.float64)
        wh = self.half_sizes()
        bw, bh = wh[:, 0] / 2.0, wh[:, 1] / 2.0
        boxes = np.empty((lh, lw, len(wh), 4), np.float64)
        boxes[..., 0] = (cx[None, :, None] - bw) / img_w
        boxes[..., 1] = (cy[:, None, None] - bh) / img_h
        boxes[..., 2] = (cx[None, :, None] + bw) / img_w
        boxes[..., 3] = (cy[:, None, None] + bh) / img_h
        boxes = boxes.astype(np.float32).reshape(-1)
        if self.clip:
            boxes = np.clip(boxes, 0.0, 1.0)
        var = np.broadcast_to(np.asarray(self.variance, np.float32), (boxes.size // 4, 4)).reshape(-1) \
            if len(self.variance) == 4 else np.full(boxes.size, self.variance[0], np.float32)
        return np.stack([boxes, var])[None]

    def backward_reads(self):
        return []

    def backward(self, ctx, top_diffs):
        """The boxes depend on the bottoms' shapes only: no signal to them (as the fork's no-op)."""
        return [None] * len(self.bottoms)

    def emit(self, e, ins, outs):
        if e.dynamic and len(self.in_shapes[0]) == 4 and (self.img_hw or len(self.in_shapes[1]) == 4):
            self._emit_from_shapes(e, ins, outs[0])
            return
        e.op("Identity", [e.const(self.priors(), "priors")], outs[0])

    def _emit_from_shapes(self, e, ins, out):
        """For graphs whose image size is left open: the same boxes from the bottoms' shapes."""
        def dim(x, axis):
            return e.op("Cast", [e.op("Shape", [x], start=axis, end=axis + 1)], to=FLOAT)
        lh, lw = dim(ins[0], 2), dim(ins[0], 3)
        if self.img_hw:
            img_h, img_w = e.const([self.img_hw[0]]), e.const([self.img_hw[1]])
        else:
            img_h, img_w = dim(ins[1], 2), dim(ins[1], 3)
        if self.step_hw:
            step_h, step_w = e.const([self.step_hw[0]]), e.const([self.step_hw[1]])
        else:
            step_h, step_w = e.op("Div", [img_h, lh]), e.op("Div", [img_w, lw])
        zero, one, off = e.const(0.0), e.const(1.0), e.const(self.offset)

        def centres(n, step, shape):
            r = e.op("Range", [zero, e.op("Squeeze", [n]), one])
            c = e.op("Mul", [e.op("Add", [r, off]), step])
            return e.op("Reshape", [c, e.ints(shape)])
        cx = e.op("Mul", [centres(lw, step_w, [1, -1, 1, 1]), e.const([1, 0, 1, 0])])
        cy = e.op("Mul", [centres(lh, step_h, [-1, 1, 1, 1]), e.const([0, 1, 0, 1])])
        wh = self.half_sizes() / 2.0
        half = np.concatenate([-wh, wh], axis=1)[None, None]          # (1, 1, P, 4)
        corners = e.op("Add", [e.op("Add", [cx, cy]), e.const(half)])  # (H, W, P, 4)
        scale = e.op("Concat", [img_w, img_h, img_w, img_h], axis=0)
        boxes = e.op("Div", [corners, scale])
        if self.clip:
            boxes = e.op("Clip", [boxes, zero, one])
        var = e.const(self.variance)
        var = e.op("Expand", [var, e.op("Shape", [boxes])])
        flat = [e.op("Reshape", [v, e.ints([1, 1, -1])]) for v in (boxes, var)]
        e.op("Concat", flat, out, axis=1)

