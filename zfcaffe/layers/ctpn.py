"""CTPN's layers (tianzhi0549/CTPN, its bundled Caffe under caffe/): Lstm, Reverse, Transpose;
BVLC's Im2col, which CTPN's deploy net uses and zfcaffe had not; and CTPN's Python proposal
layer (layers.text_proposal_layer.ProposalLayer) as a built-in."""
from __future__ import annotations

import numpy as np

from .base import WHOLE, Layer, count, register, register_python
from .conv import _ConvBase
from .ssd import axis0_adjoint, unfold_rows


@register("Lstm")
class Lstm(Layer):
    """CTPN's own LSTM: tianzhi0549/CTPN@f77ec9e7c4c0 caffe/src/caffe/layers/lstm_layer.cpp (.cu).

    Bottom (T, N, ...): time on axis 0, the batch on axis 1, the rest flattened to I inputs; top
    (T, N, H). Blobs: W_x (4H, I), W_h (4H, H), b (4H,), each in gate order i, f, o, g.
    h_0 = c_0 = 0; at t = 0 the forget gate is 0 (cont = t > 0);
    c_t = f * c_{t-1} + i * g, h_t = o * tanh(c_t). clipping_threshold clips gradients only.

    Semantics of Forward_gpu (the demo's default mode), i.e. a standard LSTM. The fork's
    Forward_cpu adds the recurrent term of batch item 0 to every item (it reads `h_to_gate`
    where it meant `h_to_gate_t`), so for N > 1 Caffe's CPU mode gives other values from
    t = 1 on; for N = 1 the two agree. Emitted as ONNX's LSTM (gates permuted to i, o, f, c)."""

    def setup(self, lp):
        p = lp.lstm_param
        self.num_output = p.num_output
        self.p = p
        if self.num_output == 0:
            raise self.error("lstm_param.num_output is missing or 0; expected the number of hidden units")

    def n_bottoms(self):
        return (1, 2)

    def output_shapes(self, in_shapes):
        s = in_shapes[0]
        if len(in_shapes) > 1:
            raise self.error("has a second (clip) bottom, with which Caffe carries h_T and c_T from one forward "
                             "pass into the next; expected one bottom (state starting at 0)")
        if len(s) < 2:
            raise self.error(f"input has shape {list(s)}; expected T x N x ... (time, batch, inputs)")
        return [(s[0], s[1], self.num_output)]

    def param_shapes(self, in_shapes):
        i, h = count(in_shapes[0][2:]), self.num_output
        return [(4 * h, i), (4 * h, h), (4 * h,)]

    def fillers(self):
        p = self.p
        return [p.weight_filler, p.weight_filler, p.bias_filler]

    def geometry(self, in_geoms):
        return [WHOLE if in_geoms[0] is not None else None]

    def macs(self):
        t, n = self.in_shapes[0][:2]
        i, h = count(self.in_shapes[0][2:]), self.num_output
        return t * n * 4 * h * (i + h) + t * n * h * 8

    def summary(self):
        return f"{self.num_output} hidden"

    def emit(self, e, ins, outs):
        h = self.num_output
        w_x, w_h, b = self.blobs
        order = np.concatenate([np.arange(h) + k * h for k in (0, 2, 1, 3)])   # i f o g -> i o f c
        x = ins[0]
        if len(self.in_shapes[0]) != 3:
            x = e.op("Reshape", [x, e.ints([0, 0, -1])])
        bias = np.concatenate([b[order], np.zeros(4 * h, np.float32)])[None]
        y = e.op("LSTM", [x, e.weight(self, 0, w_x[order][None]), e.weight(self, 1, w_h[order][None]),
                          e.weight(self, 2, bias)], hidden_size=h)
        e.op("Squeeze", [y, e.ints([1], "axes")], outs[0])   # (T, 1, N, H) -> (T, N, H)

    def backward_reads(self):
        return list(self.bottoms)

    def backward(self, ctx, top_diffs):
        """The true gradient through time (backpropagation through the recurrence of the
        forward pass above, recomputed in float64 from the recorded input), in every mode:
        the layer has no rectifier. No gradient clipping (clipping_threshold is training's).
        Axis 0 is time, not the batch: signals are folded (ssd.axis0_adjoint), which needs
        the net's batch of 1, as CTPN's."""
        t_len, n = self.in_shapes[0][:2]
        hid = self.num_output
        dtop = unfold_rows(self, ctx, top_diffs[0], tuple(self.out_shapes[0]), "runs along time")
        rows = dtop.shape[0]
        x = ctx.full(self.bottoms[0]).astype(np.float64).reshape(t_len, n, -1)
        w_x, w_h, b = (np.asarray(a, np.float64) for a in self.blobs)

        def sigmoid(v):
            return 0.5 * (1.0 + np.tanh(0.5 * v))
        pre_x = x @ w_x.T + b                               # (T, N, 4H)
        gates = np.empty((t_len, n, 4 * hid))                # i, f, o (sigmoid), g (tanh)
        c = np.zeros((t_len, n, hid))
        h_prev, c_prev = np.zeros((n, hid)), np.zeros((n, hid))
        for t in range(t_len):
            z = pre_x[t] + h_prev @ w_h.T
            gates[t, :, :3 * hid] = sigmoid(z[:, :3 * hid])
            gates[t, :, 3 * hid:] = np.tanh(z[:, 3 * hid:])
            i, f, o, g = np.split(gates[t], 4, axis=1)
            c[t] = (f * c_prev if t else 0.0) + i * g
            h_prev, c_prev = o * np.tanh(c[t]), c[t]
        dx = np.zeros((rows, t_len, n, x.shape[2]))
        dh_next, dc_next = np.zeros((rows, n, hid)), np.zeros((rows, n, hid))
        dtop = dtop.astype(np.float64)
        for t in reversed(range(t_len)):
            i, f, o, g = np.split(gates[t], 4, axis=1)
            tc = np.tanh(c[t])
            dh = dtop[:, t] + dh_next
            dc = dh * o * (1 - tc * tc) + dc_next
            dz = np.concatenate([dc * g * i * (1 - i),
                                 dc * (c[t - 1] if t else 0.0) * f * (1 - f),
                                 dh * tc * o * (1 - o),
                                 dc * i * (1 - g * g)], axis=2)     # (rows, N, 4H)
            dx[:, t] = dz @ w_x
            dh_next, dc_next = dz @ w_h, dc * f
        return [dx.astype(np.float32).reshape((rows * t_len,) + tuple(self.in_shapes[0][1:]))]


