"""One-layer nets against plain NumPy references of Caffe's semantics, one test per
layer type (and its edge cases)."""
from __future__ import annotations

import numpy as np
import pytest

import caffe_reference as ref
from conftest import layer_text as layer, rel_err

RNG = np.random.default_rng(0)


def rand(*shape, positive=False):
    a = RNG.standard_normal(shape).astype(np.float32)
    return np.abs(a) + 0.1 if positive else a


def run(build, text, inputs: dict, blobs=None, key=None):
    net = build(text, {k: v.shape for k, v in inputs.items()}, blobs)
    net.forward(**inputs)
    return net.layer_outputs[key] if key else net.layer_outputs


# -- convolution family ------------------------------------------------------------------------
@pytest.mark.parametrize("k,s,p,d,g,hw", [
    (3, 1, 1, 1, 1, (9, 9)), (5, 2, 2, 1, 2, (11, 13)), (3, 1, 2, 2, 1, (10, 8)),
    (3, 2, 1, 1, 6, (7, 7)),   # depthwise: group == channels
    (1, 1, 0, 1, 1, (4, 5)),
])
def test_convolution(build, k, s, p, d, g, hw):
    x = rand(2, 6, *hw)
    w, b = rand(12, 6 // g, k, k), rand(12)
    text = layer("conv", "Convolution", "data",
                 f"convolution_param {{ num_output: 12 kernel_size: {k} stride: {s} pad: {p} dilation: {d} group: {g} }}")
    y = run(build, text, {"data": x}, {"conv": [w, b]}, "conv")
    assert rel_err(y, ref.conv(x, w, b, (s, s), (p, p), (d, d), g)) < 1e-5


def test_convolution_rectangular_no_bias(build):
    x, w = rand(1, 3, 10, 12), rand(4, 3, 3, 5)
    text = layer("conv", "Convolution", "data", "convolution_param { num_output: 4 kernel_h: 3 kernel_w: 5 "
                 "stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 2 bias_term: false }")
    y = run(build, text, {"data": x}, {"conv": [w]}, "conv")
    assert rel_err(y, ref.conv(x, w, None, (2, 1), (1, 2))) < 1e-5


@pytest.mark.parametrize("k,s,p,g", [(4, 2, 1, 1), (3, 1, 0, 1), (4, 2, 0, 3), (64, 32, 0, 1)])
def test_deconvolution(build, k, s, p, g):
    x = rand(1, 3, 5, 4)
    w, b = rand(3, 6 // g, k, k), rand(6)
    text = layer("up", "Deconvolution", "data",
                 f"convolution_param {{ num_output: 6 kernel_size: {k} stride: {s} pad: {p} group: {g} }}")
    y = run(build, text, {"data": x}, {"up": [w, b]}, "up")
    assert rel_err(y, ref.deconv(x, w, b, (s, s), (p, p), (1, 1), g)) < 1e-5


# -- pooling -------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("k,s,p,hw", [
    (3, 2, 0, (13, 13)),   # ceil: last window hangs off the edge
    (3, 2, 1, (14, 14)),   # pad > 0 with ceil
    (2, 2, 1, (7, 6)),     # pad > 0: the clip of a window starting in the padding
    (3, 3, 1, (10, 11)),
    (5, 3, 2, (6, 8)),
    (3, 1, 1, (5, 5)),
])
def test_pooling(build, method, k, s, p, hw):
    x = rand(2, 3, *hw)
    text = layer("pool", "Pooling", "data", f"pooling_param {{ pool: {method} kernel_size: {k} stride: {s} pad: {p} }}")
    net = build(text, {"data": x.shape})
    net.forward(data=x)
    y_ref, mask = ref.pool(x, (k, k), (s, s), (p, p), method)
    assert net.layer_outputs["pool"].shape == y_ref.shape
    assert rel_err(net.layer_outputs["pool"], y_ref) < 1e-5
    if method == "MAX":
        np.testing.assert_array_equal(net.switches["pool"], mask)


def test_pooling_ties_pick_first_maximum(build):
    x = np.zeros((1, 1, 4, 4), np.float32)  # all windows tie: Caffe keeps the first in row-major order
    text = layer("pool", "Pooling", "data", "pooling_param { pool: MAX kernel_size: 2 stride: 2 }")
    net = build(text, {"data": x.shape})
    net.forward(data=x)
    np.testing.assert_array_equal(net.switches["pool"][0, 0], [[0, 2], [8, 10]])


