"""The SSD fork's geometry layers (weiliu89/caffe@4817bf8b, branch ssd): Normalize, Permute,
PriorBox against float64 NumPy transcriptions of the fork's CPU code, against OpenCV where
OpenCV agrees with the fork, against the fork itself (../shared/oracle_ssd), and the census
SSD nets (loaded up to their DetectionOutput)."""
from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest

import zfcaffe
from conftest import fork_case, layer_text as layer, rel_err
from zfcaffe.errors import ZfcaffeError

RNG = np.random.default_rng(21)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


# -- float64 transcriptions of the fork's Forward_cpu ------------------------------------------
def ref_normalize(x, scale, across_spatial=True, channel_shared=True, eps=1e-10):
    """normalize_layer.cpp: per item, x / sqrt(sum x^2 + eps) (over C*H*W, or over C at each
    position), times scale[0] or scale[c]."""
    x = x.astype(np.float64)
    n, c = x.shape[:2]
    flat = x.reshape(n, c, -1)
    out = np.empty_like(flat)
    for i in range(n):
        if across_spatial:
            out[i] = flat[i] / math.sqrt((flat[i] ** 2).sum() + eps)
        else:
            out[i] = flat[i] / np.sqrt((flat[i] ** 2).sum(axis=0) + eps)[None, :]
        out[i] *= float(np.asarray(scale).reshape(-1)[0]) if channel_shared else np.asarray(scale)[:, None]
    return out.reshape(x.shape)


def ref_permute(x, order):
    """permute_layer.cpp: the missing axes appended ascending, then the index walk of Permute()."""
    order = list(order) + [i for i in range(x.ndim) if i not in order]
    top_shape = [x.shape[o] for o in order]
    old_steps = [int(np.prod(x.shape[i + 1:])) for i in range(x.ndim)]
    new_steps = [int(np.prod(top_shape[i + 1:])) for i in range(x.ndim)]
    src, out = x.reshape(-1), np.empty(int(np.prod(top_shape)), x.dtype)
    for i in range(out.size):
        old, idx = 0, i
        for j in range(x.ndim):
            old += (idx // new_steps[j]) * old_steps[order[j]]
            idx %= new_steps[j]
        out[i] = src[old]
    return out.reshape(top_shape)


def ref_priorbox(layer_hw, image_hw, min_size, max_size=(), aspect_ratio=(), flip=True, clip=False,
                 variance=(), img_size=None, img_h=None, img_w=None, step=None, step_h=None, step_w=None,
                 offset=0.5):
    """prior_box_layer.cpp, LayerSetUp + Forward_cpu, line by line."""
    f32 = np.float32
    ars = [1.0]
    for ar in map(f32, aspect_ratio):
        if any(abs(ar - a) < 1e-6 for a in ars):
            continue
        ars.append(ar)
        if flip:
            ars.append(f32(1.0 / ar))
    num_priors = len(ars) * len(min_size) + len(max_size)
    if img_h or img_w:
        ih, iw = img_h, img_w
    elif img_size:
        ih = iw = img_size
    else:
        ih, iw = image_hw
    lh, lw = layer_hw
    if step_h or step_w:
        sh, sw = f32(step_h), f32(step_w)
    elif step:
        sh = sw = f32(step)
    else:
        sh, sw = f32(ih) / f32(lh), f32(iw) / f32(lw)
    out = []
    for h in range(lh):
        for w in range(lw):
            cx, cy = (f32(w) + f32(offset)) * sw, (f32(h) + f32(offset)) * sh
            for s, m in enumerate(min_size):
                m = int(f32(m))
                boxes = [(m, m)]
                if max_size:
                    side = f32(math.sqrt(m * int(f32(max_size[s]))))
                    boxes.append((side, side))
                boxes += [(f32(m * math.sqrt(a)), f32(m / math.sqrt(a))) for a in ars if abs(a - 1.0) >= 1e-6]
                for bw, bh in boxes:
                    out += [(float(cx) - bw / 2.0) / iw, (float(cy) - bh / 2.0) / ih,
                            (float(cx) + bw / 2.0) / iw, (float(cy) + bh / 2.0) / ih]
    boxes = np.asarray(out, np.float32)
    assert boxes.size == lh * lw * num_priors * 4
    if clip:
        boxes = np.minimum(np.maximum(boxes, 0.0), 1.0)
    var = list(variance) or [0.1]
    var = np.tile(np.asarray(var, np.float32), boxes.size // 4) if len(var) == 4 else \
        np.full(boxes.size, var[0], np.float32)
    return np.stack([boxes, var])[None].astype(np.float64)


def onnx_rerun(net, tmp_path, inputs, all_blobs=True) -> dict:
    """The exported file run in ONNX Runtime on its own."""
    path = tmp_path / "net.onnx"
    net.to_onnx(str(path), all_blobs=all_blobs)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, inputs)))


