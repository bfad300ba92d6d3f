"""Two-stage detector layers: ROIPooling (Fast R-CNN), PSROIPooling (R-FCN), Dropout's
scale_train, and the built-in py-faster-rcnn proposal layer; the Fast R-CNN oracle
cases and the Faster R-CNN / R-FCN census nets."""
from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import fork_case, layer_text, rel_err

import zfcaffe
from zfcaffe import caffe_pb2
from zfcaffe.layers import PYTHON_BUILTINS
from zfcaffe.layers.rcnn import ProposalLayer, generate_anchors, nms
from zfcaffe.runtime.onnx_export import onnx_names

F32 = np.float32

# [batch, x1, y1, x2, y2]: interior, whole map, .5 roundings (positive and negative), degenerate
# (x2 < x1), partly and wholly outside, single pixel, fractional
ROIS = np.array([[0, 3, 4, 30, 25], [1, 0, 0, 47, 39], [0, 2.5, 5.5, 17.5, 9.5], [1, -0.5, -3, 12, 7.5],
                 [0, 20, 10, 8, 5], [1, 40, 30, 70, 60], [0, 60, 50, 90, 80], [1, 11, 13, 11, 13],
                 [0, 4.2, 7.7, 33.4, 18.6], [1, -20, -20, -3, -2]], F32)


def c_round(v) -> int:
    """C's round(): halves away from zero."""
    v = float(v)
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def roi_pool_ref(x, rois, pooled_h, pooled_w, scale):
    """rbgirshick/caffe-fast-rcnn@4115385d src/caffe/layers/roi_pooling_layer.cpp Forward_cpu,
    line by line (bins in float32 as in the source, values in float64)."""
    x = x.astype(np.float64)
    _, c, height, width = x.shape
    out = np.zeros((len(rois), c, pooled_h, pooled_w))
    sc = F32(scale)
    for n, r in enumerate(rois.astype(F32)):
        b = int(r[0])
        x1, y1, x2, y2 = (c_round(F32(r[k] * sc)) for k in range(1, 5))
        roi_h, roi_w = max(y2 - y1 + 1, 1), max(x2 - x1 + 1, 1)
        bin_h, bin_w = F32(roi_h) / F32(pooled_h), F32(roi_w) / F32(pooled_w)
        for ph in range(pooled_h):
            for pw in range(pooled_w):
                hs = min(max(int(math.floor(F32(ph) * bin_h)) + y1, 0), height)
                he = min(max(int(math.ceil(F32(ph + 1) * bin_h)) + y1, 0), height)
                ws = min(max(int(math.floor(F32(pw) * bin_w)) + x1, 0), width)
                we = min(max(int(math.ceil(F32(pw + 1) * bin_w)) + x1, 0), width)
                if he > hs and we > ws:
                    out[n, :, ph, pw] = x[b, :, hs:he, ws:we].max(axis=(1, 2))
    return out


def psroi_pool_ref(x, rois, output_dim, group, scale):
    """Microsoft/caffe@1a2be8ec src/caffe/layers/psroi_pooling_layer.cu PSROIPoolingForward:
    float32 box arithmetic, `p * bin + start` rounded once to float32 (nvcc's FMA), sums in float64."""
    x = x.astype(np.float64)
    _, _, height, width = x.shape
    out = np.zeros((len(rois), output_dim, group, group))
    sc = F32(scale)
    for n, r in enumerate(rois.astype(F32)):
        b = int(r[0])
        sw, sh = F32(c_round(r[1])) * sc, F32(c_round(r[2])) * sc
        ew, eh = F32(c_round(r[3]) + 1.0) * sc, F32(c_round(r[4]) + 1.0) * sc
        rw, rh = F32(max(float(ew - sw), 0.1)), F32(max(float(eh - sh), 0.1))
        bw, bh = rw / F32(group), rh / F32(group)

        def fma(p, bin_, start):
            return float(F32(p * float(bin_) + float(start)))
        for ph in range(group):
            for pw in range(group):
                hs = min(max(math.floor(fma(ph, bh, sh)), 0), height)
                he = min(max(math.ceil(fma(ph + 1, bh, sh)), 0), height)
                ws = min(max(math.floor(fma(pw, bw, sw)), 0), width)
                we = min(max(math.ceil(fma(pw + 1, bw, sw)), 0), width)
                if he <= hs or we <= ws:
                    continue
                for d in range(output_dim):
                    ch = (d * group + ph) * group + pw
                    out[n, d, ph, pw] = x[b, ch, hs:he, ws:we].sum() / ((he - hs) * (we - ws))
    return out


