"""Convolution and Deconvolution (grouped, strided, dilated, padded, N-D spatial)."""
from __future__ import annotations

import numpy as np

from .base import Layer, count, register, spatial_pairs


def transposed_filters(w: np.ndarray, group: int) -> np.ndarray:
    """(O, C/g, kh, kw) -> contiguous (g, C/g*kh*kw, O/g): the W^T of each group."""
    out_c = w.shape[0]
    return np.ascontiguousarray(w.reshape(group, out_c // group, -1).transpose(0, 2, 1))


def conv_input_diff(top: np.ndarray, wt: np.ndarray, kernel, stride, pad, dil, in_shape) -> np.ndarray:
    """The adjoint of a convolution (transposed filters, no bias): Caffe's W^T * top
    then col2im, computed only over the box of non-zero top values of each row.
    `wt` comes from transposed_filters()."""
    from ..kernels import col2im_add, nonzero_box  # Numba loads with the first backward pass
    rows = top.shape[0]
    c, h, w_ = in_shape[1:]
    kh, kw = kernel
    group, _, og = wt.shape
    out = np.zeros((rows, c, h, w_), np.float32)
    for r in range(rows):
        box = nonzero_box(top[r])
        if box is None:
            continue
        y0, y1, x0, x1 = box
        region = np.ascontiguousarray(top[r, :, y0:y1, x0:x1]).reshape(group, og, -1)
        col = np.matmul(wt, region).reshape(c, kh, kw, y1 - y0, x1 - x0)
        col2im_add(col, out[r], y0, x0, stride[0], stride[1], pad[0], pad[1], dil[0], dil[1])
    return out


def conv_forward_nobias(x: np.ndarray, w: np.ndarray, group: int, stride, pad, dil, out_hw) -> np.ndarray:
    """A plain convolution (im2col + GEMM), used as the adjoint of Deconvolution."""
    from ..kernels import im2col
    rows, c = x.shape[:2]
    out_c, cg, kh, kw = w.shape
    og = out_c // group
    oh, ow = out_hw
    wm = w.reshape(group, og, cg * kh * kw)
    out = np.empty((rows, out_c, oh, ow), np.float32)
    for r in range(rows):
        col = im2col(np.ascontiguousarray(x[r]), kh, kw, oh, ow, stride[0], stride[1], pad[0], pad[1],
                     dil[0], dil[1]).reshape(group, cg * kh * kw, oh * ow)
        out[r] = np.matmul(wm, col).reshape(out_c, oh, ow)
    return out


class _ConvBase(Layer):
    def backward_reads(self):
        return []  # the adjoint needs the parameters only

    def setup(self, lp):
        p = lp.convolution_param
        self.num_output = p.num_output
        self.bias_term = p.bias_term
        self.group = p.group
        self.axis = p.axis
        self.p = p
        if self.num_output == 0:
            raise self.error("convolution_param.num_output is missing or 0")
        if self.group < 1 or self.num_output % self.group:
            raise self.error(f"num_output {self.num_output} is not divisible by group {self.group}")

    def _spatial(self, in_shape):
        rank = len(in_shape)
        if self.axis not in (1, 1 - rank):
            raise self.error(f"axis {self.axis} is not supported (only the channel axis 1)")
        n = rank - 2
        if n < 1:
            raise self.error(f"input has shape {list(in_shape)}; expected N x C x spatial...")
        p = self.p
        if p.HasField("kernel_h") or p.HasField("kernel_w"):
            if n != 2 or len(p.kernel_size):
                raise self.error("kernel_h/kernel_w are for 2-D only and exclude kernel_size")
            kernel = (p.kernel_h, p.kernel_w)
        else:
            if not len(p.kernel_size):
                raise self.error("kernel_size (or kernel_h and kernel_w) is required")
            kernel = spatial_pairs(p.kernel_size, n, 0, self, "kernel_size")
        if p.HasField("stride_h") or p.HasField("stride_w"):
            stride = (p.stride_h or 1, p.stride_w or 1)
        else:
            stride = spatial_pairs(p.stride, n, 1, self, "stride")
        if p.HasField("pad_h") or p.HasField("pad_w"):
            pad = (p.pad_h, p.pad_w)
        else:
            pad = spatial_pairs(p.pad, n, 0, self, "pad")
        dilation = spatial_pairs(p.dilation, n, 1, self, "dilation")
        if min(kernel) < 1 or min(stride) < 1 or min(dilation) < 1:
            raise self.error(f"kernel {list(kernel)}, stride {list(stride)} and dilation {list(dilation)} "
                             "must be positive")
        self.kernel, self.stride, self.pad, self.dilation = kernel, stride, pad, dilation
        self.kernel_eff = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
        channels = in_shape[1]
        if channels % self.group:
            raise self.error(f"{channels} input channels are not divisible by group {self.group}")
        return channels

    def _require_2d(self):
        if len(self.kernel) != 2:
            raise self.error("backward passes support 2-D convolutions only")

    def summary(self):
        k = "x".join(map(str, self.kernel))
        s = f"{self.num_output} {k}/{self.stride[0]}"
        if any(self.pad):
            s += f" pad {self.pad[0]}"
        if any(d > 1 for d in self.dilation):
            s += f" dil {self.dilation[0]}"
        if self.group > 1:
            s += f" g{self.group}"
        return s

    def _attrs(self):
        return dict(kernel_shape=list(self.kernel), strides=list(self.stride),
                    pads=list(self.pad) * 2, dilations=list(self.dilation), group=self.group)


@register("Convolution")
class Convolution(_ConvBase):
    def output_shapes(self, in_shapes):
        s = in_shapes[0]
        self._spatial(s)
        out = []
        for i, (size, k, st, p) in enumerate(zip(s[2:], self.kernel_eff, self.stride, self.pad)):
            o = (size + 2 * p - k) // st + 1
            if o < 1:
                raise self.error(f"kernel {k} does not fit spatial size {size} with pad {p}; output would be empty")
            out.append(o)
        return [(s[0], self.num_output, *out)]

    def param_shapes(self, in_shapes):
        c = in_shapes[0][1]
        shapes = [(self.num_output, c // self.group, *self.kernel)]
        return shapes + [(self.num_output,)] if self.bias_term else shapes

    def geometry(self, in_geoms):
        g = in_geoms[0]
        return [g.window(self.kernel_eff, self.stride, self.pad) if g else None]

    def macs(self):
        c = self.in_shapes[0][1]
        return count(self.out_shapes[0]) * (c // self.group) * count(self.kernel)

    def emit(self, e, ins, outs):
        inputs = [ins[0], e.weight(self, 0)]
        if self.bias_term:
            inputs.append(e.weight(self, 1))
        e.op("Conv", inputs, outs[0], **self._attrs())

    def backward(self, ctx, top_diffs):
        self._require_2d()
        w = self.blobs[0]
        cached = getattr(self, "_wt", None)
        if cached is None or cached[0] is not w:  # recomputed when the weights are replaced
            self._wt = cached = (w, transposed_filters(w, self.group))
        return [conv_input_diff(top_diffs[0], cached[1], self.kernel, self.stride, self.pad,
                                self.dilation, self.in_shapes[0])]


@register("Deconvolution")
class Deconvolution(_ConvBase):
    def output_shapes(self, in_shapes):
        s = in_shapes[0]
        self._spatial(s)
        out = [st * (size - 1) + k - 2 * p
               for size, k, st, p in zip(s[2:], self.kernel_eff, self.stride, self.pad)]
        if min(out) < 1:
            raise self.error(f"output spatial size {out} is empty")
        return [(s[0], self.num_output, *out)]

    def param_shapes(self, in_shapes):
        c = in_shapes[0][1]
        shapes = [(c, self.num_output // self.group, *self.kernel)]
        return shapes + [(self.num_output,)] if self.bias_term else shapes

    def geometry(self, in_geoms):
        g = in_geoms[0]
        return [g.upsample(self.kernel_eff, self.stride, self.pad) if g else None]

    def macs(self):
        return count(self.in_shapes[0]) * (self.num_output // self.group) * count(self.kernel)

    def emit(self, e, ins, outs):
        inputs = [ins[0], e.weight(self, 0)]
        if self.bias_term:
            inputs.append(e.weight(self, 1))
        e.op("ConvTranspose", inputs, outs[0], **self._attrs())

    def backward(self, ctx, top_diffs):
        # Deconvolution's input diff is a plain convolution of its output diff: its
        # (C_in, C_out/g, kh, kw) blob is exactly a convolution's weight layout.
        self._require_2d()
        return [conv_forward_nobias(top_diffs[0], self.blobs[0], self.group, self.stride, self.pad, self.dilation,
                                    self.in_shapes[0][2:])]