def test_pooling_rectangular_and_global(build):
    x = rand(2, 4, 7, 9)
    text = (layer("p1", "Pooling", "data", "pooling_param { pool: AVE kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 1 }")
            + layer("g", "Pooling", "data", "pooling_param { pool: AVE global_pooling: true }")
            + layer("gm", "Pooling", "data", "pooling_param { pool: MAX global_pooling: true }"))
    out = run(build, text, {"data": x})
    assert rel_err(out["p1"], ref.pool(x, (2, 3), (1, 2), (1, 0), "AVE")[0]) < 1e-5
    assert rel_err(out["g"], x.mean(axis=(2, 3), keepdims=True)) < 1e-5
    assert rel_err(out["gm"], x.max(axis=(2, 3), keepdims=True)) < 1e-6


def test_pooling_stochastic_test_time(build):
    x = rand(1, 2, 6, 6, positive=True)
    text = layer("p", "Pooling", "data", "pooling_param { pool: STOCHASTIC kernel_size: 3 stride: 2 }")
    y = run(build, text, {"data": x}, key="p")
    num, _ = ref.pool(x.astype(np.float64) ** 2, (3, 3), (2, 2), (0, 0), "AVE")
    den, _ = ref.pool(x.astype(np.float64), (3, 3), (2, 2), (0, 0), "AVE")
    assert rel_err(y, num / den) < 1e-5


# -- inner product and embed ---------------------------------------------------------------------------
def test_inner_product_axis_and_transpose(build):
    x = rand(2, 3, 4, 5)
    w1, b1 = rand(7, 60), rand(7)
    w2 = rand(5, 6)
    text = (layer("ip", "InnerProduct", "data", "inner_product_param { num_output: 7 }")
            + layer("ipa", "InnerProduct", "data", "inner_product_param { num_output: 6 axis: 3 transpose: true bias_term: false }"))
    out = run(build, text, {"data": x}, {"ip": [w1, b1], "ipa": [w2]})
    assert rel_err(out["ip"], x.reshape(2, -1) @ w1.T + b1) < 1e-5
    assert out["ipa"].shape == (2, 3, 4, 6)
    assert rel_err(out["ipa"], x @ w2) < 1e-5


def test_embed(build):
    idx = np.array([[0, 3, 2]], np.float32)
    w, b = rand(4, 5), rand(5)
    y = run(build, layer("e", "Embed", "data", "embed_param { num_output: 5 input_dim: 4 }"),
            {"data": idx}, {"e": [w, b]}, "e")
    assert rel_err(y, w[[0, 3, 2]][None] + b) < 1e-6


# -- neurons -----------------------------------------------------------------------------------------
NEURONS = [
    ("ReLU", "", lambda x: np.maximum(x, 0)),
    ("ReLU", "relu_param { negative_slope: 0.1 }", lambda x: np.where(x > 0, x, 0.1 * x)),
    ("ELU", "elu_param { alpha: 0.5 }", lambda x: np.where(x > 0, x, 0.5 * (np.exp(x) - 1))),
    ("Sigmoid", "", lambda x: 1 / (1 + np.exp(-x))),
    ("TanH", "", np.tanh),
    ("AbsVal", "", np.abs),
    ("BNLL", "", lambda x: np.log1p(np.exp(x))),
    ("Power", "power_param { power: 2 scale: 0.5 shift: 1 }", lambda x: (1 + 0.5 * x) ** 2),
    ("Power", "power_param { power: 0.5 scale: 1 shift: 3 }", lambda x: (3 + x) ** 0.5),
    ("Power", "power_param { power: 0 }", lambda x: np.ones_like(x)),
    ("Exp", "exp_param { base: 2 scale: 0.5 shift: 0.1 }", lambda x: 2 ** (0.1 + 0.5 * x)),
    ("Exp", "", np.exp),
    ("Log", "log_param { base: 10 shift: 5 }", lambda x: np.log10(5 + x)),
    ("Threshold", "threshold_param { threshold: 0.2 }", lambda x: (x > 0.2).astype(float)),
    ("Clip", "clip_param { min: -0.5 max: 0.7 }", lambda x: np.clip(x, -0.5, 0.7)),
    ("Swish", "swish_param { beta: 1.5 }", lambda x: x / (1 + np.exp(-1.5 * x))),
    ("Dropout", "dropout_param { dropout_ratio: 0.3 }", lambda x: x),
]