@register("Reverse")
class Reverse(Layer):
    """CTPN's Reverse: tianzhi0549/CTPN@f77ec9e7c4c0 caffe/src/caffe/layers/reverse_layer.cpp.
    The input flipped along reverse_param.axis (0 <= axis < rank; no negative axes)."""

    def setup(self, lp):
        self.axis = lp.reverse_param.axis
        if len(lp.bottom) and len(lp.top) and lp.bottom[0] == lp.top[0]:
            raise self.error("runs in place; expected a top other than its bottom (Caffe refuses in-place)")

    def output_shapes(self, in_shapes):
        s = in_shapes[0]
        if not 0 <= self.axis < len(s):
            raise self.error(f"axis {self.axis} is out of range; expected 0 <= axis < {len(s)}")
        return [tuple(s)]

    def geometry(self, in_geoms):
        g = in_geoms[0]
        return [g if g is None or self.axis < 2 else WHOLE]

    def summary(self):
        return f"axis {self.axis}"

    def emit(self, e, ins, outs):
        big = np.iinfo(np.int64).max
        e.op("Slice", [ins[0], e.ints([-1], "starts"), e.ints([-big], "ends"), e.ints([self.axis], "axes"),
                       e.ints([-1], "steps")], outs[0])

    def backward_reads(self):
        return []

    def backward(self, ctx, top_diffs):
        """Flipped back, in every mode (along time, axis 0, as CTPN's: see ssd.axis0_adjoint)."""
        t = top_diffs[0]
        if self.axis > 0:
            return [np.ascontiguousarray(np.flip(t, self.axis))]
        return [axis0_adjoint(self, ctx, t, lambda a: np.flip(a, 1))]


