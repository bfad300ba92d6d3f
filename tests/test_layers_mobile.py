"""Mobile nets' fork layers (ConvolutionDepthwise, DepthwiseConvolution, ShuffleChannel, Axpy, ReLU6)
against float64 NumPy transcriptions of the forks' C++ (commits in zfcaffe/layers/mobile.py), against
OpenCV's dnn where it has the layer, and the census nets that use them."""
from __future__ import annotations

import cv2
import numpy as np
import onnxruntime as ort
import pytest

import zfcaffe
from conftest import layer_text as layer, rel_err, run_cli
from zfcaffe.errors import ZfcaffeError
from zfcaffe.inspect import format_table, summarize

RNG = np.random.default_rng(11)


def rand(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def run(build, text, inputs: dict, blobs=None, name="net"):
    net = build(text, {k: v.shape for k, v in inputs.items()}, blobs, name=name)
    net.forward(**inputs)
    return net


def onnx_rerun(net, path, inputs: dict, **kw) -> dict:
    """The exported --all-blobs file run in ONNX Runtime on its own: {output name: array}."""
    net.to_onnx(str(path), all_blobs=True, **kw)
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(None, inputs)))


def opencv_forward(build, text, inputs: dict, blobs, out: str, name="cv"):
    """The same layers in OpenCV's dnn (net-level `input:` fields, which it reads for several inputs)."""
    head = "".join(f'input: "{k}"\ninput_shape {{ ' + " ".join(f"dim: {d}" for d in v.shape) + " }\n"
                   for k, v in inputs.items())
    proto, weights = build.write(text, {}, blobs, name=name)
    proto.write_text(f'name: "{name}"\n' + head + text)
    try:
        cv = cv2.dnn.readNetFromCaffe(str(proto), str(weights)) if weights else cv2.dnn.readNetFromCaffe(str(proto))
        cv.enableFusion(False)
        for k, v in inputs.items():
            cv.setInput(v, k)
        return cv.forward(out)
    except cv2.error as e:
        pytest.skip(f"OpenCV's dnn refuses the net: {str(e).strip().splitlines()[-1]}")


# -- float64 transcriptions of the forks' C++ ---------------------------------------------------
def conv_dw_ref(x, w, b, kernel, stride, pad, dil):
    """farmingyard/caffe-mobilenet conv_dw_layer.cpp Forward_cpu: per (n, c, h, w) the sum over the
    kernel taps whose input lies inside the image, then the bias."""
    n, c, h, wd = x.shape
    kh, kw = kernel
    oh = (h + 2 * pad[0] - (dil[0] * (kh - 1) + 1)) // stride[0] + 1
    ow = (wd + 2 * pad[1] - (dil[1] * (kw - 1) + 1)) // stride[1] + 1
    x = x.astype(np.float64)
    w = w.astype(np.float64).reshape(c, kh, kw)
    out = np.zeros((n, c, oh, ow))
    for i in range(kh):
        for j in range(kw):
            hin = -pad[0] + np.arange(oh) * stride[0] + i * dil[0]
            win = -pad[1] + np.arange(ow) * stride[1] + j * dil[1]
            ok = (hin >= 0)[:, None] & (hin < h)[:, None] & (win >= 0)[None] & (win < wd)[None]
            tap = x[:, :, np.clip(hin, 0, h - 1)][:, :, :, np.clip(win, 0, wd - 1)]
            out += np.where(ok, tap, 0) * w[:, i, j][None, :, None, None]
    if b is not None:
        out += b.astype(np.float64)[None, :, None, None]
    return out