@pytest.mark.parametrize("typ,params,fn", NEURONS, ids=[f"{t}-{i}" for i, (t, _, _) in enumerate(NEURONS)])
def test_neuron(build, typ, params, fn):
    x = rand(2, 3, 4, 5)
    y = run(build, layer("n", typ, "data", params), {"data": x}, key="n")
    assert rel_err(y, fn(x.astype(np.float64))) < 1e-5


@pytest.mark.parametrize("shared", [False, True])
def test_prelu(build, shared):
    x = rand(2, 3, 4, 5)
    a = rand(1) if shared else rand(3)
    text = layer("p", "PReLU", "data", f"prelu_param {{ channel_shared: {str(shared).lower()} }}")
    y = run(build, text, {"data": x}, {"p": [a.reshape(()) if shared else a]}, "p")
    slope = a.reshape(1, -1, 1, 1) if not shared else a
    assert rel_err(y, np.where(x > 0, x, slope * x)) < 1e-6


# -- normalisation --------------------------------------------------------------------------------------------
def test_lrn_across_channels(build):
    x = rand(2, 7, 5, 6) * 10
    text = layer("n", "LRN", "data", "lrn_param { local_size: 5 alpha: 0.001 beta: 0.75 k: 2 }")
    y = run(build, text, {"data": x}, key="n")
    assert rel_err(y, ref.lrn_across(x.astype(np.float64), 5, 0.001, 0.75, 2)) < 1e-5


def test_lrn_within_channel_ignores_k(build):
    x = rand(1, 3, 8, 7) * 10
    text = layer("n", "LRN", "data", "lrn_param { local_size: 3 alpha: 0.05 beta: 0.75 k: 7 norm_region: WITHIN_CHANNEL }")
    y = run(build, text, {"data": x}, key="n")
    assert rel_err(y, ref.lrn_within(x.astype(np.float64), 3, 0.05, 0.75)) < 1e-5


@pytest.mark.parametrize("factor", [999.0, 0.0])
def test_batchnorm_divides_by_third_blob(build, factor):
    x = rand(2, 4, 3, 3)
    mean, var = rand(4) * factor, rand(4, positive=True) * max(factor, 1)
    text = layer("bn", "BatchNorm", "data", "batch_norm_param { use_global_stats: true eps: 0.001 }")
    y = run(build, text, {"data": x}, {"bn": [mean, var, np.array([factor])]}, "bn")
    sf = 0 if factor == 0 else 1 / factor
    expect = (x - (mean * sf).reshape(1, -1, 1, 1)) / np.sqrt((var * sf).reshape(1, -1, 1, 1) + 0.001)
    assert rel_err(y, expect) < 1e-5


@pytest.mark.parametrize("conv_bias", [False, True])
def test_batchnorm_scale_round_as_caffe_bit_for_bit(build, conv_bias):
    """The recording pass computes convolution -> BatchNorm -> Scale in Caffe's order, each
    step rounded to float32: (x - mean), / std, * gamma, + beta. ONNX Runtime runs the mean
    folded into a bias-free convolution and the Scale as a BatchNormalization node; neither
    may change a bit (16 channels: the blocked NCHWc kernels run)."""
    x, w = rand(2, 8, 12, 12) * 3, rand(16, 8, 3, 3)
    mean, var = rand(16) * 4, rand(16, positive=True) * 2
    gamma, beta = rand(16) * 2, rand(16) * 3
    b = rand(16) if conv_bias else None
    text = (layer("conv", "Convolution", "data", "convolution_param { num_output: 16 kernel_size: 3 pad: 1 "
                  f"bias_term: {str(conv_bias).lower()} }}")
            + layer("bn", "BatchNorm", "conv", "batch_norm_param { use_global_stats: true eps: 0.001 }")
            + layer("scale", "Scale", "bn", "scale_param { bias_term: true }")
            + layer("relu", "ReLU", "scale"))
    blobs = {"conv": [w] + ([b] if conv_bias else []), "bn": [mean, var, np.ones(1)], "scale": [gamma, beta]}
    out = run(build, text, {"data": x}, blobs)
    per_channel = (lambda a: np.float32(a).reshape(1, -1, 1, 1))
    std = np.sqrt(per_channel(var) + np.float32(0.001))
    bn = ((out["conv"] - per_channel(mean)) / std).astype(np.float32)
    assert np.array_equal(out["bn"], bn)
    assert np.array_equal(out["scale"], bn * per_channel(gamma) + per_channel(beta))