def param_text(kind, fields: dict) -> str:
    def one(k, v):
        if isinstance(v, bool):
            return f"{k}: {'true' if v else 'false'}"
        if isinstance(v, dict):
            return f"{k} {{ " + " ".join(one(a, b) for a, b in v.items()) + " }"
        if isinstance(v, str):
            return f'{k}: "{v}"'
        return f"{k}: {v}"
    parts = []
    for k, v in fields.items():
        parts += [one(k, x) for x in v] if isinstance(v, (list, tuple)) else [one(k, v)]
    return f"{kind} {{ " + " ".join(parts) + " }"


# -- Normalize -------------------------------------------------------------------------------
@pytest.mark.parametrize("across", [True, False])
@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("eps,shape", [(1e-10, (2, 5, 4, 6)), (0.5, (3, 4, 3, 2)), (1e-3, (2, 7)),
                                       (1e-6, (2, 3, 5))])
def test_normalize(build, across, shared, eps, shape):
    x = rand(*shape)
    scale = np.float32(2.5) if shared else np.abs(rand(shape[1])) + 0.5
    text = layer("norm", "Normalize", "data", param_text("norm_param", dict(
        across_spatial=across, channel_shared=shared, eps=eps)))
    net = build(text, {"data": shape}, {"norm": [np.asarray(scale).reshape(() if shared else (-1,))]})
    assert net.params["norm"][0].data.shape == (() if shared else (shape[1],))
    net.forward(data=x)
    assert rel_err(net.layer_outputs["norm"], ref_normalize(x, scale, across, shared, eps)) < 1e-6


@pytest.mark.parametrize("filler,value", [("", 1.0), ("scale_filler { type: 'constant' value: 20 }", 20.0)])
def test_normalize_scale_filler(build, filler, value):
    """A Normalize missing from the weights: its scale_filler (default constant 1.0)."""
    x = rand(2, 3, 4, 5)
    text = layer("norm", "Normalize", "data", f"norm_param {{ channel_shared: false {filler} }}")
    net = build(text, {"data": x.shape})
    np.testing.assert_array_equal(net.params["norm"][0].data, np.full(3, value, np.float32))
    net.forward(data=x)
    assert rel_err(net.layer_outputs["norm"], ref_normalize(x, np.full(3, value), True, False)) < 1e-6


def test_normalize_legacy_scale_shapes(build):
    """A scale stored as [1] (or 1x1x1x1) loads into the fork's 0-axis blob; a wrong size is refused."""
    x = rand(1, 3, 4, 4)
    net = build(layer("norm", "Normalize", "data"), {"data": x.shape}, {"norm": [np.full((1, 1, 1, 1), 4.0)]})
    net.forward(data=x)
    assert rel_err(net.layer_outputs["norm"], ref_normalize(x, 4.0)) < 1e-6
    with pytest.raises(ZfcaffeError, match="blob 0"):
        build(layer("norm", "Normalize", "data", "norm_param { channel_shared: false }"), {"data": x.shape},
              {"norm": [np.ones(4)]})


def test_normalize_refuses_5d(build):
    with pytest.raises(ZfcaffeError, match="expected 2 to 4 axes"):
        build(layer("norm", "Normalize", "data"), {"data": (1, 2, 3, 4, 5)})


