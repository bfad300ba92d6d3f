"""SegNet's and ENet's layers (BN, Upsample, DenseImageData), MAX pooling's mask top and
pooling_param.ceil_mode, against float64 NumPy transcriptions of the forks' C++
(alexgkendall/caffe-segnet@344c113b bn_layer.cpp, upsample_layer.cpp, pooling_layer.cpp;
dujianyi/caffe@aed992ed pooling_layer.cpp for ceil_mode), OpenCV where it has the layer,
the oracle cases segnet_slim / upsample_variants and the census nets of the family."""
from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest

import zfcaffe
from conftest import fork_case, layer_text as layer, rel_err
from zfcaffe.errors import ZfcaffeError
from zfcaffe.inspect import format_table, summarize
from zfcaffe.layers import layer_class
from zfcaffe.layers.segnet import DenseImageData, SegNetBN, SegNetUpsample

RNG = np.random.default_rng(7)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def onnx_values(net, path, inputs: dict) -> dict:
    """Every value of the exported all-blobs file, run in ONNX Runtime alone, by graph key."""
    net.to_onnx(str(path), all_blobs=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, inputs)))
    keys = [k for l in net.graph.compute_layers for k in l.tops]
    return {k: got[k] if k in got else got[net.graph.name_of(k)] for k in keys}


# -- references (float64 transcriptions of the C++) ---------------------------------------------
def ref_pool(x, k, s, p, method="MAX", ceil=True):
    """pooling_layer.cpp Forward_cpu (with dujianyi's ceil_mode): (top, mask) for MAX."""
    n, c, h, w = x.shape
    rnd = math.ceil if ceil else math.floor
    oh = int(rnd((h + 2 * p - k) / s)) + 1
    ow = int(rnd((w + 2 * p - k) / s)) + 1
    if p:
        oh -= (oh - 1) * s >= h + p
        ow -= (ow - 1) * s >= w + p
    y = np.zeros((n, c, oh, ow))
    mask = np.full((n, c, oh, ow), -1.0)
    for b in range(n):
        for ch in range(c):
            for ph in range(oh):
                for pw in range(ow):
                    hs, ws = ph * s - p, pw * s - p
                    if method == "MAX":
                        best = -np.finfo(np.float32).max
                        for i in range(max(hs, 0), min(hs + k, h)):
                            for j in range(max(ws, 0), min(ws + k, w)):
                                if x[b, ch, i, j] > best:          # strict: the first maximum wins
                                    best, mask[b, ch, ph, pw] = x[b, ch, i, j], i * w + j
                        y[b, ch, ph, pw] = best
                    else:
                        he, we = min(hs + k, h + p), min(ws + k, w + p)
                        size = (he - hs) * (we - ws)
                        y[b, ch, ph, pw] = x[b, ch, max(hs, 0):min(he, h), max(ws, 0):min(we, w)].sum() / size
    return y, mask


def ref_bn(x, scale, shift, learn):
    """bn_layer.cpp Forward_cpu: (top, batch mean, batch variance)."""
    x = x.astype(np.float64)
    scale, shift = scale.reshape(1, -1, 1, 1), shift.reshape(1, -1, 1, 1)
    if not learn:
        return x * scale + shift, None, None
    mean = x.mean(axis=(2, 3), keepdims=True).mean(axis=0, keepdims=True)
    var = (x * x).mean(axis=(2, 3), keepdims=True).mean(axis=0, keepdims=True) - mean ** 2
    return (x - mean) / np.sqrt(var + 1e-9) * scale + shift, mean, var


def ref_upsample(x, mask, oh, ow):
    """upsample_layer.cpp Forward_cpu, the loop as written."""
    n, c, h, w = x.shape
    top = np.zeros((n, c, oh * ow), np.float64)
    for b in range(n):
        for ch in range(c):
            for i in range(h * w):
                idx = int(mask[b, ch].flat[i])
                assert idx < oh * ow
                top[b, ch, idx] = x[b, ch].flat[i]
    return top.reshape(n, c, oh, ow)


