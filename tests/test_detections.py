"""Detections traced to their units (zfcaffe.analyses.detections): the WeChat QR detector
with its real weights on QR codes drawn here, the SSD fork's own rows, a Fast R-CNN ROI,
a YOLOv3 cell and an R-FCN ROI (filler weights), each unit's value checked against the
score it made."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import fork_case

import zfcaffe
from zfcaffe.analyses import detections as D
from zfcaffe.viz.detection_figures import boxes_figure, trace_figure

F32 = np.float32


def softmax(v):
    e = np.exp(np.asarray(v, np.float64) - np.max(v))
    return e / e.sum()


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-np.float64(v)))


def iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return iw * ih / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih)


# -- the WeChat QR detector, real weights, on codes made with segno -------------------------

def qr_scene(codes, size=(640, 480), seed=0):
    """A gray photo-like scene (noisy gradient) with QR codes: codes = [(text, x, y, module
    pixels)], each with its 4-module quiet zone at (x, y). Returns the image (H, W) uint8
    and each code's module area (x0, y0, x1, y1) in its pixels."""
    import segno
    w, h = size
    rng = np.random.default_rng(seed)
    img = np.linspace(150, 200, w)[None, :] + np.linspace(-15, 15, h)[:, None] + rng.normal(0, 6, (h, w))
    areas = []
    for text, x, y, m in codes:
        mat = np.array(segno.make(text, error="m").matrix, bool)
        code = np.pad(np.where(mat, 0.0, 255.0), 4, constant_values=255.0)
        code = code.repeat(m, axis=0).repeat(m, axis=1)
        img[y:y + code.shape[0], x:x + code.shape[1]] = code
        areas.append((x + 4 * m, y + 4 * m, x + code.shape[1] - 4 * m, y + code.shape[0] - 4 * m))
    return np.clip(img, 0, 255).astype(np.uint8), areas


def wechat_input(img):
    """../shared/oracle_ssd/README.md's wechat_detector row: gray, resized (bicubic) so that
    w * h is about 400², x 1/255. Returns (1, 1, h', w') and the resize factors (fx, fy)."""
    from PIL import Image
    h, w = img.shape
    r = np.sqrt(w * h / 400.0 ** 2)
    nw, nh = int(w / r), int(h / r)
    small = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BICUBIC), F32)
    return (small / 255.0)[None, None], (nw / w, nh / h)


@pytest.fixture(scope="module")
def wechat(shared):
    d = shared / "census/wechat_qrcode"
    return zfcaffe.Net(str(d / "detect.prototxt"), str(d / "detect.caffemodel"), input_shapes={"data": (1, 1, 346, 461)})


def test_wechat_boxes_land_on_the_codes(wechat):
    img, areas = qr_scene([("https://example.org/zfcaffe/one", 40, 60, 6), ("SECOND 0123456789", 420, 250, 4)])
    x, (fx, fy) = wechat_input(img)
    wechat.forward(data=x)
    head = D.detector_head(wechat)
    assert (head.kind, head.classes, head.background) == ("ssd", 2, 0)
    dets = D.detections(wechat, 0.5, labels="qrcode")
    assert len(dets) == 2 and all(d.name == "qrcode" and d.label == 1 for d in dets)
    assert [d.index for d in dets] == [0, 1] and dets[0].score >= dets[1].score
    for area in areas:
        want = (area[0] * fx, area[1] * fy, area[2] * fx, area[3] * fy)
        assert max(iou(d.box, want) for d in dets) > 0.8, (want, [d.box for d in dets])
    assert D.detections(wechat, 0.5)[0].name == "object"          # no --labels: class 1 is "object"
    png = boxes_figure(x[0, 0], dets, "WeChat QR detector")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_wechat_trace_unit_score_and_gradcam(wechat):
    img, (area,) = qr_scene([("https://example.org/zfcaffe/trace", 300, 120, 6)], seed=1)
    x, (fx, fy) = wechat_input(img)
    wechat.forward(data=x)
    det = D.detections(wechat, 0.5)[0]
    u = det.unit
    # the unit is the class-1 logit of the detection's prior in a head conv (before Permute/Flatten/Softmax)
    assert wechat.layer(u.layer).type == "Convolution"
    assert u.key.startswith("cls") and u.key.endswith("/conv") and len(u.index) == 4
    assert u.value == float(wechat.layer_outputs[u.key][u.index])
    # the prior's logits (its two classes, walked back the same way): their softmax is the score
    conf = D.detector_head(wechat).score_inputs[0]
    flat = det.extra["prior"] * 2
    logits = [wechat.layer_outputs[k].reshape(-1)[i] for k, i in
              (D.walk_back(wechat, conf, flat + c) for c in range(2))]
    assert logits[1] == u.value
    assert softmax(logits)[1] == pytest.approx(det.score, rel=1e-5)
    assert D.detection_scores(wechat, det, {conf: wechat.layer_outputs[conf]})[0] == pytest.approx(det.score)
    want = (area[0] * fx, area[1] * fy, area[2] * fx, area[3] * fy)
    assert iou(det.box, want) > 0.8
    tr = D.explain_detection(wechat, x, det)
    assert tr.cam_layer == wechat.layer(u.layer).bottoms[0]
    assert set(tr.projections) == {"deconvnet", "guided"}
    for p in tr.projections.values():
        assert p.shape == x.shape[1:] and np.abs(p).max() > 0
    # Grad-CAM of the logit at the head conv's input (stage5_4/relu, 11 x 15): measured 0.79 of its
    # mass inside the box (one code on a noisy background; the rest is the bilinear blur of the coarse
    # map around it). Bound: 0.7
    assert tr.mass_in_box >= 0.7, tr.mass_in_box
    x0, y0, x1, y1 = tr.neighbourhood
    assert x0 <= det.box[0] and y0 <= det.box[1] and x1 >= det.box[2] and y1 >= det.box[3]
    a = tr.arrays()
    assert tuple(a["unit_index"]) == u.index and int(a["extra/prior"]) == det.extra["prior"]
    assert a["gradcam"].shape == x.shape[2:] and a["projection/guided"].shape == x.shape[1:]
    assert trace_figure(x[0, 0], tr)[:4] == b"\x89PNG"