# -- Permute ---------------------------------------------------------------------------------
@pytest.mark.parametrize("order,shape", [
    ([0, 2, 3, 1], (2, 3, 4, 5)), ([0, 3, 1, 2], (2, 3, 4, 5)), ([3, 2, 1, 0], (2, 3, 4, 5)),
    ([1, 0, 2, 3], (2, 3, 4, 5)), ([0, 2], (2, 3, 4, 5)), ([3], (2, 3, 4, 5)), ([0, 1, 2, 3], (2, 3, 4, 5)),
    ([], (2, 3, 4, 5)), ([2, 0], (3, 4, 5)), ([1], (4, 6)),
])
def test_permute(build, tmp_path, order, shape):
    x = rand(*shape)
    text = layer("perm", "Permute", "data", param_text("permute_param", {"order": order}))
    net = build(text, {"data": shape})
    net.forward(data=x)
    want = ref_permute(x, order)
    assert net.layer_shapes["perm"] == want.shape
    np.testing.assert_array_equal(net.layer_outputs["perm"], want)
    np.testing.assert_array_equal(onnx_rerun(net, tmp_path, {"data": x})["perm"], want)


@pytest.mark.parametrize("order,message", [([0, 2, 2], "repeats an axis"), ([0, 4], "expected axes below 4")])
def test_permute_refuses(build, order, message):
    text = layer("perm", "Permute", "data", param_text("permute_param", {"order": order}))
    with pytest.raises(ZfcaffeError, match=message):
        build(text, {"data": (1, 2, 3, 4)})


# -- PriorBox --------------------------------------------------------------------------------
PRIORS = {
    "basic": dict(min_size=[6.0], max_size=[12.0], aspect_ratio=[2.0], variance=[0.1]),
    "lists_truncated": dict(min_size=[4.7, 9.5], max_size=[8.2, 15.9], aspect_ratio=[2.0, 3.0], flip=False,
                            clip=True, variance=[0.1, 0.1, 0.2, 0.2], step=2.5),
    "dup_ratios_steps": dict(min_size=[10.0], aspect_ratio=[0.5, 3.0, 1.0, 2.0], clip=True,
                             variance=[0.05, 0.06, 0.1, 0.2], img_size=36, step_h=3.0, step_w=4.5, offset=0.25),
    "img_hw": dict(min_size=[12.0], max_size=[24.0], img_h=32, img_w=48, offset=0.0),
    "defaults": dict(min_size=[5.0, 15.0], aspect_ratio=[2.0]),
    "flip_dup_offset1": dict(min_size=[8.0], aspect_ratio=[2.0, 0.5, 2.0], variance=[0.2], step=2.0, offset=1.0),
    "fraction_ratio": dict(min_size=[7.0], max_size=[9.0], aspect_ratio=[1.7, 1 / 1.7, 0.3], clip=True),
}


@pytest.mark.parametrize("name", sorted(PRIORS))
@pytest.mark.parametrize("layer_hw,image_hw", [((5, 7), (21, 30)), ((1, 1), (9, 9))])
def test_priorbox(build, tmp_path, name, layer_hw, image_hw):
    p = PRIORS[name]
    text = layer("pb", "PriorBox", ["feat", "data"], param_text("prior_box_param", p))
    net = build(text, {"feat": (2, 3, *layer_hw), "data": (2, 3, *image_hw)})
    want = ref_priorbox(layer_hw, image_hw, **p)
    assert net.layer_shapes["pb"] == want.shape     # [1, 2, ...] whatever the batch
    feeds = {"feat": rand(2, 3, *layer_hw), "data": rand(2, 3, *image_hw)}
    net.forward(**feeds)
    assert np.abs(net.layer_outputs["pb"] - want).max() < 1e-6
    assert np.abs(onnx_rerun(net, tmp_path, feeds)["pb"] - want).max() < 1e-6


def test_priorbox_one_bottom_with_img_size(build):
    """The fork reads the second bottom only for the image size: with img_size one bottom runs."""
    text = layer("pb", "PriorBox", "feat", "prior_box_param { min_size: 4 img_size: 16 }")
    net = build(text, {"feat": (1, 2, 3, 3)})
    net.forward(feat=rand(1, 2, 3, 3))
    assert np.abs(net.layer_outputs["pb"] - ref_priorbox((3, 3), None, [4], img_size=16)).max() < 1e-6
    with pytest.raises(ZfcaffeError, match="expected 2"):
        build(layer("pb", "PriorBox", "feat", "prior_box_param { min_size: 4 }"), {"feat": (1, 2, 3, 3)})


