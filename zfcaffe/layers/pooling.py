"""Pooling: MAX (with switches), AVE and STOCHASTIC (test-time), global or windowed.

Caffe's rules, which ONNX's ceil_mode does not reproduce on its own:
  out = ceil((H + 2p - k) / s) + 1, then, only when p > 0, drop the last window
  if it would start at or beyond H + p;
  MAX takes the maximum over the window clipped to the image (first maximum wins);
  AVE sums over the clipped window and divides by the window clipped to [-p, H + p).
So each pooling is emitted with explicit, possibly asymmetric, padding and, for AVE,
a constant map that turns ONNX's k*k divisor into Caffe's.

MAX pooling may have a second top, the mask (BVLC Caffe and its forks; SegNet's
Upsample reads it): float, the flat index h * W + w of each window's first maximum
within its own input plane, the switches' numbers as floats.

`pooling_param.ceil_mode: false` (BVLC/caffe pull request 3057, dujianyi/caffe@aed992ed
src/caffe/layers/pooling_layer.cpp; DenseNet-Caffe uses it; default true) takes
floor((H + 2p - k) / s) + 1 instead of ceil; the pad rule after it is the same. So does
`round_mode: FLOOR` (its successor, BVLC/caffe pull request 6282, as
eric612/MobileNet-YOLO@69b4441c src/caffe/layers/pooling_layer.cpp has it).
"""
from __future__ import annotations

import math

import numpy as np

from .. import caffe_pb2
from .base import FLOAT, INT32, WHOLE, Layer, count, register

P = caffe_pb2.PoolingParameter