def run_opencv(proto_path, inputs: dict, outputs: list[str]):
    cv2 = pytest.importorskip("cv2")
    try:
        net = cv2.dnn.readNetFromCaffe(str(proto_path))
        for k, v in inputs.items():
            net.setInput(v, k)
        return net.forward(outputs)
    except cv2.error as err:
        pytest.skip(f"OpenCV refuses the net: {str(err).splitlines()[-1]}")


def onnx_alone(net, path, feeds):
    """The net's --all-blobs ONNX file run in ONNX Runtime on its own: {graph key: value}."""
    net.to_onnx(str(path), all_blobs=True)
    onnx.checker.check_model(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    inputs = {i.name for i in sess.get_inputs()}
    values = dict(zip(names, sess.run(None, {k: v for k, v in feeds.items() if k in inputs})))
    return {k: values[n] for k, n in ((k, onnx_names(net.graph).get(k, k)) for k in net.layer_outputs)
            if n in values}


# -- ROIPooling -------------------------------------------------------------------
@pytest.mark.parametrize("pooled,scale", [((3, 5), 1.0), ((2, 2), 0.125), ((4, 3), 0.0625), ((6, 6), 0.5)])
def test_roi_pooling_matches_the_fork(build, tmp_path, pooled, scale):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 20, 24)).astype(F32)
    x[0, 1] -= 5.0   # a channel of negative values only: empty bins 0, others the negative maximum
    text = layer_text("roi", "ROIPooling", ["data", "rois"],
                      f"roi_pooling_param {{ pooled_h: {pooled[0]} pooled_w: {pooled[1]} spatial_scale: {scale} }}")
    net = build(text, {"data": x.shape, "rois": ROIS.shape})
    assert net.layer_shapes["roi"] == (len(ROIS), 3, *pooled)
    net.forward(data=x, rois=ROIS)
    ref = roi_pool_ref(x, ROIS, *pooled, scale)
    np.testing.assert_array_equal(net.layer_outputs["roi"], ref.astype(F32))
    alone = onnx_alone(net, tmp_path / "roi.onnx", {"data": x, "rois": ROIS})
    np.testing.assert_array_equal(alone["roi"], ref.astype(F32))
    # other ROIs through the same net (the windows are data, not constants)
    rois2 = ROIS[::-1].copy() + F32([0, 1.5, -0.5, 2, 3])
    net.forward(data=x, rois=rois2)
    np.testing.assert_array_equal(net.layer_outputs["roi"], roi_pool_ref(x, rois2, *pooled, scale).astype(F32))


def test_roi_pooling_matches_opencv(build):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 4, 20, 24)).astype(F32)
    text = layer_text("roi", "ROIPooling", ["data", "rois"],
                      "roi_pooling_param { pooled_h: 3 pooled_w: 4 spatial_scale: 0.5 }")
    proto, _ = build.write(text, {"data": x.shape, "rois": ROIS.shape})
    net = zfcaffe.Net(str(proto))
    net.forward(data=x, rois=ROIS)
    (cv,) = run_opencv(proto, {"data": x, "rois": ROIS}, ["roi"])
    np.testing.assert_array_equal(net.layer_outputs["roi"], cv)


