"""Rounding bounds: how far each recorded forward value may lie from the exact one, and
the self-test that holds the near-decision flags to them.

A decision of the backward pass (a max-pool switch, a rectifier's sign, a max-Eltwise
winner) is taken by rounding where another float32 evaluation of the same net (Caffe's
BLAS, ONNX Runtime's blocked or plain kernels, a folded BatchNorm) may take it the
other way. Each evaluation lies within a bound of the exact value, so two of them may
disagree only where the recorded value is within MARGIN x that bound of the threshold
(or of the runner-up). The bound of every blob is propagated layer by layer from
float32's unit roundoff U:

  Convolution / InnerProduct / Deconvolution  (MODEL "probabilistic", the default)
      LAMBDA sqrt(K+2) U (|W| * |x| + |bias|) for the sum's own rounding (K terms;
      Higham & Mary 2019), the inputs' bounds through W in quadrature:
      sqrt(local^2 + (W*W) * bound(x)^2); "worst-case": (K+2) U and |W| * bound(x)
      (rigorous, but over a deep net orders of magnitude above any rounding seen)
  pointwise layers   their Lipschitz factor x bound(x), plus the rounding of their output
                     (ReLU: 0 where x < -bound, which every evaluation rectifies)
  BatchNorm / Scale / Bias / LRN   per channel factors, to first order, plus each rounding
  pooling            MAX: the window's largest bound; AVE: the window's bounds in quadrature
  Concat, Slice, Split, Reshape, Crop ...   the bounds routed as the values are
  the forks' BN      PSPNet's and SegNet's INFERENCE per channel; SegNet's LEARN through
                     its batch statistics too (the variance's cancellation included)
  Interp             the bounds interpolated as the values (weights >= 0, summing to 1)
  Upsample           copies (YOLO's nearest); SegNet's unpooling: where the mask's max-pool
                     window is a near-tie, |x| + bound at every near-winner's position
  ROIPooling / PSROIPooling   each bin's largest bound / its AVE-pooling bound (the ROIs
                     exact; ROIs computed by the net, proposals, give infinite bounds)
  a layer without a rule   infinite (every decision after it is flagged)

The bounds are computed lazily, the first time a backward pass crosses a decision after
a forward pass, for the rows it projects; the forward pass itself is unchanged.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

#: float32's unit roundoff
U = 2.0 ** -24
#: two evaluations, each within its bound of the exact value, may disagree by the sum of both
MARGIN = 2.0
#: "probabilistic" (default): each dot product's rounding is LAMBDA sqrt(K) U sum|w||x| and
#: the errors inherited from its inputs add in quadrature (Higham & Mary 2019, "A new approach
#: to probabilistic rounding error analysis"); "worst-case": K U and |W| x the inputs' bounds,
#: rigorous but, over a deep net, orders of magnitude larger than any rounding seen
MODEL = "probabilistic"
#: how many standard deviations of the rounding the probabilistic bound spans
LAMBDA = 6.0
#: bounds are clipped here before the next linear layer (inf * 0 would be NaN)
HUGE = np.float32(1e30)


def gamma(k: int) -> float:
    """The worst-case relative error of a sum of k float32 products, any order."""
    k = k + 2          # the bias added to the finished sum, and a folded BatchNorm's weight rounding
    return k * U / (1 - k * U) if k * U < 0.5 else math.inf


def _clip(b: np.ndarray) -> np.ndarray:
    return np.fmin(np.asarray(b, np.float32), HUGE)      # fmin: NaN and inf become HUGE


# -- values -----------------------------------------------------------------------------------
def _every_blob_values(net) -> dict:
    """Every layer output of the net's last recorded forward pass: the recorded values, the
    rest from one extra pass that keeps every blob (the recording pass keeps only what
    backward rules read)."""
    from .runtime.onnx_export import build_onnx
    from .runtime.session import Session
    if net.has_host_layers:
        return net.layer_outputs          # computed layer by layer where not recorded
    cache = net.__dict__.setdefault("_rounding_sessions", {})
    key = (tuple(sorted(net.graph.inputs.items())), net.rounding)
    if key not in cache:
        cache[key] = Session(build_onnx(net.graph, record=True, every_blob=True,
                                        faithful=net.rounding == "caffe", switches=False))
    sess = cache[key]
    values = sess.run({k: np.ascontiguousarray(net._input_data[k], np.float32) for k in sess.input_names})
    values.update({k: v for k, v in dict.items(net.layer_outputs)})
    return values


class Bounds:
    """Elementwise absolute bounds on the rounding of every blob's value, for some rows of
    the last recorded forward pass."""

    def __init__(self, net, rows: np.ndarray, values: dict | None = None):
        self.net, self.rows = net, np.asarray(rows, np.int64)
        self._source = values
        self._values: dict[str, np.ndarray] = {}
        self.bounds: dict[str, np.ndarray] = {}
        g = net.graph
        self.producer = {k: l for l in g.layers for k in l.tops}

    def value(self, key: str) -> np.ndarray:
        if key not in self._values:
            net = self.net
            if self._source is None:
                self._source = _every_blob_values(net)
            full = np.asarray(net._input_data[key] if key in net.graph.inputs else self._source[key])
            batch = next(iter(net._input_data.values())).shape[0]
            # a blob whose first axis is not the batch (a fork's shared map) serves whole
            self._values[key] = (full[self.rows] if full.ndim and full.shape[0] == batch else full).astype(np.float32)
        return self._values[key]

    def __call__(self, key: str) -> np.ndarray:
        """The bound of `key`'s value, rows as self.rows."""
        if key in self.bounds:
            return self.bounds[key]
        # iterative, producers first: deep nets would exceed Python's recursion limit
        stack = [key]
        while stack:
            k = stack[-1]
            if k in self.bounds:
                stack.pop()
                continue
            layer = self.producer.get(k)
            if layer is None or layer.is_input or k in self.net.graph.inputs:
                self.bounds[k] = np.zeros_like(self.value(k))   # an input is exact
                stack.pop()
                continue
            todo = [b for b in layer.bottoms if b not in self.bounds]
            if todo:
                stack.extend(todo)
                continue
            outs = _layer_bounds(layer, self)
            for t, b in zip(layer.tops, outs):
                self.bounds[t] = _clip(b)
            stack.pop()
        return self.bounds[key]


