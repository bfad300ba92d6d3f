"""Backward rules of the SSD, mobile, CTPN and YOLO fork layers (issue 22): backprop against
float64 finite differences of a NumPy reference of each small net (whose forward pass is
checked against the net's first), the modes (deconvnet = guided = backprop away from
rectifiers; ReLU6's rules), the SSD fork's own backward passes (../shared/oracle_ssd), and
projections from the last layer of the census nets of these families."""
from __future__ import annotations

import numpy as np
import pytest

import caffe_reference as ref
import zfcaffe
from conftest import fork_case, rel_err
from conftest import layer_text as L
from zfcaffe.layers.ssd import Normalize
from zfcaffe.layers.yolo import reorg_reference

RNG = np.random.default_rng(22)
MODES = ("deconvnet", "guided", "backprop")


def r(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def fd_check(build, text, inputs, blobs, key, forward64, unit, modes_equal=True, h=1e-3, tol=2e-3):
    """d out[unit] / d input by the engine (backprop) and by central differences of a float64
    reference forward (itself checked against the net's forward pass). modes_equal: no
    rectifier on the way, so deconvnet and guided give backprop's result exactly."""
    net = build(text, {k: v.shape for k, v in inputs.items()}, blobs)
    net.forward(**inputs)
    name = next(iter(inputs))
    x = inputs[name].astype(np.float64)
    assert rel_err(net.layer_outputs[key], forward64(x)) < 1e-5, "the reference is not the net's forward pass"
    got = net.project(key, unit, mode="backprop", value=1.0)
    fd = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        for sgn in (1, -1):
            xp = x.copy()
            xp[idx] += sgn * h
            fd[idx] += sgn * forward64(xp)[tuple(unit)] / (2 * h)
    assert rel_err(got, fd) < tol, f"{key}: {rel_err(got, fd):.2e}"
    if modes_equal:
        for mode in ("deconvnet", "guided"):
            np.testing.assert_array_equal(net.project(key, unit, mode=mode, value=1.0), got, err_msg=mode)
    return net


def normalize64(x, scale, across, eps):
    axes = tuple(range(1, x.ndim)) if across else (1,)
    s = np.asarray(scale, np.float64).reshape((1, -1) + (1,) * (x.ndim - 2)) if np.ndim(scale) else scale
    return x / np.sqrt((x * x).sum(axis=axes, keepdims=True) + eps) * s


# -- SSD: Normalize, Permute, PriorBox, and BVLC's Flatten/Reshape/Concat/Softmax on SSD heads ----
@pytest.mark.parametrize("across", [True, False])
@pytest.mark.parametrize("shared_scale", [True, False])
def test_fd_normalize_every_form(build, across, shared_scale):
    x = r(1, 4, 3, 5)
    eps = 1e-3 if across else 0.5
    if shared_scale:
        scale, blobs = 2.5, None
        params = 'scale_filler { type: "constant" value: 2.5 }'
    else:
        scale = np.abs(r(4)) + 0.5   # distinct per channel: the fork's Backward_cpu is not the gradient here
        blobs = {"n": [scale]}
        params = ""
    text = L("n", "Normalize", "data", f"norm_param {{ across_spatial: {str(across).lower()} channel_shared: "
                                       f"{str(shared_scale).lower()} eps: {eps} {params} }}")
    fd_check(build, text, {"data": x}, blobs, "n", lambda x: normalize64(x, scale, across, eps), (0, 1, 2, 3))


def test_fd_ssd_heads_normalize_permute_flatten_concat_reshape_softmax(build):
    """Two SSD heads as the SSD prototxts write them: conf convs, Permute 0 2 3 1, Flatten,
    Concat, Reshape to (N, priors, classes), Softmax over classes, Flatten; PriorBoxes off the
    same maps pass no signal."""
    x = r(1, 3, 8, 8)
    w1, b1, w2 = r(4, 3, 3, 3), r(4), r(4, 4, 3, 3)
    wc1, wc2 = r(6, 4, 3, 3), r(6, 4, 3, 3)
    s1 = np.abs(r(4)) + 1
    text = (L("c4", "Convolution", "data", "convolution_param { num_output: 4 kernel_size: 3 pad: 1 }")
            + L("c4n", "Normalize", "c4", "norm_param { across_spatial: false channel_shared: false }")
            + L("c5", "Convolution", "c4", "convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 2 "
                                           "bias_term: false }")
            + L("c5n", "Normalize", "c5", "")
            + L("conf1", "Convolution", "c4n", "convolution_param { num_output: 6 kernel_size: 3 pad: 1 "
                                               "bias_term: false }")
            + L("conf2", "Convolution", "c5n", "convolution_param { num_output: 6 kernel_size: 3 pad: 1 "
                                               "bias_term: false }")
            + L("perm1", "Permute", "conf1", "permute_param { order: 0 order: 2 order: 3 order: 1 }")
            + L("perm2", "Permute", "conf2", "permute_param { order: 0 order: 2 order: 3 order: 1 }")
            + L("flat1", "Flatten", "perm1", "flatten_param { axis: 1 }")
            + L("flat2", "Flatten", "perm2", "flatten_param { axis: 1 }")
            + L("conf", "Concat", ["flat1", "flat2"], "concat_param { axis: 1 }")
            + L("resh", "Reshape", "conf", "reshape_param { shape { dim: 0 dim: -1 dim: 3 } }")
            + L("sm", "Softmax", "resh", "softmax_param { axis: 2 }")
            + L("smf", "Flatten", "sm")
            + L("pb1", "PriorBox", ["c4", "data"], "prior_box_param { min_size: 2 aspect_ratio: 2 flip: true }")
            + L("pb2", "PriorBox", ["c5", "data"], "prior_box_param { min_size: 4 max_size: 6 }")
            + L("pbs", "Concat", ["pb1", "pb2"], "concat_param { axis: 2 }"))

    def f(x):
        c4 = ref.conv(x, w1, b1, pad=(1, 1))
        c5 = ref.conv(c4, w2, None, stride=(2, 2), pad=(1, 1))
        h1 = ref.conv(normalize64(c4, s1, False, 1e-10), wc1, None, pad=(1, 1)).transpose(0, 2, 3, 1)
        h2 = ref.conv(normalize64(c5, 3.0, True, 1e-10), wc2, None, pad=(1, 1)).transpose(0, 2, 3, 1)
        conf = np.concatenate([h1.reshape(1, -1), h2.reshape(1, -1)], axis=1).reshape(1, -1, 3)
        return ref.softmax(conf, 2).reshape(1, -1)
    net = fd_check(build, text, {"data": x}, {"c4": [w1, b1], "c5": [w2], "c4n": [s1], "c5n": [np.array(3.0)],
                                             "conf1": [wc1],
                                             "conf2": [wc2]}, "smf", f, (0, 6 * 64 + 7))
    for mode in MODES:   # the priors depend on shapes only
        assert not net.project("pbs", (0, 0, 5), mode=mode).any()


def test_fd_permute_moving_the_batch_axis(build):
    """A Permute (or Transpose) that moves the batch axis: with a batch of 1 the rows of the
    signal fold into the blob's first axis, through any number of such layers (Reverse along
    it too); units at index 0 of that axis project, others and batches > 1 say why not."""
    x = r(1, 3, 4, 5)
    w = r(2, 3, 1, 1)
    text = (L("c", "Convolution", "data", "convolution_param { num_output: 2 kernel_size: 1 bias_term: false }")
            + L("p", "Permute", "c", "permute_param { order: 3 order: 1 order: 2 order: 0 }")   # (5, 2, 4, 1)
            + L("rev", "Reverse", "p", "reverse_param { axis: 0 }")
            + L("f", "Flatten", "rev")                                                            # (5, 8)
            + L("back", "Permute", "rev", "permute_param { order: 3 order: 1 order: 2 order: 0 }")
            + L("c2", "Convolution", "back", "convolution_param { num_output: 2 kernel_size: 3 pad: 1 "
                                             "bias_term: false }"))
    w2 = r(2, 2, 3, 3)

    def p64(x):
        return np.flip(ref.conv(x, w).transpose(3, 1, 2, 0), 0)
    blobs = {"c": [w], "c2": [w2]}
    fd_check(build, text, {"data": x}, blobs, "f", lambda x: p64(x).reshape(5, 8), (0, 5))
    net = fd_check(build, text, {"data": x}, blobs, "c2",
                   lambda x: ref.conv(p64(x).transpose(3, 1, 2, 0), w2, None, pad=(1, 1)), (0, 1, 2, 3))
    with pytest.raises(zfcaffe.ZfcaffeError, match="not the batch"):
        net.project("f", (2, 5))
    net2 = build(text, {"data": (2, 3, 4, 5)}, blobs)
    net2.forward(data=np.concatenate([x, x]))
    with pytest.raises(zfcaffe.ZfcaffeError, match="batch of 1"):
        net2.project("c2", (0, 1, 2, 3))


# -- mobile: ReLU6, the depthwise spellings, ShuffleChannel, Axpy -------------------------------------
@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_fd_relu6(build, slope):
    x = r(1, 2, 5, 5)
    w = r(3, 2, 3, 3, scale=2.5)   # inputs on both sides of 0 and of 6
    params = f"relu6_param {{ negative_slope: {slope} }}" if slope else ""
    text = (L("conv", "Convolution", "data", "convolution_param { num_output: 3 kernel_size: 3 bias_term: false }")
            + L("r6", "ReLU6", "conv", params, ["conv"]))

    def f(x):
        y = ref.conv(x, w)
        return np.minimum(np.maximum(y, 0) + slope * np.minimum(y, 0), 6)
    net = fd_check(build, text, {"data": x}, {"conv": [w]}, "r6", f, (0, 1, 1, 2), modes_equal=False)
    y = net.layer_outputs["conv"]
    assert (y > 6).any() and (y < 0).any()


def test_relu6_modes_and_flags(build):
    """At 0 the modes differ as at a ReLU; at 6 every mode takes the gradient (nothing passes
    where x >= 6, as the fork's Backward_cpu). Units within rounding of either threshold are
    flagged; deconvnet does not read x at 0, so flags only at 6."""
    text = (L("r6", "ReLU6", "data")
            + L("ip", "InnerProduct", "r6", "inner_product_param { num_output: 1 bias_term: false }"))
    net = build(text, {"data": (1, 1, 1, 6)}, {"ip": [np.array([[1, -1, 2, -2, 1, -1]], np.float32)]})
    net.forward(data=np.array([[[[-2, -0.5, 1, 3, 7, 5.9]]]], np.float32))
    got = {m: net.project("ip", (0, 0), mode=m, value=1.0)[0].ravel() for m in MODES}
    np.testing.assert_array_equal(got["deconvnet"], [1, 0, 2, 0, 0, 0])
    np.testing.assert_array_equal(got["guided"], [0, 0, 2, 0, 0, 0])
    np.testing.assert_array_equal(got["backprop"], [0, 0, 2, -2, 0, -1])

    # x - y on two channels: one unit within rounding of 0, one exactly 6 (rounding may put it
    # either side), two far from both
    text = (L("d", "Convolution", "data", "convolution_param { num_output: 1 kernel_size: 1 bias_term: false }")
            + L("r6", "ReLU6", "d")
            + L("ip", "InnerProduct", "r6", "inner_product_param { num_output: 1 bias_term: false }"))
    net = build(text, {"data": (1, 2, 1, 4)}, {"d": [np.array([1, -1], np.float32).reshape(1, 2, 1, 1)],
                                               "ip": [np.ones((1, 4), np.float32)]})
    a = np.array([3, 7, 2, 9], np.float32)
    b = np.array([np.nextafter(np.float32(3), np.float32(0)), 1, 0, 0], np.float32)
    net.forward(data=np.stack([a, b])[None, :, None, :])
    near0, at6 = (0, 0, 0, 0), (0, 0, 0, 1)
    for mode in MODES:
        net.project("ip", (0, 0), mode=mode, value=1.0)
        flagged = set(net.last_near_ties.get("r6", []))
        assert at6 in flagged and (near0 in flagged) == (mode != "deconvnet"), (mode, flagged)
        assert not flagged & {(0, 0, 0, 2), (0, 0, 0, 3)}, (mode, flagged)


def test_fd_depthwise_spellings(build):
    x = r(1, 4, 7, 7)
    w1, b1, w2 = r(4, 1, 3, 3), r(4), r(4, 1, 3, 3)
    text = (L("dw1", "ConvolutionDepthwise", "data", "convolution_param { num_output: 4 kernel_size: 3 stride: 2 "
                                                     "pad: 1 }")
            + L("dw2", "DepthwiseConvolution", "dw1", "convolution_param { num_output: 4 group: 4 kernel_size: 3 "
                                                      "pad: 2 dilation: 2 bias_term: false }"))

    def f(x):
        y = ref.conv(x, w1, b1, stride=(2, 2), pad=(1, 1), group=4)
        return ref.conv(y, w2, None, pad=(2, 2), dil=(2, 2), group=4)
    fd_check(build, text, {"data": x}, {"dw1": [w1, b1], "dw2": [w2]}, "dw2", f, (0, 2, 1, 2))


def test_fd_shufflechannel_and_axpy_se_block(build):
    """ShuffleNet's channel shuffle and SENet's Axpy (a * x + y): gradients to all three bottoms."""
    x = r(1, 6, 4, 4)
    wx, wse, bse = r(6, 6, 1, 1), r(6, 6, 1, 1), r(6)
    text = (L("sh", "ShuffleChannel", "data", "shuffle_channel_param { group: 3 }")
            + L("x", "Convolution", "sh", "convolution_param { num_output: 6 kernel_size: 1 bias_term: false }")
            + L("gp", "Pooling", "x", "pooling_param { pool: AVE global_pooling: true }")
            + L("se", "Convolution", "gp", "convolution_param { num_output: 6 kernel_size: 1 }")
            + L("sig", "Sigmoid", "se")
            + L("ax", "Axpy", ["sig", "x", "sh"]))

    def f(x):
        sh = x.reshape(1, 3, 2, 4, 4).transpose(0, 2, 1, 3, 4).reshape(1, 6, 4, 4)
        xx = ref.conv(sh, wx)
        a = 1 / (1 + np.exp(-ref.conv(xx.mean(axis=(2, 3), keepdims=True), wse, bse)))
        return a * xx + sh
    fd_check(build, text, {"data": x}, {"x": [wx], "se": [wse, bse]}, "ax", f, (0, 4, 2, 1))


# -- CTPN: Im2col, Transpose, Reshape, Lstm both ways, Reverse, Concat ---------------------------------
def im2col64(x, k, s, p, d=1):
    n, c, h, w = x.shape
    oh, ow = (h + 2 * p - d * (k - 1) - 1) // s + 1, (w + 2 * p - d * (k - 1) - 1) // s + 1
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    out = np.zeros((n, c, k, k, oh, ow))
    for i in range(k):
        for j in range(k):
            out[:, :, i, j] = xp[:, :, i * d:i * d + (oh - 1) * s + 1:s, j * d:j * d + (ow - 1) * s + 1:s]
    return out.reshape(n, c * k * k, oh, ow)


def lstm64(x, wx, wh, b):
    t_len, n, _ = x.shape
    hid = wh.shape[1]
    h, c, out = np.zeros((n, hid)), np.zeros((n, hid)), []
    for t in range(t_len):
        z = x[t] @ wx.T.astype(np.float64) + h @ wh.T.astype(np.float64) + b
        i, f, o = (1 / (1 + np.exp(-z[:, k * hid:(k + 1) * hid])) for k in range(3))
        c = f * c + i * np.tanh(z[:, 3 * hid:])
        h = o * np.tanh(c)
        out.append(h)
    return np.stack(out)


def test_fd_ctpn_bidirectional_lstm_head(build):
    """CTPN's head in small: im2col, Transpose to (W, H, ...), an LSTM each way along W
    (Reverse, Lstm, Reverse), Concat, back to N x C x H x W. The signal crosses the moved
    batch axis twice; seeds on the LSTM outputs themselves (time 0) project too."""
    x = r(1, 2, 3, 4)
    hid, i_n = 5, 18
    lw = [r(4 * hid, i_n, scale=0.5), r(4 * hid, hid, scale=0.5), r(4 * hid, scale=0.5)]
    rw = [r(4 * hid, i_n, scale=0.5), r(4 * hid, hid, scale=0.5), r(4 * hid, scale=0.5)]
    wf = r(3, 2 * hid, 1, 1)
    text = (L("col", "Im2col", "data", "convolution_param { pad: 1 kernel_size: 3 }")
            + L("tr", "Transpose", "col", "transpose_param { dim: 3 dim: 2 dim: 0 dim: 1 }")
            + L("li", "Reshape", "tr", "reshape_param { shape { dim: -1 } axis: 1 num_axes: 2 }")
            + L("lstm", "Lstm", "li", "lstm_param { num_output: 5 }")
            + L("rev1", "Reverse", "li", "reverse_param { axis: 0 }")
            + L("rl", "Lstm", "rev1", "lstm_param { num_output: 5 }")
            + L("rev2", "Reverse", "rl", "reverse_param { axis: 0 }")
            + L("merge", "Concat", ["lstm", "rev2"], "concat_param { axis: 2 }")
            + L("lo", "Reshape", "merge", "reshape_param { shape { dim: -1 dim: 1 } axis: 1 num_axes: 1 }")
            + L("out", "Transpose", "lo", "transpose_param { dim: 2 dim: 3 dim: 1 dim: 0 }")
            + L("fc", "Convolution", "out", "convolution_param { num_output: 3 kernel_size: 1 bias_term: false }"))
    blobs = {"lstm": lw, "rl": rw, "fc": [wf]}

    def seq(x):   # (W, H, 18)
        return im2col64(x, 3, 1, 1).transpose(3, 2, 0, 1).reshape(4, 3, i_n)

    def merge(x):
        s = seq(x)
        return np.concatenate([lstm64(s, *lw), lstm64(s[::-1], *rw)[::-1]], axis=2)
    fd_check(build, text, {"data": x}, blobs, "fc",
             lambda x: ref.conv(merge(x)[:, :, None].transpose(2, 3, 1, 0), wf), (0, 1, 2, 3))
    fd_check(build, text, {"data": x}, blobs, "merge", merge, (0, 2, 7))
    net = fd_check(build, text, {"data": x}, blobs, "lstm", lambda x: lstm64(seq(x), *lw), (0, 1, 2))
    with pytest.raises(zfcaffe.ZfcaffeError, match="not the batch"):
        net.project("lstm", (2, 1, 2))


def test_fd_im2col_stride_dilation(build):
    x = r(1, 2, 6, 7)
    text = L("col", "Im2col", "data", "convolution_param { pad: 1 kernel_size: 3 stride: 2 dilation: 2 }")
    fd_check(build, text, {"data": x}, None, "col", lambda x: im2col64(x, 3, 2, 1, 2), (0, 11, 1, 1))


# -- YOLO: Upsample (nearest), Reorg both ways -----------------------------------------------------------
def test_fd_yolo_reorg_upsample(build):
    x = r(1, 8, 4, 6)
    w = r(8, 8, 1, 1)
    text = (L("c", "Convolution", "data", "convolution_param { num_output: 8 kernel_size: 1 bias_term: false }")
            + L("ro", "Reorg", "c", "reorg_param { stride: 2 }")
            + L("up", "Upsample", "ro", "upsample_param { scale: 2 }")
            + L("rr", "Reorg", "up", "reorg_param { stride: 2 reverse: true }"))

    def f(x):   # the fork's reorg_cpu index arithmetic, on float64
        ro = reorg_reference(ref.conv(x, w), 2, False).reshape(1, 32, 2, 3)
        up = ro.repeat(2, axis=2).repeat(2, axis=3)
        return reorg_reference(up, 2, True).reshape(1, 8, 8, 12)
    fd_check(build, text, {"data": x}, {"c": [w]}, "rr", f, (0, 3, 5, 7))


# -- the SSD fork's own backward passes ------------------------------------------------------------
def fork_normalize_backward(self, ctx, top_diffs):
    """weiliu89/caffe@4817bf8b NormalizeLayer::Backward_cpu: scale (g / n - x sum(x g) / n^3),
    the gradient only for a shared scale."""
    g = top_diffs[0].astype(np.float64)
    x = ctx.data(self.bottoms[0]).astype(np.float64)
    axes = self._norm_axes(x.ndim)
    n = np.sqrt((x * x).sum(axis=axes, keepdims=True) + self.eps)
    return [((g / n - x * ((x * g).sum(axis=axes, keepdims=True) / n ** 3)) * self._scale(x.ndim)).astype(np.float32)]


#: seeds whose path crosses a Normalize with a per-channel scale: there the fork's backward is
#: not the gradient (zfcaffe's is: test_fd_normalize_every_form); in backprop the two differ, in
#: deconvnet and guided too unless the rectifiers below drop the difference (ssd_layers_a's)
FORK_NORMALIZE = {("ssd_layers_a", "norm_as_nc"), ("ssd_layers_a", "concat"), ("res10_face_slim", "mbox_conf")}
#: seeds on blobs whose first axis is not the batch, in a batch of 2 (test_oracle_ssd_batch_moving_seeds)
BATCH_MOVED = {"flat_1to2", "flat_axis2"}


def _caffe_decisions(net, outs, ties):
    """Take only the flagged decisions as the fork took them (a max-pool window's first
    maximum, an elementwise rule's input, over the fork's own forward values), as
    tests/test_backward.py::test_flagged_decisions_alone_explain_the_mismatches does. Returns
    an undo function, or None where the fork's values of a flagged input were not kept."""
    saved_sw, saved_out = {}, {}
    for name, units in ties.items():
        layer = net.layer(name)
        if layer.type == "Pooling":
            caffe = ref.pool(outs[layer.bottoms[0]].astype(np.float64), layer.kernel, layer.stride, layer.pad)[1]
            saved_sw[name] = net.switches[name].copy()
            for u in units:
                net.switches[name][u] = caffe[u]
        else:
            bottom = layer.bottoms[0]
            if bottom not in outs.files:
                return None
            saved_out.setdefault(bottom, net.layer_outputs[bottom].copy())
            for u in units:
                net.layer_outputs[bottom][u] = outs[bottom][u]

    def undo():
        for k, v in saved_sw.items():
            net.switches[k][...] = v
        for k, v in saved_out.items():
            net.layer_outputs[k][...] = v
    return undo


ORACLE_SSD = ["ssd_layers_a", "ssd_layers_b", "ssd_layers_c", "res10_face_slim", "mobilenet_ssd_slim"]


@pytest.mark.parametrize("name", ORACLE_SSD)
def test_oracle_ssd_projections(shared, monkeypatch, name):
    """Every seed and mode of the case within 1e-4 of the fork's own backward pass; where a
    per-channel Normalize is crossed in backprop, zfcaffe's true gradient differs and the
    fork's formula matches; a flagged mismatch must vanish with the fork's flagged decisions."""
    case = fork_case(shared, "oracle_ssd", name)
    net = zfcaffe.Net(case["prototxt"], case["weights_path"], input_shapes=case["input_shapes"],
                      allow_missing_weights=True)
    net.forward(**case["inputs"])
    grads, worst = case["grads"], 0.0
    for k in grads.files:
        mode, layer = k.split("/", 1)
        if layer in BATCH_MOVED:
            continue
        seed = case["seeds"][layer]
        err = rel_err(net.project(layer, seed["unit"], mode=mode, value=seed["value"]), grads[k])
        if (name, layer) in FORK_NORMALIZE:
            assert err > 1e-3 or mode != "backprop", f"{k}: expected the gradient to differ from the fork's"
            with monkeypatch.context() as m:
                m.setattr(Normalize, "backward", fork_normalize_backward)
                err = rel_err(net.project(layer, seed["unit"], mode=mode, value=seed["value"]), grads[k])
        if err > 1e-4 and net.last_near_ties:
            undo = _caffe_decisions(net, case["outputs"], net.last_near_ties)
            assert undo is not None, f"{k}: {err:.2e}, flagged {net.last_near_ties} without the fork's values"
            err = rel_err(net.project(layer, seed["unit"], mode=mode, value=seed["value"]), grads[k])
            undo()
        assert err <= 1e-4, f"{k}: {err:.2e} (near ties {net.last_near_ties})"
        worst = max(worst, err)
    print(f"{name}: worst {worst:.1e}")


def test_oracle_ssd_batch_moving_seeds(shared):
    """ssd_layers_a's Permutes 1 0 2 3 and 3 2 1 0 move the batch axis of a batch of 2, which the
    engine's rows cannot follow; the same layers on the one image the seed reaches (a batch-1
    copy of the net, the unit mapped by index arithmetic) match the fork, and the other image
    gets no signal from the fork either."""
    case = fork_case(shared, "oracle_ssd", "ssd_layers_a")
    x = case["inputs"]["data"]
    net = zfcaffe.Net(case["prototxt"], case["weights_path"], input_shapes={"data": (1,) + x.shape[1:]},
                      allow_missing_weights=True)
    shapes = case["shapes"]
    for seed_layer, perm_layer in (("flat_1to2", "perm_1023"), ("flat_axis2", "perm_3210")):
        order = list(net.layer(perm_layer).order)
        src = shapes[net.layer(perm_layer).bottoms[0]]
        flat_index = np.arange(int(np.prod(src))).reshape(src).transpose(order).reshape(shapes[seed_layer])
        seed = case["seeds"][seed_layer]
        b, c, yy, xx = np.unravel_index(flat_index[tuple(seed["unit"])], src)
        one = np.arange(int(np.prod(src[1:]))).reshape((1,) + tuple(src[1:])).transpose(order)
        unit = np.argwhere(one.reshape(net.layer_shapes[seed_layer]) == np.ravel_multi_index((0, c, yy, xx),
                                                                                         (1,) + tuple(src[1:])))[0]
        net.forward(data=x[b:b + 1])
        for mode in MODES:
            ref_grad = case["grads"][f"{mode}/{seed_layer}"]
            assert not ref_grad[1 - b].any()
            got = net.project(seed_layer, tuple(unit), mode=mode, value=seed["value"])
            assert rel_err(got, ref_grad[b:b + 1]) <= 1e-4, (seed_layer, mode, rel_err(got, ref_grad[b:b + 1]))


# -- projections from the last layer of the census nets of these families -------------------------
CENSUS = {   # file: (input shapes, the layer to project from: None = the last one with a backward rule)
    "mobilenet_ssd/MobileNetSSD_deploy.prototxt": ({"data": (1, 3, 128, 128)}, "mbox_conf"),
    "ssd_vgg16_300/deploy.prototxt": ({"data": (1, 3, 268, 268)}, "conv4_3_norm_mbox_conf"),
    "shufflenet/shufflenet_v2_1x_deploy.prototxt": ({"data": (1, 3, 64, 64)}, None),
    "se_resnet50/SE-ResNet-50.prototxt": ({"data": (1, 3, 224, 224)}, None),
    "depthwise_mobilenet/depthwised_mobilenet_deploy.prototxt": ({"data": (1, 3, 64, 64)}, None),
    "ctpn/deploy.prototxt": ({"data": (1, 3, 48, 64), "im_info": (1, 3)}, None),
    "yolov3_chenyingpeng/mobilenet_v2_yolov3.prototxt": ({"data": (1, 3, 64, 64)}, None),
    "yolov2_darknet19_eric612/darknet19_deploy.prototxt": ({"data": (1, 3, 64, 64)}, None),
    "mobilenet_yolov3_lite/mobilenet_yolov3_lite_deploy.prototxt": ({"data": (1, 3, 64, 64)}, None),
}


@pytest.mark.parametrize("name", sorted(CENSUS))
def test_census_projection_from_the_last_layer(shared, monkeypatch, name):
    """Filler weights (Caffe's, as the file says), a random input, one unit of the last layer
    before the detection output (or the given head), all three modes: no error, finite, shaped
    like the input. (The near-tie flags are off here: their rounding bounds are not these
    rules, and over a filler-weighted net they cost more than the projections.)"""
    from zfcaffe.backward import BackwardContext
    shapes, layer = CENSUS[name]
    net = zfcaffe.Net(str(shared / "census" / name), input_shapes=shapes)
    monkeypatch.setattr(BackwardContext, "check_decision", lambda self, *a, **k: None)
    monkeypatch.setattr(BackwardContext, "bound", lambda self, key: np.zeros_like(self.data(key)))
    for l in net.layers:
        if l.type == "BatchNorm":   # Caffe's filler statistics (0) divide by sqrt(eps) at every layer
            net.params[l.name][1].data = np.ones(l.blobs[1].shape, np.float32)
            net.params[l.name][2].data = np.ones(l.blobs[2].shape, np.float32)
    rng = np.random.default_rng(0)
    inputs = {k: rng.standard_normal(s).astype(np.float32) for k, s in net.graph.inputs.items()}
    if "im_info" in inputs:
        inputs["im_info"] = np.array([[shapes["data"][2], shapes["data"][3], 1]], np.float32)
    net.forward(**inputs)
    if layer is None:
        layer = [l.name for l in net.layers if not l.is_input and len(l.tops) == 1 and not getattr(l, "host", False)
                 and l.type != "Python"][-1]
    key = net.layer(layer).tops[0]
    act = net.layer_outputs[key]
    unit = (0,) + tuple(int(i) for i in np.unravel_index(np.abs(act[0]).argmax(), act.shape[1:]))
    for mode in MODES:
        p = net.project(layer, unit, mode=mode)
        assert p.shape == (1,) + tuple(shapes["data"][1:]) and np.isfinite(p).all(), (layer, mode)
    if name.startswith("ctpn/"):   # CTPN's filler convs are 0: show the signal crossing its LSTMs from above
        from zfcaffe.backward import backward
        seed = np.zeros((1,) + net.layer_shapes["lstm_output"][1:], np.float32)
        seed[0, 3, 1, 1] = 1
        for mode in MODES:
            reached = backward(net, {"lstm_output": seed}, mode, np.array([0]))
            assert reached["im2col"].shape == net.layer_shapes["im2col"] and reached["im2col"].any(), mode