def test_roi_pooling_errors(build):
    with pytest.raises(zfcaffe.ZfcaffeError, match="pooled_h 0 and pooled_w 2: expected both > 0"):
        build(layer_text("roi", "ROIPooling", ["data", "rois"], "roi_pooling_param { pooled_w: 2 }"),
              {"data": (1, 2, 8, 8), "rois": (3, 5)})
    with pytest.raises(zfcaffe.ZfcaffeError, match="expected R x 5"):
        build(layer_text("roi", "ROIPooling", ["data", "rois"], "roi_pooling_param { pooled_h: 2 pooled_w: 2 }"),
              {"data": (1, 2, 8, 8), "rois": (3, 4)})


# -- PSROIPooling -----------------------------------------------------------------
@pytest.mark.parametrize("dim,group,scale", [(2, 3, 0.5), (3, 2, 1.0), (1, 7, 0.0625)])
def test_psroi_pooling_matches_the_fork(build, tmp_path, dim, group, scale):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, dim * group * group, 20, 24)).astype(F32)
    text = layer_text("ps", "PSROIPooling", ["data", "rois"],
                      f"psroi_pooling_param {{ spatial_scale: {scale} output_dim: {dim} group_size: {group} }}")
    rois = ROIS * F32([1, 4, 4, 4, 4]) if scale < 0.1 else ROIS
    net = build(text, {"data": x.shape, "rois": rois.shape})
    assert net.layer_shapes["ps"] == (len(rois), dim, group, group)
    net.forward(data=x, rois=rois)
    ref = psroi_pool_ref(x, rois, dim, group, scale)
    assert rel_err(net.layer_outputs["ps"], ref) <= 1e-6
    alone = onnx_alone(net, tmp_path / "ps.onnx", {"data": x, "rois": rois})
    assert rel_err(alone["ps"], ref) <= 1e-6


def test_psroi_pooling_matches_opencv(build):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 18, 20, 24)).astype(F32)
    text = layer_text("ps", "PSROIPooling", ["data", "rois"],
                      "psroi_pooling_param { spatial_scale: 0.5 output_dim: 2 group_size: 3 }")
    proto, _ = build.write(text, {"data": x.shape, "rois": ROIS.shape})
    net = zfcaffe.Net(str(proto))
    net.forward(data=x, rois=ROIS)
    (cv,) = run_opencv(proto, {"data": x, "rois": ROIS}, ["ps"])
    assert rel_err(net.layer_outputs["ps"], cv) <= 1e-6


def test_psroi_pooling_channel_check(build):
    with pytest.raises(zfcaffe.ZfcaffeError, match="expected output_dim \\* group_size\\^2 = 18"):
        build(layer_text("ps", "PSROIPooling", ["data", "rois"],
                         "psroi_pooling_param { spatial_scale: 0.5 output_dim: 2 group_size: 3 }"),
              {"data": (1, 16, 8, 8), "rois": (3, 5)})


# -- Dropout scale_train ----------------------------------------------------------
@pytest.mark.parametrize("param,factor", [("", 1.0), ("scale_train: true", 1.0), ("scale_train: false", 0.7)])
def test_dropout_scale_train(build, param, factor):
    x = np.random.default_rng(5).standard_normal((2, 6)).astype(F32)
    net = build(layer_text("drop", "Dropout", "data", f"dropout_param {{ dropout_ratio: 0.3 {param} }}"),
                {"data": x.shape})
    net.forward(data=x)
    # caffe-fast-rcnn: caffe_scal(count, 1. / scale_, top), scale_ = 1 / (1 - ratio), both float32
    expect = x * F32(1.0 / float(F32(1.0 / (1.0 - float(F32(0.3)))))) if factor != 1.0 else x
    np.testing.assert_array_equal(net.layer_outputs["drop"], expect)