@register("Transpose")
class Transpose(Layer):
    """CTPN's Transpose: tianzhi0549/CTPN@f77ec9e7c4c0 caffe/src/caffe/layers/transpose_layer.cpp.
    Top axis i is bottom axis transpose_param.dim[i] (NumPy's transpose)."""

    def setup(self, lp):
        self.dims = list(lp.transpose_param.dim)
        if sorted(self.dims) != list(range(len(self.dims))):
            raise self.error(f"transpose_param.dim {self.dims} is not a permutation of 0..{len(self.dims) - 1}")
        if len(lp.bottom) and len(lp.top) and lp.bottom[0] == lp.top[0]:
            raise self.error("runs in place; expected a top other than its bottom (Caffe refuses in-place)")

    def output_shapes(self, in_shapes):
        s = in_shapes[0]
        if len(s) != len(self.dims):
            raise self.error(f"transpose_param has {len(self.dims)} dims for a {len(s)}-D input; expected "
                             f"one per input axis")
        return [tuple(s[d] for d in self.dims)]

    def geometry(self, in_geoms):
        g = in_geoms[0]
        return [g if g is None or self.dims == list(range(len(self.dims))) else WHOLE]

    def summary(self):
        return f"dims {self.dims}"

    def emit(self, e, ins, outs):
        e.op("Transpose", ins, outs[0], perm=self.dims)

    def backward_reads(self):
        return []

    def backward(self, ctx, top_diffs):
        """The inverse transpose, in every mode (see ssd.axis0_adjoint where axis 0 moves)."""
        inv = [int(i) for i in np.argsort(self.dims)]
        t = top_diffs[0]
        if self.dims[0] == 0:
            return [np.ascontiguousarray(t.transpose(inv))]
        return [axis0_adjoint(self, ctx, t, lambda a: a.transpose([0] + [i + 1 for i in inv]))]


@register("Im2col")
class Im2col(_ConvBase):
    """BVLC Caffe's Im2col: BVLC/caffe src/caffe/layers/im2col_layer.cpp (also CTPN's copy,
    tianzhi0549/CTPN@f77ec9e7c4c0 caffe/src/caffe/layers/im2col_layer.cpp, without dilation).
    convolution_param kernel/stride/pad/dilation; top (N, C*kh*kw, OH, OW), channel
    c*kh*kw + i*kw + j holding input (c, y*s - p + i*d, x*s - p + j*d), 0 outside.
    Emitted as a grouped Conv with one-hot filters, which is exact."""

    def setup(self, lp):
        p = lp.convolution_param
        self.p, self.group, self.axis = p, 1, p.axis   # group is not Im2col's; force_nd_im2col: same values

    def output_shapes(self, in_shapes):
        s = in_shapes[0]
        c = self._spatial(s)
        out = []
        for size, k, st, p in zip(s[2:], self.kernel_eff, self.stride, self.pad):
            o = (size + 2 * p - k) // st + 1
            if o < 1:
                raise self.error(f"kernel {k} does not fit spatial size {size} with pad {p}; output would be empty")
            out.append(o)
        return [(s[0], c * count(self.kernel), *out)]

    def param_shapes(self, in_shapes):
        return []

    def geometry(self, in_geoms):
        g = in_geoms[0]
        return [g.window(self.kernel_eff, self.stride, self.pad) if g else None]

    def macs(self):
        return 0

    def summary(self):
        k = "x".join(map(str, self.kernel))
        s = f"{k}/{self.stride[0]}"
        if any(self.pad):
            s += f" pad {self.pad[0]}"
        if any(d > 1 for d in self.dilation):
            s += f" dil {self.dilation[0]}"
        return s

    def emit(self, e, ins, outs):
        c = self.in_shapes[0][1]
        k = count(self.kernel)
        eye = np.eye(k, dtype=np.float32).reshape(k, 1, *self.kernel)
        w = np.tile(eye, (c,) + (1,) * (eye.ndim - 1))       # (c*k, 1, kh, kw): channel c*k + idx
        attrs = self._attrs()
        attrs["group"] = c
        e.op("Conv", [ins[0], e.const(w, "onehot")], outs[0], **attrs)

    def backward_reads(self):
        return []

    def backward(self, ctx, top_diffs):
        """The adjoint, col2im (a transposed one-hot convolution: each input unit sums the
        signal of every column that copied it), in every mode."""
        from ..kernels import col2im_add   # Numba loads with the first backward pass
        if len(self.kernel) != 2:
            raise self.error("backward passes support 2-D Im2col only")
        t = top_diffs[0]
        rows = t.shape[0]
        _, c, h, w = self.in_shapes[0]
        (kh, kw), oh, ow = self.kernel, t.shape[2], t.shape[3]
        out = np.zeros((rows * c, h, w), np.float32)
        col2im_add(np.ascontiguousarray(t, np.float32).reshape(rows * c, kh, kw, oh, ow), out, 0, 0,
                   self.stride[0], self.stride[1], self.pad[0], self.pad[1], self.dilation[0], self.dilation[1])
        return [out.reshape(rows, c, h, w)]


