"""The near-decision flags come from rounding bounds (zfcaffe/rounding.py): on every net,
each decision another evaluation of the forward pass takes otherwise is flagged.
The oracle nets' self-tests are in tests/test_backward.py (they share its loaded nets)."""
from __future__ import annotations

import matplotlib.cbook
import numpy as np
import pytest
from PIL import Image

import zfcaffe
from conftest import layer_text as L
from zfcaffe import rounding
from zfcaffe.rounding import bounds_for, rounding_selftest

PHOTO = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


def photo(size: int) -> np.ndarray:
    img = np.asarray(Image.open(PHOTO).convert("RGB").resize((size, size)), np.float32)
    return (img[:, :, ::-1] - np.array([104, 117, 123], np.float32)).transpose(2, 0, 1)[None].copy()


def sane_weights(net, seed=0):
    """Filler weights a net's values survive: He-scaled normal filters, small biases,
    BatchNorm statistics of unit scale, Scale factors near 1 (MobileNet's own fillers
    leave BatchNorm's variance 0, and 27 divisions by sqrt(eps) overflow float32;
    SqueezeNet's deploy file has no fillers, so every weight is 0)."""
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        blobs = net.params.get(layer.name, [])
        if layer.type in ("Convolution", "InnerProduct"):
            blobs[0].data = rng.standard_normal(blobs[0].shape) * np.sqrt(2.0 / np.prod(blobs[0].shape[1:]))
            if len(blobs) > 1:
                blobs[1].data = rng.standard_normal(blobs[1].shape) * 0.1
        elif layer.type == "BatchNorm":
            blobs[0].data = rng.standard_normal(blobs[0].shape) * 0.1
            blobs[1].data = rng.uniform(0.5, 1.5, blobs[1].shape)
            blobs[2].data = [1.0]
        elif layer.type == "Scale":
            blobs[0].data = rng.uniform(0.5, 1.5, blobs[0].shape)
            if len(blobs) > 1:
                blobs[1].data = rng.standard_normal(blobs[1].shape) * 0.1


