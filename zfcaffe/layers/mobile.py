"""Mobile nets' fork layers: depthwise convolution under its two fork names
(ConvolutionDepthwise, DepthwiseConvolution), ShuffleChannel, Axpy (SENet) and ReLU6."""
from __future__ import annotations

import numpy as np

from .activations import _Neuron
from .base import Layer, count, register
from .conv import Convolution


@register("ConvolutionDepthwise")
class ConvolutionDepthwise(Convolution):
    """farmingyard/caffe-mobilenet@f7d7d130761727560f201c1ff5c274e938888b5f conv_dw_layer.cpp (sp2823's
    BVLC/caffe PR #5665), the layer farmingyard/ShuffleNet@b9624442 and ChenYingpeng/caffe-yolov3@8db9e388
    prototxts name: one k x k filter per channel, so a grouped convolution with group = num_output = the
    input's channels, whatever convolution_param says: `num_output` and `group` are never read. Blobs
    (C, 1, kh, kw) and, with bias_term, (C,). 4-D only (num/channels/height/width). The fork reads kernel_h
    and kernel_w only when both are given, else kernel_size[0] (and [1]); likewise stride_h/stride_w and
    pad_h/pad_w; dilation [0] (and [1]). An empty stride or pad list is undefined behaviour there
    (stride(0) of an empty field): zfcaffe takes Caffe's defaults 1 and 0."""

    def setup(self, lp):
        p = lp.convolution_param
        self.p = p
        self.bias_term = p.bias_term
        self.axis = 1
        self.group = self.num_output = 0   # the input's channels, set by output_shapes

        def pair(h: str, w: str, values, default: int, what: str):
            if p.HasField(h) and p.HasField(w):
                return getattr(p, h), getattr(p, w)
            values = list(values)
            if not values:
                if default < 0:
                    raise self.error(f"{what} (or {h} and {w}) is required")
                return default, default
            return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])

        self.kernel = pair("kernel_h", "kernel_w", p.kernel_size, -1, "kernel_size")
        self.stride = pair("stride_h", "stride_w", p.stride, 1, "stride")
        self.pad = pair("pad_h", "pad_w", p.pad, 0, "pad")
        dil = list(p.dilation)
        self.dilation = (1, 1) if not dil else (dil[0], dil[0]) if len(dil) == 1 else (dil[0], dil[1])
        if min(self.kernel) < 1 or min(self.stride) < 1 or min(self.dilation) < 1:
            raise self.error(f"kernel {list(self.kernel)}, stride {list(self.stride)} and dilation "
                             f"{list(self.dilation)} must be positive")
        self.kernel_eff = tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation))

    def _spatial(self, in_shape):
        if len(in_shape) != 4:
            raise self.error(f"input has shape {list(in_shape)}; expected N x C x H x W")
        self.group = self.num_output = in_shape[1]
        return in_shape[1]

    def summary(self):
        k = "x".join(map(str, self.kernel))
        s = f"dw {k}/{self.stride[0]}"
        if any(self.pad):
            s += f" pad {self.pad[0]}"
        if any(d > 1 for d in self.dilation):
            s += f" dil {self.dilation[0]}"
        return s


@register("DepthwiseConvolution")
class DepthwiseConvolution(Convolution):
    """yonghenglh6/DepthwiseConvolution@2b9cf52a5ce24af390d6739cd728847e21c4f154
    caffe/src/caffe/layers/depthwise_conv_layer.cpp, byte-identical in eric612/MobileNet-YOLO@69b4441c
    src/caffe/layers/depthwise_conv_layer.cpp: a BaseConvolutionLayer whose CPU forward is BVLC's
    im2col + GEMM, so exactly a Convolution: convolution_param's `group` (default 1), num_output, bias,
    N-D, dilation and blob shapes as BVLC reads them. (The fork's GPU kernel assumes group = num_output =
    channels, 2-D and no dilation; the nets that use the type say `group: C` explicitly.)"""

    def summary(self):
        return "dw " + super().summary() if self.group > 1 and self.group == self.num_output else super().summary()