# -- the SSD fork's own rows ----------------------------------------------------------------

def test_mobilenet_ssd_detections_are_the_fork_rows(shared):
    case = fork_case(shared, "oracle_ssd", "mobilenet_ssd_slim")
    net = zfcaffe.Net(case["prototxt"], case["weights_path"], input_shapes=case["input_shapes"])
    net.forward(**case["inputs"])
    ref = case["outputs"]["detection_out"].reshape(-1, 7)
    dets = D.detections(net, 0.0)
    assert len(dets) == len(ref)
    got = np.array([[d.item, d.label, d.score, *(np.array(d.box) / 300)] for d in dets])
    key = lambda r: np.lexsort((r[:, 3], r[:, 2], r[:, 1]))   # noqa: E731
    np.testing.assert_allclose(got[key(got)], ref[key(ref)], atol=1e-4)
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
    assert dets[0].name == "sofa"                              # 21 classes: PASCAL VOC names
    for d in dets[:5]:
        assert d.unit.layer.endswith("_mbox_conf") and d.unit.index[1] % 21 == d.label
        logits = [net.layer_outputs[k].reshape(-1)[i] for k, i in
                  (D.walk_back(net, "mbox_conf_flatten", d.extra["prior"] * 21 + c) for c in range(21))]
        assert logits[d.label] == d.unit.value
        assert softmax(logits)[d.label] == pytest.approx(d.score, rel=1e-5)


# -- Fast R-CNN: the ROI row's class score ---------------------------------------------------

def test_fast_rcnn_roi_trace(shared):
    case = fork_case(shared, "oracle_forks", "fast_rcnn_zf")
    net = zfcaffe.Net(case["prototxt"], case["weights_path"], input_shapes=case["input_shapes"])
    net.forward(**case["inputs"])
    head = D.detector_head(net)
    assert (head.kind, head.logits, head.rois, head.bbox) == ("rcnn", "cls_score", "rois", "bbox_pred")
    dets = D.detections(net, 0.05)
    assert dets
    h, w = case["input_shapes"]["data"][2:]
    for d in dets:
        r, c = d.extra["roi"], d.extra["class"]
        assert d.unit.index == (r, c) and d.unit.value == float(net.layer_outputs["cls_score"][r, c])
        assert softmax(net.layer_outputs["cls_score"][r])[c] == pytest.approx(d.score, rel=1e-5)
        assert 0 <= d.box[0] <= d.box[2] <= w - 1 and 0 <= d.box[1] <= d.box[3] <= h - 1
    # per class, no two kept boxes overlap as much as demo.py's NMS 0.3 (cpu_nms: areas with the + 1)
    for a in dets:
        for b in dets:
            if a.index < b.index and a.label == b.label:
                pa, pb = np.array(a.box) + [0, 0, 1, 1], np.array(b.box) + [0, 0, 1, 1]
                assert iou(pa, pb) < 0.3
    d = dets[0]
    assert D.detection_scores(net, d, {"cls_prob": net.layer_outputs["cls_prob"]})[0] == pytest.approx(d.score)
    tr = D.explain_detection(net, None, d, modes=("deconvnet",))
    assert tr.cam_layer == net.layer("roi_pool_conv5").bottoms[0]
    assert np.abs(tr.projections["deconvnet"]).max() > 0 and tr.gradcam.shape == (h, w)