MODELS = {
    "googlenet": ("bvlc_googlenet/deploy.prototxt", False),           # its own xavier fillers
    "mobilenet_v1": ("mobilenet_shicai/mobilenet_deploy.prototxt", True),
    "squeezenet_v1_0": ("squeezenet/v1.0/deploy.prototxt", True),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_selftest_flags_every_differing_decision_on_filler_nets(shared, name):
    path, fill = MODELS[name]
    net = zfcaffe.Net(str(shared / "models" / path), input_shapes={"data": (1, 3, 224, 224)})
    if fill:
        sane_weights(net)
    x = photo(224) * (0.017 if name == "mobilenet_v1" else 1)     # shicai's input scale
    result = rounding_selftest(net, data=x)
    assert result.decisions > 10 ** 6
    assert not result.missed, [d for d in result.missed][:5]
    assert result.flagged < 0.1 * result.decisions             # over-flagging (mostly exact ties) stays a small part


def test_cancellation_is_flagged_where_a_fixed_threshold_was_not(build):
    """A ReLU input of 1e-3 that is the difference of two terms of 1e4: float32 rounds
    the sum by ~1e-3, so its sign is rounding's. The old threshold (1e-7 of the plane's
    largest input, 1e-3 here) did not flag it; the bound (from sum |w||x|) does."""
    text = (L("ip", "InnerProduct", "data", "inner_product_param { num_output: 2 bias_term: false }")
            + L("relu", "ReLU", "ip"))
    w = np.array([[1, -1, 1e-7], [1, 0, 0]], np.float32)
    net = build(text, {"data": (1, 3)}, {"ip": [w]})
    x = np.array([[1e4, 1e4 - 1e-3, 1.0]], np.float32)
    net.forward(data=x)
    y = net.layer_outputs["ip"][0]
    bound = bounds_for(net, "ip", [0])[0]
    assert abs(y[0]) <= 2 * bound[0] and bound[0] < 0.05       # within its bound of 0 (~20 ulps of 1e4)
    assert bound[1] < 1e-3 * abs(y[1])                           # a plain copy: a small bound
    net.project("relu", (0, 0), mode="backprop", value=1.0)
    assert net.last_near_ties == {"relu": [(0, 0)]}
    net.project("relu", (0, 1), mode="backprop", value=1.0)
    assert net.last_near_ties == {}


def test_bounds_cover_a_float64_forward(build):
    """The bound of every blob of a small conv/BN/pool net covers its distance from a
    float64 evaluation of the same net."""
    rng = np.random.default_rng(3)
    text = (L("conv", "Convolution", "data", "convolution_param { num_output: 4 kernel_size: 3 pad: 1 }")
            + L("bn", "BatchNorm", "conv", "batch_norm_param { use_global_stats: true }")
            + L("sc", "Scale", "bn", "scale_param { bias_term: true }")
            + L("relu", "ReLU", "sc", tops=["sc"])
            + L("pool", "Pooling", "sc", "pooling_param { pool: AVE kernel_size: 2 stride: 2 }")
            + L("ip", "InnerProduct", "pool", "inner_product_param { num_output: 5 }"))
    w, b = rng.standard_normal((4, 3, 3, 3)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    mean, var = rng.standard_normal(4).astype(np.float32), rng.uniform(0.5, 2, 4).astype(np.float32)
    g, beta = rng.uniform(0.5, 2, 4).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    wi, bi = rng.standard_normal((5, 4 * 4 * 4)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    net = build(text, {"data": (1, 3, 8, 8)}, {"conv": [w, b], "bn": [mean, var, np.ones(1)], "sc": [g, beta],
                                               "ip": [wi, bi]})
    x = (rng.standard_normal((1, 3, 8, 8)) * 50).astype(np.float32)
    net.forward(data=x)
    import caffe_reference as ref
    c64 = ref.conv(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), (1, 1), (1, 1), (1, 1))
    std = np.sqrt(var.astype(np.float64) + 1e-5)
    s64 = np.maximum((c64 - mean.reshape(1, -1, 1, 1)) / std.reshape(1, -1, 1, 1) * g.reshape(1, -1, 1, 1)
                     + beta.reshape(1, -1, 1, 1), 0)
    p64 = s64.reshape(1, 4, 4, 2, 4, 2).mean(axis=(3, 5))
    ip64 = p64.reshape(1, -1) @ wi.T.astype(np.float64) + bi
    for key, exact in (("conv", c64), ("pool", p64), ("ip", ip64)):
        err = np.abs(net.layer_outputs[key] - exact)
        assert np.all(err <= bounds_for(net, key, [0])), key


def test_selftest_catches_missing_flags(shared, monkeypatch):
    """Not vacuous: with no margin (no flags at all), the self-test reports the decisions
    the other evaluation takes otherwise as missed."""
    net = zfcaffe.Net(str(shared / "models" / MODELS["squeezenet_v1_0"][0]), input_shapes={"data": (1, 3, 224, 224)})
    sane_weights(net)
    monkeypatch.setattr(rounding, "MARGIN", 0.0)
    result = rounding_selftest(net, evaluations=("plain",), data=photo(224))
    assert result.flagged == 0 and result.missed


# -- the forks' layers: BN, Interp, Upsample, ROIPooling, PSROIPooling ------------------------------------------
def test_fork_layer_bounds_cover_a_float64_forward(build):
    """Each fork rule's bound covers its output's distance from float64 (PSPNet's BN and Interp,
    SegNet's BN in both modes with its batch statistics, YOLO's nearest Upsample, ROIPooling,
    PSROIPooling), and is finite: no rule left, no later decision flagged for want of one."""
    from test_backward_forks_b import conv64, interp64, pspnet_bn_blobs
    from test_layers_rcnn import psroi_pool_ref, roi_pool_ref
    rng = np.random.default_rng(8)

    def a(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(np.float32)
    conv = 'convolution_param { num_output: 8 kernel_size: 3 pad: 1 bias_term: false }'
    x, w = a(2, 3, 10, 12, scale=30), a(8, 3, 3, 3)
    psp, s1, b1, s2, b2 = pspnet_bn_blobs(8), a(1, 8, 1, 1), a(1, 8, 1, 1), a(1, 8, 1, 1), a(1, 8, 1, 1)
    rois = np.array([[0, 1, 2, 17, 15], [1, 0, 0, 23, 19], [1, 6, 5, 9, 8]], np.float32)
    text = (L("c", "Convolution", "data", conv)
            + L("psp", "BN", "c", "bn_param { frozen: true eps: 0.001 }")
            + L("ip", "Interp", "psp", "interp_param { zoom_factor: 3 }")
            + L("inf", "BN", "c", "bn_param { bn_mode: INFERENCE }")
            + L("learn", "BN", "inf", "", ["learn", "learn_mean", "learn_var"])
            + L("up", "Upsample", "c", "upsample_param { scale: 2 }")
            + L("roi", "ROIPooling", ["c", "rois"], "roi_pooling_param { pooled_h: 3 pooled_w: 2 spatial_scale: 0.5 }")
            + L("ps", "PSROIPooling", ["c", "rois"], "psroi_pooling_param { spatial_scale: 0.5 output_dim: 2 "
                                                     "group_size: 2 }"))
    net = build(text, {"data": x.shape, "rois": rois.shape},
                {"c": [w], "psp": psp, "inf": [s1, b1], "learn": [s2, b2]})
    net.forward(data=x, rois=rois)
    c64 = conv64(x.astype(np.float64), w.astype(np.float64))
    g, beta, mean, var = (v.astype(np.float64) for v in psp)
    psp64 = (c64 - mean) / np.sqrt(var + np.float64(np.float32(1e-3))) * g + beta
    inf64 = c64 * s1 + b1
    m = inf64.mean(axis=(0, 2, 3), keepdims=True)
    v = (inf64 * inf64).mean(axis=(0, 2, 3), keepdims=True) - m * m
    exact = {"c": c64, "psp": psp64, "ip": interp64(net.layer("ip"), psp64), "inf": inf64,
             "learn#0": (inf64 - m) / np.sqrt(v + 1e-9) * s2 + b2, "learn#1": m, "learn#2": v,
             "up": c64.repeat(2, axis=2).repeat(2, axis=3),
             "roi": roi_pool_ref(c64, rois, 3, 2, 0.5), "ps": psroi_pool_ref(c64, rois, 2, 2, 0.5)}
    for key, value in exact.items():
        rows = range(len(net.layer_outputs[key]))
        bound = bounds_for(net, key, rows)
        assert np.isfinite(bound).all() and bound.max() < 1e-3 * np.abs(value).max(), key
        err = np.abs(net.layer_outputs[key] - value)
        assert np.all(err <= bound), (key, float((err - bound).max()))


def test_unpooling_bound_covers_the_masks_near_tie(build):
    """SegNet's Upsample puts each value where its pooling's mask says: where that max-pool window is
    a near-tie (a runner-up an ulp below, on a computed map), the value may land on the runner-up's
    position instead, so the bound there is the value's size; elsewhere, copies of the bounds."""
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 0, 0] = 9.0
    x[0, 0, 1, 1] = np.nextafter(np.float32(9.0), np.float32(0))     # window (0, 0): a near-tie
    x[0, 0, 2:, 2:] = [[1.0, 5.0], [2.0, 3.0]]                        # window (1, 1): clear
    text = (L("c", "Convolution", "data", "convolution_param { num_output: 1 kernel_size: 1 bias_term: false }")
            + L("pool", "Pooling", "c", "pooling_param { pool: MAX kernel_size: 2 stride: 2 }", ["pool", "mask"])
            + L("v", "Convolution", "pool", "convolution_param { num_output: 1 kernel_size: 1 bias_term: false }")
            + L("up", "Upsample", ["v", "mask"], "upsample_param { scale: 2 }"))
    net = build(text, {"data": x.shape}, {"c": [np.ones((1, 1, 1, 1), np.float32)],
                                          "v": [np.full((1, 1, 1, 1), 2.0, np.float32)]})
    net.forward(data=x)
    bound = bounds_for(net, "up", [0])[0, 0]
    assert net.layer_outputs["up"][0, 0, 0, 0] == 18.0 and bound[1, 1] >= 18.0 and bound[0, 0] >= 18.0
    assert bound[0, 1] == bound[1, 0] == 0 and bound[2, 3] < 1e-4 and bound[2:, 2].max() == bound[3, 3] == 0


@pytest.mark.parametrize("name,flagged_before", [("pspnet_slim", 825792), ("segnet_slim", 337792),
                                                 ("fast_rcnn_zf", 4424)])
def test_selftest_on_the_fork_oracle_nets(shared, name, flagged_before):
    """The forks' layers have bounds: the self-test misses nothing, and flags a fraction of what it
    flagged when everything after a BN, Interp, Upsample or ROI pooling was flagged (the counts
    before these rules: every decision of pspnet_slim and segnet_slim)."""
    from conftest import fork_case
    case = fork_case(shared, "oracle_forks", name)
    net = zfcaffe.Net(case["prototxt"], case["weights_path"], input_shapes=case["input_shapes"])
    result = rounding_selftest(net, **case["inputs"])
    assert not result.missed, result.missed[:5]
    assert result.flagged < 0.25 * flagged_before, result.flagged
