"""PSPNet's layers (hszhao/PSPNet, a DeepLab-v2-based Caffe): its `BN` (slope, bias,
moving mean, moving variance) and `Interp` (bilinear resize with aligned corners,
optionally cropping first).

Both are transcribed from hszhao/PSPNet@798bdc907c8630e8c3997ebfdd0d7cae0c5ab03b:
src/caffe/layers/bn_layer.cpp, src/caffe/layers/interp_layer.cpp and
src/caffe/util/interp.cpp (caffe_cpu_interp2, George Papandreou's DeepLab code).
"""
from __future__ import annotations

import numpy as np

from .. import caffe_pb2
from .base import FLOAT, INT64, Layer, count, register

#: bn_param fields that only PSPNet's BN has (SegNet/ENet's has bn_mode, scale_filler, shift_filler)
PSPNET_BN_FIELDS = ("slope_filler", "bias_filler", "frozen", "momentum", "eps")


def is_pspnet_bn(lp, hints=frozenset()) -> bool:
    """A BN layer is PSPNet's when it sets a field only PSPNet's bn_param has, or
    declares the four `param` specs of its four blobs."""
    if "pspnet" in hints:
        return True
    if lp.HasField("bn_param"):
        p = lp.bn_param
        if any(f in p.DESCRIPTOR.fields_by_name and p.HasField(f) for f in PSPNET_BN_FIELDS):
            return True
    return len(lp.param) == 4