def test_faster_rcnn_end2end_with_its_proposal_layer(shared):
    """py-faster-rcnn's ZF end2end test net (its Python proposal layer run as the built-in):
    detections come from the proposals' ROI rows, each traced to cls_score[r, c], and the
    trace's Grad-CAM is taken at the map under the ROI pooling (conv5)."""
    net = zfcaffe.Net(str(shared / "models/zf_faster_rcnn/faster_rcnn_end2end_test.prototxt"),
                      allow_missing_weights=True)
    _randomise(net)
    x = np.random.default_rng(0).normal(0, 50, (1, 3, 224, 224)).astype(F32)
    net.forward(data=x, im_info=np.array([[224, 224, 1]], F32))
    head = D.detector_head(net)
    assert (head.kind, net.graph.name_of(head.rois)) == ("rcnn", "rois") and net.layer_outputs[head.rois].shape[0] > 1
    dets = D.detections(net, 0.0)
    assert dets and [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
    d = dets[0]
    r, c = d.extra["roi"], d.extra["class"]
    assert d.unit.index == (r, c) and d.name == D.detection_labels(net, head, None)(c)
    assert softmax(net.layer_outputs["cls_score"][r])[c] == pytest.approx(d.score, rel=1e-5)
    tr = D.explain_detection(net, None, d, modes=("guided",))
    assert tr.cam_layer == net.layer("roi_pool_conv5").bottoms[0] and tr.gradcam.shape == (224, 224)
    assert np.abs(tr.projections["guided"]).max() > 0


# -- YOLOv3 and R-FCN with filler weights -----------------------------------------------------

def _randomise(net, seed=5):
    """He-scaled random weights (Caffe's default fillers are zero); BatchNorm statistics of a
    unit normal; the RPN's box deltas 0 (the proposals are the anchors, clipped)."""
    rng = np.random.default_rng(seed)
    for name, params in net.params.items():
        layer = net.layer(name)
        if name == "rpn_bbox_pred":
            for p in params:
                p.data = np.zeros(p.data.shape, F32)
        elif layer.type in ("Convolution", "Deconvolution", "InnerProduct", "DepthwiseConvolution"):
            w = params[0].data
            params[0].data = (rng.standard_normal(w.shape) * np.sqrt(2.0 / (int(np.prod(w.shape[1:])) or 1))).astype(F32)
        elif layer.type == "BatchNorm":
            params[1].data = np.ones(params[1].data.shape, F32)
            params[2].data = np.ones(params[2].data.shape, F32)


def test_yolov3_cell_and_anchor_trace(shared):
    path = shared / "census/mobilenet_yolov3_lite/mobilenet_yolov3_lite_deploy.prototxt"
    net = zfcaffe.Net(str(path), input_shapes={"data": (1, 3, 64, 64)})
    _randomise(net)
    x = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(F32)
    net.forward(data=x)
    head = D.detector_head(net)
    assert head.kind == "yolo" and head.classes == 20
    dets = D.detections(net, 0.1)
    assert dets
    layer = net.layer(head.layer)
    for d in dets[:10]:
        e, u = d.extra, d.unit
        v = net.layer_outputs[head.score_inputs[e["scale"]]][0]
        assert u.key == head.score_inputs[e["scale"]] and u.index == (0, e["anchor"] * 25 + 5 + e["class"], e["y"],
                                                                       e["x"])
        assert d.label == e["class"] + 1 and u.value == float(v[u.index[1:]])
        # the score: sigmoid(objectness) x sigmoid(class logit), the unit's value before its sigmoid
        assert sigmoid(v[e["objectness_channel"], e["y"], e["x"]]) * sigmoid(u.value) == pytest.approx(d.score,
                                                                                                      rel=1e-5)
        assert d.score > layer.confidence_threshold
    d = dets[0]
    vals = {k: net.layer_outputs[k] for k in D.score_keys(net, d)}
    assert D.detection_scores(net, d, vals)[0] == pytest.approx(d.score, rel=1e-6)
    p = net.project_many(d.unit.key, [d.unit.index], "guided")[0]
    assert np.abs(p).max() > 0


def test_yolov2_cell_and_anchor_trace(shared, tmp_path):
    """YOLOv2 (a softmax over the classes): the class logit's unit; filler weights pass no box at
    the file's confidence threshold 0.3, so it is lowered."""
    text = (shared / "census/yolov2_darknet19_eric612/darknet19_deploy.prototxt").read_text()
    proto = tmp_path / "darknet19.prototxt"
    proto.write_text(text.replace("confidence_threshold: 0.3", "confidence_threshold: 0.01"))
    net = zfcaffe.Net(str(proto), input_shapes={"data": (1, 3, 32, 32)})
    _randomise(net)
    net.forward(data=np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(F32))
    head = D.detector_head(net)
    dets = D.detections(net, 0.0)
    assert head.kind == "yolo" and dets
    for d in dets:
        e, u = d.extra, d.unit
        v = net.layer_outputs[u.key][0, :, e["y"], e["x"]]
        depth = v.shape[0] // net.layer(head.layer).num_box
        logits = v[e["anchor"] * depth + 5:e["anchor"] * depth + 25]
        assert u.index[1] == e["anchor"] * depth + 5 + e["class"] and u.value == float(logits[e["class"]])
        assert np.argmax(logits) == e["class"]
        assert sigmoid(v[e["objectness_channel"]]) * softmax(logits)[e["class"]] == pytest.approx(d.score, rel=1e-5)
        vals = {k: net.layer_outputs[k] for k in D.score_keys(net, d)}
        assert D.detection_scores(net, d, vals)[0] == pytest.approx(d.score, rel=1e-5)


def test_rfcn_roi_trace(shared, tmp_path):
    # fc-free, but ResNet-50 at 64 x 64 keeps the test short
    path = shared / "census/rfcn_resnet50/test_agnostic.prototxt"
    s = 64
    net = zfcaffe.Net(str(path), input_shapes={"data": (1, 3, s, s), "im_info": (1, 3)})
    _randomise(net)
    net.forward(data=np.random.default_rng(1).standard_normal((1, 3, s, s)).astype(F32) * 50,
                im_info=np.array([[s, s, 1]], F32))
    head = D.detector_head(net)
    assert head.kind == "rfcn" and head.agnostic and head.classes == 21
    dets = D.detections(net, 0.0)
    assert dets
    d = dets[0]
    r, c = d.extra["roi"], d.extra["class"]
    logits = net.layer_outputs[head.logits].reshape(-1, 21)
    assert d.unit.index == (r, c, 0, 0) and d.unit.value == float(logits[r, c])
    assert softmax(logits[r])[c] == pytest.approx(d.score, rel=1e-5)
    assert D.detection_scores(net, d, {k: net.layer_outputs[k] for k in D.score_keys(net, d)})[0] == \
        pytest.approx(d.score)
    p = net.project_many(d.unit.key, [d.unit.index], "deconvnet")[0]
    assert p.shape == (3, s, s) and np.abs(p).max() > 0


def test_no_detector(build):
    from conftest import layer_text
    net = build(layer_text("ip", "InnerProduct", "data", "inner_product_param { num_output: 3 }"),
                {"data": (1, 4)}, {"ip": [np.ones((3, 4)), np.zeros(3)]})
    assert D.detector_head(net) is None
    net.forward(data=np.ones((1, 4), F32))
    with pytest.raises(zfcaffe.ZfcaffeError, match="no detection output"):
        D.detections(net)


def test_figures_draw_boxes_far_outside_the_image():
    """Filler weights decode boxes millions of pixels wide, or of zero width: the figures
    clip them and the neighbourhood keeps at least 16 pixels each way."""
    unit = D.Unit("conv", "conv", (0, 1, 2, 3), 0.5, "unit")
    huge = D.Detection(0, 0, 1, "object", 0.9, (-3e6, 5.0, 4e6, float("nan")), "out", unit, {})
    flat = D.Detection(1, 0, 1, "object", 0.8, (40.0, 30.0, 40.0, 30.0), "out", unit, {})
    image = np.zeros((64, 48, 3), np.float32)
    assert boxes_figure(image, [huge, flat], "t")[:4] == b"\x89PNG"
    near = D.neighbourhood(flat.box, 0.5, 64, 48)
    assert near[2] - near[0] >= 16 and near[3] - near[1] >= 16 and near[2] <= 48 and near[3] <= 64
    x0, y0, x1, y1 = D.neighbourhood(huge.box, 0.5, 64, 48)
    assert (x0, x1) == (0, 48) and 0 <= y0 and y1 <= 64 and y1 - y0 >= 16
    heat = np.zeros((64, 48))
    trace = D.DetectionTrace(flat, unit, {"deconvnet": np.zeros((3, 64, 48), np.float32)}, heat, heat, "conv",
                             near, 0.0, {})
    assert trace_figure(image, trace)[:4] == b"\x89PNG"