def caffe_pooled_size(size: int, k: int, s: int, p: int, any_pad: bool, ceil: bool = True) -> int:
    out = (int(math.ceil((size + 2 * p - k) / s)) if ceil else (size + 2 * p - k) // s) + 1
    if any_pad and (out - 1) * s >= size + p:
        out -= 1
    return out


def caffe_ave_divisor(size: int, out: int, k: int, s: int, p: int) -> np.ndarray:
    start = np.arange(out) * s - p
    end = np.minimum(start + k, size + p)
    return (end - start).astype(np.float64)


@register("Pooling")
class Pooling(Layer):
    def backward_reads(self):
        return list(self.bottoms) if self.method == P.MAX else []   # the near-tie check reads the input

    def setup(self, lp):
        p = lp.pooling_param
        self.method = p.pool
        self.global_pooling = p.global_pooling
        # ceil_mode (BVLC/caffe#3057) or round_mode (BVLC/caffe#6282, in eric612/MobileNet-YOLO): same rule
        self.ceil_mode = p.ceil_mode and not (hasattr(p, "round_mode") and p.round_mode == getattr(P, "FLOOR", -1))
        self.n_tops = len(lp.top)
        if self.n_tops > (2 if self.method == P.MAX else 1):
            raise self.error(f"has {self.n_tops} tops; expected 1" + (" or 2 (the pooled values and the mask)"
                                                                      if self.method == P.MAX else
                                                                      " (only MAX pooling has a mask top)"))
        if p.HasField("kernel_h") or p.HasField("kernel_w"):
            self.kernel = (p.kernel_h, p.kernel_w)
        else:
            self.kernel = (p.kernel_size, p.kernel_size)
        if p.HasField("pad_h") or p.HasField("pad_w"):
            self.pad = (p.pad_h, p.pad_w)
        else:
            self.pad = (p.pad, p.pad)
        if p.HasField("stride_h") or p.HasField("stride_w"):
            self.stride = (p.stride_h or 1, p.stride_w or 1)
        else:
            self.stride = (p.stride, p.stride)
        if not self.global_pooling and min(self.kernel) < 1:
            raise self.error("kernel_size (or kernel_h and kernel_w) is required")
        if self.global_pooling and (any(self.pad) or self.stride != (1, 1)):
            raise self.error("global pooling takes no pad and stride 1")
        if any(p >= k for p, k in zip(self.pad, self.kernel)) and not self.global_pooling:
            raise self.error(f"pad {list(self.pad)} must be smaller than kernel {list(self.kernel)}")

    def output_shapes(self, in_shapes):
        s = in_shapes[0]
        if len(s) != 4:
            raise self.error(f"input has shape {list(s)}; expected N x C x H x W")
        if self.global_pooling:
            self.kernel = (s[2], s[3])
        if min(self.kernel) < 1 or min(self.stride) < 1 or min(self.pad) < 0:
            raise self.error(f"kernel {list(self.kernel)} and stride {list(self.stride)} must be positive, "
                             f"pad {list(self.pad)} not negative")
        any_pad = any(self.pad)
        out = tuple(caffe_pooled_size(size, k, st, p, any_pad, self.ceil_mode)
                    for size, k, st, p in zip(s[2:], self.kernel, self.stride, self.pad))
        if min(out) < 1:
            raise self.error(f"kernel {list(self.kernel)} does not fit input {list(s[2:])}")
        return [(s[0], s[1], *out)] * self.n_tops

    def geometry(self, in_geoms):
        g = in_geoms[0]
        if g is None:
            return [None] * self.n_tops
        if self.global_pooling:
            return [WHOLE] * self.n_tops
        return [g.window(self.kernel, self.stride, self.pad)] * self.n_tops

    def macs(self):
        return count(self.out_shapes[0]) * count(self.kernel)

    def summary(self):
        name = P.PoolMethod.Name(self.method) + (" +mask" if self.n_tops == 2 else "")
        if self.global_pooling:
            return f"{name} global"
        s = f"{name} {self.kernel[0]}x{self.kernel[1]}/{self.stride[0]}"
        return s + (f" pad {self.pad[0]}" if any(self.pad) else "") + ("" if self.ceil_mode else " floor")

    # -- backward ---------------------------------------------------------------
    def backward(self, ctx, top_diffs):
        from ..kernels import ave_unpool_add, mark_near_ties, max_unpool_add  # Numba loads lazily
        if top_diffs[0] is None:     # only the mask top has a diff: an index map carries no gradient
            return [None]
        top = np.ascontiguousarray(top_diffs[0], np.float32)
        rows, c, oh, ow = top.shape
        _, _, h, w = self.in_shapes[0]
        out = np.zeros((rows * c, h, w), np.float32)
        planes = top.reshape(rows * c, oh, ow)
        if self.method == P.MAX:
            switches = np.ascontiguousarray(ctx.switches(self.name))
            max_unpool_add(planes, switches.reshape(rows * c, oh, ow), out)
            marks = np.zeros(top.shape, np.uint8)
            # a window another rounding may route elsewhere (zfcaffe/rounding.py's bounds)
            from ..rounding import MARGIN
            if top.any() and mark_near_ties(ctx.full(self.bottoms[0]), ctx.items,
                                            np.ascontiguousarray(ctx.bound(self.bottoms[0]), np.float32), top,
                                            switches, self.kernel[0], self.kernel[1], self.stride[0],
                                            self.stride[1], self.pad[0], self.pad[1], MARGIN, marks):
                ctx.note_near_ties(self.name, [(int(ctx.items[r]), int(ch), int(y), int(x))
                                               for r, ch, y, x in zip(*np.nonzero(marks))])
        elif self.method == P.AVE:
            ave_unpool_add(planes, out, self.kernel[0], self.kernel[1], self.stride[0], self.stride[1],
                           self.pad[0], self.pad[1])
        else:
            raise self.error("Caffe has no backward pass for STOCHASTIC pooling at test time")
        return [out.reshape(rows, c, h, w)]

    # -- emission ---------------------------------------------------------------
    def end_pads(self) -> tuple[int, int]:
        """Padding after the last row/column that makes floor-mode pooling Caffe's."""
        _, _, h, w = self.in_shapes[0]
        oh, ow = self.out_shapes[0][2:]
        return tuple((o - 1) * s + k - size - p for o, s, k, size, p in
                     zip((oh, ow), self.stride, self.kernel, (h, w), self.pad))

    def emit(self, e, ins, outs):
        x = ins[0]
        _, _, h, w = self.in_shapes[0]
        if e.dynamic and not self.global_pooling and self.method != P.STOCHASTIC:
            self._emit_ceil_mode(e, x, outs)
            return
        end = self.end_pads()
        if any(pe >= k for pe, k in zip(end, self.kernel)):
            raise self.error("a pooling window starts beyond the input (kernel < stride without pad); unsupported")
        # Windows never reaching the last rows/columns: cut those off first.
        self.used_hw = (h + min(end[0], 0), w + min(end[1], 0))
        if min(end) < 0:
            x = e.op("Slice", [x, e.ints([0, 0]), e.ints(self.used_hw), e.ints([2, 3])])
            end = (max(end[0], 0), max(end[1], 0))
        pads = [self.pad[0], self.pad[1], end[0], end[1]]
        if self.method == P.MAX:
            self._emit_max(e, x, outs, pads)
        elif self.method == P.AVE:
            self._emit_ave(e, x, outs[0], pads)
        else:
            self._emit_stochastic(e, x, outs[0], end)

    def _emit_ceil_mode(self, e, x, outs):
        """For graphs whose image size is left open (convert --dynamic): ONNX's ceil_mode
        instead of pads computed for one size. AVE pads explicitly and counts only the
        padded tensor's own cells, which is Caffe's divisor (the window clipped to
        [-pad, size + pad)). export_dynamic checks the result against Caffe's rules."""
        ph, pw = self.pad
        out = outs[0]
        attrs = dict(kernel_shape=list(self.kernel), strides=list(self.stride), ceil_mode=int(self.ceil_mode))
        if self.method == P.MAX:
            indexed = e.switches or len(outs) > 1
            outputs = [out, f"{self.name}/indices"] if indexed else [out]
            names = e.node("MaxPool", [x], outputs, pads=[ph, pw, ph, pw], **attrs)
            if indexed:
                plane = e.op("ReduceProd", [e.op("Shape", [x], start=2)], keepdims=0)
                self._emit_indices(e, e.op("Mod", [names[1], plane]), outs)
            return
        if ph or pw:
            x = e.op("Pad", [x, e.ints([0, 0, ph, pw, 0, 0, ph, pw])])
        e.op("AveragePool", [x], out, count_include_pad=0, **attrs)

    def _emit_indices(self, e, plane_index: str, outs) -> None:
        """The switches output (int32) and the mask top (float), from the int64 index
        of each window's maximum within its input plane (y * W + x)."""
        if e.switches:
            name = f"{self.name}/switches"
            e.op("Cast", [plane_index], name, to=INT32)
            e.output(name, INT32, self.out_shapes[0])
        if len(outs) > 1:
            e.op("Cast", [plane_index], outs[1], to=FLOAT)

    def _emit_max(self, e, x, outs, pads):
        out = outs[0]
        attrs = dict(kernel_shape=list(self.kernel), strides=list(self.stride), pads=pads)
        if e.switches or len(outs) > 1:
            # MaxPool's Indices are Caffe's switches (first maximum in row-major order),
            # but counted over the whole (N, C, h, w) tensor that was pooled; Caffe's mask
            # counts within one plane of the unsliced input: y * W + x. Converted here,
            # so the ONNX file and net.switches hold the same numbers.
            raw = e.node("MaxPool", [x], [out, f"{self.name}/indices"], **attrs)[1]
            _, _, _, w = self.in_shapes[0]
            uh, uw = self.used_hw
            local = e.op("Mod", [raw, e.ints(uh * uw)])
            if uw != w:
                row = e.op("Div", [local, e.ints(uw)])
                local = e.op("Add", [e.op("Mul", [row, e.ints(w)]), e.op("Mod", [local, e.ints(uw)])])
            self._emit_indices(e, local, outs)
        elif self.global_pooling:
            e.op("GlobalMaxPool", [x], out)
        else:
            e.op("MaxPool", [x], out, **attrs)

    def _emit_ave(self, e, x, out, pads):
        if self.global_pooling:
            e.op("GlobalAveragePool", [x], out)
            return
        if any(pads):
            x = e.op("Pad", [x, e.ints([0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]])])
        needs_fix = self._ave_correction()
        y = e.op("AveragePool", [x], None if needs_fix is not None else out,
                 kernel_shape=list(self.kernel), strides=list(self.stride))
        if needs_fix is not None:
            e.op("Mul", [y, e.const(needs_fix, "ave_divisor")], out)

    def _ave_correction(self):
        """k*k / Caffe's divisor per output position, or None when it is all ones."""
        _, _, h, w = self.in_shapes[0]
        oh, ow = self.out_shapes[0][2:]
        dh = caffe_ave_divisor(h, oh, self.kernel[0], self.stride[0], self.pad[0])
        dw = caffe_ave_divisor(w, ow, self.kernel[1], self.stride[1], self.pad[1])
        fix = count(self.kernel) / np.outer(dh, dw)
        return None if np.all(fix == 1) else fix.reshape(1, 1, oh, ow).astype(np.float32)

    def _emit_stochastic(self, e, x, out, end):
        # Caffe's test-time stochastic pooling: sum(x^2) / sum(x) over the window
        # clipped to the image (no padding), with FLT_MIN added to the denominator.
        if any(self.pad):
            raise self.error("STOCHASTIC pooling with pad is not supported")
        attrs = dict(kernel_shape=list(self.kernel), strides=list(self.stride))
        if any(end):
            x = e.op("Pad", [x, e.ints([0, 0, 0, 0, 0, 0, end[0], end[1]])])
        sq = e.op("Mul", [x, x])
        k2 = float(count(self.kernel))
        num = e.op("AveragePool", [sq], **attrs)
        den = e.op("AveragePool", [x], **attrs)
        den = e.op("Add", [e.op("Mul", [den, e.const(k2)]), e.const(np.finfo(np.float32).tiny)])
        e.op("Div", [e.op("Mul", [num, e.const(k2)]), den], out)