@pytest.mark.parametrize("params,message", [
    ("", "no min_size"),
    ("min_size: 4 max_size: 4", "expected max_size > min_size"),
    ("min_size: 4 min_size: 6 max_size: 8", "one max_size per min_size"),
    ("min_size: 4 variance: 0.1 variance: 0.2", "expected 1 or 4"),
    ("min_size: 4 variance: 0", "expected every value > 0"),
    ("min_size: 4 step: 2 step_h: 3 step_w: 3", "one of them"),
    ("min_size: 4 img_size: 20 img_h: 20", "one of them"),
    ("min_size: 4 img_h: 20", "expected both > 0"),
    ("min_size: 0", "min_size > 0"),
])
def test_priorbox_refuses(build, params, message):
    text = layer("pb", "PriorBox", ["feat", "data"], f"prior_box_param {{ {params} }}")
    with pytest.raises(ZfcaffeError, match=message):
        build(text, {"feat": (1, 2, 3, 3), "data": (1, 3, 12, 12)})


def test_open_size_export(build, tmp_path):
    """convert --dynamic: PriorBox computed from the bottoms' shapes keeps the image size open."""
    text = (layer("conv", "Convolution", "data", "convolution_param { num_output: 4 kernel_size: 3 stride: 2 "
                  "pad: 1 weight_filler { type: 'gaussian' std: 0.1 } }")
            + layer("pb", "PriorBox", ["conv", "data"], param_text("prior_box_param", PRIORS["lists_truncated"]))
            + layer("pb2", "PriorBox", ["conv", "data"], param_text("prior_box_param", PRIORS["dup_ratios_steps"]))
            + layer("norm", "Normalize", "conv", "norm_param { across_spatial: false channel_shared: false }")
            + layer("perm", "Permute", "norm", "permute_param { order: 0 order: 2 order: 3 order: 1 }"))
    net = build(text, {"data": (1, 3, 20, 30)})
    path = tmp_path / "open.onnx"
    assert net.to_onnx(str(path), dynamic=True) == ("batch", "spatial")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    x = rand(2, 3, 33, 17)
    want = net.forward(data=x)
    for name, got in zip(names, session.run(None, {"data": x})):
        assert got.shape == want[name].shape
        assert rel_err(got, want[name]) < 1e-6


# -- OpenCV, where it agrees with the fork (../shared/oracle_ssd/README.md) --------------------------
def opencv_run(build, text, inputs, blobs, key):
    cv2 = pytest.importorskip("cv2")
    proto, weights = build.write(text, {k: v.shape for k, v in inputs.items()}, blobs, name="cv")
    try:
        net = cv2.dnn.readNetFromCaffe(str(proto), str(weights) if weights else None)
        net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        net.enableFusion(False)
        for k, v in inputs.items():
            net.setInput(v, k)
        return net.forward(key)
    except cv2.error as e:
        pytest.skip(f"OpenCV refuses the net: {str(e).strip().splitlines()[-1]}")


@pytest.mark.parametrize("across,shared", [(True, True), (False, True), (False, False)])
def test_normalize_opencv(build, across, shared):
    """OpenCV has no across_spatial with a per-channel scale (it asserts)."""
    x = rand(2, 4, 5, 6)
    scale = np.abs(rand(1 if shared else 4)) + 0.5
    text = layer("norm", "Normalize", "data", param_text("norm_param", dict(
        across_spatial=across, channel_shared=shared, eps=1e-4)))
    blobs = {"norm": [scale]}
    theirs = opencv_run(build, text, {"data": x}, blobs, "norm")
    net = build(text, {"data": x.shape}, {"norm": [scale.reshape(() if shared else (-1,))]})
    net.forward(data=x)
    assert rel_err(net.layer_outputs["norm"], theirs) < 1e-5