def test_batchnorm_batch_statistics(build):
    x = rand(3, 2, 4, 4)
    text = layer("bn", "BatchNorm", "data", "batch_norm_param { use_global_stats: false }")
    y = run(build, text, {"data": x}, {"bn": [np.zeros(2), np.ones(2), np.ones(1)]}, "bn")
    m = x.mean(axis=(0, 2, 3), keepdims=True)
    assert rel_err(y, (x - m) / np.sqrt(((x - m) ** 2).mean(axis=(0, 2, 3), keepdims=True) + 1e-5)) < 1e-5


@pytest.mark.parametrize("across,var", [(False, True), (True, True), (False, False)])
def test_mvn(build, across, var):
    x = rand(2, 3, 4, 5) * 3 + 1
    text = layer("m", "MVN", "data", f"mvn_param {{ across_channels: {str(across).lower()} "
                 f"normalize_variance: {str(var).lower()} eps: 0.01 }}")
    y = run(build, text, {"data": x}, key="m")
    axes = (1, 2, 3) if across else (2, 3)
    c = x - x.mean(axis=axes, keepdims=True)
    expect = c / (np.sqrt((c ** 2).mean(axis=axes, keepdims=True)) + 0.01) if var else c
    assert rel_err(y, expect) < 1e-5


# -- scale and bias -------------------------------------------------------------------------------------------
def test_scale_variants(build):
    x, s = rand(2, 3, 4, 5), rand(3, 4)
    g, b = rand(3), rand(3)
    text = (layer("s1", "Scale", "data", "scale_param { bias_term: true }")
            + layer("s2", "Scale", ["data", "sc"], "scale_param { axis: 1 }")
            + layer("s3", "Scale", "data", "scale_param { axis: 1 num_axes: 2 }")
            + layer("b1", "Bias", "data", ""))
    out = run(build, text, {"data": x, "sc": s}, {"s1": [g, b], "s3": [s], "b1": [b]})
    assert rel_err(out["s1"], x * g.reshape(1, 3, 1, 1) + b.reshape(1, 3, 1, 1)) < 1e-6
    assert rel_err(out["s2"], x * s.reshape(1, 3, 4, 1)) < 1e-6
    assert rel_err(out["s3"], x * s.reshape(1, 3, 4, 1)) < 1e-6
    assert rel_err(out["b1"], x + b.reshape(1, 3, 1, 1)) < 1e-6


# -- eltwise and routing ---------------------------------------------------------------------------------------------
def test_eltwise(build):
    a, b, c = rand(2, 3, 4, 4), rand(2, 3, 4, 4), rand(2, 3, 4, 4)
    text = (layer("sum", "Eltwise", ["a", "b", "c"], "eltwise_param { operation: SUM coeff: 1 coeff: -0.5 coeff: 2 }")
            + layer("prod", "Eltwise", ["a", "b", "c"], "eltwise_param { operation: PROD }")
            + layer("max", "Eltwise", ["a", "b"], "eltwise_param { operation: MAX }"))
    out = run(build, text, {"a": a, "b": b, "c": c})
    assert rel_err(out["sum"], a - 0.5 * b + 2 * c) < 1e-6
    assert rel_err(out["prod"], a * b * c) < 1e-6
    assert rel_err(out["max"], np.maximum(a, b)) == 0


def test_concat_slice_split(build):
    a, b = rand(2, 3, 4, 5), rand(2, 2, 4, 5)
    text = (layer("cat", "Concat", ["a", "b"], "concat_param { axis: 1 }")
            + layer("cat3", "Concat", ["a", "a"], "concat_param { axis: -1 }")
            + layer("sl", "Slice", "cat", "slice_param { axis: 1 slice_point: 1 slice_point: 4 }", ["s0", "s1", "s2"])
            + layer("sle", "Slice", "a", "slice_param { axis: 3 }", ["e0", "e1"]) .replace("axis: 3", "axis: 2")
            + layer("sp", "Split", "a", "", ["p0", "p1"]))
    net = build(text, {"a": a.shape, "b": b.shape})
    net.forward(a=a, b=b)
    o = net.layer_outputs
    cat = np.concatenate([a, b], axis=1)
    assert rel_err(o["cat"], cat) == 0 and rel_err(o["cat3"], np.concatenate([a, a], axis=3)) == 0
    for i, (lo, hi) in enumerate([(0, 1), (1, 4), (4, 5)]):
        assert rel_err(o[f"sl#{i}"], cat[:, lo:hi]) == 0
    assert rel_err(o["sle#1"], a[:, :, 2:]) == 0
    assert rel_err(o["sp#0"], a) == 0 and rel_err(o["sp#1"], a) == 0
    assert net.layer_shapes["sl#1"] == (2, 3, 4, 5)