# -- oracle cases -------------------------------------------------------------------
@pytest.mark.parametrize("name", ["fast_rcnn_zf", "roi_pooling_variants"])
def test_fast_rcnn_oracle(shared, tmp_path, name):
    case = fork_case(shared, "oracle_forks", name)
    net = zfcaffe.Net(case["prototxt"], case["weights_path"], input_shapes=case["input_shapes"])
    net.forward(**case["inputs"])
    assert {k: tuple(v) for k, v in net.layer_shapes.items() if k in case["shapes"]} == case["shapes"]
    ref = case["outputs"]
    for k in ref.files:
        assert rel_err(net.layer_outputs[k], ref[k]) <= 1e-4, k
    alone = onnx_alone(net, tmp_path / f"{name}.onnx", case["inputs"])
    for k in ref.files:
        assert rel_err(alone[k], ref[k]) <= 1e-4, k


@pytest.mark.parametrize("name", ["fast_rcnn_zf", "roi_pooling_variants"])
def test_fast_rcnn_oracle_layers_alone_are_exact(shared, build, name):
    """Each ROIPooling and Dropout of the case, fed the fork's own bottoms, gives its output bit for bit."""
    from google.protobuf import text_format
    case = fork_case(shared, "oracle_forks", name)
    ref, feeds = case["outputs"], case["inputs"]
    net = zfcaffe.Net(case["prototxt"], case["weights_path"], input_shapes=case["input_shapes"])
    checked = 0
    for layer in net.graph.layers:
        if layer.type not in ("ROIPooling", "Dropout"):
            continue
        lp = caffe_pb2.LayerParameter()
        lp.CopyFrom(layer.lp)
        names = [f"in{i}" for i in range(len(layer.bottoms))]
        lp.ClearField("bottom")
        lp.bottom.extend(names)
        lp.top[:] = ["out"]
        values = [ref[b] if b in ref.files else feeds[b] for b in layer.bottoms]
        one = build("layer { " + text_format.MessageToString(lp, as_one_line=True) + " }\n",
                    {n: v.shape for n, v in zip(names, values)}, name=layer.name)
        one.forward(**dict(zip(names, values)))
        np.testing.assert_array_equal(one.layer_outputs[layer.name], ref[layer.tops[0]], err_msg=layer.name)
        checked += 1
    assert checked == {"fast_rcnn_zf": 3, "roi_pooling_variants": 7}[name]


# -- the proposal layer ---------------------------------------------------------------
def proposal_lp(tops=("rois",), param_str="'feat_stride': 16"):
    lp = caffe_pb2.LayerParameter(name="proposal", type="Python", bottom=["cls", "bbox", "im_info"], top=list(tops))
    lp.python_param.module, lp.python_param.layer = "rpn.proposal_layer", "ProposalLayer"
    lp.python_param.param_str = param_str
    return lp


def cpu_nms_ref(dets, thresh):
    """py-faster-rcnn lib/nms/cpu_nms.pyx as written: scalar float32 loops."""
    x1, y1, x2, y2, scores = (dets[:, k] for k in range(5))
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    suppressed = np.zeros(len(dets), bool)
    keep = []
    for _i in range(len(dets)):
        i = order[_i]
        if suppressed[i]:
            continue
        keep.append(int(i))
        for _j in range(_i + 1, len(dets)):
            j = order[_j]
            if suppressed[j]:
                continue
            w = max(F32(0), F32(min(x2[i], x2[j]) - max(x1[i], x1[j]) + F32(1)))
            h = max(F32(0), F32(min(y2[i], y2[j]) - max(y1[i], y1[j]) + F32(1)))
            inter = F32(w * h)
            ovr = F32(inter / F32(F32(areas[i] + areas[j]) - inter))
            if float(ovr) >= thresh:
                suppressed[j] = True
    return keep


def test_anchors_are_py_faster_rcnns():
    # generate_anchors.py's own output (python generate_anchors.py), not the Matlab values in its comment
    np.testing.assert_array_equal(generate_anchors(), [
        [-84, -40, 99, 55], [-176, -88, 191, 103], [-360, -184, 375, 199],
        [-56, -56, 71, 71], [-120, -120, 135, 135], [-248, -248, 263, 263],
        [-36, -80, 51, 95], [-80, -168, 95, 183], [-168, -344, 183, 359]])


