"""The SSD fork's DetectionOutput (weiliu89/caffe@4817bf8b, branch ssd): against a float64
transcription of the fork's Forward_cpu on small random inputs, against OpenCV where OpenCV
agrees with the fork, against the fork itself (../shared/oracle_ssd: every DetectionOutput fed
the oracle's own bottoms, and the nets end to end), the exported ONNX file rerun alone, GCC's
std::sort for tied scores, and the census SSD nets."""
from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
import onnxruntime as ort
import pytest

import zfcaffe
from conftest import fork_case, layer_text as layer
from zfcaffe.errors import ZfcaffeError
from zfcaffe.stdsort import std_sort_order

FLT_MAX = float(np.finfo(np.float32).max)
F32 = lambda v: float(np.float32(v))   # noqa: E731  (the fork's float parameters)


# -- a float64 transcription of the fork's Forward_cpu -------------------------------------------
def ref_detection_output(p: dict, loc, conf, prior):
    """detection_output_layer.cpp Forward_cpu with bbox_util.cpp's GetLocPredictions,
    GetConfidenceScores, GetPriorBBoxes, DecodeBBox, GetMaxScoreIndex (std::stable_sort),
    ApplyNMSFast, JaccardOverlap and BBoxSize, loop by loop, in float64; keep_top_k's
    std::sort is std_sort_order (held to g++ below)."""
    C = p["num_classes"]
    share = p.get("share_location", True)
    L = 1 if share else C
    bg = p.get("background_label_id", 0)
    code = p.get("code_type", "CORNER")
    vet = p.get("variance_encoded_in_target", False)
    keep_top_k = p.get("keep_top_k", -1)
    conf_t = F32(p.get("confidence_threshold", -FLT_MAX))
    nms, top_k, eta = F32(p.get("nms_threshold", 0.3)), p.get("top_k", -1), F32(p.get("eta", 1.0))
    N, P = loc.shape[0], prior.shape[2] // 4
    pr = prior.reshape(-1).astype(np.float64)
    pb, pv = pr[:P * 4].reshape(P, 4), pr[P * 4:2 * P * 4].reshape(P, 4)
    lc = loc.reshape(N, P, L, 4).astype(np.float64)
    cf = conf.reshape(N, P, C).astype(np.float64)

    def decode(b, v, l):
        out = _decode(b, v, l)
        # OpenCV's `clip` field: ClipBBox after decoding (the size from the clipped box)
        return [min(max(c, 0.0), 1.0) for c in out] if p.get("clip") else out

    def _decode(b, v, l):
        v = [1.0] * 4 if vet else v
        if code == "CORNER":
            return [b[i] + v[i] * l[i] for i in range(4)]
        pw, ph = b[2] - b[0], b[3] - b[1]
        assert pw > 0 and ph > 0
        if code == "CENTER_SIZE":
            cx, cy = v[0] * l[0] * pw + (b[0] + b[2]) / 2, v[1] * l[1] * ph + (b[1] + b[3]) / 2
            w, h = math.exp(v[2] * l[2]) * pw, math.exp(v[3] * l[3]) * ph
            return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
        return [b[0] + v[0] * l[0] * pw, b[1] + v[1] * l[1] * ph, b[2] + v[2] * l[2] * pw, b[3] + v[3] * l[3] * ph]

    def size(b):
        return 0.0 if b[2] < b[0] or b[3] < b[1] else (b[2] - b[0]) * (b[3] - b[1])

    def jaccard(a, b):
        if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
            return 0.0
        iw, ih = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
        if iw > 0 and ih > 0:
            return iw * ih / (size(a) + size(b) - iw * ih)
        return 0.0

    rows = []
    for i in range(N):
        boxes = {}
        for c in range(L):
            label = -1 if share else c
            if label != bg:
                boxes[label] = [decode(pb[q], pv[q], lc[i, q, c]) for q in range(P)]
        indices, num_det = {}, 0
        for c in range(C):
            if c == bg:
                continue
            scores, bb = cf[i, :, c], boxes[-1 if share else c]
            cand = sorted([(scores[q], q) for q in range(P) if scores[q] > conf_t], key=lambda t: -t[0])
            if -1 < top_k < len(cand):
                cand = cand[:top_k]
            kept, thr = [], nms
            for _, q in cand:
                keep = all(jaccard(bb[q], bb[k]) <= thr for k in kept)
                if keep:
                    kept.append(q)
                    if eta < 1 and thr > 0.5:
                        thr = F32(thr * eta)
            indices[c] = kept
            num_det += len(kept)
        if -1 < keep_top_k < num_det:
            pairs = [(cf[i, q, c], c, q) for c in sorted(indices) for q in indices[c]]
            new = {}
            for j in std_sort_order(np.array([s for s, _, _ in pairs]))[:keep_top_k]:
                new.setdefault(pairs[j][1], []).append(pairs[j][2])
            indices = new
        for c in sorted(indices):
            for q in indices[c]:
                rows.append([i, c, cf[i, q, c], *boxes[-1 if share else c][q]])
    if not rows:
        rows = [[i, -1, -1, -1, -1, -1, -1] for i in range(N)]
    return np.array(rows, np.float64).reshape(1, 1, -1, 7)