def grouped_conv_ref(x, w, b, group, stride, pad, dil=(1, 1)):
    """BVLC base_conv_layer.cpp forward_cpu_gemm (im2col, then one GEMM per group) in float64,
    which yonghenglh6's DepthwiseConvolutionLayer::Forward_cpu calls."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    oh = (h + 2 * pad[0] - (dil[0] * (kh - 1) + 1)) // stride[0] + 1
    ow = (wd + 2 * pad[1] - (dil[1] * (kw - 1) + 1)) // stride[1] + 1
    xp = np.zeros((n, c, h + 2 * pad[0], wd + 2 * pad[1]))
    xp[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + wd] = x
    col = np.zeros((n, c, kh, kw, oh, ow))
    for i in range(kh):
        for j in range(kw):
            y0, x0 = i * dil[0], j * dil[1]
            col[:, :, i, j] = xp[:, :, y0:y0 + stride[0] * (oh - 1) + 1:stride[0], x0:x0 + stride[1] * (ow - 1) + 1:stride[1]]
    col = col.reshape(n, group, cg * kh * kw, oh * ow)
    wm = w.astype(np.float64).reshape(group, o // group, cg * kh * kw)
    out = np.einsum("gok,ngkp->ngop", wm, col).reshape(n, o, oh, ow)
    if b is not None:
        out += b.astype(np.float64)[None, :, None, None]
    return out


def shuffle_ref(x, group):
    """farmingyard shuffle_channel_layer.cpp Resize_cpu per image: block (i * cols + j) -> (j * rows + i)."""
    s = x.shape + (1,) * (4 - x.ndim)
    x = x.reshape(s).astype(np.float64)
    rows, cols = group, s[1] // group
    out = np.empty_like(x)
    for i in range(rows):
        for j in range(cols):
            out[:, j * rows + i] = x[:, i * cols + j]
    return out


def axpy_ref(a, x, y):
    """SENet axpy_layer.cpp Forward_cpu: top = y; top[n, c] += a[n * C + c] * x[n, c]."""
    n, c = x.shape[:2]
    flat = a.astype(np.float64).ravel()
    out = y.astype(np.float64).copy()
    for i in range(n):
        for j in range(c):
            out[i, j] += flat[i * c + j] * x[i, j]
    return out


def relu6_ref(x, slope):
    """eric612 relu6_layer.cpp Forward_cpu."""
    x = x.astype(np.float64)
    return np.minimum(np.maximum(x, 0) + slope * np.minimum(x, 0), 6.0)


# -- ConvolutionDepthwise --------------------------------------------------------------------------
def test_convolution_depthwise_ignores_num_output_and_group(build, tmp_path):
    x = rand(2, 5, 9, 8)
    w, b = rand(5, 1, 3, 2), rand(5)
    text = layer("dw", "ConvolutionDepthwise", "data",
                 "convolution_param { num_output: 3 group: 7 kernel_h: 3 kernel_w: 2 stride: 2 pad: 1 pad: 0 "
                 "dilation: 2 dilation: 1 }")
    net = run(build, text, {"data": x}, {"dw": [w, b]})
    ref = conv_dw_ref(x, w, b, (3, 2), (2, 2), (1, 0), (2, 1))
    assert net.layer_shapes["dw"] == ref.shape == (2, 5, 4, 4)
    assert [p.data.shape for p in net.params["dw"]] == [(5, 1, 3, 2), (5,)]
    assert rel_err(net.layer_outputs["dw"], ref) <= 1e-6
    assert rel_err(onnx_rerun(net, tmp_path / "dw.onnx", {"data": x})["dw"], ref) <= 1e-6


def test_convolution_depthwise_reads_the_forks_fields(build):
    # kernel_size: 3 with a lone kernel_h is kernel_size (the fork takes kernel_h/w only as a pair);
    # stride_h/stride_w as a pair; no bias blob with bias_term: false
    x = rand(1, 3, 7, 7)
    w = rand(3, 1, 3, 3)
    text = layer("dw", "ConvolutionDepthwise", "data",
                 "convolution_param { kernel_size: 3 kernel_h: 5 stride_h: 2 stride_w: 1 bias_term: false }")
    net = run(build, text, {"data": x}, {"dw": [w]})
    ref = conv_dw_ref(x, w, None, (3, 3), (2, 1), (0, 0), (1, 1))
    assert net.layer_shapes["dw"] == (1, 3, 3, 5)
    assert rel_err(net.layer_outputs["dw"], ref) <= 1e-6


def test_convolution_depthwise_refuses(build):
    with pytest.raises(ZfcaffeError, match="kernel_size .*required"):
        build(layer("dw", "ConvolutionDepthwise", "data", "convolution_param { stride: 1 }"), {"data": (1, 2, 4, 4)})
    with pytest.raises(ZfcaffeError, match="expected N x C x H x W"):
        build(layer("dw", "ConvolutionDepthwise", "data", "convolution_param { kernel_size: 1 }"), {"data": (1, 2, 4)})


@pytest.mark.parametrize("stride", [1, 2])
def test_convolution_depthwise_matches_opencv(build, stride):
    x = rand(1, 6, 10, 9)
    w, b = rand(6, 1, 3, 3), rand(6)
    text = layer("dw", "ConvolutionDepthwise", "data",
                 f"convolution_param {{ num_output: 6 kernel_size: 3 stride: {stride} pad: 1 }}")
    net = run(build, text, {"data": x}, {"dw": [w, b]})
    cv = opencv_forward(build, text, {"data": x}, {"dw": [w, b]}, "dw")
    assert rel_err(net.layer_outputs["dw"], cv) <= 1e-5


# -- DepthwiseConvolution ----------------------------------------------------------------------
@pytest.mark.parametrize("group,num_output", [(4, 4), (2, 6), (1, 3)])
def test_depthwise_convolution_is_a_grouped_convolution(build, tmp_path, group, num_output):
    """The CPU forward is BVLC's: `group` is read as written (default 1), num_output honoured."""
    x = rand(2, 4, 8, 7)
    w, b = rand(num_output, 4 // group, 3, 3), rand(num_output)
    text = layer("dw", "DepthwiseConvolution", "data",
                 f"convolution_param {{ num_output: {num_output} group: {group} kernel_size: 3 stride: 2 pad: 1 }}")
    net = run(build, text, {"data": x}, {"dw": [w, b]})
    ref = grouped_conv_ref(x, w, b, group, (2, 2), (1, 1))
    assert net.layer_shapes["dw"] == ref.shape
    assert rel_err(net.layer_outputs["dw"], ref) <= 1e-6
    assert rel_err(onnx_rerun(net, tmp_path / "dw.onnx", {"data": x})["dw"], ref) <= 1e-6
    # OpenCV has no DepthwiseConvolution: the same layer typed Convolution
    cv = opencv_forward(build, text.replace('"DepthwiseConvolution"', '"Convolution"'), {"data": x},
                        {"dw": [w, b]}, "dw")
    assert rel_err(net.layer_outputs["dw"], cv) <= 1e-5


# -- ShuffleChannel ------------------------------------------------------------------------------
@pytest.mark.parametrize("group", [1, 3, 4, 12])
def test_shuffle_channel(build, tmp_path, group):
    x = rand(2, 12, 3, 4)
    text = layer("shuf", "ShuffleChannel", "data", f"shuffle_channel_param {{ group: {group} }}")
    net = run(build, text, {"data": x}, name=f"shuffle{group}")
    ref = shuffle_ref(x, group)
    assert np.array_equal(net.layer_outputs["shuf"], ref)
    assert np.array_equal(onnx_rerun(net, tmp_path / "s.onnx", {"data": x})["shuf"], ref)
    cv = opencv_forward(build, text, {"data": x}, None, "shuf")
    assert np.array_equal(net.layer_outputs["shuf"], cv)


def test_shuffle_channel_dynamic_export_and_legacy_shape(build, tmp_path):
    x = rand(2, 6, 3, 5)
    net = run(build, layer("shuf", "ShuffleChannel", "data", "shuffle_channel_param { group: 2 }"), {"data": x})
    path = tmp_path / "dyn.onnx"
    net.to_onnx(str(path), dynamic=True)
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x2 = rand(3, 6, 7, 2)
    assert np.array_equal(s.run(None, {"data": x2})[0], shuffle_ref(x2, 2))
    # a 2-D bottom gets Caffe's legacy 4-D top (num, channels, 1, 1)
    x = rand(3, 6)
    net = run(build, layer("shuf", "ShuffleChannel", "data", "shuffle_channel_param { group: 3 }"), {"data": x},
              name="flat")
    assert net.layer_shapes["shuf"] == (3, 6, 1, 1)
    assert np.array_equal(net.layer_outputs["shuf"], shuffle_ref(x, 3))
    assert np.array_equal(onnx_rerun(net, tmp_path / "flat.onnx", {"data": x})["shuf"], shuffle_ref(x, 3))


def test_shuffle_channel_refuses(build):
    with pytest.raises(ZfcaffeError, match="not a multiple of group 4"):
        build(layer("s", "ShuffleChannel", "data", "shuffle_channel_param { group: 4 }"), {"data": (1, 6, 2, 2)})
    with pytest.raises(ZfcaffeError, match="expected a positive number"):
        build(layer("s", "ShuffleChannel", "data", "shuffle_channel_param { group: 0 }"), {"data": (1, 6, 2, 2)})


# -- Axpy ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("a_shape", [(2, 6, 1, 1), (2, 6)])
def test_axpy(build, tmp_path, a_shape):
    a, x, y = rand(*a_shape), rand(2, 6, 4, 5), rand(2, 6, 4, 5)
    text = layer("axpy", "Axpy", ["a", "x", "y"])
    inputs = {"a": a, "x": x, "y": y}
    net = run(build, text, inputs, name="axpy" + str(len(a_shape)))
    ref = axpy_ref(a, x, y)
    assert net.layer_shapes["axpy"] == x.shape
    assert rel_err(net.layer_outputs["axpy"], ref) <= 1e-6
    assert rel_err(onnx_rerun(net, tmp_path / "a.onnx", inputs)["axpy"], ref) <= 1e-6


def test_axpy_against_opencv_with_x_and_y_swapped(build):
    """OpenCV's Caffe importer (modules/dnn/src/caffe/caffe_importer.cpp, type == "Axpy") builds
    Scale(bottom 2, bottom 0) + bottom 1, i.e. a * y + x: the fork (and zfcaffe) compute a * x + y.
    OpenCV given the bottoms (a, y, x) must therefore equal zfcaffe given (a, x, y). (OpenCV also
    refuses a batch of more than one here.)"""
    a, x, y = rand(1, 6, 1, 1), rand(1, 6, 4, 5), rand(1, 6, 4, 5)
    inputs = {"a": a, "x": x, "y": y}
    net = run(build, layer("axpy", "Axpy", ["a", "x", "y"]), inputs)
    cv = opencv_forward(build, layer("axpy", "Axpy", ["a", "y", "x"]), inputs, None, "axpy")
    assert rel_err(net.layer_outputs["axpy"], cv) <= 1e-6
    assert rel_err(net.layer_outputs["axpy"], axpy_ref(a, x, y)) <= 1e-6


def test_axpy_refuses(build):
    text = layer("axpy", "Axpy", ["a", "x", "y"])
    with pytest.raises(ZfcaffeError, match="scale .*expected"):
        build(text, {"a": (1, 3, 2, 1), "x": (1, 3, 2, 2), "y": (1, 3, 2, 2)})
    with pytest.raises(ZfcaffeError, match="y .*expected x's shape"):
        build(text, {"a": (1, 3, 1, 1), "x": (1, 3, 2, 2), "y": (1, 3, 2, 1)})


# -- ReLU6 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_relu6(build, tmp_path, slope):
    x = rand(2, 3, 5, 4, scale=5)
    x.flat[:4] = [0, 6, -0.0, 6.000001]
    param = f"relu6_param {{ negative_slope: {slope} }}" if slope else ""
    text = layer("r", "ReLU6", "data", param)
    net = run(build, text, {"data": x}, name=f"relu6_{slope}")
    ref = relu6_ref(x, np.float32(slope))
    assert rel_err(net.layer_outputs["r"], ref) <= 1e-7
    assert rel_err(onnx_rerun(net, tmp_path / "r.onnx", {"data": x})["r"], ref) <= 1e-7
    if not slope:   # OpenCV's ReLU6 reads no relu6_param
        cv = opencv_forward(build, text, {"data": x}, None, "r")
        assert np.array_equal(net.layer_outputs["r"], cv)


# -- census nets -----------------------------------------------------------------------------------
CENSUS = [
    ("shufflenet/shufflenet_1x_g3_deploy.prototxt", None),
    ("shufflenet/shufflenet_v2_1x_deploy.prototxt", None),
    ("se_resnet50/SE-ResNet-50.prototxt", None),
    ("depthwise_mobilenet/depthwised_mobilenet_deploy.prototxt", None),
    ("mobilenet_yolov3_lite_tusimple/mobilenet_yolov3_lite_deploy.prototxt", None),
    ("mobilenet_ssd/MobileNetSSD_deploy.prototxt", "detection_out"),
    ("pelee_ssd/deploy_merged.prototxt", "detection_out"),
]


def tame_batchnorm(net):
    """Caffe's constant-0 fillers give BatchNorm variance 0 (x / sqrt(eps): x316 per layer, inf
    after ~40 layers); unit variances keep a filled net's values finite."""
    for lay in net.layers:
        if lay.type == "BatchNorm" and lay.name in net.params:
            p = net.params[lay.name]
            p[1].data = np.ones_like(p[1].data)
            p[2].data = np.ones_like(p[2].data)


@pytest.mark.parametrize("path,stop", CENSUS, ids=[c[0].split("/")[0] + ("_" + c[0][-20:-9] if "shuffle" in c[0] else "")
                                                 for c in CENSUS])
def test_census_net_runs_and_exports(shared, tmp_path, path, stop):
    f = shared / "census" / path
    net = zfcaffe.Net(str(f), stop_before=stop) if stop else zfcaffe.Net(str(f))
    assert "total:" in format_table(summarize(net.graph))
    tame_batchnorm(net)
    rng = np.random.default_rng(0)
    inputs = {k: rng.standard_normal(net.blobs[k].data.shape).astype(np.float32) for k in net.inputs}
    net.forward(**inputs)
    recorded = dict(net.layer_outputs)   # what the pass kept (other keys would be recomputed one by one)
    assert all(np.isfinite(v).all() for v in recorded.values())
    got = onnx_rerun(net, tmp_path / "census.onnx", inputs)
    compared = [k for k in recorded if k in got]
    assert len(compared) >= len(net.outputs) and set(net.outputs) <= set(got)
    for k in compared:
        assert rel_err(got[k], recorded[k]) <= 1e-5, k


def test_census_inspect_cli(shared):
    out = run_cli("inspect", shared / "census/shufflenet/shufflenet_1x_g3_deploy.prototxt", "--quiet").stdout
    assert "ShuffleChannel" in out and "ConvolutionDepthwise" in out and "total: 1.84M parameters" in out


def test_mobilenet_yolov3_lite_tusimple_real_weights_match_opencv(shared, tmp_path):
    """The one census net with trained weights; OpenCV reads it with DepthwiseConvolution typed Convolution."""
    d = shared / "census/mobilenet_yolov3_lite_tusimple"
    proto, weights = d / "mobilenet_yolov3_lite_deploy.prototxt", d / "mobilenet_yolov3_lite_deploy_iter_50000.caffemodel"
    net = zfcaffe.Net(str(proto), str(weights))
    x = np.random.default_rng(1).uniform(-1, 1, net.blobs["data"].data.shape).astype(np.float32)
    out = net.forward(data=x)
    renamed = tmp_path / "as_convolution.prototxt"
    renamed.write_text(proto.read_text().replace('"DepthwiseConvolution"', '"Convolution"'))
    cv = cv2.dnn.readNetFromCaffe(str(renamed), str(weights))
    cv.enableFusion(False)
    cv.setInput(x)
    names = [n for n in net.layer_shapes if n in set(cv.getLayerNames())]
    assert len(names) > 60 and "sigmoid" in names
    refs = dict(zip(names, cv.forward(names)))
    recorded = dict(net.layer_outputs)
    assert "sigmoid" in recorded
    for n in recorded:
        assert rel_err(recorded[n], refs[n]) <= 1e-4, n
    # every layer's value, from the exported --all-blobs file run alone
    got = onnx_rerun(net, tmp_path / "tusimple.onnx", {"data": x})
    for n in names:
        assert rel_err(got[n], refs[n]) <= 1e-4, n
    assert rel_err(got["sigmoid"], out["sigmoid"]) <= 1e-6