def test_nms_is_cpu_nms():
    rng = np.random.default_rng(6)
    xy = rng.uniform(0, 60, (250, 2)).astype(F32)
    wh = rng.uniform(4, 40, (250, 2)).astype(F32)
    dets = np.hstack([xy, xy + wh, rng.random((250, 1)).astype(F32)]).astype(F32)
    for thresh in (0.3, 0.7):
        assert nms(dets, thresh) == cpu_nms_ref(dets, thresh)
        assert nms(dets, thresh, 20) == cpu_nms_ref(dets, thresh)[:20]
    # overlap 70/100 is 0.699999988 in float32: below 0.7 in double, so the box stays (cpu_nms compares in double)
    tie = np.array([[0, 0, 9, 9, 0.9], [0, 0, 9, 6, 0.8]], F32)
    assert nms(tie, 0.7) == [0, 1] == cpu_nms_ref(tie, 0.7)


def proposal_ref(cls_prob, deltas, im_info, feat_stride=16, pre=6000, post=300, thresh=0.7, min_size=16):
    """py-faster-rcnn lib/rpn/proposal_layer.py forward (TEST config), step by step with
    scalar loops where the layer is vectorised."""
    anchors0 = generate_anchors()
    a = len(anchors0)
    _, _, height, width = cls_prob.shape
    rows = []
    for y in range(height):
        for x in range(width):
            for k in range(a):
                anchor = anchors0[k] + [x * feat_stride, y * feat_stride] * 2
                d = deltas[0, 4 * k:4 * k + 4, y, x]
                w, h = F32(anchor[2] - anchor[0] + 1.0), F32(anchor[3] - anchor[1] + 1.0)
                cx, cy = F32(F32(anchor[0]) + F32(0.5) * w), F32(F32(anchor[1]) + F32(0.5) * h)
                pcx, pcy = F32(d[0] * w + cx), F32(d[1] * h + cy)
                # the float exponential correctly rounded (libm's expf; NumPy's SIMD float32 exp varies by CPU)
                pw, ph = F32(F32(math.exp(d[2])) * w), F32(F32(math.exp(d[3])) * h)
                box = [pcx - F32(0.5) * pw, pcy - F32(0.5) * ph, pcx + F32(0.5) * pw, pcy + F32(0.5) * ph]
                lim = [im_info[0, 1] - 1, im_info[0, 0] - 1] * 2
                box = [max(min(v, l), F32(0)) for v, l in zip(box, lim)]
                rows.append(box + [cls_prob[0, a + k, y, x]])
    props = np.array(rows, F32)
    ws, hs = props[:, 2] - props[:, 0] + 1, props[:, 3] - props[:, 1] + 1
    floor = min_size * im_info[0, 2]
    props = props[(ws >= floor) & (hs >= floor)]
    order = props[:, 4].argsort()[::-1][:pre]
    props = props[order]
    keep = cpu_nms_ref(props, thresh)[:post]
    return np.hstack([np.zeros((len(keep), 1), F32), props[keep, :4]]), props[keep, 4:]


def test_proposal_layer_is_py_faster_rcnns():
    assert PYTHON_BUILTINS[("rpn.proposal_layer", "ProposalLayer")] is ProposalLayer
    rng = np.random.default_rng(7)
    h, w = 6, 7
    logits = rng.standard_normal((1, 2, 9, h, w)).astype(F32)
    prob = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).reshape(1, 18, h, w).astype(F32)
    deltas = (rng.standard_normal((1, 36, h, w)) * 0.3).astype(F32)
    im_info = np.array([[100, 115, 0.8]], F32)
    layer = ProposalLayer(proposal_lp(("rois", "scores")))
    assert layer.output_shapes([(1, 18, h, w), (1, 36, h, w), (1, 3)]) == [(1, 5), (1, 1, 1, 1)]
    rois, scores = layer.forward([prob, deltas, im_info])
    ref_rois, ref_scores = proposal_ref(prob, deltas, im_info)
    np.testing.assert_array_equal(rois, ref_rois)
    np.testing.assert_array_equal(scores, ref_scores)
    assert 0 < len(rois) <= 300 and rois.dtype == F32
    assert (rois[:, 0] == 0).all() and (rois[:, 3] <= 114).all() and (rois[:, 4] <= 99).all()