def test_flatten_reshape_crop_tile(build):
    x, r = rand(2, 3, 6, 8), rand(1, 1, 4, 5)
    text = (layer("fl", "Flatten", "x", "flatten_param { axis: 1 end_axis: 2 }")
            + layer("rs", "Reshape", "x", "reshape_param { shape { dim: 0 dim: -1 dim: 4 } }")
            + layer("rs2", "Reshape", "x", "reshape_param { shape { dim: 2 dim: 3 } axis: 2 num_axes: 1 }")
            + layer("cr", "Crop", ["x", "r"], "crop_param { axis: 2 offset: 1 offset: 2 }")
            + layer("ti", "Tile", "x", "tile_param { axis: 1 tiles: 2 }"))
    out = run(build, text, {"x": x, "r": r})
    assert out["fl"].shape == (2, 18, 8) and rel_err(out["fl"], x.reshape(2, 18, 8)) == 0
    assert out["rs"].shape == (2, 36, 4) and rel_err(out["rs"], x.reshape(2, 36, 4)) == 0
    assert out["rs2"].shape == (2, 3, 2, 3, 8)
    assert rel_err(out["cr"], x[:, :, 1:5, 2:7]) == 0
    assert rel_err(out["ti"], np.tile(x, (1, 2, 1, 1))) == 0


def test_softmax_argmax_reduction_silence(build):
    x = rand(2, 5, 3)
    text = (layer("sm", "Softmax", "x", "softmax_param { axis: 1 }")
            + layer("am", "ArgMax", "x", "argmax_param { top_k: 2 out_max_val: true }")
            + layer("am2", "ArgMax", "x", "argmax_param { axis: 1 }")
            + layer("rd", "Reduction", "x", "reduction_param { operation: SUMSQ axis: 1 coeff: 0.5 }")
            + layer("ra", "Reduction", "x", "reduction_param { operation: ASUM axis: 0 }")
            + layer("rm", "Reduction", "x", "reduction_param { operation: MEAN axis: 2 }")
            + 'layer { name: "sil" type: "Silence" bottom: "rd" }\n')
    out = run(build, text, {"x": x})
    assert rel_err(out["sm"], ref.softmax(x, 1)) < 1e-6
    flat = x.reshape(2, -1)
    order = np.argsort(-flat, axis=1)[:, :2]
    np.testing.assert_array_equal(out["am"][:, 0], order)
    np.testing.assert_allclose(out["am"][:, 1], np.take_along_axis(flat, order, 1), rtol=1e-6)
    np.testing.assert_array_equal(out["am2"], x.argmax(axis=1)[:, None])
    assert rel_err(out["rd"], 0.5 * (x ** 2).reshape(2, -1).sum(1)) < 1e-6
    assert out["ra"].shape == () and rel_err(out["ra"], np.abs(x).sum()) < 1e-6
    assert rel_err(out["rm"], x.mean(axis=2)) < 1e-6


def test_parameter_layer(build):
    p = rand(2, 3)
    text = 'layer { name: "p" type: "Parameter" top: "p" parameter_param { shape { dim: 2 dim: 3 } } }\n' + \
        layer("add", "Eltwise", ["x", "p"])
    out = run(build, text, {"x": rand(2, 3)}, {"p": [p]})
    assert rel_err(out["p"], p) == 0


def test_net_surgery_reaches_the_runtime(build):
    x = rand(1, 2, 3, 3)
    net = build(layer("ip", "InnerProduct", "data", "inner_product_param { num_output: 2 }"), {"data": x.shape},
                {"ip": [np.ones((2, 18)), np.zeros(2)]})
    before = net.forward(data=x)["ip"]
    with pytest.raises(ValueError):
        net.params["ip"][0].data[...] = 0          # read-only: an in-place edit would be silently stale
    net.params["ip"][0].data = 2 * np.ones((2, 18))
    np.testing.assert_allclose(net.forward(data=x)["ip"], 2 * before, rtol=1e-6)