def det_params(p: dict) -> str:
    """detection_output_param { ... } text for a parameter dict of ref_detection_output."""
    nms = {k: p[k] for k in ("nms_threshold", "top_k", "eta") if k in p}
    out = "".join(f"{k}: {str(v).lower() if isinstance(v, bool) else v} " for k, v in p.items() if k not in nms)
    if nms:
        out += "nms_param { " + "".join(f"{k}: {v} " for k, v in nms.items()) + "} "
    return "detection_output_param { " + out + "}"


def make_inputs(rng, N=2, P=48, C=4, share=True, code="CENTER_SIZE", tie_step=None, loc_scale=0.5):
    """Priors scattered over the image (variances 0.1 0.1 0.2 0.2), loc noise, softmaxed conf
    (quantised to tie_step to make ties)."""
    cxy = rng.uniform(0.1, 0.9, (P, 2))
    wh = rng.uniform(0.08, 0.45, (P, 2))
    boxes = np.concatenate([cxy - wh / 2, cxy + wh / 2], 1)
    var = np.tile([0.1, 0.1, 0.2, 0.2], (P, 1))
    prior = np.stack([boxes.reshape(-1), var.reshape(-1)])[None].astype(np.float32)
    L = 1 if share else C
    loc = (rng.standard_normal((N, P * L * 4)) * loc_scale).astype(np.float32)
    z = rng.standard_normal((N, P, C)) * 2
    conf = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    if tie_step:
        conf = np.round(conf / tie_step) * tie_step
    return loc, conf.reshape(N, P * C).astype(np.float32), prior


def det_net(build, p: dict, loc, conf, prior, name="det"):
    text = layer(name, "DetectionOutput", ["loc", "conf", "prior"], det_params(p))
    return build(text, {"loc": loc.shape, "conf": conf.shape, "prior": prior.shape})


def assert_rows(got, ref, tol=1e-5):
    """Same rows in the same order: image ids and labels exactly, the rest within tol of
    max(1, |ref|)."""
    assert got.shape == ref.shape, (got.shape, ref.shape)
    assert np.array_equal(got[..., :2], ref[..., :2])
    assert np.all(np.abs(got[..., 2:] - ref[..., 2:]) <= tol * np.maximum(1, np.abs(ref[..., 2:])))


def onnx_rows(net, tmp_path, feeds, all_blobs=False):
    path = tmp_path / "det.onnx"
    net.to_onnx(str(path), all_blobs=all_blobs)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})))


