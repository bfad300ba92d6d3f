"""CTPN's layers (tianzhi0549/CTPN@f77ec9e7c4c0: Lstm, Reverse, Transpose, the Python text
proposal layer) and BVLC's Im2col, against float64 NumPy transcriptions of the fork's source."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import zfcaffe
from conftest import layer_text as layer, rel_err

RNG = np.random.default_rng(7)


def rand(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def run(build, text, inputs: dict, blobs=None):
    net = build(text, {k: v.shape for k, v in inputs.items()}, blobs)
    net.forward(**inputs)
    return net


def onnx_rerun(net, path, inputs: dict) -> dict:
    """The exported --all-blobs file run in ONNX Runtime on its own: {output name: array}."""
    net.to_onnx(str(path), all_blobs=True)
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in s.get_outputs()]
    return dict(zip(names, s.run(None, inputs)))


# -- float64 transcriptions of the fork's C++ -------------------------------------------------
def im2col_ref(x, kernel, stride, pad, dil=(1, 1)):
    """caffe/src/caffe/util/im2col.cpp im2col_cpu, per image."""
    n, c, h, w = x.shape
    kh, kw = kernel
    oh = (h + 2 * pad[0] - (dil[0] * (kh - 1) + 1)) // stride[0] + 1
    ow = (w + 2 * pad[1] - (dil[1] * (kw - 1) + 1)) // stride[1] + 1
    out = np.zeros((n, c * kh * kw, oh, ow))
    for b in range(n):
        for ch in range(c):
            for i in range(kh):
                for j in range(kw):
                    row = (ch * kh + i) * kw + j
                    for y in range(oh):
                        iy = y * stride[0] - pad[0] + i * dil[0]
                        for xx in range(ow):
                            ix = xx * stride[1] - pad[1] + j * dil[1]
                            if 0 <= iy < h and 0 <= ix < w:
                                out[b, row, y, xx] = x[b, ch, iy, ix]
    return out


def counts_of(shape):
    """bottom[0]->count(i) for i = 1..rank-1, then 1 (the layers' *_counts_ blobs)."""
    return [int(np.prod(shape[i:])) for i in range(1, len(shape))] + [1]


def transpose_ref(x, dims):
    """transpose_layer.cpp transpose_cpu: every index's coordinates, then the top index."""
    top_shape = [x.shape[d] for d in dims]
    fc, tc = counts_of(x.shape), counts_of(top_shape)
    flat = x.astype(np.float64).ravel()
    out = np.zeros(flat.size)
    for index in range(flat.size):
        rem, inds = index, []
        for i in range(len(dims)):
            inds.append(rem // fc[i])
            rem %= fc[i]
        out[sum(inds[dims[i]] * tc[i] for i in range(len(dims)))] = flat[index]
    return out.reshape(top_shape)


def reverse_ref(x, axis):
    """reverse_layer.cpp reverse_cpu."""
    counts = counts_of(x.shape)
    flat = x.astype(np.float64).ravel()
    out = np.zeros(flat.size)
    n = x.shape[axis]
    for index in range(flat.size):
        ind = (index // counts[axis]) % n
        out[counts[axis] * (n - 2 * ind - 1) + index] = flat[index]
    return out.reshape(x.shape)


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def lstm_ref(x, w_i, w_h, b, cpu_mode=False):
    """lstm_layer.cu Forward_gpu (ClipAdd, ActivationForward, LSTMForward) with no clip bottom;
    cpu_mode: lstm_layer.cpp Forward_cpu as written, which adds h_to_gate's row 0 to every n."""
    t_, n_ = x.shape[:2]
    h_ = w_h.shape[1]
    x = x.reshape(t_, n_, -1).astype(np.float64)
    w_i, w_h, b = (a.astype(np.float64) for a in (w_i, w_h, b))
    pre_gate = (x.reshape(t_ * n_, -1) @ w_i.T + b).reshape(t_, n_, 4 * h_)
    top = np.zeros((t_, n_, h_))
    cell = np.zeros((t_, n_, h_))
    h0, c0 = np.zeros((n_, h_)), np.zeros((n_, h_))
    for t in range(t_):
        h_prev = top[t - 1] if t > 0 else h0
        c_prev = cell[t - 1] if t > 0 else c0
        h_to_gate = h_prev @ w_h.T                                 # (N, 4H)
        cont = 1.0 if t > 0 else 0.0
        for n in range(n_):
            pg = pre_gate[t, n] + cont * (h_to_gate[0] if cpu_mode else h_to_gate[n])
            i, f, o = sigmoid(pg[:h_]), sigmoid(pg[h_:2 * h_]), sigmoid(pg[2 * h_:3 * h_])
            g = np.tanh(pg[3 * h_:])
            cell[t, n] = cont * f * c_prev[n] + i * g
            top[t, n] = o * np.tanh(cell[t, n])
    return top


# -- the Python proposal layer, transcribed from src/anchor.py, src/other.py and
#    src/layers/text_proposal_layer.py as Python 2 ran them (integer '/') --------------------
class AnchorText:
    anchor_num = 10

    def generate_basic_anchors(self, sizes, base_size=16):
        base_anchor = np.array([0, 0, base_size - 1, base_size - 1], np.int32)
        anchors = np.zeros((len(sizes), 4), np.int32)
        for index, (h, w) in enumerate(sizes):
            anchors[index] = self.scale_anchor(base_anchor, h, w)
        return anchors

    def scale_anchor(self, anchor, h, w):
        x_ctr = (anchor[0] + anchor[2]) * 0.5
        y_ctr = (anchor[1] + anchor[3]) * 0.5
        scaled_anchor = anchor.copy()
        scaled_anchor[0] = x_ctr - w // 2
        scaled_anchor[2] = x_ctr + w // 2
        scaled_anchor[1] = y_ctr - h // 2
        scaled_anchor[3] = y_ctr + h // 2
        return scaled_anchor

    def apply_deltas_to_anchors(self, boxes_delta, anchors):
        anchor_y_ctr = (anchors[:, 1] + anchors[:, 3]) / 2.
        anchor_h = anchors[:, 3] - anchors[:, 1] + 1.
        global_coords = np.zeros_like(boxes_delta, np.float32)
        global_coords[:, 1] = np.exp(boxes_delta[:, 1]) * anchor_h
        global_coords[:, 0] = boxes_delta[:, 0] * anchor_h + anchor_y_ctr - global_coords[:, 1] / 2.
        return np.hstack((anchors[:, [0]], global_coords[:, [0]], anchors[:, [2]],
                          global_coords[:, [0]] + global_coords[:, [1]])).astype(np.float32)

    def basic_anchors(self):
        heights = [11, 16, 23, 33, 48, 68, 97, 139, 198, 283]
        return self.generate_basic_anchors([(h, 16) for h in heights])

    def locate_anchors(self, feat_map_size, feat_stride):
        basic_anchors_ = self.basic_anchors()
        anchors = np.zeros((basic_anchors_.shape[0] * feat_map_size[0] * feat_map_size[1], 4), np.int32)
        index = 0
        for y_ in range(feat_map_size[0]):
            for x_ in range(feat_map_size[1]):
                shift = np.array([x_, y_, x_, y_]) * feat_stride
                anchors[index:index + basic_anchors_.shape[0], :] = basic_anchors_ + shift
                index += basic_anchors_.shape[0]
        return anchors


def proposal_ref(cls_prob, bbox_pred, im_info, feat_stride=16):
    gen = AnchorText()
    scores = cls_prob[:, gen.anchor_num:, :, :]
    im_info = im_info[0, :]
    height, width = scores.shape[-2:]
    anchors = gen.locate_anchors((height, width), feat_stride)
    scores = scores.transpose((0, 2, 3, 1)).reshape(-1, 1)
    bbox_deltas = bbox_pred.transpose((0, 2, 3, 1)).reshape((-1, 2))
    proposals = gen.apply_deltas_to_anchors(bbox_deltas, anchors)
    im_shape = im_info[:2]
    proposals[:, 0::2] = np.maximum(np.minimum(proposals[:, 0::2], im_shape[1] - 1), 0)
    proposals[:, 1::2] = np.maximum(np.minimum(proposals[:, 1::2], im_shape[0] - 1), 0)
    return proposals.astype(np.float32, copy=False), scores


# -- Im2col -------------------------------------------------------------------------------------
@pytest.mark.parametrize("params,kernel,stride,pad,dil", [
    ("kernel_size: 3 pad: 1", (3, 3), (1, 1), (1, 1), (1, 1)),               # CTPN's
    ("kernel_h: 2 kernel_w: 3 stride_h: 2 stride_w: 1 pad_h: 0 pad_w: 2", (2, 3), (2, 1), (0, 2), (1, 1)),
    ("kernel_size: 3 stride: 2 dilation: 2 pad: 2", (3, 3), (2, 2), (2, 2), (2, 2)),
])
def test_im2col(build, tmp_path, params, kernel, stride, pad, dil):
    x = rand(2, 3, 7, 9)
    net = run(build, layer("i2c", "Im2col", "data", f"convolution_param {{ {params} }}"), {"data": x})
    ref = im2col_ref(x.astype(np.float64), kernel, stride, pad, dil)
    y = net.layer_outputs["i2c"]
    assert y.shape == ref.shape == net.layer_shapes["i2c"]
    assert np.array_equal(y, ref.astype(np.float32))          # exact: one input value times 1
    assert np.array_equal(onnx_rerun(net, tmp_path / "m.onnx", {"data": x})["i2c"], y)


@pytest.mark.parametrize("typ,params,ref", [
    ("Im2col", "convolution_param { kernel_size: 3 pad: 1 }", lambda x: im2col_ref(x, (3, 3), (1, 1), (1, 1))),
    ("Transpose", "transpose_param { dim: 3 dim: 2 dim: 0 dim: 1 }", lambda x: transpose_ref(x, (3, 2, 0, 1))),
    ("Reverse", "reverse_param { axis: 2 }", lambda x: reverse_ref(x, 2)),
    ("Lstm", "lstm_param { num_output: 3 }", None),
])
def test_opencv(build, typ, params, ref):
    """OpenCV's dnn, where it has the layer (4.x refuses all four: 'Can't create layer')."""
    cv2 = pytest.importorskip("cv2")
    x = rand(1, 2, 5, 5)
    proto, _ = build.write(layer("l", typ, "data", params), {"data": x.shape})
    try:
        cvnet = cv2.dnn.readNetFromCaffe(str(proto))
        cvnet.setInput(x)
        got = cvnet.forward()
    except cv2.error as e:
        pytest.skip(f"OpenCV {cv2.__version__} has no Caffe {typ} layer: {str(e).strip().splitlines()[-1][:120]}")
    if ref is None:
        pytest.skip(f"OpenCV ran {typ}; no weights to compare with")
    assert rel_err(got, ref(x)) < 1e-5


# -- Transpose and Reverse ------------------------------------------------------------------------
@pytest.mark.parametrize("shape,dims", [((2, 3, 4, 5), (3, 2, 0, 1)), ((4, 3, 1, 6), (2, 3, 1, 0)),
                                         ((3, 5), (1, 0)), ((2, 3, 4), (0, 1, 2))])
def test_transpose(build, tmp_path, shape, dims):
    x = rand(*shape)
    params = "transpose_param { " + " ".join(f"dim: {d}" for d in dims) + " }"
    net = run(build, layer("tr", "Transpose", "data", params), {"data": x})
    ref = transpose_ref(x, dims)
    assert net.layer_shapes["tr"] == ref.shape
    assert np.array_equal(net.layer_outputs["tr"], ref.astype(np.float32))
    assert np.array_equal(onnx_rerun(net, tmp_path / "m.onnx", {"data": x})["tr"], ref.astype(np.float32))


@pytest.mark.parametrize("shape,axis", [((5, 3, 4), 0), ((2, 3, 4, 5), 2), ((2, 3, 4, 5), 3), ((1, 6), 1)])
def test_reverse(build, tmp_path, shape, axis):
    x = rand(*shape)
    net = run(build, layer("rev", "Reverse", "data", f"reverse_param {{ axis: {axis} }}"), {"data": x})
    ref = reverse_ref(x, axis).astype(np.float32)
    assert np.array_equal(net.layer_outputs["rev"], ref)
    assert np.array_equal(onnx_rerun(net, tmp_path / "m.onnx", {"data": x})["rev"], ref)


def test_transpose_reverse_refusals(build):
    with pytest.raises(zfcaffe.ZfcaffeError, match="permutation"):
        build(layer("tr", "Transpose", "data", "transpose_param { dim: 0 dim: 0 }"), {"data": (2, 3)})
    with pytest.raises(zfcaffe.ZfcaffeError, match="one per input axis"):
        build(layer("tr", "Transpose", "data", "transpose_param { dim: 1 dim: 0 }"), {"data": (2, 3, 4)})
    with pytest.raises(zfcaffe.ZfcaffeError, match="out of range"):
        build(layer("rev", "Reverse", "data", "reverse_param { axis: 3 }"), {"data": (2, 3, 4)})
    with pytest.raises(zfcaffe.ZfcaffeError, match="in place"):
        build(layer("rev", "Reverse", "data", "reverse_param { axis: 0 }", tops=["data"]), {"data": (2, 3)})


# -- Lstm ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,hidden", [((6, 4, 5), 8), ((5, 3, 2, 3), 7), ((4, 1, 9), 16)])
def test_lstm(build, tmp_path, shape, hidden):
    x = rand(*shape)
    i = int(np.prod(shape[2:]))
    w_i, w_h, b = rand(4 * hidden, i, scale=0.5), rand(4 * hidden, hidden, scale=0.5), rand(4 * hidden, scale=0.5)
    text = layer("lstm", "Lstm", "data", f"lstm_param {{ num_output: {hidden} clipping_threshold: 1 }}")
    net = run(build, text, {"data": x}, {"lstm": [w_i, w_h, b]})
    ref = lstm_ref(x, w_i, w_h, b)
    y = net.layer_outputs["lstm"]
    assert y.shape == net.layer_shapes["lstm"] == (shape[0], shape[1], hidden)
    assert rel_err(y, ref) < 1e-5
    assert rel_err(onnx_rerun(net, tmp_path / "m.onnx", {"data": x})["lstm"], ref) < 1e-5
    if shape[1] == 1:   # one sequence: the fork's Forward_cpu agrees with its Forward_gpu
        assert rel_err(y, lstm_ref(x, w_i, w_h, b, cpu_mode=True)) < 1e-5


def test_lstm_cpu_mode_differs_for_batches():
    """The documented difference: Forward_cpu mixes item 0's recurrent term into every item."""
    x = rand(4, 3, 5)
    w_i, w_h, b = rand(16, 5), rand(16, 4), rand(16)
    gpu, cpu = lstm_ref(x, w_i, w_h, b), lstm_ref(x, w_i, w_h, b, cpu_mode=True)
    assert np.allclose(gpu[0], cpu[0]) and np.allclose(gpu[:, 0], cpu[:, 0])
    assert not np.allclose(gpu[1:, 1:], cpu[1:, 1:])


def test_lstm_fillers_and_refusals(build):
    text = layer("lstm", "Lstm", "data", "lstm_param { num_output: 4 weight_filler { type: 'constant' value: 0.5 }"
                 " bias_filler { type: 'constant' value: -1 } }")
    net = build(text, {"data": (3, 2, 5)})
    w_i, w_h, b = (p.data for p in net.params["lstm"])
    assert w_i.shape == (16, 5) and w_h.shape == (16, 4) and b.shape == (16,)
    if not (w_i == 0.5).all():
        pytest.skip("the graph does not fill with the layer's own fillers yet (Layer.fillers)")
    assert (w_h == 0.5).all() and (b == -1).all()
    with pytest.raises(zfcaffe.ZfcaffeError, match="num_output"):
        build(layer("lstm", "Lstm", "data", "lstm_param { }"), {"data": (3, 2, 5)})
    with pytest.raises(zfcaffe.ZfcaffeError, match="clip"):
        build(layer("lstm", "Lstm", ["data", "cont"], "lstm_param { num_output: 4 }"),
              {"data": (3, 2, 5), "cont": (3, 2)})


# -- the proposal layer ----------------------------------------------------------------------------
def test_ctpn_basic_anchors():
    from zfcaffe.layers.ctpn import ctpn_anchors, ctpn_basic_anchors
    assert ctpn_basic_anchors().tolist() == AnchorText().basic_anchors().tolist()
    assert ctpn_basic_anchors()[:3].tolist() == [[0, 2, 15, 12], [0, 0, 15, 15], [0, -3, 15, 18]]
    assert np.array_equal(ctpn_anchors(3, 4, 16), AnchorText().locate_anchors((3, 4), 16))


PROPOSAL = ("layer { name: 'proposal' type: 'Python' bottom: 'cls' bottom: 'bbox' bottom: 'im_info' "
            "top: 'rois' top: 'scores' python_param { module: 'layers.text_proposal_layer' "
            "layer: 'ProposalLayer' param_str: \"'feat_stride': 16\" } }\n")


def proposal_inputs(h=3, w=5):
    cls = RNG.uniform(0, 1, (1, 20, h, w)).astype(np.float32)
    bbox = rand(1, 20, h, w, scale=0.7)
    info = np.array([[40.0, 70.0, 1.0]], np.float32)   # clipping is active: anchors reach past 40 x 70
    return {"cls": cls, "bbox": bbox, "im_info": info}


def test_proposal_forward():
    from zfcaffe.layers.base import PYTHON_BUILTINS
    from zfcaffe.io.prototxt import parse_net_text
    cls = PYTHON_BUILTINS[("layers.text_proposal_layer", "ProposalLayer")]
    assert cls.host
    lp = parse_net_text("x.prototxt", PROPOSAL).param.layer[0]
    lay = cls(lp)
    ins = proposal_inputs()
    lay.in_shapes = [v.shape for v in ins.values()]
    assert lay.output_shapes(lay.in_shapes) == [(150, 4), (150, 1)]
    rois, scores = lay.forward(list(ins.values()))
    ref_rois, ref_scores = proposal_ref(*ins.values())
    assert rois.dtype == np.float32 and np.array_equal(scores, ref_scores)
    assert np.array_equal(rois, ref_rois)
    assert rois[:, 2].max() == 69 and rois[:, 3].max() == 39 and rois.min() == 0


def test_proposal_in_a_net_and_onnx(build, tmp_path):
    ins = proposal_inputs(2, 4)
    try:
        net = build(PROPOSAL, {k: v.shape for k, v in ins.items()})
    except zfcaffe.ZfcaffeError as e:
        pytest.skip(f"the graph does not run built-in Python layers yet: {e}")
    net.forward(**ins)
    ref_rois, ref_scores = proposal_ref(*ins.values())
    assert np.array_equal(net.blobs["rois"].data, ref_rois)
    assert np.array_equal(net.blobs["scores"].data, ref_scores)
    got = onnx_rerun(net, tmp_path / "p.onnx", ins)
    assert rel_err(got["rois"], ref_rois) < 1e-6 and np.array_equal(got["scores"], ref_scores)


# -- the census net -------------------------------------------------------------------------------
def test_census_ctpn(shared, tmp_path):
    """ctpn/deploy.prototxt loads as posted (600 x 900), and with a small input runs with Caffe's
    filler weights, exports, and the exported file gives the same values."""
    path = shared / "census/ctpn/deploy.prototxt"
    full = zfcaffe.Net(str(path))
    assert full.layer_shapes["lstm"] == (57, 38, 128) and full.layer_shapes["proposal#0"] == (21660, 4)
    net = zfcaffe.Net(str(path), input_shapes={"data": (1, 3, 96, 160), "im_info": (1, 3)})
    rng = np.random.default_rng(1)
    for name in ("lstm", "rlstm"):    # filler weights of rlstm are 0: give both LSTMs live weights
        net.params[name][0].data = rng.normal(0, 0.05, net.params[name][0].data.shape).astype(np.float32)
        net.params[name][1].data = rng.normal(0, 0.2, net.params[name][1].data.shape).astype(np.float32)
        net.params[name][2].data = rng.normal(0, 0.2, net.params[name][2].data.shape).astype(np.float32)
    for name in ("conv1_1", "conv5_3", "fc", "rpn_cls_score", "rpn_bbox_pred"):
        w = net.params[name][0].data
        net.params[name][0].data = rng.normal(0, np.sqrt(2.0 / np.prod(w.shape[1:])), w.shape).astype(np.float32)
    x = rng.uniform(-100, 100, (1, 3, 96, 160)).astype(np.float32)
    info = np.array([[96, 160, 1]], np.float32)
    out = net.forward(data=x, im_info=info)
    assert out["rois"].shape == (600, 4) and out["scores"].shape == (600, 1)
    lo = net.layer_outputs
    # the recurrent part against the transcriptions, from the net's own conv5_3
    seq = lo["lstm_input"]
    assert seq.shape == (10, 6, 4608)
    assert np.array_equal(seq, transpose_ref(lo["im2col"], (3, 2, 0, 1)).reshape(10, 6, 4608).astype(np.float32))
    p = [q.data for q in net.params["lstm"]]
    assert rel_err(lo["lstm"], lstm_ref(seq, *p)) < 1e-5
    p = [q.data for q in net.params["rlstm"]]
    assert rel_err(lo["lstm-reverse2"], reverse_ref(lstm_ref(reverse_ref(seq, 0), *p), 0)) < 1e-5
    ref_rois, ref_scores = proposal_ref(lo["rpn_cls_prob_reshape"], lo["rpn_bbox_pred"], info)
    assert np.array_equal(out["rois"], ref_rois) and np.array_equal(out["scores"], ref_scores)
    got = onnx_rerun(net, tmp_path / "ctpn.onnx", {"data": x, "im_info": info})
    for key in ("im2col", "lstm", "lstm-reverse2", "rpn_bbox_pred", "scores", "rois"):
        mine = lo[key] if key in lo else out[key]
        assert rel_err(got[key], mine) < 1e-5, key