# -- BN ----------------------------------------------------------------------------------------------
def test_bn_inference(build, tmp_path):
    x, scale, shift = rand(2, 4, 5, 7), rand(1, 4, 1, 1), rand(1, 4, 1, 1)
    net = build(layer("bn", "BN", "data", "bn_param { bn_mode: INFERENCE }"), {"data": x.shape},
                {"bn": [scale, shift]})
    assert type(net.graph.layer("bn")) is SegNetBN
    net.forward(data=x)
    want = ref_bn(x, scale, shift, learn=False)[0]
    assert rel_err(net.layer_outputs["bn"], want) < 1e-6
    assert rel_err(onnx_values(net, tmp_path / "m.onnx", {"data": x})["bn"], want) < 1e-6


def test_bn_learn_is_the_default_and_uses_the_batch(build, tmp_path):
    """LEARN (the default) normalises with this batch's statistics even in TEST phase;
    tops #1 and #2 are the batch mean and variance (without eps)."""
    x = rand(3, 5, 6, 4) * 3 + 2
    scale, shift = rand(1, 5, 1, 1), rand(1, 5, 1, 1)
    net = build(layer("bn", "BN", "data", "", tops=["y", "mean", "var"]), {"data": x.shape},
                {"bn": [scale, shift]})
    assert net.layer_shapes["bn#1"] == net.layer_shapes["bn#2"] == (1, 5, 1, 1)
    net.forward(data=x)
    y, mean, var = ref_bn(x, scale, shift, learn=True)
    for key, want in (("bn#0", y), ("bn#1", mean), ("bn#2", var)):
        assert rel_err(net.layer_outputs[key], want) < 2e-6, key
    exported = onnx_values(net, tmp_path / "m.onnx", {"data": x})
    for key, want in (("bn#0", y), ("bn#1", mean), ("bn#2", var)):
        assert rel_err(exported[key], want) < 2e-6, key
    # in place with one top, as SegNet's training nets write it
    net = build(layer("bn", "BN", "data", "bn_param { bn_mode: LEARN }", tops=["data"]), {"data": x.shape},
                {"bn": [scale, shift]}, name="inplace")
    net.forward(data=x)
    assert rel_err(net.layer_outputs["bn"], y) < 2e-6


def test_bn_fillers_and_errors(build):
    """Without weights the blobs are filled with bn_param's scale_filler and shift_filler."""
    x = rand(1, 3, 4, 4)
    text = layer("bn", "BN", "data", 'bn_param { bn_mode: INFERENCE scale_filler { type: "constant" value: 2 } '
                 'shift_filler { type: "constant" value: 0.5 } }')
    net = build(text, {"data": x.shape})
    np.testing.assert_array_equal(net.params["bn"][0].data, np.full((1, 3, 1, 1), 2, np.float32))
    np.testing.assert_array_equal(net.params["bn"][1].data, np.full((1, 3, 1, 1), 0.5, np.float32))
    net.forward(data=x)
    assert rel_err(net.layer_outputs["bn"], x * 2 + 0.5) < 1e-7
    with pytest.raises(ZfcaffeError, match="at most 1"):
        build(layer("bn", "BN", "data", "bn_param { bn_mode: INFERENCE }", tops=["a", "b"]), {"data": x.shape},
              name="bad")


def test_bn_variant_choice():
    """SegNet's BN is the fallback variant; PSPNet's is told apart by its own fields."""
    from zfcaffe import caffe_pb2
    lp = caffe_pb2.LayerParameter(name="bn", type="BN")
    assert layer_class(lp) is SegNetBN
    lp.bn_param.bn_mode = caffe_pb2.BNParameter.INFERENCE
    assert layer_class(lp) is SegNetBN


# -- pooling: the mask top and ceil_mode ------------------------------------------------------------
@pytest.mark.parametrize("k,s,p,hw", [(2, 2, 0, (7, 9)), (3, 2, 0, (9, 8)), (3, 2, 1, (8, 11)), (3, 1, 1, (5, 6))])
def test_pool_mask_top(build, tmp_path, k, s, p, hw):
    """MAX pooling's second top: float h * W + w of the first maximum (ties included:
    small integers make many), the switches' numbers."""
    x = RNG.integers(-2, 3, (2, 3, *hw)).astype(np.float32)
    text = layer("pool", "Pooling", "data", f"pooling_param {{ pool: MAX kernel_size: {k} stride: {s} pad: {p} }}",
                 tops=["pool", "mask"])
    net = build(text, {"data": x.shape})
    net.forward(data=x)
    y, mask = ref_pool(x, k, s, p)
    assert net.layer_shapes["pool#0"] == net.layer_shapes["pool#1"] == y.shape
    np.testing.assert_array_equal(net.layer_outputs["pool#0"], y)
    assert net.layer_outputs["pool#1"].dtype == np.float32
    np.testing.assert_array_equal(net.layer_outputs["pool#1"], mask)
    np.testing.assert_array_equal(net.switches["pool"], mask)
    exported = onnx_values(net, tmp_path / "m.onnx", {"data": x})
    np.testing.assert_array_equal(exported["pool#1"], mask)