def test_proposal_layer_refuses():
    with pytest.raises(zfcaffe.ZfcaffeError, match="expected a YAML mapping with 'feat_stride'"):
        ProposalLayer(proposal_lp(param_str="'scales': [8]"))
    layer = ProposalLayer(proposal_lp())
    with pytest.raises(zfcaffe.ZfcaffeError, match="expected 1 x 18 x H x W scores"):
        layer.output_shapes([(1, 16, 4, 4), (1, 36, 4, 4), (1, 3)])


PROPOSAL_NET = ('layer { name: "proposal" type: "Python" bottom: "cls" bottom: "bbox" bottom: "im_info" '
                'top: "rois" top: "scores" python_param { module: "rpn.proposal_layer" layer: "ProposalLayer" '
                'param_str: "\'feat_stride\': 16" } }\n')


def proposal_inputs(rng, h, w, spread=0.3):
    """Softmax scores (continuous: no ties), deltas, im_info of a map of h x w."""
    logits = rng.standard_normal((1, 2, 9, h, w)).astype(F32)
    prob = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).reshape(1, 18, h, w).astype(F32)
    return prob, (rng.standard_normal((1, 36, h, w)) * spread).astype(F32)


@pytest.mark.parametrize("h,w,im,phase", [
    (6, 7, (100, 115, 0.8), "TEST"),          # the test above's case: NMS leaves fewer than 300
    (28, 26, (440, 410, 1.0), "TEST"),        # 6,552 anchors: the pre-NMS cut (6,000) and the 300 after NMS
    (28, 26, (440, 410, 1.0), "TRAIN"),       # 12,000 / 2,000
    (9, 11, (150, 170, 2.5), "TEST"),         # min size 40: most boxes filtered
    (5, 6, (80, 96, 100.0), "TEST"),          # min size 1,600: none left (0 rows)
])
def test_proposal_layer_exports_exactly(build, tmp_path, h, w, im, phase):
    prob, deltas = proposal_inputs(np.random.default_rng(h * w), h, w)
    im_info = np.array([im], F32)
    proto, weights = build.write(PROPOSAL_NET, {"cls": prob.shape, "bbox": deltas.shape, "im_info": (1, 3)})
    net = zfcaffe.Net(str(proto), phase=phase)
    feeds = {"cls": prob, "bbox": deltas, "im_info": im_info}
    out = net.forward(**feeds)
    alone = onnx_alone(net, tmp_path / "proposal.onnx", feeds)
    assert net.export_cut == []
    pre, post = ProposalLayer.CONFIG[phase][:2]
    assert len(out["rois"]) <= post and (len(out["rois"]) > 0) == (im[2] < 50)
    if h * w * 9 > pre:
        assert len(out["rois"]) == post
    # the same rows, in the same order, to the bit
    np.testing.assert_array_equal(alone[net.graph.blob_of["rois"]], out["rois"])
    np.testing.assert_array_equal(alone[net.graph.blob_of["scores"]], out["scores"])
    # a file written before any forward pass leaves the row count open
    sess = ort.InferenceSession(str(tmp_path / "proposal.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_outputs()[0].shape[0] == "rois_0"


def test_proposal_export_drops_at_equal_overlap(build, tmp_path, monkeypatch):
    """cpu_nms drops a box whose overlap equals the threshold (>=; ONNX NonMaxSuppression
    would keep it): the exported NMS loop, in cpu_nms's arithmetic, drops it too."""
    rng = np.random.default_rng(4)
    prob, deltas = proposal_inputs(rng, 1, 2)
    deltas[:] = 0                                      # proposals = anchors (clipped)
    # anchor 3 (128 x 128 at (-56, -56)) at x = 0 and x = 16, decoded (centre +- 64) and clipped
    prob[0, 9 + 3] = [0.99, 0.98]
    a, b = np.array([0, 0, 72, 72], F32), np.array([0, 0, 88, 72], F32)
    ovr = F32(73 * 73) / F32(F32(73 * 73) + F32(89 * 73) - F32(73 * 73))
    thresh = float(ovr)                                # exactly the overlap of the two best boxes
    monkeypatch.setattr(ProposalLayer, "CONFIG", {"TEST": (6000, 300, thresh, 16)})
    assert nms(np.array([[*a, 0.99], [*b, 0.98]], F32), thresh) == [0]
    im_info = np.array([[300, 300, 0.1]], F32)
    proto, _ = build.write(PROPOSAL_NET, {"cls": prob.shape, "bbox": deltas.shape, "im_info": (1, 3)})
    net = zfcaffe.Net(str(proto))
    feeds = {"cls": prob, "bbox": deltas, "im_info": im_info}
    rois = net.forward(**feeds)["rois"]
    np.testing.assert_array_equal(rois[0, 1:], a)
    assert not (rois[:, 1:] == b).all(axis=1).any()   # dropped at equality
    alone = onnx_alone(net, tmp_path / "proposal.onnx", feeds)
    np.testing.assert_array_equal(alone[net.graph.blob_of["rois"]], rois)


# -- census nets ------------------------------------------------------------------------
CENSUS = {"faster_rcnn_vgg16": ("test.prototxt", ["rpn_cls_prob_reshape", "rpn_bbox_pred", "conv5_3"]),
          "rfcn_resnet50": ("test_agnostic.prototxt", ["rpn_cls_prob_reshape", "rpn_bbox_pred", "res5c"])}


@pytest.mark.parametrize("name", sorted(CENSUS))
def test_census_net(shared, tmp_path, name):
    fname, keys = CENSUS[name]
    path = shared / "census" / name / fname
    s = 128
    net = zfcaffe.Net(str(path), input_shapes={"data": (1, 3, s, s), "im_info": (1, 3)})
    x = np.random.default_rng(8).standard_normal((1, 3, s, s)).astype(F32) * 50
    im_info = np.array([[s, s, 1]], F32)
    out = net.forward(data=x, im_info=im_info)
    rois = net.blobs["rois"].data
    assert rois.ndim == 2 and rois.shape[1] == 5 and 1 <= len(rois) <= 300
    assert out["cls_prob"].shape == (len(rois), 21)
    np.testing.assert_allclose(out["cls_prob"].sum(axis=1), 1, rtol=1e-5)
    alone = onnx_alone(net, tmp_path / f"{name}.onnx", {"data": x, "im_info": im_info})
    assert net.export_cut == []   # the whole net: the proposals in standard ops, then (PS)ROI pooling
    for k in keys:
        assert rel_err(alone[k], net.layer_outputs[k]) <= 1e-5, k
    rois = net.graph.blob_of["rois"]
    assert alone[rois].shape[1] == 5
    # filler weights tie every score (0.5): ONNX's TopK / NonMaxSuppression may order ties otherwise,
    # so what follows the proposals is compared only where the two chose the same ROIs
    if alone[rois].shape == net.layer_outputs[rois].shape and (alone[rois] == net.layer_outputs[rois]).all():
        for k, v in alone.items():
            assert v.shape == net.layer_outputs[k].shape and rel_err(v, net.layer_outputs[k]) <= 1e-5, k
    # the file holds for any number of ROIs (the ROIs' axis is open downstream)
    sess = ort.InferenceSession(str(tmp_path / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    assert {o.name: o.shape[0] for o in sess.get_outputs()}["cls_prob"] == "cls_prob_0"