@register("BN", fork="pspnet", when=is_pspnet_bn)
class PSPNetBN(Layer):
    """hszhao/PSPNet@798bdc90 src/caffe/layers/bn_layer.cpp (BNLayer::Forward_cpu).

    Four blobs, each 1 x C x 1 x 1: slope (gamma), bias (beta), moving mean, moving
    variance. In TEST phase, or when `frozen`, the layer uses the stored statistics:
        y = ((x - mean) * (var + eps)^-0.5) * gamma + beta
    rounded in float32 after each step, in that order. (TRAIN phase without `frozen`
    would use the batch's statistics; zfcaffe runs nets as Caffe's TEST phase does.)"""

    def backward_reads(self):
        # frozen: a per-channel affine map. Not frozen, the fork's backward uses the batch
        # statistics' formula even in TEST phase, which reads the input (see the oracle README).
        return [] if self.frozen else list(self.bottoms)

    def setup(self, lp):
        p = lp.bn_param
        self.frozen = p.frozen
        self.eps = np.float32(p.eps)
        self.momentum = p.momentum

    def output_shapes(self, in_shapes):
        s = in_shapes[0]
        if not 2 <= len(s) <= 4:
            raise self.error(f"input has shape {list(s)}; expected N x C (x H x W), 2 to 4 axes")
        return [tuple(s)]

    def param_shapes(self, in_shapes):
        return [(1, in_shapes[0][1], 1, 1)] * 4

    def fillers(self):
        # LayerSetUp: slope_filler, bias_filler; mean 0; variance 1 when frozen, else 0
        p = self.lp.bn_param
        const = caffe_pb2.FillerParameter
        return [p.slope_filler, p.bias_filler, const(type="constant", value=0.0),
                const(type="constant", value=1.0 if self.frozen else 0.0)]

    def macs(self):
        return 4 * count(self.out_shapes[0])

    def summary(self):
        return f"eps {float(self.eps):g}" + (" frozen" if self.frozen else "")

    def affine(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(mean, inv_std, gamma, beta), each (C,) float32; inv_std = (var + eps)^-0.5 as
        Caffe computes it (caffe_add_scalar, then caffe_powx: powf)."""
        gamma, beta, mean, var = (np.asarray(b, np.float32).reshape(-1) for b in self.blobs)
        with np.errstate(divide="ignore", invalid="ignore"):
            # var + eps rounded in float32; glibc's powf is correctly rounded, NumPy's float32
            # power is not: the power in float64, rounded once, is powf's result
            inv_std = np.power((var + self.eps).astype(np.float64), -0.5).astype(np.float32)
        return mean, inv_std, gamma, beta

    def _per_channel(self, v):
        return np.asarray(v, np.float32).reshape((-1,) + (1,) * (len(self.in_shapes[0]) - 2))

    def backward(self, ctx, top_diffs):
        """bn_layer.cpp Backward_cpu, in every mode. Frozen: dy * (slope * (var + eps)^-1/2),
        the adjoint of the forward. Not frozen: the batch-statistics formula
        inv_std * (g - mean(g) - x_hat * mean(x_hat * g)), g = slope * dy, means over N, H, W,
        with x_hat and inv_std those of the forward pass (the moving statistics in TEST
        phase): there it is not the gradient of the forward, which is affine per channel,
        and it couples the items of the batch (batch_backward.py)."""
        dy = top_diffs[0]
        mean, inv_std, gamma, _ = self.affine()
        if self.frozen:
            return [dy * self._per_channel((gamma * inv_std).astype(np.float32))]
        from .batch_backward import batch_span, batch_stat_backward
        span = batch_span(self, ctx)
        x = np.asarray(ctx.data(self.bottoms[0]), np.float32)
        x_hat = (x - self._per_channel(mean)) * self._per_channel(inv_std)
        return [batch_stat_backward(dy, x_hat, gamma, inv_std, span)]

    def emit(self, e, ins, outs):
        mean, inv_std, gamma, beta = self.affine()
        pc = self._per_channel
        if e.faithful:
            # Caffe's four roundings, one op each. Sub, not Add(-mean): ONNX Runtime would fold
            # an Add into the convolution before, and then the Mul into its weights.
            y = e.op("Sub", [ins[0], e.weight(self, 2, pc(mean))])
            y = e.op("Mul", [y, e.weight(self, 3, pc(inv_std))])
            y = e.op("Mul", [y, e.weight(self, 0, pc(gamma))])
            e.op("Add", [y, e.weight(self, 1, pc(beta))], outs[0])
            return
        # x * (gamma * inv_std) + (beta - mean * gamma * inv_std): a per-channel Mul and Add
        # that ONNX Runtime folds into the convolution before (float32 rounding differs by ulps)
        scale = gamma.astype(np.float64) * inv_std
        shift = beta - mean.astype(np.float64) * scale
        y = e.op("Mul", [ins[0], e.weight(self, 0, pc(scale))])
        e.op("Add", [y, e.weight(self, 1, pc(shift))], outs[0])


def interp_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """caffe_cpu_interp2's taps along one axis, in its float32 arithmetic: for each output
    index, the two input indices (i0, i1) and their weights (1 - lambda, lambda), with
    r = (n_in - 1) / (n_out - 1) (0 for a single output), s = r * o, i0 = trunc(s),
    lambda = s - i0, i1 = i0 + (i0 < n_in - 1)."""
    r = np.float32(n_in - 1) / np.float32(n_out - 1) if n_out > 1 else np.float32(0)
    s = r * np.arange(n_out, dtype=np.float32)
    i0 = s.astype(np.int64)          # C's int conversion truncates (s >= 0)
    lam1 = (s - i0.astype(np.float32)).astype(np.float32)
    lam0 = (np.float32(1) - lam1).astype(np.float32)
    i1 = i0 + (i0 < n_in - 1)
    return i0, i1, lam0, lam1


def interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    """The (n_out, n_in) matrix of one axis of the forward interpolation (float64 of its
    float32 weights); a tap whose two indices coincide gets both weights."""
    i0, i1, l0, l1 = interp_taps(n_in, n_out)
    m = np.zeros((n_out, n_in))
    o = np.arange(n_out)
    np.add.at(m, (o, i0), l0.astype(np.float64))
    np.add.at(m, (o, i1), l1.astype(np.float64))
    return m


@register("Interp")
class Interp(Layer):
    """hszhao/PSPNet@798bdc90 src/caffe/layers/interp_layer.cpp, src/caffe/util/interp.cpp.

    Crops by -pad_beg at the top/left and -pad_end at the bottom/right (both <= 0, the same
    on both axes), then resizes bilinearly with aligned corners to a size chosen by which
    fields are present: shrink_factor alone, zoom_factor alone, height and width, or
    shrink then zoom. A 1-row (1-column) output takes the first row (column) of the
    cropped input; an output the size of the cropped input is a plain copy."""

    def backward_reads(self):
        return []   # linear: the backward pass reads no forward value

    def setup(self, lp):
        p = lp.interp_param
        self.pad_beg, self.pad_end = p.pad_beg, p.pad_end
        if self.pad_beg > 0 or self.pad_end > 0:
            raise self.error(f"pad_beg {self.pad_beg} and pad_end {self.pad_end}: expected <= 0 "
                             "(Interp only crops)")
        has = {f: p.HasField(f) for f in ("shrink_factor", "zoom_factor", "height", "width")}
        self.shrink, self.zoom, self.size = p.shrink_factor, p.zoom_factor, (p.height, p.width)
        if has["shrink_factor"] and not has["zoom_factor"]:
            self.mode = "shrink"
        elif has["zoom_factor"] and not has["shrink_factor"]:
            self.mode = "zoom"
        elif has["height"] and has["width"]:
            self.mode = "size"
        elif has["shrink_factor"] and has["zoom_factor"]:
            self.mode = "shrink_zoom"
        else:
            raise self.error("interp_param sets no output size; expected zoom_factor, shrink_factor, "
                             "or height and width")
        if self.mode in ("shrink", "shrink_zoom") and self.shrink < 1:
            raise self.error(f"shrink_factor {self.shrink}: expected >= 1")
        if self.mode in ("zoom", "shrink_zoom") and self.zoom < 1:
            raise self.error(f"zoom_factor {self.zoom}: expected >= 1")

    def output_shapes(self, in_shapes):
        s = in_shapes[0]
        if len(s) != 4:
            raise self.error(f"input has shape {list(s)}; expected N x C x H x W")
        eff = tuple(d + self.pad_beg + self.pad_end for d in s[2:])
        if min(eff) <= 0:
            raise self.error(f"cropping {-self.pad_beg} and {-self.pad_end} leaves nothing of input "
                             f"{list(s[2:])}; expected a positive size")
        if self.mode == "size":
            out = self.size
        else:
            out = eff
            if self.mode in ("shrink", "shrink_zoom"):
                out = tuple((d - 1) // self.shrink + 1 for d in out)
            if self.mode in ("zoom", "shrink_zoom"):
                out = tuple(d + (d - 1) * (self.zoom - 1) for d in out)
        if min(out) <= 0:
            raise self.error(f"output size {list(out)}: expected positive height and width")
        self.eff = eff
        return [(s[0], s[1], *out)]

    def geometry(self, in_geoms):
        g = in_geoms[0]
        if g is None or g.whole:
            return [g]
        g = g.shift((-self.pad_beg, -self.pad_beg))
        out = self.out_shapes[0][2:]
        ratio = tuple((e - 1) / (o - 1) if o > 1 else 0.0 for e, o in zip(self.eff, out))
        # a fractional step blends two neighbouring units (an integer one, or 0, picks one)
        rf = tuple(r + (j if q != int(q) else 0) for r, j, q in zip(g.rf, g.jump, ratio))
        return [type(g)(rf, tuple(j * q for j, q in zip(g.jump, ratio)), g.start)]

    def macs(self):
        return 6 * count(self.out_shapes[0])

    def summary(self):
        what = {"shrink": f"shrink {self.shrink}", "zoom": f"zoom {self.zoom}",
                "size": f"to {self.size[0]}x{self.size[1]}",
                "shrink_zoom": f"shrink {self.shrink} zoom {self.zoom}"}[self.mode]
        crop = f" crop {-self.pad_beg}/{-self.pad_end}" if self.pad_beg or self.pad_end else ""
        return what + crop

    def backward(self, ctx, top_diffs):
        """The exact adjoint of the forward, in every mode (the fork's
        caffe_cpu_interp2_backward): each output diff scattered to its four taps with
        their weights; the rows and columns the crop removed get zero."""
        dy = np.asarray(top_diffs[0], np.float32)
        rows, c = dy.shape[:2]
        _, _, h, w = self.in_shapes[0]
        h_in, w_in = self.eff
        h_out, w_out = dy.shape[2:]
        if (h_in, w_in) == (h_out, w_out):
            crop = dy
        else:
            a_h, a_w = interp_matrix(h_in, h_out), interp_matrix(w_in, w_out)
            crop = a_h.T @ dy.astype(np.float64) @ a_w          # (rows, C, h_in, w_in)
        out = np.zeros((rows, c, h, w), np.float32)
        b = -self.pad_beg
        out[:, :, b:b + h_in, b:b + w_in] = crop
        return [out]

    def forward_numpy(self, x: np.ndarray) -> np.ndarray:
        """The fork's arithmetic in NumPy float32 (for checks)."""
        x = np.asarray(x, np.float32)
        b, h_in, w_in = -self.pad_beg, *self.eff
        x = x[:, :, b:b + h_in, b:b + w_in]
        h_out, w_out = self.out_shapes[0][2:]
        if (h_in, w_in) == (h_out, w_out):
            return x.copy()
        j0, j1, wl0, wl1 = interp_taps(w_in, w_out)
        i0, i1, hl0, hl1 = interp_taps(h_in, h_out)
        t = wl0 * x[..., j0] + wl1 * x[..., j1]
        return hl0[:, None] * t[..., i0, :] + hl1[:, None] * t[..., i1, :]

    def emit(self, e, ins, outs):
        if e.dynamic:
            self._emit_open_size(e, ins[0], outs[0])
            return
        _, _, h, w = self.in_shapes[0]
        h_in, w_in = self.eff
        h_out, w_out = self.out_shapes[0][2:]
        b = -self.pad_beg
        x = ins[0]
        if (h_in, w_in) == (h_out, w_out):   # the copy special case (after the crop)
            if (h_in, w_in) == (h, w):
                e.op("Identity", [x], outs[0])
            else:
                e.op("Slice", [x, e.ints([b, b]), e.ints([b + h_in, b + w_in]), e.ints([2, 3])], outs[0])
            return
        # Columns, then rows, as caffe_cpu_interp2 nests them:
        #   y = h0 * (w0 * X[i0, j0] + w1 * X[i0, j1]) + h1 * (w0 * X[i1, j0] + w1 * X[i1, j1])
        # each product and sum rounded in float32 as there. Gathers on the uncropped input
        # (indices offset by the crop) take the crop along with them.
        x = self._axis(e, x, 3, w_in, w_out, b, None)
        self._axis(e, x, 2, h_in, h_out, b, outs[0])

    def _axis(self, e, x, axis, n_in, n_out, offset, out):
        i0, i1, l0, l1 = interp_taps(n_in, n_out)
        shape = (-1,) if axis == 3 else (-1, 1)
        if not l1.any():   # every output on an input row/column: weight 1 (1 * v is v)
            return e.op("Gather", [x, e.ints(i0 + offset)], out, axis=axis)
        a = e.op("Mul", [e.op("Gather", [x, e.ints(i0 + offset)], axis=axis), e.const(l0.reshape(shape))])
        b = e.op("Mul", [e.op("Gather", [x, e.ints(i1 + offset)], axis=axis), e.const(l1.reshape(shape))])
        return e.op("Add", [a, b], out)

    # -- open image size (convert --dynamic) -------------------------------------------------
    def _emit_open_size(self, e, x, out):
        """The same taps, computed in the graph from the input's size with the fork's float32
        arithmetic (r, s = r * o, trunc, lambda), so any input size gives the fork's numbers."""
        b = -self.pad_beg
        if (self.mode == "zoom" and self.zoom == 1) or (self.mode == "shrink" and self.shrink == 1):
            # the output is always the cropped input: the copy special case
            end = self.pad_end if self.pad_end else np.iinfo(np.int64).max
            e.op("Slice", [x, e.ints([b, b]), e.ints([end, end]), e.ints([2, 3])], out)
            return
        hw = e.op("Slice", [e.op("Shape", [x]), e.ints([2]), e.ints([4])])
        eff = e.op("Add", [hw, e.ints([self.pad_beg + self.pad_end] * 2)])
        if self.mode == "size":
            size = e.ints(list(self.size))
        else:
            size = eff
            one = e.ints([1, 1])
            if self.mode in ("shrink", "shrink_zoom"):
                size = e.op("Add", [e.op("Div", [e.op("Sub", [size, one]), e.ints([self.shrink] * 2)]), one])
            if self.mode in ("zoom", "shrink_zoom"):
                size = e.op("Add", [size, e.op("Mul", [e.op("Sub", [size, one]), e.ints([self.zoom - 1] * 2)])])
        y = self._open_axis(e, x, 3, eff, size, b, None)
        self._open_axis(e, y, 2, eff, size, b, out)

    def _open_axis(self, e, x, axis, eff, size, offset, out):
        pick = e.ints([axis - 2])
        n_in = e.op("Gather", [eff, pick], axis=0)               # [1] int64
        n_out = e.op("Gather", [size, pick], axis=0)
        one = e.ints([1])
        f_in = e.op("Cast", [e.op("Sub", [n_in, one])], to=FLOAT)
        f_out = e.op("Cast", [e.op("Sub", [n_out, one])], to=FLOAT)
        r = e.op("Where", [e.op("Greater", [n_out, one]), e.op("Div", [f_in, f_out]), e.const([0.0])])
        scalar = lambda v: e.const(v, "scalar", np.int64)     # noqa: E731
        o = e.op("Range", [scalar(0), e.op("Squeeze", [n_out, e.ints([0])]), scalar(1)])
        s = e.op("Mul", [r, e.op("Cast", [o], to=FLOAT)])
        i0 = e.op("Cast", [s], to=INT64)                         # truncation, as C's int conversion
        l1 = e.op("Sub", [s, e.op("Cast", [i0], to=FLOAT)])
        l0 = e.op("Sub", [e.const([1.0]), l1])
        i1 = e.op("Add", [i0, e.op("Cast", [e.op("Less", [i0, e.op("Sub", [n_in, one])])], to=INT64)])
        if axis == 2:
            l0, l1 = (e.op("Unsqueeze", [v, e.ints([1])]) for v in (l0, l1))
        at = e.ints([offset])
        a = e.op("Mul", [e.op("Gather", [x, e.op("Add", [i0, at])], axis=axis), l0])
        b = e.op("Mul", [e.op("Gather", [x, e.op("Add", [i1, at])], axis=axis), l1])
        return e.op("Add", [a, b], out)