def test_pool_mask_only_for_max(build):
    with pytest.raises(ZfcaffeError, match="only MAX"):
        build(layer("pool", "Pooling", "data", "pooling_param { pool: AVE kernel_size: 2 stride: 2 }",
                    tops=["a", "b"]), {"data": (1, 1, 4, 4)})


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("k,s,p,hw", [(3, 2, 1, (112, 112)), (3, 2, 0, (13, 14)), (2, 2, 0, (7, 7)),
                                      (3, 2, 1, (9, 10)), (5, 3, 2, (11, 8))])
def test_pool_ceil_mode_false(build, tmp_path, method, k, s, p, hw):
    """ceil_mode: false (DenseNet-Caffe's pool1: 3/2 pad 1 of 112 -> 56, not 57)."""
    x = rand(1, 2, *hw)
    text = layer("pool", "Pooling", "data",
                 f"pooling_param {{ pool: {method} kernel_size: {k} stride: {s} pad: {p} ceil_mode: false }}")
    net = build(text, {"data": x.shape})
    net.forward(data=x)
    y, mask = ref_pool(x, k, s, p, method, ceil=False)
    assert net.layer_shapes["pool"] == y.shape
    assert rel_err(net.layer_outputs["pool"], y) < 1e-6
    if method == "MAX":
        np.testing.assert_array_equal(net.switches["pool"], mask)
    assert rel_err(onnx_values(net, tmp_path / "m.onnx", {"data": x})["pool"], y) < 1e-6
    # ceil_mode: true is the default (BVLC's rule)
    net = build(text.replace("ceil_mode: false", "ceil_mode: true"), {"data": x.shape}, name="ceil")
    assert net.layer_shapes["pool"] == ref_pool(x, k, s, p, method)[0].shape


def test_pool_round_mode_floor(build):
    """round_mode: FLOOR (BVLC/caffe#6282, eric612/MobileNet-YOLO) is the same rule as ceil_mode: false."""
    x = rand(1, 2, 13, 14)
    text = layer("pool", "Pooling", "data", "pooling_param { pool: MAX kernel_size: 3 stride: 2 round_mode: FLOOR }")
    net = build(text, {"data": x.shape})
    net.forward(data=x)
    y, _ = ref_pool(x, 3, 2, 0, ceil=False)
    assert net.layer_shapes["pool"] == y.shape == (1, 2, 6, 6)
    assert rel_err(net.layer_outputs["pool"], y) < 1e-6


def test_pool_ceil_mode_and_mask_against_opencv(build):
    """OpenCV's Caffe importer reads ceil_mode and a MAX pooling's mask top."""
    cv2 = pytest.importorskip("cv2")
    x = rand(1, 3, 12, 11)
    text = layer("pool", "Pooling", "data", "pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 "
                 "ceil_mode: false }") + \
        layer("pool2", "Pooling", "data", "pooling_param { pool: AVE kernel_size: 3 stride: 2 ceil_mode: false }")
    proto, _ = build.write(text, {"data": x.shape}, name="cv")
    try:
        cv_net = cv2.dnn.readNetFromCaffe(str(proto))
    except cv2.error as err:
        pytest.skip(f"OpenCV refuses the net: {err}")
    cv_net.setInput(x)
    outs = cv_net.forward(["pool", "pool2"])
    net = zfcaffe.Net(str(proto))
    net.forward(data=x)
    for name, got in zip(["pool", "pool2"], outs):
        assert got.shape == net.layer_outputs[name].shape
        assert rel_err(net.layer_outputs[name], got) < 1e-6
    # a MAX pooling's mask top, with ties (small integers): OpenCV's first maximum is Caffe's
    x = RNG.integers(-2, 3, (2, 3, 12, 11)).astype(np.float32)
    text = layer("pool", "Pooling", "data", "pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }",
                 tops=["pool", "mask"])
    proto, _ = build.write(text, {"data": x.shape}, name="cvmask")
    cv_net = cv2.dnn.readNetFromCaffe(str(proto))
    cv_net.setInput(x)
    values, mask = cv_net.forwardAndRetrieve(["pool"])[0]
    net = zfcaffe.Net(str(proto))
    net.forward(data=x)
    np.testing.assert_array_equal(net.layer_outputs["pool#0"], values)
    np.testing.assert_array_equal(net.layer_outputs["pool#1"], mask)