@register("ShuffleChannel")
class ShuffleChannel(Layer):
    """farmingyard/ShuffleNet@b9624442bd410bbd2aadc820122b138e63039d70 shuffle_channel_layer.cpp (based on
    camel007/Caffe-ShuffleNet@76d3f04a shuffle_channel_layer.cpp, the same permutation): input channel
    i * (C/g) + j (group i < g, j < C/g) goes to output channel j * g + i, i.e. reshape (g, C/g),
    transpose, flatten. The top is 4-D (num, channels, height, width: legacy accessors; a 2-D or 3-D
    input gains unit axes, more than 4 axes is refused as Caffe's accessors refuse it); C must be a
    multiple of g (the fork's CHECK in Forward)."""

    def backward_reads(self):
        return []

    def setup(self, lp):
        self.g = lp.shuffle_channel_param.group
        if self.g < 1:
            raise self.error(f"shuffle_channel_param.group is {self.g}; expected a positive number")

    def output_shapes(self, in_shapes):
        s = tuple(in_shapes[0])
        if not 1 <= len(s) <= 4:
            raise self.error(f"input has shape {list(s)}; expected at most 4 axes (N x C x H x W)")
        out = s + (1,) * (4 - len(s))
        if out[1] % self.g:
            raise self.error(f"{out[1]} channels are not a multiple of group {self.g}")
        return [out]

    def summary(self):
        return f"g{self.g}"

    def emit(self, e, ins, outs):
        rank = len(self.in_shapes[0])
        n, c, h, w = self.out_shapes[0]
        x = ins[0]
        if self.g == 1 or self.g == c:   # the permutation is the identity
            if rank < 4:
                e.op("Reshape", [x, e.ints([0] * rank + [1] * (4 - rank))], outs[0])
            else:
                e.op("Identity", [x], outs[0])
            return
        x = e.op("Reshape", [x, e.ints([0, self.g, c // self.g, -1])])
        x = e.op("Transpose", [x], perm=[0, 2, 1, 3])
        if not e.dynamic:
            shape = e.ints([0, c, h, w])
        elif rank == 4:
            shape = e.op("Shape", [ins[0]])
        else:   # (N, C) or (N, C, H): unit axes appended
            shape = e.ints([0, c, -1, 1])
        e.op("Reshape", [x, shape], outs[0])

    def backward(self, ctx, top_diffs):
        """The inverse permutation (output channel j * g + i back to input channel
        i * (C/g) + j), in every mode; the top's unit axes dropped again."""
        t = top_diffs[0]
        r, c = t.shape[:2]
        u = t.reshape(r, c // self.g, self.g, -1).transpose(0, 2, 1, 3)
        return [np.ascontiguousarray(u).reshape((r,) + tuple(self.in_shapes[0][1:]))]


@register("Axpy")
class Axpy(Layer):
    """hujie-frank/SENet@0262d43d44c561fd53c3dba210cc8bacfc60500d src/caffe/layers/axpy_layer.cpp (the same
    file in eric612/MobileNet-YOLO@69b4441c): bottoms a (N x C, or N x C x 1 x 1), x, y; top = a[n, c] * x + y,
    shaped as x. Caffe checks a's first two axes against x's, a 4-D a's spatial axes are 1, and y's shape is
    x's; zfcaffe also requires a to hold exactly N x C values (the fork would index past them otherwise)."""

    def backward_reads(self):
        return list(self.bottoms[:2])

    def n_bottoms(self):
        return (3, 3)

    def output_shapes(self, in_shapes):
        a, x, y = (tuple(s) for s in in_shapes)
        if len(x) < 2 or len(x) > 4:
            raise self.error(f"x (bottom 1) has shape {list(x)}; expected N x C (x H x W)")
        if len(a) < 2 or a[:2] != x[:2] or count(a) != x[0] * x[1]:
            raise self.error(f"scale (bottom 0) has shape {list(a)}; expected {[x[0], x[1]]} or "
                             f"{[x[0], x[1], 1, 1]} for x of shape {list(x)}")
        if y != x:
            raise self.error(f"y (bottom 2) has shape {list(y)}; expected x's shape {list(x)}")
        return [x]

    def geometry(self, in_geoms):
        # a per-channel scale: the output's units are x's and y's
        return super().geometry(in_geoms[1:])

    def macs(self):
        return count(self.out_shapes[0])

    def emit(self, e, ins, outs):
        a, x, y = ins
        want = (0, 0) + (1,) * (len(self.in_shapes[1]) - 2)
        if tuple(self.in_shapes[0][2:]) != want[2:]:
            a = e.op("Reshape", [a, e.ints(list(want))])
        e.op("Add", [e.op("Mul", [a, x]), y], outs[0])

    def backward(self, ctx, top_diffs):
        """The gradient to each bottom, in every mode (the layer has no rectifier; the same
        as the fork's Backward_cpu): da = sum over the spatial axes of g * x, dx = a * g, dy = g."""
        g = top_diffs[0]
        a = ctx.data(self.bottoms[0])
        x = ctx.data(self.bottoms[1])
        r = g.shape[0]
        a4 = a.reshape(r, a.shape[1], *([1] * (g.ndim - 2)))
        da = (g * x).reshape(r, g.shape[1], -1).sum(axis=2, dtype=np.float64)
        return [da.astype(np.float32).reshape(a.shape), (g * a4).astype(np.float32), g]


@register("ReLU6")
class ReLU6(_Neuron):
    """eric612/MobileNet-YOLO@69b4441cb3ec8d553fbdef788ad033e246f901bd src/caffe/layers/relu6_layer.cpp
    (used by that fork's MobileNet-YOLO-lite and MobileNet-v3 nets, models/yolov2/mobilenet_yolo_lite_deploy
    .prototxt, models/mobilenetv3_voc/test.prototxt): min(max(x, 0) + negative_slope * min(x, 0), 6), with
    `relu6_param` (a ReLUParameter) giving negative_slope (default 0: a plain clip to [0, 6])."""

    def backward_reads(self):
        return list(self.bottoms)

    def backward(self, ctx, top_diffs):
        """A rectifier at 0 and a cap at 6. At 0 the three modes differ as at a ReLU: deconvnet
        relu(signal) (the forward input is not read there), backprop signal * (x > 0) (the
        negative slope below), guided signal * (x > 0) * (signal > 0). The cap is a clip,
        not a rectifier: every mode takes its gradient there, signal * (x < 6) (the fork's
        Backward_cpu: nothing passes at x >= 6). Inputs within rounding of either
        threshold are flagged (net.last_near_ties)."""
        top = top_diffs[0]
        x = ctx.data(self.bottoms[0])
        ctx.check_decision(self.name, x, 6.0, top, self.bottoms[0])
        below = x < np.float32(6.0)
        if ctx.mode == "deconvnet":
            return [np.where(below & (top > 0), top, 0).astype(np.float32)]
        ctx.check_decision(self.name, x, 0.0, top, self.bottoms[0])
        if ctx.mode == "guided":
            return [np.where((x > 0) & below & (top > 0), top, 0).astype(np.float32)]
        slope = np.float32(self.negative_slope)
        return [np.where(below, np.where(x > 0, top, top * slope), 0).astype(np.float32)]

    def setup(self, lp):
        has = "relu6_param" in lp.DESCRIPTOR.fields_by_name
        self.negative_slope = lp.relu6_param.negative_slope if has else 0.0

    def summary(self):
        return f"slope {self.negative_slope:g}" if self.negative_slope else ""

    def emit(self, e, ins, outs):
        if self.negative_slope:
            x = e.op("LeakyRelu", ins, alpha=float(self.negative_slope))
            e.op("Min", [x, e.const(6.0)], outs[0])
        else:
            e.op("Clip", [ins[0], e.const(0.0), e.const(6.0)], outs[0])
