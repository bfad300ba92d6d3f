"""PSPNet's layers (hszhao/PSPNet@798bdc90, a DeepLab-v2-based Caffe): BN and Interp against
float64 NumPy transcriptions of the fork's CPU code, against OpenCV where OpenCV agrees with
the fork (Interp by zoom_factor or height/width), against the fork itself
(../shared/oracle_forks: interp_variants, pspnet_slim) and the census net pspnet50_ade20k."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import zfcaffe
from conftest import fork_case, layer_text as layer, rel_err
from zfcaffe import caffe_pb2
from zfcaffe.cli import main
from zfcaffe.errors import ZfcaffeError
from zfcaffe.layers import layer_class
from zfcaffe.layers.pspnet import Interp, PSPNetBN
from zfcaffe.runtime.onnx_export import build_onnx

RNG = np.random.default_rng(473)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


# -- float64 transcriptions of the fork's Forward_cpu ------------------------------------------
def ref_bn(x, slope, bias, mean, var, eps):
    """bn_layer.cpp, TEST phase or frozen: (x - mean) * (var + eps)^-0.5 * slope + bias."""
    c = (-1,) + (1,) * (x.ndim - 2)
    f = lambda a: np.asarray(a, np.float64).reshape(c)   # noqa: E731
    return (x.astype(np.float64) - f(mean)) * (f(var) + np.float32(eps)) ** -0.5 * f(slope) + f(bias)


def ref_interp_size(h, w, zoom=None, shrink=None, height=None, width=None, pad_beg=0, pad_end=0):
    """InterpLayer::Reshape: which fields are present decides."""
    he, we = h + pad_beg + pad_end, w + pad_beg + pad_end
    if shrink is not None and zoom is None:
        return (he - 1) // shrink + 1, (we - 1) // shrink + 1
    if zoom is not None and shrink is None:
        return he + (he - 1) * (zoom - 1), we + (we - 1) * (zoom - 1)
    if height is not None and width is not None:
        return height, width
    ho, wo = (he - 1) // shrink + 1, (we - 1) // shrink + 1
    return ho + (ho - 1) * (zoom - 1), wo + (wo - 1) * (zoom - 1)


def ref_interp(x, out_hw, pad_beg=0, pad_end=0):
    """caffe_cpu_interp2 (packed = false), loop by loop: the ratios, source positions and
    lambdas in float32 as the fork declares them, the weighted sums in float64."""
    n, c, h, w = x.shape
    y1 = x1 = -pad_beg
    h1, w1 = h + pad_beg + pad_end, w + pad_beg + pad_end
    h2, w2 = out_hw
    x = x.astype(np.float64)
    if (h1, w1) == (h2, w2):
        return x[:, :, y1:y1 + h1, x1:x1 + w1].copy()
    f32 = np.float32
    rheight = f32(h1 - 1) / f32(h2 - 1) if h2 > 1 else f32(0)
    rwidth = f32(w1 - 1) / f32(w2 - 1) if w2 > 1 else f32(0)
    out = np.empty((n, c, h2, w2))
    for oh in range(h2):
        h1r = f32(rheight * f32(oh))
        hi = int(h1r)
        hp = 1 if hi < h1 - 1 else 0
        l1 = float(f32(h1r - f32(hi)))
        l0 = float(f32(1) - f32(l1))
        for ow in range(w2):
            w1r = f32(rwidth * f32(ow))
            wi = int(w1r)
            wp = 1 if wi < w1 - 1 else 0
            m1 = float(f32(w1r - f32(wi)))
            m0 = float(f32(1) - f32(m1))
            p = x[:, :, y1 + hi:, x1 + wi:]
            out[:, :, oh, ow] = (l0 * (m0 * p[:, :, 0, 0] + m1 * p[:, :, 0, wp])
                                 + l1 * (m0 * p[:, :, hp, 0] + m1 * p[:, :, hp, wp]))
    return out


def bn_params(frozen=True, eps=None, slope=None, bias=None, momentum=None):
    fields = [f"frozen: {str(frozen).lower()}"] if frozen is not None else []
    fields += [f"eps: {eps}"] if eps is not None else []
    fields += [f"momentum: {momentum}"] if momentum is not None else []
    fields += [f"slope_filler {{ type: 'constant' value: {slope} }}"] if slope is not None else []
    fields += [f"bias_filler {{ type: 'constant' value: {bias} }}"] if bias is not None else []
    return "bn_param { " + " ".join(fields) + " }"


def interp_params(**kw):
    return "interp_param { " + " ".join(f"{k}: {v}" for k, v in kw.items()) + " }"


def onnx_rerun(net, tmp_path, inputs, all_blobs=True):
    path = tmp_path / "net.onnx"
    net.to_onnx(str(path), all_blobs=all_blobs)
    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(None, inputs)))
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    layer_of = json.loads(props["caffe_layers"])
    # by graph key: an --all-blobs file names a layer's own output by its key unless renamed
    return {**values, **{layer_of[n]: v for n, v in values.items() if n in layer_of and layer_of[n] not in values}}


# -- BN ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,eps,frozen", [((2, 5, 6, 7), 1e-5, True), ((2, 5, 6, 7), 1e-3, False),
                                              ((3, 4), 0.5, True), ((1, 3, 9), 1e-5, True)])
def test_bn(build, shape, eps, frozen):
    c = shape[1]
    x = rand(*shape) * 3 + 1
    blobs = [rand(1, c, 1, 1), rand(1, c, 1, 1), rand(1, c, 1, 1), np.abs(rand(1, c, 1, 1)) + 0.1]
    net = build(layer("bn", "BN", "data", bn_params(frozen, eps=eps)), {"data": shape}, {"bn": blobs})
    assert isinstance(net.graph.layer("bn"), PSPNetBN)
    net.forward(data=x)
    want = ref_bn(x, *blobs, eps)
    assert rel_err(net.layer_outputs["bn"], want) < 1e-6
    # the lean graph (the affine map folded into one Mul and Add) agrees to float rounding
    lean = net.forward(data=x, record=False)["bn"]
    assert rel_err(lean, want) < 1e-6


def test_bn_caffe_rounding(build):
    """The recording graph rounds as Caffe does, step by step in float32: subtract the mean,
    multiply by (var + eps)^-0.5 (powf, correctly rounded), by the slope, add the bias; here
    after a convolution whose integer output is exact (ONNX Runtime folds nothing into it)."""
    c = 6
    w = RNG.integers(-3, 4, (c, 2, 3, 3)).astype(np.float32)
    blobs = [rand(1, c, 1, 1), rand(1, c, 1, 1), rand(1, c, 1, 1) * 4, np.abs(rand(1, c, 1, 1)) * 3 + 0.1]
    text = (layer("conv", "Convolution", "data", "convolution_param { num_output: 6 kernel_size: 3 bias_term: false }")
            + layer("conv/bn", "BN", "conv", bn_params(True, eps=1e-5), tops=["conv"])
            + layer("conv/relu", "ReLU", "conv", tops=["conv"]))
    net = build(text, {"data": (2, 2, 9, 11)}, {"conv": [w], "conv/bn": blobs})
    x = RNG.integers(-6, 7, (2, 2, 9, 11)).astype(np.float32)
    net.forward(data=x)
    conv = net.layer_outputs["conv"]
    assert np.array_equal(conv, np.round(conv))
    slope, bias, mean, var = (b.astype(np.float32) for b in blobs)
    inv_std = ((var + np.float32(1e-5)).astype(np.float64) ** -0.5).astype(np.float32)
    want = (((conv - mean) * inv_std) * slope) + bias
    np.testing.assert_array_equal(net.layer_outputs["conv/bn"], want)


@pytest.mark.parametrize("frozen", [True, False])
def test_bn_fillers(build, frozen):
    """Without weights: slope_filler, bias_filler, mean 0, variance 1 if frozen else 0
    (BNLayer::LayerSetUp)."""
    net = build(layer("bn", "BN", "data", bn_params(frozen, slope=2.5, bias=-0.5)), {"data": (1, 3, 4, 4)})
    slope, bias, mean, var = (p.data for p in net.params["bn"])
    assert slope.shape == (1, 3, 1, 1)
    assert (slope == 2.5).all() and (bias == -0.5).all() and (mean == 0).all() and (var == (1 if frozen else 0)).all()
    x = rand(1, 3, 4, 4)
    out = net.forward(data=x)["bn"]
    np.testing.assert_allclose(out, ref_bn(x, slope, bias, mean, var, 1e-5), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("params,pspnet", [
    ("bn_param { frozen: true }", True), ("bn_param { momentum: 0.9 }", True), ("bn_param { eps: 1e-3 }", True),
    ("bn_param { slope_filler { type: 'constant' value: 1 } }", True),
    ("bn_param { bias_filler { type: 'constant' value: 0 } }", True),
    ("param { lr_mult: 1 } param { lr_mult: 1 } param { lr_mult: 0 } param { lr_mult: 0 }", True),
    ("bn_param { bn_mode: INFERENCE }", False), ("bn_param { scale_filler { type: 'constant' value: 1 } }", False),
    ("", False), ("param { lr_mult: 1 } param { lr_mult: 1 }", False)])
def test_bn_variant(params, pspnet):
    """PSPNet's BN is chosen by fields only it has (or its four param specs); else SegNet's."""
    from google.protobuf import text_format
    lp = text_format.Parse(f'name: "bn" type: "BN" bottom: "x" top: "x" {params}', caffe_pb2.LayerParameter())
    assert (layer_class(lp) is PSPNetBN) == pspnet


def test_bn_refuses_5d(build):
    with pytest.raises(ZfcaffeError, match="2 to 4 axes"):
        build(layer("bn", "BN", "data", bn_params()), {"data": (1, 2, 3, 4, 5)})


# -- Interp ------------------------------------------------------------------------------------
INTERP = {   # name: (input H, W), interp_param
    "zoom3": ((5, 7), dict(zoom_factor=3)),
    "zoom8": ((8, 6), dict(zoom_factor=8)),
    "shrink4": ((23, 31), dict(shrink_factor=4)),
    "shrink_zoom": ((23, 31), dict(zoom_factor=2, shrink_factor=3)),
    "hw": ((23, 31), dict(height=10, width=40)),
    "hw_odd": ((7, 9), dict(height=13, width=3)),
    "zoom_wins_over_hw": ((5, 6), dict(zoom_factor=2, height=40, width=40)),
    "hw_wins_over_both": ((9, 9), dict(zoom_factor=2, shrink_factor=2, height=4, width=5)),
    "pad_zoom": ((23, 31), dict(zoom_factor=2, pad_beg=-2, pad_end=-3)),
    "pad_hw": ((23, 31), dict(height=9, width=13, pad_beg=-1, pad_end=0)),
    "pad_same": ((23, 31), dict(height=21, width=29, pad_beg=-1, pad_end=-1)),
    "pad_shrink": ((23, 31), dict(shrink_factor=2, pad_beg=-1, pad_end=-2)),
    "same": ((6, 8), dict(height=6, width=8)),
    "one_axis_same": ((6, 8), dict(height=6, width=15)),
    "1x1": ((23, 31), dict(height=1, width=1)),
    "1xn": ((5, 9), dict(height=1, width=4)),
    "from1x1": ((1, 1), dict(height=4, width=6)),
    "from1row": ((1, 5), dict(zoom_factor=3)),
    "zoom1": ((5, 6), dict(zoom_factor=1)),
}


@pytest.mark.parametrize("name", sorted(INTERP))
def test_interp(build, name):
    (h, w), p = INTERP[name]
    x = rand(2, 3, h, w)
    net = build(layer("interp", "Interp", "data", interp_params(**p)), {"data": x.shape})
    size = ref_interp_size(h, w, zoom=p.get("zoom_factor"), shrink=p.get("shrink_factor"), height=p.get("height"),
                           width=p.get("width"), pad_beg=p.get("pad_beg", 0), pad_end=p.get("pad_end", 0))
    assert net.layer_shapes["interp"] == (2, 3, *size)
    net.forward(data=x)
    got = net.layer_outputs["interp"]
    want = ref_interp(x, size, p.get("pad_beg", 0), p.get("pad_end", 0))
    assert rel_err(got, want) < 1e-6
    # float32, it is the fork's own arithmetic: the same numbers
    layer_ = net.graph.layer("interp")
    np.testing.assert_array_equal(got, layer_.forward_numpy(x))


def test_interp_1row_takes_first_row(build):
    """r = 0 for a 1-row output: the top-left of the cropped input, not the centre."""
    x = rand(1, 2, 7, 9)
    net = build(layer("interp", "Interp", "data", interp_params(height=1, width=1, pad_beg=-2)), {"data": x.shape})
    np.testing.assert_array_equal(net.forward(data=x)["interp"], x[:, :, 2:3, 2:3])


@pytest.mark.parametrize("params,message", [
    (dict(zoom_factor=2, pad_beg=1), "expected <= 0"), (dict(pad_end=-1), "sets no output size"),
    (dict(height=5), "sets no output size"), (dict(zoom_factor=0), "zoom_factor 0"),
    (dict(shrink_factor=0), "shrink_factor 0"), (dict(zoom_factor=2, pad_beg=-3, pad_end=-3), "leaves nothing"),
    (dict(height=0, width=3), "positive height")])
def test_interp_refuses(build, params, message):
    with pytest.raises(ZfcaffeError, match=message):
        build(layer("interp", "Interp", "data", interp_params(**params)), {"data": (1, 2, 5, 6)})


def test_interp_open_size_export(build, tmp_path):
    """convert --dynamic: the taps computed in the graph from the input's size, as the fork
    computes them, so the image size stays open."""
    text = (layer("conv", "Convolution", "data", "convolution_param { num_output: 3 kernel_size: 3 "
                  "weight_filler { type: 'gaussian' std: 0.3 } }")
            + layer("zoom", "Interp", "conv", interp_params(zoom_factor=3, pad_beg=-1, pad_end=-2))
            + layer("shrink", "Interp", "conv", interp_params(shrink_factor=2, zoom_factor=3))
            + layer("shrink_only", "Interp", "conv", interp_params(shrink_factor=3))
            + layer("hw", "Interp", "conv", interp_params(height=7, width=1)))
    net = build(text, {"data": (1, 2, 11, 14)})
    path = tmp_path / "open.onnx"
    assert net.to_onnx(str(path), dynamic=True) == ("batch", "spatial")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    for shape in ((2, 2, 19, 9), (1, 2, 11, 14), (1, 2, 6, 7)):
        x = rand(*shape)
        want = net.forward(data=x)
        for name, got in zip(names, session.run(None, {"data": x})):
            assert got.shape == want[name].shape, name
            np.testing.assert_array_equal(got, want[name])


# -- OpenCV, where it agrees with the fork (../shared/oracle_forks/README.md) ------------------------
@pytest.mark.parametrize("name", ["zoom3", "zoom8", "hw", "hw_odd", "1x1", "from1x1"])
def test_interp_opencv(build, name):
    """OpenCV's Interp reads zoom_factor and height/width as the fork does (it ignores the
    pads and shrink_factor, so those are not compared)."""
    cv2 = pytest.importorskip("cv2")
    (h, w), p = INTERP[name]
    x = rand(2, 3, h, w)
    text = layer("interp", "Interp", "data", interp_params(**p))
    proto, _ = build.write(text, {"data": x.shape}, name="cv")
    try:
        cvnet = cv2.dnn.readNetFromCaffe(str(proto))
        cvnet.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        cvnet.enableFusion(False)
        cvnet.setInput(x, "data")
        theirs = cvnet.forward("interp")
    except cv2.error as e:
        pytest.skip(f"OpenCV refuses the net: {str(e).strip().splitlines()[-1]}")
    net = build(text, {"data": x.shape})
    assert rel_err(net.forward(data=x)["interp"], theirs) < 1e-6


# -- the fork itself ---------------------------------------------------------------------------
def isolated_errors(net, ref):
    """Each layer whose bottoms and top are kept, run alone on the reference bottoms:
    {layer: (type, rel_err)}."""
    errs = {}
    for i, l in enumerate(net.graph.layers):
        if l.is_input or l.tops[0] not in ref or not all(b in ref for b in l.bottoms):
            continue
        o = build_onnx(net.graph, record=True, span=(i, i), embed_weights=True)
        s = ort.InferenceSession(o.model.SerializeToString(), providers=["CPUExecutionProvider"])
        got = s.run(None, {inp.name: ref[inp.name] for inp in s.get_inputs()})
        errs[l.name] = (l.type, rel_err(got[o.keys.index(l.tops[0])], ref[l.tops[0]]))
    return errs


@pytest.mark.parametrize("name", ["interp_variants", "pspnet_slim"])
def test_oracle_pspnet(shared, tmp_path, name):
    """Every kept output end to end (pspnet_slim: the case's own bound, float32 drift through
    50 layers), each BN and Interp fed the reference bottoms (exact: Caffe's own rounding), and
    the exported --all-blobs file run alone."""
    case = fork_case(shared, "oracle_forks", name)
    bound = case.get("tolerance", 1e-4)
    net = zfcaffe.Net(case["prototxt"], case["weights_path"], input_shapes=case["input_shapes"])
    for k, s in case["shapes"].items():
        assert tuple(net.layer_shapes[k]) == s, k
    net.forward(**case["inputs"])
    ref = case["outputs"]
    errs = {k: rel_err(net.layer_outputs[k], ref[k]) for k in ref.files}
    worst = max(errs, key=errs.get)
    assert errs[worst] <= bound, (worst, errs[worst])
    alone = isolated_errors(net, {**dict(ref), **case["inputs"]})
    fork = {k: err for k, (t, err) in alone.items() if t in ("BN", "Interp")}
    assert len(fork) >= (14 if name == "interp_variants" else 19)
    assert max(fork.values()) == 0.0, fork
    assert max(err for _, err in alone.values()) <= 1e-5, alone   # the BVLC layers too
    got = onnx_rerun(net, tmp_path, case["inputs"])
    for k in ref.files:
        assert rel_err(got[k], ref[k]) <= bound, k


# -- census ------------------------------------------------------------------------------------
def test_census_pspnet50_ade20k(shared, capsys):
    """Loads as posted and inspects, its BN blobs filled as BNLayer::LayerSetUp fills them
    (slope 1, bias 0, frozen: mean 0, variance 1). Its pyramid pools have fixed 60/30/20/10
    kernels and its Interp fixed 60x60 sizes, so only the full 473x473 input fits: the forward
    pass and the export (~10 s each on two cores) are tests/test_census.py's, not repeated here."""
    path = shared / "census/pspnet50_ade20k/pspnet50_ADE20K_473.prototxt"
    assert main(["inspect", str(path)]) == 0
    table = capsys.readouterr().out
    assert "conv6_interp" in table and "zoom 8" in table and "eps 1e-05 frozen" in table
    net = zfcaffe.Net(str(path))
    assert net.layer_shapes["conv5_3_pool1_interp"] == (1, 512, 60, 60)
    assert net.layer_shapes["conv6_interp"] == (1, 150, 473, 473)
    bns = [l for l in net.layers if l.type == "BN"]
    assert len(bns) == 60 and all(isinstance(l, PSPNetBN) and l.frozen for l in bns)
    slope, bias, mean, var = (p.data for p in net.params["conv5_4/bn"])
    assert (slope == 1).all() and (bias == 0).all() and (mean == 0).all() and (var == 1).all()
    with pytest.raises(ZfcaffeError, match="differ outside axis 1"):   # a smaller input: 60x60 pyramid, 13x13 trunk
        zfcaffe.Net(str(path), input_shapes={"data": (1, 3, 97, 97)})