# -- Upsample -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ksp,params,hw", [
    ((2, 2, 0), "upsample_h: 15 upsample_w: 21", (15, 21)),
    ((2, 2, 0), "scale: 2 pad_out_h: true pad_out_w: true", (15, 21)),
    ((2, 2, 0), "scale: 2", (14, 20)),
    ((3, 2, 0), "upsample_h: 15 upsample_w: 21", (15, 21)),   # overlapping windows: repeated indices
    ((3, 2, 0), "scale_h: 2 scale_w: 2", (14, 20)),
    ((3, 3, 1), "scale_h: 3 scale_w: 3", (12, 12)),
    ((2, 2, 0), "scale: 2 upsample_h: 6 upsample_w: 11", (6, 11)),   # both given: upsample_h/w win
])
def test_upsample_through_pool_mask(build, tmp_path, ksp, params, hw):
    x = RNG.integers(-3, 4, (2, 3, *hw)).astype(np.float32)   # ties: the pooling's first-maximum rule
    k, s, p = ksp
    text = layer("pool", "Pooling", "data", f"pooling_param {{ pool: MAX kernel_size: {k} stride: {s} pad: {p} }}",
                 tops=["pool", "mask"]) + layer("up", "Upsample", ["pool", "mask"], f"upsample_param {{ {params} }}")
    net = build(text, {"data": x.shape})
    assert type(net.graph.layer("up")) is SegNetUpsample
    net.forward(data=x)
    y, mask = ref_pool(x, k, s, p)
    oh, ow = net.layer_shapes["up"][2:]
    want = ref_upsample(y, mask, oh, ow)
    np.testing.assert_array_equal(net.layer_outputs["up"], want)
    np.testing.assert_array_equal(onnx_values(net, tmp_path / "m.onnx", {"data": x})["up"], want)
    g = net.graph.geometry["up"]            # back on the pooling input's grid
    assert g.jump == (1, 1) and (g.start == (0, 0) or ksp != (2, 2, 0))


def test_upsample_later_write_wins(build, tmp_path):
    """Repeated indices in a mask: Caffe's loop leaves the value of the last input position
    (row-major) that names an output position; never written positions stay 0."""
    values = rand(2, 2, 3, 4)
    mask = np.zeros((2, 2, 3, 4), np.float32)
    mask[0, 0] = [[0, 0, 5, 5], [5, 7, 0, 11], [1, 1, 1, 2]]
    mask[0, 1] = np.arange(12).reshape(3, 4)[::-1]
    mask[1, 0] = 3
    mask[1, 1] = [[11, 10, 9, 8], [11, 10, 9, 8], [0, 0, 0, 0]]
    text = layer("up", "Upsample", ["values", "mask"], "upsample_param { upsample_h: 3 upsample_w: 4 }")
    net = build(text, {"values": values.shape, "mask": mask.shape})
    net.forward(values=values, mask=mask)
    want = ref_upsample(values, mask, 3, 4)
    assert want[0, 0, 0, 0] == values[0, 0, 1, 2] and want[1, 0, 0, 3] == values[1, 0, 2, 3]
    np.testing.assert_array_equal(net.layer_outputs["up"], want)
    np.testing.assert_array_equal(onnx_values(net, tmp_path / "m.onnx", {"values": values, "mask": mask})["up"], want)
    np.testing.assert_array_equal(net.graph.layer("up").forward([values, mask])[0], want)