# -- CTPN's Python proposal layer -------------------------------------------------------------
def _param_dict(param_str: str) -> dict:
    import yaml  # the layer's own parser (PyYAML)
    try:
        d = yaml.safe_load(param_str)
    except yaml.YAMLError:
        d = None
    if d is not None and not isinstance(d, dict):
        d = None
    return d


def ctpn_basic_anchors() -> np.ndarray:
    """AnchorText.basic_anchors() (src/anchor.py) as it ran under Python 2: w/2 and h/2 are
    integer divisions, and the float corners are truncated toward 0 by the int32 array."""
    heights = [11, 16, 23, 33, 48, 68, 97, 139, 198, 283]
    base = np.array([0, 0, 15, 15], np.int32)
    x_ctr, y_ctr = (base[0] + base[2]) * 0.5, (base[1] + base[3]) * 0.5
    out = np.zeros((len(heights), 4), np.int32)
    for k, h in enumerate(heights):
        w = 16
        out[k] = [x_ctr - w // 2, y_ctr - h // 2, x_ctr + w // 2, y_ctr + h // 2]   # C cast: truncation
    return out


def ctpn_anchors(height: int, width: int, stride: int) -> np.ndarray:
    """AnchorText.locate_anchors: (height*width*10, 4) int32 in (y, x, anchor) order."""
    basic = ctpn_basic_anchors()
    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    shift = (np.stack([xs, ys, xs, ys], -1) * stride).reshape(-1, 1, 4)
    return (basic[None] + shift).reshape(-1, 4).astype(np.int32)


@register_python("layers.text_proposal_layer", "ProposalLayer")
class CtpnProposal(Layer):
    """CTPN's text proposal layer: tianzhi0549/CTPN@f77ec9e7c4c0 src/layers/text_proposal_layer.py
    (with src/anchor.py AnchorText and src/other.py clip_boxes). Bottoms: scores (1, 20, H, W)
    (channels 10..19: text), deltas (1, 20, H, W) (dy, dh per anchor), im_info (1, >=2: height,
    width). Tops: rois (H*W*10, 4) as x1, y1, x2, y2 clipped to the image, scores (H*W*10, 1),
    in (y, x, anchor) order. Every anchor is kept: no threshold and no NMS here (CTPN's
    TextDetector does those after the net)."""

    host = True

    def setup(self, lp):
        d = _param_dict(lp.python_param.param_str)
        if d is None or "feat_stride" not in d or not isinstance(d["feat_stride"], int):
            raise self.error(f"param_str {lp.python_param.param_str!r}; expected \"'feat_stride': 16\"")
        self.stride = d["feat_stride"]
        self.num_anchors = 10

    def n_bottoms(self):
        return (3, 3)

    def output_shapes(self, in_shapes):
        s, d, info = in_shapes
        a = self.num_anchors
        if len(s) != 4 or s[0] != 1 or s[1] != 2 * a:
            raise self.error(f"scores have shape {list(s)}; expected 1 x {2 * a} x H x W")
        if tuple(d) != (1, 2 * a, s[2], s[3]):
            raise self.error(f"deltas have shape {list(d)}; expected {[1, 2 * a, s[2], s[3]]}")
        if len(info) != 2 or info[1] < 2:
            raise self.error(f"im_info has shape {list(info)}; expected N x 2 or more (height, width)")
        n = s[2] * s[3] * a
        return [(n, 4), (n, 1)]

    def geometry(self, in_geoms):
        return [None, None]

    def summary(self):
        return f"CTPN proposals, stride {self.stride}"

    def forward(self, inputs):
        """The Python layer's forward, line by line (NumPy dtypes as it ran)."""
        a = self.num_anchors
        scores = inputs[0][:, a:, :, :]
        bbox_deltas = inputs[1]
        im_info = inputs[2][0, :]
        height, width = scores.shape[-2:]
        anchors = ctpn_anchors(height, width, self.stride)
        scores = scores.transpose((0, 2, 3, 1)).reshape(-1, 1)
        deltas = bbox_deltas.transpose((0, 2, 3, 1)).reshape((-1, 2))
        # AnchorText.apply_deltas_to_anchors
        y_ctr = (anchors[:, 1] + anchors[:, 3]) / 2.
        anchor_h = anchors[:, 3] - anchors[:, 1] + 1.
        gc = np.zeros_like(deltas, np.float32)
        gc[:, 1] = np.exp(deltas[:, 1]) * anchor_h
        gc[:, 0] = deltas[:, 0] * anchor_h + y_ctr - gc[:, 1] / 2.
        props = np.hstack((anchors[:, [0]], gc[:, [0]], anchors[:, [2]],
                           gc[:, [0]] + gc[:, [1]])).astype(np.float32)
        # clip_boxes(proposals, im_info[:2])
        im_shape = im_info[:2]
        props[:, 0::2] = np.maximum(np.minimum(props[:, 0::2], im_shape[1] - 1), 0)
        props[:, 1::2] = np.maximum(np.minimum(props[:, 1::2], im_shape[0] - 1), 0)
        return [props.astype(np.float32, copy=False), np.ascontiguousarray(scores, np.float32)]

    def emit(self, e, ins, outs):
        if e.dynamic:
            raise self.error("cannot be exported with free input sizes: its anchors are constants of the "
                             "feature map's size")
        a = self.num_anchors
        _, _, h, w = self.in_shapes[0]
        anchors = ctpn_anchors(h, w, self.stride).astype(np.float32)
        sc = e.op("Slice", [ins[0], e.ints([a], "starts"), e.ints([2 * a], "ends"), e.ints([1], "axes")])
        sc = e.op("Transpose", [sc], perm=[0, 2, 3, 1])
        e.op("Reshape", [sc, e.ints([-1, 1])], outs[1])
        d = e.op("Transpose", [ins[1]], perm=[0, 2, 3, 1])
        d = e.op("Reshape", [d, e.ints([-1, 2])])
        dy, dh = e.node("Split", [d, e.ints([1, 1], "split")], 2, axis=1)
        ah = e.const((anchors[:, 3] - anchors[:, 1] + 1)[:, None], "anchor_h")
        yc = e.const(((anchors[:, 1] + anchors[:, 3]) / 2)[:, None], "anchor_yc")
        gh = e.op("Mul", [e.op("Exp", [dh]), ah])
        y1 = e.op("Sub", [e.op("Add", [e.op("Mul", [dy, ah]), yc]), e.op("Div", [gh, e.const(2.0, "two")])])
        y2 = e.op("Add", [y1, gh])
        x1, x2 = e.const(anchors[:, [0]], "anchor_x1"), e.const(anchors[:, [2]], "anchor_x2")
        box = e.op("Concat", [x1, y1, x2, y2], axis=1)
        # im_info[0, :2] - 1 as (height-1, width-1), then per column: x <= w-1, y <= h-1, >= 0
        hw = e.op("Slice", [ins[2], e.ints([0, 0], "starts"), e.ints([1, 2], "ends"), e.ints([0, 1], "axes")])
        hw1 = e.op("Sub", [hw, e.const(1.0, "one")])
        hi = e.op("Gather", [hw1, e.ints([1, 0, 1, 0], "cols")], axis=1)   # (1, 4): w-1, h-1, w-1, h-1
        box = e.op("Min", [box, hi])
        e.op("Max", [box, e.const(0.0, "zero")], outs[0])