def test_permute_opencv(build):
    """OpenCV refuses partial orders: the order written out in full."""
    x = rand(2, 3, 4, 5)
    text = layer("perm", "Permute", "data", "permute_param { order: 0 order: 3 order: 1 order: 2 }")
    theirs = opencv_run(build, text, {"data": x}, None, "perm")
    net = build(text, {"data": x.shape})
    net.forward(data=x)
    np.testing.assert_array_equal(net.layer_outputs["perm"], theirs)


@pytest.mark.parametrize("name", ["basic", "defaults", "flip_dup_offset1"])
def test_priorbox_opencv(build, name):
    """OpenCV agrees with integer sizes, an explicit clip and variance and no img_size (it does
    not truncate, clips by default, needs the variance and ignores img_size)."""
    p = dict(PRIORS[name], clip=False)
    p.setdefault("variance", [0.1])
    text = layer("pb", "PriorBox", ["feat", "data"], param_text("prior_box_param", p))
    feeds = {"feat": rand(1, 3, 5, 7), "data": rand(1, 3, 21, 30)}
    theirs = opencv_run(build, text, feeds, None, "pb")
    net = build(text, {k: v.shape for k, v in feeds.items()})
    net.forward(**feeds)
    assert np.abs(net.layer_outputs["pb"] - theirs.reshape(net.layer_outputs["pb"].shape)).max() < 1e-6


# -- the fork itself ---------------------------------------------------------------------------
def _check_case(shared, tmp_path, name, stop_before=None, allow_missing=False):
    case = fork_case(shared, "oracle_ssd", name)
    net = zfcaffe.Net(case["prototxt"], case["weights_path"], input_shapes=case["input_shapes"],
                      stop_before=stop_before, allow_missing_weights=allow_missing)
    net.forward(**case["inputs"])
    keys = [k for k in case["outputs"] if k != stop_before]
    assert keys
    errs = {k: rel_err(net.layer_outputs[k], case["outputs"][k]) for k in keys}
    worst = max(errs, key=errs.get)
    assert errs[worst] <= 1e-4, (worst, errs[worst])
    for k in keys:
        assert tuple(net.layer_shapes[k]) == case["shapes"][k], k
    onnx = onnx_rerun(net, tmp_path, case["inputs"])
    for k in keys:
        assert rel_err(onnx[k], case["outputs"][k]) <= 1e-4, k
    return net, errs


def test_oracle_ssd_layers_a(shared, tmp_path):
    """Normalize/Permute/Flatten/Concat, every layer; four Normalize layers are absent from the
    weights on purpose (their scale is their scale_filler, as Caffe keeps it)."""
    net, _ = _check_case(shared, tmp_path, "ssd_layers_a", allow_missing=True)
    assert float(net.params["norm_raw_default"][0].data) == 1.0
    assert float(net.params["norm_ps_cs"][0].data) == 20.0


def test_oracle_ssd_layers_b(shared, tmp_path):
    """PriorBox, every layer: truncated sizes, ratio duplicates, clip, variances, steps, img sizes."""
    _check_case(shared, tmp_path, "ssd_layers_b")


@pytest.mark.parametrize("name,detection", [("mobilenet_ssd_slim", "detection_out"),
                                            ("res10_face_slim", "detection_out"),
                                            ("wechat_detector", "detection_output")])
def test_oracle_ssd_nets(shared, tmp_path, name, detection):
    """The real-size SSD nets, every kept layer before the DetectionOutput."""
    _check_case(shared, tmp_path, name, stop_before=detection)


# -- census nets -------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["opencv_face_res10/deploy.prototxt", "mobilenet_ssd/MobileNetSSD_deploy.prototxt",
                                  "pelee_ssd/deploy_merged.prototxt", "ssd_vgg16_300/deploy.prototxt"])
def test_census_ssd(shared, tmp_path, path):
    """Loads (up to the DetectionOutput), runs with Caffe's fillers, exports and reruns equal."""
    net = zfcaffe.Net(str(shared / "census" / path), stop_before="detection_out")
    x = rand(*net.graph.inputs["data"])
    out = net.forward(data=x)
    assert {"mbox_loc", "mbox_conf_flatten", "mbox_priorbox"} <= set(out)
    got = onnx_rerun(net, tmp_path, {"data": x}, all_blobs=False)
    for k, v in out.items():
        assert rel_err(got[k], v) < 1e-4, k