def test_upsample_errors(build):
    two = {"v": (1, 1, 2, 2), "m": (1, 1, 2, 2)}
    with pytest.raises(ZfcaffeError, match="not both"):
        build(layer("up", "Upsample", ["v", "m"], "upsample_param { scale: 2 scale_h: 2 scale_w: 2 }"), two)
    with pytest.raises(ZfcaffeError, match="requires scale_h == 2"):
        build(layer("up", "Upsample", ["v", "m"], "upsample_param { scale: 3 pad_out_h: true }"), two, name="b")
    with pytest.raises(ZfcaffeError, match="expected the values' shape"):
        build(layer("up", "Upsample", ["v", "m"], "upsample_param { scale: 2 }"),
              {"v": (1, 1, 2, 2), "m": (1, 1, 2, 3)}, name="c")
    with pytest.raises(ZfcaffeError, match="expected both > 1"):
        build(layer("up", "Upsample", ["v", "m"], "upsample_param { upsample_h: 1 upsample_w: 4 }"), two, name="d")
    net = build(layer("up", "Upsample", ["v", "m"], "upsample_param { scale: 2 }"), two, name="e")
    with pytest.raises(ZfcaffeError, match="out of range"):     # Caffe: LOG(FATAL)
        net.graph.layer("up").forward([np.ones((1, 1, 2, 2), np.float32), np.full((1, 1, 2, 2), 16, np.float32)])
    with pytest.raises(Exception, match="out of"):          # ONNX Runtime: ScatterElements out of bounds
        net.forward(v=np.ones((1, 1, 2, 2), np.float32), m=np.full((1, 1, 2, 2), 16, np.float32))


def test_open_size_export(build):
    """convert --dynamic: BN LEARN, a floor-mode pooling's mask and Upsample by scale hold
    at other batch and image sizes (measured by runtime.dynamic); fixed upsample_h/w do not."""
    from zfcaffe.runtime.dynamic import free_axes
    head = layer("bn", "BN", "data", "", tops=["bn", "m", "v"]) + \
        layer("pool", "Pooling", "bn", "pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 ceil_mode: false }",
              tops=["pool", "mask"])
    for params in ("scale: 2 pad_out_h: true", "scale_h: 3 scale_w: 2"):
        net = build(head + layer("up", "Upsample", ["pool", "mask"], f"upsample_param {{ {params} }}"),
                    {"data": (2, 3, 10, 12)}, name=params.split(":")[0])
        assert free_axes(net, all_blobs=True) == ("batch", "spatial")
    net = build(head + layer("up", "Upsample", ["pool", "mask"], "upsample_param { upsample_h: 10 upsample_w: 12 }"),
                {"data": (2, 3, 10, 12)}, name="fixed")
    assert free_axes(net) == ("batch",)


# -- DenseImageData ---------------------------------------------------------------------------------------
def _dense(params, tmp_path, transform=""):
    path = tmp_path / "dense.prototxt"
    path.write_text('name: "d"\nlayer { name: "data" type: "DenseImageData" top: "data" top: "label" '
                    f'dense_image_data_param {{ source: "list.txt" {params} }} {transform} }}\n'
                    + layer("conv", "Convolution", "data", "convolution_param { num_output: 2 kernel_size: 1 }"))
    return str(path)


def test_dense_image_data(tmp_path):
    net = zfcaffe.Net(_dense("batch_size: 2 new_height: 8 new_width: 10", tmp_path))
    assert type(net.graph.layer("data")) is DenseImageData
    assert net.graph.inputs == {"data": (2, 3, 8, 10)}         # the label is read only by the loss
    assert zfcaffe.Net(_dense("batch_size: 1 new_height: 8 new_width: 10 crop_height: 4 crop_width: 6 "
                              "is_color: false", tmp_path)).graph.inputs == {"data": (1, 1, 4, 6)}
    assert zfcaffe.Net(_dense("batch_size: 1 crop_height: 4 crop_width: 6", tmp_path,
                              "transform_param { crop_size: 5 }")).graph.inputs == {"data": (1, 3, 5, 5)}
    with pytest.raises(ZfcaffeError, match="input_shapes"):
        zfcaffe.Net(_dense("batch_size: 1", tmp_path))
    net = zfcaffe.Net(_dense("batch_size: 1", tmp_path), input_shapes={"data": (1, 3, 6, 7)})
    assert net.forward(data=rand(1, 3, 6, 7))["conv"].shape == (1, 2, 6, 7)