# -- the transcription, on small random inputs -------------------------------------------------
CONFIGS = {
    "corner": dict(num_classes=4, code_type="CORNER", keep_top_k=20, confidence_threshold=0.3,
                   nms_threshold=0.45, top_k=30),
    "center_defaults": dict(num_classes=4, code_type="CENTER_SIZE", confidence_threshold=0.2),
    "corner_size_vet": dict(num_classes=4, code_type="CORNER_SIZE", variance_encoded_in_target=True,
                            confidence_threshold=0.25, nms_threshold=0.5, keep_top_k=15),
    "center_vet_bg3": dict(num_classes=4, background_label_id=3, code_type="CENTER_SIZE",
                           variance_encoded_in_target=True, nms_threshold=0.4, top_k=10),
    "no_share_bg0": dict(num_classes=4, share_location=False, code_type="CENTER_SIZE", nms_threshold=0.4,
                         keep_top_k=12, confidence_threshold=0.3),
    "no_share_bg2": dict(num_classes=4, share_location=False, background_label_id=2, code_type="CORNER_SIZE",
                         nms_threshold=0.45, top_k=8),
    "no_share_nobg": dict(num_classes=4, share_location=False, background_label_id=-1, code_type="CORNER",
                          confidence_threshold=0.2, keep_top_k=25),
    "eta": dict(num_classes=4, code_type="CENTER_SIZE", nms_threshold=0.8, eta=0.7, confidence_threshold=0.2),
    "nms_zero": dict(num_classes=4, code_type="CENTER_SIZE", nms_threshold=0.0, confidence_threshold=0.2),
    "nms_one_point_five": dict(num_classes=4, code_type="CENTER_SIZE", nms_threshold=1.5, top_k=6),
    "nothing": dict(num_classes=4, code_type="CENTER_SIZE", confidence_threshold=0.9999, keep_top_k=5),
    "keep_zero": dict(num_classes=4, code_type="CENTER_SIZE", keep_top_k=0, confidence_threshold=0.2),
    "top_k_zero": dict(num_classes=4, code_type="CENTER_SIZE", top_k=0),
    "clip_opencv": dict(num_classes=4, code_type="CENTER_SIZE", clip=True, confidence_threshold=0.2,
                        keep_top_k=30, top_k=20),
    "ties_keep": dict(num_classes=4, code_type="CENTER_SIZE", keep_top_k=17, confidence_threshold=0.1,
                      nms_threshold=0.6),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_transcription(build, name):
    p = CONFIGS[name]
    rng = np.random.default_rng(sorted(CONFIGS).index(name))
    loc, conf, prior = make_inputs(rng, C=p["num_classes"], share=p.get("share_location", True),
                                   tie_step=1 / 16 if name.startswith("ties") else None,
                                   loc_scale=2.0 if name == "clip_opencv" else 0.5)
    net = det_net(build, p, loc, conf, prior)
    assert net.layer_shapes["det"] == (1, 1, 1, 7)        # Caffe's Reshape; Forward sets the rows
    out = net.forward(loc=loc, conf=conf, prior=prior)["det"]
    ref = ref_detection_output(p, loc, conf, prior)
    assert_rows(out, ref)
    if name in ("nothing", "keep_zero", "top_k_zero"):
        assert out.shape == (1, 1, 2, 7) and out[0, 0, :, 0].tolist() == [0, 1] and np.all(out[0, 0, :, 1:] == -1)


def test_ties_follow_std_sort(build):
    """keep_top_k over tied scores keeps and orders them as the fork's std::sort does (which
    is not the stable order), and within a label the tied rows come in that order too."""
    p = dict(num_classes=3, code_type="CENTER_SIZE", keep_top_k=20, nms_threshold=1.0)
    rng = np.random.default_rng(5)
    loc, conf, prior = make_inputs(rng, N=1, P=40, C=3)
    conf[:] = np.float32(0.5)                                  # 80 candidates, all tied
    net = det_net(build, p, loc, conf, prior)
    out = net.forward(loc=loc, conf=conf, prior=prior)["det"]
    ref = ref_detection_output(p, loc, conf, prior)
    assert_rows(out, ref)
    # a stable sort would keep label 1's first 20 boxes; the fork's std::sort does not
    assert set(out[0, 0, :, 1].tolist()) != {1.0}


def test_std_sort_emulation_matches_gcc(tmp_path):
    """std_sort_order is the permutation g++'s std::sort applies with the fork's comparator
    (pair<float, pair<int,int>>, SortScorePairDescend), ties and all."""
    if shutil.which("g++") is None:
        pytest.skip("g++ is not installed")
    src = tmp_path / "s.cpp"
    src.write_text(r"""#include <algorithm>
#include <cstdio>
#include <utility>
#include <vector>
typedef std::pair<float, std::pair<int, int> > P;
bool desc(const P& a, const P& b) { return a.first > b.first; }
int main() { int n; while (scanf("%d", &n) == 1) { std::vector<P> v(n);
  for (int i = 0; i < n; ++i) { scanf("%f", &v[i].first); v[i].second = std::make_pair(0, i); }
  std::sort(v.begin(), v.end(), desc);
  for (int i = 0; i < n; ++i) printf("%d ", v[i].second.second); printf("\n"); } }
""")
    exe = tmp_path / "s"
    subprocess.run(["g++", "-O2", "-o", str(exe), str(src)], check=True)
    rng = np.random.default_rng(3)
    arrays = [(rng.integers(0, int(rng.integers(1, 12)), int(n)) / 8).astype(np.float32)
              for n in list(rng.integers(0, 60, 60)) + [17, 100, 1000, 2500]]
    arrays += [np.ones(600, np.float32), np.arange(300, dtype=np.float32),
               np.concatenate([np.arange(200), np.arange(200)[::-1]]).astype(np.float32)]
    text = "".join(f"{len(a)} " + " ".join(repr(float(x)) for x in a) + "\n" for a in arrays)
    lines = subprocess.run([str(exe)], input=text, capture_output=True, text=True, check=True).stdout.splitlines()
    for a, line in zip(arrays, lines):
        assert std_sort_order(np.asarray(a)).tolist() == [int(t) for t in line.split()], len(a)


# -- refusals ------------------------------------------------------------------------------------
def test_background_minus_one_with_shared_location_aborts_as_the_fork(build):
    p = dict(num_classes=3, background_label_id=-1, code_type="CENTER_SIZE")
    loc, conf, prior = make_inputs(np.random.default_rng(0), N=1, P=8, C=3)
    net = det_net(build, p, loc, conf, prior)       # the fork sets up; its Forward aborts
    with pytest.raises(ZfcaffeError, match="background_label_id -1 with share_location true"):
        net.forward(loc=loc, conf=conf, prior=prior)


@pytest.mark.parametrize("params,shapes,message", [
    ("code_type: CENTER_SIZE", None, "num_classes is required"),
    ("num_classes: 3 nms_param { eta: 0 }", None, "expected 0 < eta <= 1"),
    ("num_classes: 3 nms_param { nms_threshold: -0.1 }", None, "non-negative"),
    ("num_classes: 3", {"loc": (1, 31), "conf": (1, 24), "prior": (1, 2, 32)}, "location values per image"),
    ("num_classes: 4", {"loc": (1, 32), "conf": (1, 24), "prior": (1, 2, 32)}, "confidences per image"),
    ("num_classes: 3", {"loc": (2, 32), "conf": (1, 24), "prior": (1, 2, 32)}, "same number of images"),
])
def test_refusals(build, params, shapes, message):
    shapes = shapes or {"loc": (1, 32), "conf": (1, 24), "prior": (1, 2, 32)}
    with pytest.raises(ZfcaffeError, match=message):
        build(layer("det", "DetectionOutput", ["loc", "conf", "prior"], f"detection_output_param {{ {params} }}"),
              shapes)


def test_prior_of_zero_width_refused_for_center_size(build):
    p = dict(num_classes=3, code_type="CENTER_SIZE")
    loc, conf, prior = make_inputs(np.random.default_rng(0), N=1, P=8, C=3)
    prior[0, 0, 2] = prior[0, 0, 0]
    with pytest.raises(ZfcaffeError, match="positive width"):
        det_net(build, p, loc, conf, prior).forward(loc=loc, conf=conf, prior=prior)


def test_export_refuses_eta(build, tmp_path):
    p = dict(num_classes=4, code_type="CENTER_SIZE", nms_threshold=0.8, eta=0.7)
    loc, conf, prior = make_inputs(np.random.default_rng(0), N=1, P=8)
    net = det_net(build, p, loc, conf, prior)
    with pytest.raises(zfcaffe.ZfcaffeError, match="nothing to export to ONNX.*eta 0.7 cannot be exported"):
        net.to_onnx(str(tmp_path / "x.onnx"))   # the net is that layer alone


# -- the exported file, run alone --------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in sorted(CONFIGS) if n not in ("eta", "ties_keep")])
def test_export_reruns_equal(build, tmp_path, name):
    """NonMaxSuppression/TopK in ONNX Runtime give the same rows (no tied scores here;
    CORNER decoding makes boxes with xmax < xmin, which the export feeds its NMS as points)."""
    p = CONFIGS[name]
    rng = np.random.default_rng(100 + sorted(CONFIGS).index(name))
    loc, conf, prior = make_inputs(rng, C=p["num_classes"], share=p.get("share_location", True),
                                   loc_scale=2.0 if name == "clip_opencv" else 0.5)
    net = det_net(build, p, loc, conf, prior)
    feeds = {"loc": loc, "conf": conf, "prior": prior}
    out = net.forward(**feeds)["det"]
    if p.get("clip"):
        assert np.any(out[0, 0, :, 3:] == 0) and np.any(out[0, 0, :, 3:] == 1)
    if p.get("code_type") == "CORNER":
        assert np.any(out[0, 0, :, 5] < out[0, 0, :, 3])      # the case the export takes care of
    assert_rows(onnx_rows(net, tmp_path, feeds)["det"], out)


# -- OpenCV --------------------------------------------------------------------------------------
def test_opencv_same_rows_as_a_set(build, tmp_path):
    """OpenCV's DetectionOutput keeps the same boxes (it orders them by score across labels
    and pads to keep_top_k rows with zeros)."""
    cv2 = pytest.importorskip("cv2")
    p = dict(num_classes=4, share_location=True, background_label_id=0, code_type="CENTER_SIZE",
             keep_top_k=30, confidence_threshold=0.3, nms_threshold=0.45, top_k=40)
    loc, conf, prior = make_inputs(np.random.default_rng(8), N=1, P=48)
    proto, _ = build.write(layer("det", "DetectionOutput", ["loc", "conf", "prior"], det_params(p)),
                           {"loc": loc.shape, "conf": conf.shape, "prior": prior.shape})
    try:
        cvnet = cv2.dnn.readNetFromCaffe(str(proto))
        for k, v in {"loc": loc, "conf": conf, "prior": prior}.items():
            cvnet.setInput(v, k)
        ref = cvnet.forward("det")
    except cv2.error as err:
        pytest.skip(f"OpenCV refuses the net: {err}")
    ours = zfcaffe.Net(str(proto)).forward(loc=loc, conf=conf, prior=prior)["det"][0, 0]
    ref = ref.reshape(-1, 7)
    ref = ref[ref[:, 2] > 0]
    key = lambda r: r[np.lexsort((r[:, 2], r[:, 1]))]   # noqa: E731
    assert ref.shape == ours.shape
    np.testing.assert_allclose(key(ours), key(ref), atol=1e-5)


# -- the fork itself (../shared/oracle_ssd) --------------------------------------------------------
ORACLE = ["ssd_layers_c", "wechat_detector", "mobilenet_ssd_slim", "res10_face_slim"]


def detection_layers(net):
    return [l for l in net.graph.layers if l.type == "DetectionOutput"]


@pytest.mark.parametrize("name", ORACLE)
def test_oracle_bottoms(shared, name):
    """Every DetectionOutput of the case fed the oracle's own bottoms: the fork's rows, in its
    order, ids and labels exactly, values within 1e-4 (bit-equal in practice)."""
    case = fork_case(shared, "oracle_ssd", name)
    net = zfcaffe.Net(case["prototxt"], case["weights_path"], input_shapes=case["input_shapes"])
    layers, out = detection_layers(net), case["outputs"]
    for l in layers:
        got = l.forward([out[b] for b in l.bottoms])[0]
        ref = out[l.name]
        assert got.shape == ref.shape, l.name
        assert np.array_equal(got[..., :2], ref[..., :2]), l.name
        assert np.abs(got - ref).max() <= 1e-4, l.name
    if name == "ssd_layers_c":
        assert len(layers) == 13
    if name == "wechat_detector":   # both QR codes
        rows = out["detection_output"][0, 0]
        assert rows.shape == (2, 7) and rows[:, 1].tolist() == [1, 1]


@pytest.mark.parametrize("name", ORACLE)
def test_oracle_net_and_export(shared, tmp_path, name):
    """End to end (image in, rows out) as the fork, and the exported file run alone gives
    zfcaffe's rows for every DetectionOutput it can hold (eta < 1 it cannot)."""
    case = fork_case(shared, "oracle_ssd", name)
    net = zfcaffe.Net(case["prototxt"], case["weights_path"], input_shapes=case["input_shapes"])
    assert all(net.layer_shapes[l.name] == (1, 1, 1, 7) for l in detection_layers(net))
    net.forward(**case["inputs"])
    assert all(tuple(net.layer_shapes[k]) == tuple(s) for k, s in case["shapes"].items())   # K rows now
    dets = [l.name for l in detection_layers(net)]
    for d in dets:
        # 1e-4 of the coordinate's size: variance_encoded_in_target boxes reach |x| ~ 400,
        # where the trunk's float32 rounding (not this layer's) shows
        assert_rows(net.layer_outputs[d], case["outputs"][d], tol=1e-4)
    got = onnx_rows(net, tmp_path, case["inputs"], all_blobs=True)
    cut = dict(net.export_cut)
    for d in dets:
        if d in cut:
            assert d == "det_eta" and "eta" in cut[d], cut
            continue
        assert_rows(got[d], net.layer_outputs[d], tol=1e-5)


# -- census nets -----------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["mobilenet_ssd/MobileNetSSD_deploy.prototxt", "pelee_ssd/deploy_merged.prototxt",
                                  "opencv_face_res10/deploy.prototxt", "wechat_qrcode/detect.prototxt"])
def test_census_nets(shared, tmp_path, path):
    """The whole net with Caffe's fillers: loads, `inspect` summary, forward, export and rerun.
    Rows are compared where the filler weights leave scores untied and boxes finite (with
    ties, keep_top_k's std::sort and ONNX's TopK keep different ones; an infinite box gives
    the fork a NaN overlap, which rejects, and ONNX Runtime one that does not)."""
    net = zfcaffe.Net(str(shared / "census" / path))
    det = detection_layers(net)[0]
    assert "CENTER_SIZE" in det.summary()
    x = np.random.default_rng(0).uniform(-1, 1, net.graph.inputs["data"]).astype(np.float32) * 5
    rows = net.forward(data=x)[det.tops[0]]
    assert rows.ndim == 4 and rows.shape[-1] == 7
    got = onnx_rows(net, tmp_path, {"data": x})[det.tops[0]]
    r = rows[0, 0]
    if len(np.unique(r[:, 2])) == len(r) and np.isfinite(r).all():
        assert_rows(got, rows)
    else:
        assert got.shape[-1] == 7