#: bytes of bounds (and the values they were computed from) kept for forward passes met again
MEMO_BYTES = 256 * 2 ** 20


def _batch_bounds(net) -> Bounds:
    """The Bounds of every row of the last recorded forward pass, computed together (the
    bound convolutions run once per batch, not once per image) and cached until the next
    forward pass. A forward pass met again (the same inputs, recorded values and weights:
    top9 runs each image once per layer) takes the bounds computed the first time, up to
    MEMO_BYTES of them."""
    cache = net.__dict__.get("_rounding_bounds")
    if cache is None or cache[0] is not net.layer_outputs or cache[1] is not net._input_data:
        memo = net.__dict__.setdefault("_rounding_memo", {})
        key = _state_key(net)
        bounds = memo.pop(key, None)
        if bounds is None:
            batch = next(iter(net._input_data.values())).shape[0]
            bounds = Bounds(net, np.arange(batch), _every_blob_values(net))
        memo[key] = bounds                      # the most recent last
        total = 0
        for k in reversed(list(memo)):          # keep the most recent that fit
            total += _nbytes(memo[k])
            if total > MEMO_BYTES and k != key:
                del memo[k]
        cache = (net.layer_outputs, net._input_data, bounds)
        net.__dict__["_rounding_bounds"] = cache
    return cache[2]


def _state_key(net) -> tuple:
    """What the bounds depend on: the inputs, the recorded values, the weights, the rounding."""
    import hashlib
    h = hashlib.blake2b(digest_size=16)
    for name, arrays in (("in", net._input_data), ("rec", dict.items(net.layer_outputs))):
        for k, v in sorted(arrays.items() if isinstance(arrays, dict) else arrays):
            v = np.ascontiguousarray(v)
            h.update(f"{name}:{k}:{v.dtype}:{v.shape}".encode())
            if v.size:                  # a view with a zero in its shape cannot be cast
                h.update(memoryview(v).cast("B"))
    weights = tuple(id(b) for l in net.graph.layers for b in l.blobs)
    return h.hexdigest(), weights, net.rounding


def _nbytes(bounds: Bounds) -> int:
    arrays = list(bounds.bounds.values()) + list(bounds._values.values()) + list((bounds._source or {}).values())
    return sum(np.asarray(a).nbytes for a in arrays)


def bounds_for(net, key: str, items) -> np.ndarray:
    """The rounding bound of blob `key` for the rows `items` of the last recorded forward
    pass (cached until the next forward pass)."""
    items = np.asarray(items, np.int64).ravel()
    whole = _batch_bounds(net)(key)
    batch = len(_batch_bounds(net).rows)
    if whole.ndim and whole.shape[0] == batch:
        return _rows(whole, items)
    if whole.ndim and items.size and items.max() < whole.shape[0]:
        from .backward import roi_layer_of
        if roi_layer_of(net, key) is not None:
            return _rows(whole, items)   # rows are ROIs (after an ROI pooling), and so are the items
    return whole          # a blob whose first axis is not the batch serves whole


def _rows(whole: np.ndarray, items: np.ndarray) -> np.ndarray:
    """whole[items], read-only: without a copy where every item is one row (a projection's
    units of one image) or the rows are the whole batch in order."""
    if items.size and (items == items[0]).all():
        return np.broadcast_to(whole[items[0]:items[0] + 1], (items.size,) + whole.shape[1:])
    if items.size == len(whole) and (items == np.arange(len(whole))).all():
        view = whole.view()
        view.flags.writeable = False
        return view
    return whole[items]