# -- oracle cases ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["segnet_slim", "upsample_variants"])
def test_oracle(shared, tmp_path, name):
    case = fork_case(shared, "oracle_forks", name)
    net = zfcaffe.Net(case["prototxt"], case["weights_path"], input_shapes=case["input_shapes"])
    net.forward(**case["inputs"])
    assert {k: net.layer_shapes[k] for k in case["shapes"]} == case["shapes"]
    outputs = case["outputs"]
    errors = {k: rel_err(net.layer_outputs[k], outputs[k]) for k in outputs}
    assert max(errors.values()) <= 1e-4, sorted(errors.items(), key=lambda kv: -kv[1])[:5]
    for k in outputs:        # the masks and every unpooling exactly
        if k.endswith("#1") and k.startswith("pool"):
            np.testing.assert_array_equal(net.layer_outputs[k], outputs[k])
    for layer_ in net.graph.layers:     # each Upsample on the reference bottoms: exactly Caffe's
        if layer_.type == "Upsample":
            np.testing.assert_array_equal(layer_.forward([outputs[b] for b in layer_.bottoms])[0],
                                          outputs[layer_.tops[0]])
    exported = onnx_values(net, tmp_path / "m.onnx", case["inputs"])
    errors = {k: rel_err(exported[k], outputs[k]) for k in outputs}
    assert max(errors.values()) <= 1e-4, sorted(errors.items(), key=lambda kv: -kv[1])[:5]


# -- census nets ----------------------------------------------------------------------------------------------
def _forward_and_export(net, tmp_path, inputs):
    out = net.forward(**inputs)
    net.to_onnx(str(tmp_path / "m.onnx"))
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, inputs)))
    for k, v in out.items():
        assert np.isfinite(v).all()
        assert rel_err(got[k], v) < 1e-5, k
    return out


def test_census_segnet(shared, tmp_path):
    """As posted (DenseImageData: no input shape; 360 x 480, the size its upsample_h/w
    need): loads, inspects and exports. The forward pass runs on the same file with the
    two fixed Upsample sizes set for a 64 x 96 input (the full size takes ~20 s)."""
    path = shared / "census/segnet/segnet_inference.prototxt"
    with pytest.raises(ZfcaffeError, match="input_shapes"):
        zfcaffe.Net(str(path))
    net = zfcaffe.Net(str(path), input_shapes={"data": (1, 3, 360, 480)})
    assert net.layer_shapes["pool5#1"] == (1, 512, 12, 15) and net.layer_shapes["prob"] == (1, 11, 360, 480)
    net.to_onnx(str(tmp_path / "full.onnx"))
    table = format_table(summarize(net.graph))          # what `zfcaffe inspect` prints
    assert "unpool to 23x30" in table and "MAX +mask" in table
    text = path.read_text().replace("upsample_w: 30", "upsample_w: 6").replace("upsample_h: 23", "upsample_h: 4") \
        .replace("upsample_w: 60", "upsample_w: 12").replace("upsample_h: 45", "upsample_h: 8")
    small = tmp_path / "segnet_small.prototxt"
    small.write_text(text)
    net = zfcaffe.Net(str(small), input_shapes={"data": (1, 3, 64, 96)})
    out = _forward_and_export(net, tmp_path, {"data": RNG.uniform(0, 255, (1, 3, 64, 96)).astype(np.float32)})
    assert out["prob"].shape == (1, 11, 64, 96)


def test_census_enet(shared, tmp_path):
    path = shared / "census/enet/enet_deploy_final.prototxt"
    net = zfcaffe.Net(str(path), input_shapes={"data": (1, 3, 128, 256)})
    table = format_table(summarize(net.graph))
    assert "unpool x2" in table and "INFERENCE" in table
    out = _forward_and_export(net, tmp_path, {"data": rand(1, 3, 128, 256)})
    assert out["deconv6_0_0"].shape == (1, 19, 128, 256)


def test_census_densenet121(shared, tmp_path):
    path = shared / "census/densenet121/DenseNet_121.prototxt"
    net = zfcaffe.Net(str(path))
    assert net.layer_shapes["pool1"] == (1, 64, 56, 56)      # ceil_mode: false (ceil would give 57)
    assert "MAX 3x3/2 pad 1 floor" in format_table(summarize(net.graph))
    out = _forward_and_export(net, tmp_path, {"data": rand(1, 3, 224, 224)})
    assert out["fc6"].shape == (1, 1000, 1, 1)