# -- the rules ----------------------------------------------------------------------------------
def _window(a: np.ndarray, layer, reduce: str) -> np.ndarray:
    """Caffe's pooling windows of `layer` over a (rows, C, H, W) array: the max or the
    sum over each window clipped to the image."""
    n, c, h, w = a.shape
    oh, ow = layer.out_shapes[0][2:]
    if layer.global_pooling:
        kh, kw, sh, sw, ph, pw = h, w, 1, 1, 0, 0
    else:
        (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.pad
    hp, wp = (oh - 1) * sh + kh, (ow - 1) * sw + kw
    padded = np.zeros((n, c, max(hp, h + ph), max(wp, w + pw)), np.float32)
    padded[:, :, ph:ph + h, pw:pw + w] = a
    out = np.zeros((n, c, oh, ow), np.float32)
    for ky in range(kh):
        for kx in range(kw):
            part = padded[:, :, ky:ky + (oh - 1) * sh + 1:sh, kx:kx + (ow - 1) * sw + 1:sw]
            if reduce == "max":
                np.maximum(out, part, out=out)
            else:
                out += part
    return out


def _conv_session(layer, shape: tuple, B):
    """An ONNX Runtime session applying the layer's geometry with |W| to one input and
    with W*W to another (the bounds' two convolutions), cached per weights and shape."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from .runtime.onnx_export import IR_VERSION, OPSET
    from .runtime.session import providers
    cache = B.net.__dict__.setdefault("_rounding_sessions", {})
    w = layer.blobs[0]
    key = ("conv", layer.name, shape)
    hit = cache.get(key)
    if hit is not None and hit[0] is w:
        return hit[1]
    op = "ConvTranspose" if layer.type == "Deconvolution" else "Conv"
    attrs = dict(kernel_shape=list(layer.kernel), strides=list(layer.stride), pads=list(layer.pad) * 2,
                 dilations=list(layer.dilation), group=layer.group)
    out_shape = (shape[0],) + tuple(layer.out_shapes[0][1:])
    inits = [numpy_helper.from_array(np.abs(w).astype(np.float32), "wa"),
             numpy_helper.from_array((w.astype(np.float32) ** 2), "w2")]
    nodes = [helper.make_node(op, ["a", "wa"], ["ya"], **attrs), helper.make_node(op, ["b", "w2"], ["yb"], **attrs)]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(shape)) for n in ("a", "b")]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(out_shape)) for n in ("ya", "yb")]
    model = helper.make_model(helper.make_graph(nodes, "bound", io, outs, inits),
                              opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=providers())
    cache[key] = (w, sess)
    return sess


def _conv(layer, B, a: np.ndarray, b2: np.ndarray | None):
    """conv(|W|, a) and conv(W*W, b2) with the layer's geometry (no bias)."""
    sess = _conv_session(layer, tuple(a.shape), B)
    zero = b2 is None
    ya, yb = sess.run(None, {"a": np.ascontiguousarray(a, np.float32),
                             "b": np.zeros_like(a) if zero else np.ascontiguousarray(b2, np.float32)})
    return ya, (None if zero else yb)


def _conv_bound(layer, B, x, b, k, linear):
    """The rounding bound of a linear layer's output: `linear(a, b2)` gives the layer's
    |W| applied to a and W*W applied to b2 (None: not needed)."""
    bias = np.abs(layer.blobs[1]) if getattr(layer, "bias_term", False) else None
    if MODEL == "worst-case":
        g = gamma(k)
        out = linear(g * np.abs(x) + b, None)[0]
        return out if bias is None else out + np.where(out > 0, g * _bias_shape(bias, out), np.float32(0))
    # probabilistic: the local error ~ LAMBDA sqrt(K) U sum|w||x|, the inherited ones add in quadrature
    g = LAMBDA * math.sqrt(k + 2) * U
    with np.errstate(over="ignore"):     # HUGE (unknown) bounds square to inf: flagged all the same
        ya, yb = linear(np.abs(x), b * b if np.any(b) else None)
    local = g * ya
    if bias is not None:      # a sum of zeros plus the bias is exact in any order
        local += np.where(ya > 0, g * _bias_shape(bias, local), np.float32(0))
    return local if yb is None else np.hypot(local, np.sqrt(np.maximum(yb, 0)))   # no overflow in the squares


def _bias_shape(bias, out):
    return bias.reshape((1, -1) + (1,) * (out.ndim - 2)) if out.ndim > 2 else bias


def _rule_conv(layer, B):
    x, b = B.value(layer.bottoms[0]), B(layer.bottoms[0])
    if len(layer.kernel) != 2:
        return [np.full(B.value(layer.tops[0]).shape, np.inf, np.float32)]
    cin = layer.in_shapes[0][1]
    k = cin // layer.group * int(np.prod(layer.kernel))
    return [_conv_bound(layer, B, x, b, k, lambda a, b2: _conv(layer, B, a, b2))]


def _rule_ip(layer, B):
    x, b = B.value(layer.bottoms[0]), B(layer.bottoms[0])
    rows = x.shape[0] if layer.axis == 1 else int(np.prod(x.shape[:layer.axis]))

    w = layer.blobs[0] if layer.transpose else layer.blobs[0].T

    def linear(a, b2):
        return (a.reshape(rows, layer.k) @ np.abs(w),
                None if b2 is None else b2.reshape(rows, layer.k) @ (w * w))
    out = _conv_bound(layer, B, x, b, layer.k, linear)
    return [out.reshape((x.shape[0],) + tuple(layer.out_shapes[0][1:]))]


def _out(B, layer, i=0):
    return np.abs(B.value(layer.tops[i]))


def _rule_relu(layer, B):
    x, b = B.value(layer.bottoms[0]), B(layer.bottoms[0])
    s = abs(getattr(layer, "negative_slope", 0.0))
    if s == 0:
        return [np.where(x > -b, b, 0)]      # clearly negative: exactly 0 in every evaluation
    return [max(1.0, s) * b + U * _out(B, layer)]


def _rule_prelu(layer, B):
    b = B(layer.bottoms[0])
    a = float(np.max(np.abs(layer.blobs[0]))) if layer.blobs else abs(getattr(layer, "negative_slope", 1.0))
    return [max(1.0, a) * b + U * _out(B, layer)]


def _lipschitz(factor, ulps=4):
    def rule(layer, B):
        f = factor(layer) if callable(factor) else factor
        return [f * B(layer.bottoms[0]) + ulps * U * _out(B, layer) + 1e-37]
    return rule


def _rule_clip(layer, B):
    x, b = B.value(layer.bottoms[0]), B(layer.bottoms[0])
    inside = (x > layer.min - b) & (x < layer.max + b)
    return [np.where(inside, b, 0)]


def _rule_threshold(layer, B):
    x, b = B.value(layer.bottoms[0]), B(layer.bottoms[0])
    return [np.where(np.abs(x - layer.threshold) <= MARGIN * b, 1.0, 0.0)]


def _rule_power(layer, B):
    x, b = B.value(layer.bottoms[0]).astype(np.float64), B(layer.bottoms[0])
    p, a, s = layer.power, layer.scale, layer.shift
    if p * a == 0 or p == 1:
        return [abs(a) * b + 2 * U * _out(B, layer)]
    base = np.abs(s + a * x) + abs(a) * b          # the largest |base| within the bound
    if p < 1:
        low = np.abs(s + a * x) - abs(a) * b
        base = np.where(low > 0, low, 0.0)
        with np.errstate(divide="ignore"):
            d = np.where(base > 0, abs(p * a) * base ** (p - 1), np.inf)
    else:
        d = abs(p * a) * base ** (p - 1)
    return [d * b + 8 * U * _out(B, layer)]


def _rule_exp(layer, B):
    b = B(layer.bottoms[0]).astype(np.float64)
    k = abs(layer.scale * (1.0 if layer.base == -1 else math.log(layer.base)))
    y = _out(B, layer)
    with np.errstate(over="ignore"):
        return [y * np.expm1(k * b) * np.exp(k * b) + 4 * U * y]


def _rule_log(layer, B):
    x, b = B.value(layer.bottoms[0]).astype(np.float64), B(layer.bottoms[0])
    base = np.abs(layer.shift + layer.scale * x) - abs(layer.scale) * b
    ln = 1.0 if layer.base == -1 else abs(math.log(layer.base))
    with np.errstate(divide="ignore"):
        d = np.where(base > 0, abs(layer.scale) / (np.maximum(base, 1e-300) * ln), np.inf)
    return [d * b + 4 * U * _out(B, layer) + 1e-37]


def _per_channel(v, rank):
    return np.asarray(v, np.float32).reshape((1, -1) + (1,) * (rank - 2))


def _rule_batchnorm(layer, B):
    x, b = B.value(layer.bottoms[0]), B(layer.bottoms[0])
    if not layer.use_global_stats:
        return [np.full(x.shape, np.inf, np.float32)]
    mean, std = layer.folded()
    rank = x.ndim
    m, s = _per_channel(mean, rank), _per_channel(std, rank)
    # Caffe's (x - mean) / std, or the folded x * (1/std) - mean/std: each rounds twice
    return [(b + 2 * U * (np.abs(x) + np.abs(m))) / s + 2 * U * _out(B, layer)]


def _operand(layer, B, i):
    """A Scale/Bias operand (blob or second bottom), broadcast like the input, and its bound."""
    if len(layer.bottoms) == 2:
        v, bv = B.value(layer.bottoms[1]), B(layer.bottoms[1])
        extra = (1,) * (len(layer.in_shapes[0]) - layer.axis - len(layer.op_shape))
        if layer.axis == 0:
            return v.reshape(v.shape + extra), bv.reshape(bv.shape + extra)
        lead = (1,) * layer.axis
        return (v.reshape(lead + tuple(layer.op_shape) + extra)[:1],
                bv.reshape(lead + tuple(layer.op_shape) + extra)[:1])
    blob = layer.blobs[i].reshape((1,) * layer.axis + layer._broadcast())
    return blob, 0.0


def _rule_scale(layer, B):
    x, b = B.value(layer.bottoms[0]), B(layer.bottoms[0])
    g, bg = _operand(layer, B, 0)
    out = np.abs(g) * b + np.abs(x) * bg + 2 * U * (np.abs(x * g) + _out(B, layer))
    return [out]


def _rule_bias(layer, B):
    _, bb = _operand(layer, B, 0)
    return [B(layer.bottoms[0]) + bb + U * _out(B, layer)]


def _rule_eltwise(layer, B):
    from .layers.eltwise import E
    xs = [B.value(k) for k in layer.bottoms]
    bs = [B(k) for k in layer.bottoms]
    n = len(xs)
    if layer.operation == E.SUM:
        c = layer.coeff or [1.0] * n
        local = gamma(n) * sum(abs(ci) * np.abs(xi) for ci, xi in zip(c, xs))
        if MODEL == "worst-case":
            return [local + sum(abs(ci) * bi for ci, bi in zip(c, bs))]
        return [local + np.sqrt(sum((ci * ci) * bi.astype(np.float32) ** 2 for ci, bi in zip(c, bs)))]
    if layer.operation == E.PROD:
        out = 0
        for i in range(n):
            others = 1
            for j in range(n):
                if j != i:
                    others = others * (np.abs(xs[j]) + bs[j])
            out = out + bs[i] * others
        return [out + n * U * _out(B, layer)]
    return [np.maximum.reduce(bs)]          # MAX: the winner's bound is one of them


def _rule_pooling(layer, B):
    from .layers.pooling import P, caffe_ave_divisor
    x, b = B.value(layer.bottoms[0]), B(layer.bottoms[0])
    if layer.method == P.MAX:
        return [_window(b, layer, "max")] * layer.n_tops
    if layer.method == P.AVE:
        _, _, h, w = x.shape
        oh, ow = layer.out_shapes[0][2:]
        k = int(np.prod(layer.kernel)) if not layer.global_pooling else h * w
        g = gamma(k) if MODEL == "worst-case" else LAMBDA * math.sqrt(k + 2) * U
        if layer.global_pooling:
            div = np.float32(h * w)
            local, inherited = np.abs(x).sum(axis=(2, 3), keepdims=True), b.sum(axis=(2, 3), keepdims=True)
            if MODEL != "worst-case":
                inherited = np.sqrt((b * b).sum(axis=(2, 3), keepdims=True))
        else:
            div = np.outer(caffe_ave_divisor(h, oh, layer.kernel[0], layer.stride[0], layer.pad[0]),
                           caffe_ave_divisor(w, ow, layer.kernel[1], layer.stride[1], layer.pad[1])).astype(np.float32)
            local = _window(np.abs(x), layer, "sum")
            inherited = _window(b, layer, "sum") if MODEL == "worst-case" else np.sqrt(_window(b * b, layer, "sum"))
        return [(g * local + inherited) / div + 2 * U * _out(B, layer)]
    return [np.full(B.value(layer.tops[0]).shape, np.inf, np.float32)]


def _rule_lrn(layer, B):
    """y_c = x_c s_c^-beta, s_c = k + alpha/n sum_window x_j^2, to first order:
    |dy_c| <= s_c^-beta b_c + 2 beta alpha/n |x_c| s_c^(-beta-1) sum_window |x_j| b_j."""
    x, b = B.value(layer.bottoms[0]).astype(np.float64), B(layer.bottoms[0]).astype(np.float64)
    n, alpha, beta = layer.size, layer.alpha, layer.beta
    if layer.region == 0:     # across channels: c - (n-1)/2 ... c + n/2
        pre = (n - 1) // 2
        c = x.shape[1]

        def window_sum(a):
            padded = np.zeros((a.shape[0], c + n - 1) + a.shape[2:])
            padded[:, pre:pre + c] = a
            return sum(padded[:, i:i + c] for i in range(n))
        k, count = layer.k, n
    else:                     # within the channel: an n x n window (Caffe's divisor is n^2 inside the pad)
        pad = (n - 1) // 2
        hh, ww = x.shape[2:]

        def window_sum(a):
            padded = np.zeros(a.shape[:2] + (hh + n - 1, ww + n - 1))
            padded[:, :, pad:pad + hh, pad:pad + ww] = a
            return sum(padded[:, :, i:i + hh, j:j + ww] for i in range(n) for j in range(n))
        k, count = 1.0, n * n
    scale = k + alpha / count * window_sum(x * x)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = scale ** -beta * b + 2 * beta * alpha / count * np.abs(x) * scale ** (-beta - 1) \
            * window_sum(np.abs(x) * b)
    out = np.where(scale > 0, out, np.inf)
    return [out.astype(np.float32) * np.float32(1 + 1e-3) + 16 * U * _out(B, layer)]


def _rule_softmax(layer, B):
    b = B(layer.bottoms[0])
    # sum_j |dy_i/dx_j| = 2 y_i (1 - y_i) <= 1/2; exp, sum and division round relatively
    return [0.5 * b.max(axis=layer.axis, keepdims=True) + 8 * U * _out(B, layer)]


def _rule_concat(layer, B):
    return [np.concatenate([B(k) for k in layer.bottoms], axis=layer.axis)]


def _rule_slice(layer, B):
    return np.split(B(layer.bottoms[0]), np.cumsum(layer.sizes)[:-1], axis=layer.axis)


def _rule_split(layer, B):
    return [B(layer.bottoms[0])] * len(layer.tops)


def _rule_reshape(layer, B):
    b = B(layer.bottoms[0])
    if layer.in_shapes[0][0] != layer.out_shapes[0][0]:
        return [np.full(B.value(layer.tops[0]).shape, b.max(initial=0), np.float32)]
    return [b.reshape((b.shape[0],) + tuple(layer.out_shapes[0][1:]))]


def _rule_dropout(layer, B):
    b = B(layer.bottoms[0])
    return [b if layer.factor == 1.0 else layer.factor * b + U * _out(B, layer)]


def _rule_crop(layer, B):
    b = B(layer.bottoms[0])
    index = [slice(None)] * layer.axis + [slice(o, o + n) for o, n in
                                          zip(layer.offs, layer.out_shapes[0][layer.axis:])]
    return [b[tuple(index)]]


def _rule_tile(layer, B):
    reps = [1] * len(layer.in_shapes[0])
    reps[layer.axis] = layer.tiles
    return [np.tile(B(layer.bottoms[0]), reps)]


# -- the forks' layers ----------------------------------------------------------------------------
def _sum_g(k: int) -> float:
    """The relative rounding of a sum of k terms (as the linear layers' local term)."""
    return gamma(k) if MODEL == "worst-case" else LAMBDA * math.sqrt(k + 2) * U


def _rule_bn(layer, B):
    """The forks' `BN`. PSPNet's (stored statistics): ((x - mean) * inv_std) * gamma + beta,
    four roundings in Caffe's order, or folded (x * scale + shift, each factor rounded): both
    within 4 U of each product's size. SegNet's INFERENCE: x * scale + shift. SegNet's LEARN
    (the batch's own statistics, E[x] and E[x^2] - E[x]^2 over N, H, W): to first order
    through the statistics too (the variance's cancellation included)."""
    x, b = B.value(layer.bottoms[0]), B(layer.bottoms[0])
    rank = x.ndim
    y = _out(B, layer)
    if hasattr(layer, "affine"):                     # PSPNet
        mean, inv_std, g, beta = (_per_channel(v, rank) for v in layer.affine())
        sg = np.abs(inv_std * g)
        return [sg * b + 4 * U * (sg * (np.abs(x) + np.abs(mean)) + np.abs(beta)) + 2 * U * y]
    scale, shift = (_per_channel(np.asarray(v).reshape(-1), rank) for v in layer.blobs[:2])
    from .layers.segnet import BN_MODE, SEGNET_BN_EPS
    if layer.mode == BN_MODE.INFERENCE:
        return [np.abs(scale) * b + 2 * U * (np.abs(x * scale) + y)]
    x64, b64 = x.astype(np.float64), b.astype(np.float64)
    axes = (0, 2, 3)
    g = _sum_g(x.shape[2] * x.shape[3] + x.shape[0])
    mean = x64.mean(axis=axes, keepdims=True)
    ex2 = (x64 * x64).mean(axis=axes, keepdims=True)
    d_mean = b64.mean(axis=axes, keepdims=True) + g * np.abs(x64).mean(axis=axes, keepdims=True)
    d_ex2 = (2 * np.abs(x64) * b64 + b64 * b64).mean(axis=axes, keepdims=True) + g * ex2
    var = ex2 - mean * mean
    d_var = d_ex2 + (2 * np.abs(mean) + d_mean) * d_mean + 2 * U * (ex2 + mean * mean)
    low = var + float(SEGNET_BN_EPS) - d_var
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        std = np.sqrt(np.maximum(var + float(SEGNET_BN_EPS), 0))
        d_std = np.where(low > 0, d_var / (np.sqrt(np.maximum(low, 0)) + std) + 2 * U * std, np.inf)
        centred = np.abs(x64 - mean)
        d_hat = (b64 + d_mean + 2 * U * centred) / std + centred * d_std / (std * np.maximum(std - d_std, 0))
        d_hat = np.where(std - d_std > 0, d_hat, np.inf)
        out = np.abs(scale) * d_hat + 2 * U * (centred / std * np.abs(scale) + y)
    outs = [out]
    if len(layer.tops) > 1:                           # the batch mean, the batch variance (without eps)
        outs.append(d_mean)
    if len(layer.tops) > 2:
        outs.append(d_var)
    return outs


def _rule_interp(layer, B):
    """Bilinear weights are >= 0 and sum to 1 per axis: the bounds interpolate as the
    values do; two products and a sum round per axis."""
    x, b = B.value(layer.bottoms[0]), B(layer.bottoms[0])
    return [layer.forward_numpy(b) * np.float32(1 + 16 * U) + 6 * U * layer.forward_numpy(np.abs(x))
            + 2 * U * _out(B, layer)]


def _rule_upsample(layer, B):
    """Copies: YOLO's nearest upsampling (exact), SegNet's unpooling through a pooling's
    mask. The mask is a max-pool decision: where that pooling's window is a near-tie (its
    runner-up within MARGIN x the bounds of the maximum), the value may land on any
    near-winner's position (and leave its own), so each of them is bounded by |x| + b."""
    b = B(layer.bottoms[0])
    if len(layer.bottoms) == 1:                       # YOLO: nearest, scale x scale copies
        return [np.repeat(np.repeat(b, layer.scale, axis=2), layer.scale, axis=3)]
    from .layers.segnet import upsample_reference
    x, mask = B.value(layer.bottoms[0]), B.value(layer.bottoms[1])
    oh, ow = layer.out_shapes[0][2:]
    out = upsample_reference(b, mask, (oh, ow))
    pool = B.producer.get(layer.bottoms[1])
    if pool is None or pool.type != "Pooling" or layer.bottoms[1] not in pool.tops[1:]:
        return [out]                                  # a mask from elsewhere: taken as exact
    px, pb = B.value(pool.bottoms[0]), B(pool.bottoms[0])
    n, c, h, w = px.shape
    if pool.global_pooling:
        (kh, kw), (sh, sw), (ph, pw) = (h, w), (1, 1), (0, 0)
    else:
        (kh, kw), (sh, sw), (ph, pw) = pool.kernel, pool.stride, pool.pad
    mh, mw = mask.shape[2:]
    hp, wp = max((mh - 1) * sh + kh, h + ph), max((mw - 1) * sw + kw, w + pw)
    vx = np.full((n, c, hp, wp), -np.inf, np.float32)
    vb = np.zeros((n, c, hp, wp), np.float32)
    vx[:, :, ph:ph + h, pw:pw + w], vb[:, :, ph:ph + h, pw:pw + w] = px, pb
    idx = mask.astype(np.int64)
    sy, sx = idx // w + ph, idx % w + pw
    nn, cc = np.indices((n, c))
    best, best_b = vx[nn[..., None, None], cc[..., None, None], sy, sx], vb[nn[..., None, None], cc[..., None, None], sy, sx]
    near, others = [], 0
    oy, ox = np.indices((mh, mw))
    for ky in range(kh):
        for kx in range(kw):
            part = vx[:, :, ky:ky + (mh - 1) * sh + 1:sh, kx:kx + (mw - 1) * sw + 1:sw]
            band = MARGIN * (best_b + vb[:, :, ky:ky + (mh - 1) * sh + 1:sh, kx:kx + (mw - 1) * sw + 1:sw])
            switch = (sy == oy * sh + ky) & (sx == ox * sw + kx)
            # a tie of exact values (a rectified region's zeros) is decided alike everywhere
            m = np.isfinite(part) & (best - part <= band) & (band > 0)
            others = others + (m & ~switch)
            near.append((ky, kx, m | switch))
    tied = np.asarray(others) > 0
    if not tied.any():
        return [out]
    spread = np.where(tied, np.abs(x) + b, 0).astype(np.float32)
    flat = out.reshape(n, c, -1)
    for ky, kx, m in near:
        m = m & tied
        if not m.any():
            continue
        i_n, i_c, i_y, i_x = np.nonzero(m)
        pos = (oy[i_y, i_x] * sh + ky - ph) * w + (ox[i_y, i_x] * sw + kx - pw)
        ok = pos < oh * ow
        np.maximum.at(flat, (i_n[ok], i_c[ok], pos[ok]), spread[i_n[ok], i_c[ok], i_y[ok], i_x[ok]])
    return [out]


def _roi_rows(layer, B):
    """The ROIs of an ROI layer and its input's rows, or None where the ROIs carry a
    rounding of their own (proposals computed from the net: the bins may move)."""
    rois_key = layer.bottoms[1]
    if np.any(B(rois_key)):
        return None
    return np.asarray(B.value(rois_key), np.float32).reshape(-1, 5)


def _rule_roi_pooling(layer, B):
    """Each bin's maximum: within the largest bound of its cells (an empty bin is an exact 0)."""
    from .layers.roi_backward import roi_pool_bins
    rois = _roi_rows(layer, B)
    b = B(layer.bottoms[0])
    shape = B.value(layer.tops[0]).shape
    if rois is None:
        return [np.full(shape, np.inf, np.float32)]
    _, _, h, w = b.shape
    _, _, (hs, he, ws, we) = roi_pool_bins(rois, layer.spatial_scale, layer.pooled, h, w)
    out = np.zeros(shape, np.float32)
    for r, image in enumerate(rois[:, 0].astype(np.int64)):
        if not 0 <= image < len(b):
            out[r] = np.inf          # an image the batch does not have: no bound known
            continue
        for i in range(layer.pooled[0]):
            for j in range(layer.pooled[1]):
                if he[r, i] > hs[r, i] and we[r, j] > ws[r, j]:
                    out[r, :, i, j] = b[image, :, hs[r, i]:he[r, i], ws[r, j]:we[r, j]].max(axis=(1, 2))
    return [out]


def _rule_psroi_pooling(layer, B):
    """Each bin's mean of its own channel, as AVE pooling: the sum's rounding and the cells'
    bounds in quadrature (worst-case: summed), over the bin's area."""
    from .layers.roi_backward import psroi_bins
    rois = _roi_rows(layer, B)
    x, b = B.value(layer.bottoms[0]), B(layer.bottoms[0])
    shape = B.value(layer.tops[0]).shape
    if rois is None:
        return [np.full(shape, np.inf, np.float32)]
    g, dim = layer.group_size, layer.output_dim
    _, _, h, w = x.shape
    hs, he, ws, we = psroi_bins(rois, layer.spatial_scale, g, h, w)
    out = np.zeros(shape, np.float32)
    d = np.arange(dim)
    for r, image in enumerate(rois[:, 0].astype(np.int64)):
        if not 0 <= image < len(b):
            out[r] = np.inf
            continue
        for i in range(g):
            for j in range(g):
                area = (he[r, i] - hs[r, i]) * (we[r, j] - ws[r, j])
                if he[r, i] <= hs[r, i] or we[r, j] <= ws[r, j]:
                    continue
                ch = (d * g + i) * g + j
                cells = (image, ch, slice(hs[r, i], he[r, i]), slice(ws[r, j], we[r, j]))
                local = _sum_g(area) * np.abs(x[cells]).sum(axis=(1, 2))
                inherited = b[cells].sum(axis=(1, 2)) if MODEL == "worst-case" else \
                    np.sqrt((b[cells].astype(np.float64) ** 2).sum(axis=(1, 2)))
                out[r, :, i, j] = (local + inherited) / area
    return [out + 2 * U * _out(B, layer)]


RULES = {
    "Convolution": _rule_conv, "Deconvolution": _rule_conv, "InnerProduct": _rule_ip,
    "ReLU": _rule_relu, "PReLU": _rule_prelu, "Clip": _rule_clip, "Threshold": _rule_threshold,
    "ELU": _lipschitz(lambda l: max(1.0, abs(l.alpha))), "Sigmoid": _lipschitz(0.25), "TanH": _lipschitz(1.0),
    "AbsVal": _lipschitz(1.0, 0), "BNLL": _lipschitz(1.0), "Swish": _lipschitz(lambda l: 1.1 * max(1.0, abs(l.beta))),
    "ReLU6": _rule_prelu, "ConvolutionDepthwise": _rule_conv, "DepthwiseConvolution": _rule_conv, "Power": _rule_power, "Exp": _rule_exp, "Log": _rule_log,
    "BatchNorm": _rule_batchnorm, "Scale": _rule_scale, "Bias": _rule_bias, "Eltwise": _rule_eltwise,
    "Pooling": _rule_pooling, "LRN": _rule_lrn, "Softmax": _rule_softmax,
    "Concat": _rule_concat, "Slice": _rule_slice, "Split": _rule_split, "Flatten": _rule_reshape,
    "Reshape": _rule_reshape, "Dropout": _rule_dropout, "Crop": _rule_crop, "Tile": _rule_tile,
    "BN": _rule_bn, "Interp": _rule_interp, "Upsample": _rule_upsample, "ROIPooling": _rule_roi_pooling,
    "PSROIPooling": _rule_psroi_pooling,
}


def _layer_bounds(layer, B) -> list[np.ndarray]:
    rule = RULES.get(layer.type)
    if rule is not None:
        try:
            outs = rule(layer, B)
            if all(np.shape(b) == B.value(t).shape for b, t in zip(outs, layer.tops)):
                return outs
        except Exception:  # noqa: BLE001 - a fork's variant of the type, shapes a rule does not know
            pass
    # no rule: every later decision is flagged (over-flagging is cheap, a missed flag is not)
    return [np.full(B.value(t).shape, np.inf, np.float32) for t in layer.tops]


# -- the self-test ---------------------------------------------------------------------------
def _plain_forward(net, faithful: bool, optimise: bool) -> dict[str, np.ndarray]:
    """Every blob of the net on its last inputs, from another evaluation: ONNX Runtime's
    plain NCHW kernels (optimise=False: no graph rewrites, no blocked layouts) and/or the
    other BatchNorm order (faithful=False: folded into the convolution)."""
    import onnxruntime as ort

    from .runtime.onnx_export import build_onnx
    from .runtime.session import _external_placeholder, providers
    onnx_net = build_onnx(net.graph, record=True, every_blob=True, faithful=faithful, switches=False)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimise
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    names = list(onnx_net.weights)
    if names:
        onnx_net.model.graph.initializer.extend(_external_placeholder(n, onnx_net.weights[n]) for n in names)
        opts.add_external_initializers(names, [ort.OrtValue.ortvalue_from_numpy(onnx_net.weights[n])
                                               for n in names])
    sess = ort.InferenceSession(onnx_net.model.SerializeToString(), opts, providers=providers())
    feeds = {i.name: np.ascontiguousarray(net._input_data[i.name], np.float32) for i in sess.get_inputs()}
    return dict(zip(onnx_net.keys, sess.run(onnx_net.outputs, feeds)))


@dataclasses.dataclass
class Decision:
    layer: str                  # the deciding layer
    unit: tuple                 # (n, c, y, x): a max-pool output window, or the rectifier's input unit
    evaluation: str             # which other evaluation decided otherwise
    flagged: bool               # whether the rounding bounds flag it


@dataclasses.dataclass
class SelfTest:
    differing: list[Decision]   # every decision another evaluation takes otherwise
    decisions: int              # how many decisions were compared (per evaluation)
    flagged: int                # how many of them the bounds flag

    @property
    def missed(self) -> list[Decision]:
        return [d for d in self.differing if not d.flagged]


def _decisions(net, values: dict) -> dict[str, np.ndarray]:
    """Each decision layer's decisions on these values: max-pool switches, rectifier
    signs (x > 0), Clip's two comparisons, max-Eltwise winners."""
    from .kernels import max_pool_switches
    from .layers.eltwise import E
    out = {}
    for layer in net.graph.compute_layers:
        if layer.type == "Pooling" and layer.method == 0:
            x = np.ascontiguousarray(values[layer.bottoms[0]], np.float32)
            n, c, h, w = x.shape
            sw = np.empty(layer.out_shapes[0], np.int32)
            k, s, p = ((h, w), (1, 1), (0, 0)) if layer.global_pooling else (layer.kernel, layer.stride, layer.pad)
            max_pool_switches(x.reshape(n * c, h, w), k[0], k[1], s[0], s[1], p[0], p[1],
                              sw.reshape(n * c, *sw.shape[2:]))
            out[layer.name] = sw
        elif layer.type in ("ReLU", "PReLU", "ReLU6"):
            out[layer.name] = values[layer.bottoms[0]] > 0
        elif layer.type == "Clip":
            x = values[layer.bottoms[0]]
            out[layer.name] = (x >= layer.min).astype(np.int8) + (x <= layer.max)
        elif layer.type == "Eltwise" and layer.operation == E.MAX:
            xs = [values[b] for b in layer.bottoms]
            best = np.where(xs[0] > xs[1], 0, 1)
            value = np.maximum(xs[0], xs[1])
            for i in range(2, len(xs)):
                best = np.where(xs[i] > value, i, best)
                value = np.maximum(value, xs[i])
            out[layer.name] = best
    return out


class _AllRows:
    def __init__(self, net, rows):
        self.net, self.rows = net, rows

    def __call__(self, key):
        return bounds_for(self.net, key, self.rows)


def _flags(net, values: dict, B: "_AllRows") -> dict[str, np.ndarray]:
    """Every decision the bounds flag, as the backward rules flag them with signal
    everywhere: max-pool windows, elementwise units."""
    from .kernels import mark_near_decisions, mark_near_ties
    from .layers.eltwise import E
    out = {}
    items = B.rows
    for layer in net.graph.compute_layers:
        if layer.type == "Pooling" and layer.method == 0:
            x = np.ascontiguousarray(values[layer.bottoms[0]], np.float32)
            n, c, h, w = x.shape
            sw = np.ascontiguousarray(_decisions_one(net, layer, values))
            k, s, p = ((h, w), (1, 1), (0, 0)) if layer.global_pooling else (layer.kernel, layer.stride, layer.pad)
            marks = np.zeros(sw.shape, np.uint8)
            mark_near_ties(x, items, np.ascontiguousarray(B(layer.bottoms[0])), np.ones(sw.shape, np.float32), sw,
                           k[0], k[1], s[0], s[1], p[0], p[1], MARGIN, marks)
            out[layer.name] = marks.astype(bool)
            continue
        if layer.type in ("ReLU", "PReLU", "ReLU6", "Clip"):
            x = np.ascontiguousarray(values[layer.bottoms[0]], np.float32)
            bound = B(layer.bottoms[0])
            thresholds = (layer.min, layer.max) if layer.type == "Clip" else (0.0,)
        elif layer.type == "Eltwise" and layer.operation == E.MAX:
            xs = [values[b] for b in layer.bottoms]
            top2 = np.sort(np.stack(xs), axis=0)
            x = np.ascontiguousarray(top2[-1] - top2[-2], np.float32)
            bound = 2 * np.maximum.reduce([B(b) for b in layer.bottoms])
            thresholds = (0.0,)
        else:
            continue
        marks = np.zeros(x.size, np.uint8)
        for t in thresholds:
            mark_near_decisions(x.reshape(-1), np.float32(t), np.ones(x.size, np.float32),
                                np.ascontiguousarray(bound, np.float32).reshape(-1), MARGIN, marks)
        out[layer.name] = marks.reshape(x.shape).astype(bool)
    return out


def _decisions_one(net, layer, values):
    from .kernels import max_pool_switches
    x = np.ascontiguousarray(values[layer.bottoms[0]], np.float32)
    n, c, h, w = x.shape
    sw = np.empty(layer.out_shapes[0], np.int32)
    k, s, p = ((h, w), (1, 1), (0, 0)) if layer.global_pooling else (layer.kernel, layer.stride, layer.pad)
    max_pool_switches(x.reshape(n * c, h, w), k[0], k[1], s[0], s[1], p[0], p[1], sw.reshape(n * c, *sw.shape[2:]))
    return sw


def rounding_selftest(net, evaluations=("plain", "other-rounding"), **inputs) -> SelfTest:
    """Hold the near-decision flags to other evaluations of the same forward pass, without
    an oracle: run the net (on `inputs`, or the last recorded ones), then again with
    ONNX Runtime's plain kernels ("plain") and with the other BatchNorm order
    ("other-rounding": "fast" for a "caffe" net and back), and list every max-pool switch,
    rectifier sign, Clip side and max-Eltwise winner that differs from the recorded pass,
    with whether the rounding bounds flag it. `missed` must be empty."""
    if inputs or not net.layer_outputs:
        net.forward(**inputs)
    values = _every_blob_values(net)
    rows = np.arange(next(iter(net._input_data.values())).shape[0])
    net.__dict__["_rounding_bounds"] = (net.layer_outputs, net._input_data, Bounds(net, rows, values))
    B = _AllRows(net, rows)
    mine = _decisions(net, values)
    flags = _flags(net, values, B)
    differing = []
    caffe = net.rounding == "caffe"
    # the other BatchNorm order is the same graph on a net without BatchNorm
    folds = any(l.type == "BatchNorm" for l in net.graph.compute_layers)
    for name in evaluations:
        if name == "other-rounding" and not folds:
            continue
        if name == "plain":
            other = _plain_forward(net, faithful=caffe, optimise=False)
        elif name == "other-rounding":
            other = _plain_forward(net, faithful=not caffe, optimise=True)
        else:
            raise ValueError(f"evaluation '{name}': expected plain or other-rounding")
        theirs = _decisions(net, other)
        for layer, d in mine.items():
            for unit in zip(*np.nonzero(d != theirs[layer])):
                unit = tuple(int(i) for i in unit)
                differing.append(Decision(layer, unit, name, bool(flags[layer][unit])))
    return SelfTest(differing, sum(d.size for d in mine.values()), sum(int(f.sum()) for f in flags.values()))
