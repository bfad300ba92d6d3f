"""Segmentation outputs (issue 22): the score blob, the class map, a class's Grad-CAM
and projections, on FCN-8s against real Caffe's scores, ENet (census, filler weights)
and a small net whose scores are coarser than its input."""
from __future__ import annotations

import numpy as np
import pytest

import zfcaffe
from conftest import layer_text
from zfcaffe.analyses import keypoints, segmentation
from zfcaffe.errors import ZfcaffeError
from zfcaffe.labels import resolve_labels
from zfcaffe.methods.gradcam import upsample
from zfcaffe.viz import dense_figures, palettes

PNG = b"\x89PNG"


@pytest.fixture(scope="module")
def fcn(shared):
    d = shared / "oracle" / "fcn8s_slim"
    net = zfcaffe.Net(str(d / "deploy.prototxt"), str(d / "weights.caffemodel"))
    x = np.load(d / "input.npy")
    net.forward(data=x)
    return net, x, np.load(d / "outputs.npz")["score"]


def test_fcn_head_and_class_map_match_caffe(fcn):
    net, x, score = fcn
    head = segmentation.segmentation_head(net)
    assert (head.blob, head.layer, head.classes, head.stride) == ("score", "score", 21, (1.0, 1.0))
    cmap = segmentation.class_map(net)
    assert cmap.shape == (64, 96)
    np.testing.assert_array_equal(cmap, score[0].argmax(axis=0))
    assert keypoints.keypoint_head(net) is None
    assert len(resolve_labels(None, head.classes).names) == 21 and palettes.palette_for(21).shape == (21, 3)


def test_fcn_class_gradcam_and_projections(fcn):
    net, x, score = fcn
    cmap = segmentation.class_map(net)
    label = int(np.bincount(cmap.ravel()).argmax())
    names = resolve_labels(None, 21)
    t = segmentation.explain_class(net, x, label, labels=names)
    assert t.name == names(label) and t.region_from == "where the class wins"
    np.testing.assert_array_equal(t.region, cmap == label)
    # the explained value is the class's score summed over its region, as Caffe computed it
    assert t.value == pytest.approx(float(score[0, label][cmap == label].sum()), rel=1e-4)
    assert t.unit[:2] == (0, label) and t.region[t.unit[2], t.unit[3]]
    assert t.cam_layer == net.graph.blob_of["fc7"]          # rectified fc7: what the score layers read
    assert t.gradcam.shape == (64, 96) and 0 <= t.gradcam.min() and t.gradcam.max() == pytest.approx(1)
    assert t.gradcam[t.region].sum() > 0 and 0 < t.mass_in_region <= 1
    assert set(t.projections) == {"deconvnet", "guided"}
    assert all(p.shape == (3, 64, 96) and np.isfinite(p).all() and np.abs(p).max() > 0
               for p in t.projections.values())
    arrays = t.arrays()
    assert {"gradcam", "cam", "seed", "unit", "region", "projection_guided", "label"} <= set(arrays)
    # a box region, another layer
    b = segmentation.explain_class(net, x, label, region=(10, 5, 40, 30), layer="pool4", modes=("guided",))
    assert b.region.sum() == 30 * 25 and b.cam_layer == "pool4" and set(b.projections) == {"guided"}
    image = np.random.default_rng(0).random((64, 96, 3))
    assert dense_figures.class_map_figure(image, cmap, names.names, palettes.VOC).startswith(PNG)
    assert dense_figures.class_trace_figure(image, t).startswith(PNG)
    with pytest.raises(ZfcaffeError, match="classes 0 to 20"):
        segmentation.explain_class(net, x, 21)
    with pytest.raises(ZfcaffeError, match="expected a \\(64, 96\\) mask"):
        segmentation.explain_class(net, x, label, region=np.ones((3, 3), bool))


def test_enet_census_with_fillers(shared):
    net = zfcaffe.Net(str(shared / "census/enet/enet_deploy_final.prototxt"), input_shapes={"data": (1, 3, 64, 128)},
                      allow_missing_weights=True)
    # the file gives the last Deconvolution no filler (Caffe's default: zeros): draw it, or every score is 0
    w = net.params["deconv6_0_0"][0]
    w.data = np.random.default_rng(1).normal(0, 0.1, w.shape).astype(np.float32)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 64, 128)).astype(np.float32)
    net.forward(data=x)
    head = segmentation.segmentation_head(net)
    assert (head.layer, head.classes, head.stride) == ("deconv6_0_0", 19, (1.0, 1.0))
    cmap = segmentation.class_map(net)
    assert cmap.shape == (64, 128) and len(np.unique(cmap)) > 1
    label = int(np.bincount(cmap.ravel()).argmax())
    t = segmentation.explain_class(net, x, label, modes=("deconvnet",))
    assert t.cam_layer == net.graph.blob_of["prelu5_1_4"] and t.gradcam[t.region].sum() > 0
    assert t.projections["deconvnet"].shape == (3, 64, 128)
    names = resolve_labels(None, 19)
    assert names(0) == "road" and (palettes.palette_for(19, names.names) == palettes.CITYSCAPES).all()


def _coarse_net(tmp_path):
    text = ('input: "data" input_shape { dim: 1 dim: 3 dim: 20 dim: 28 }\n'
            + layer_text("conv1", "Convolution", "data",
                         'convolution_param { num_output: 8 kernel_size: 3 pad: 1 '
                         'weight_filler { type: "gaussian" std: 0.5 } }')
            + layer_text("relu1", "ReLU", "conv1", tops=["conv1"])
            + layer_text("score", "Convolution", "conv1",
                         'convolution_param { num_output: 4 kernel_size: 2 stride: 4 '
                         'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 1 } }')
            + layer_text("prob", "Softmax", "score"))
    p = tmp_path / "coarse.prototxt"
    p.write_text(text)
    return zfcaffe.Net(str(p), allow_missing_weights=True)


def test_scores_coarser_than_the_input(tmp_path):
    net = _coarse_net(tmp_path)
    x = np.random.default_rng(2).normal(0, 1, (1, 3, 20, 28)).astype(np.float32)
    net.forward(data=x)
    head = segmentation.segmentation_head(net)
    assert (head.blob, head.classes, head.stride, head.output) == ("score", 4, (4.0, 4.0), "prob")
    assert "Softmax 'prob'" in head.reason
    scores = net.layer_outputs[head.key][0]
    resized = np.stack([upsample(s, 20, 28) for s in scores])
    np.testing.assert_array_equal(segmentation.class_map(net), resized.argmax(axis=0))
    # the seed on the score map is the resizing's adjoint: the explained value is the
    # region's summed score as the class map sees it
    label = int(segmentation.class_map(net)[10, 14])
    t = segmentation.explain_class(net, x, label, region=(3, 2, 17, 15))
    assert t.value == pytest.approx(float(resized[label, 2:15, 3:17].sum()), rel=1e-4)
    assert t.seed.shape == (5, 7) and t.cam_layer == net.graph.blob_of["conv1"]     # after relu1
    assert t.gradcam.shape == (20, 28)
    rng = np.random.default_rng(3)
    m, r = rng.random((5, 7)), rng.random((20, 28))
    assert float((r * segmentation.resize_maps(m[None], 20, 28)[0]).sum()) == \
        pytest.approx(float((segmentation.seed_from_input(r, 5, 7) * m).sum()), rel=1e-6)


def test_not_a_segmenter(shared):
    net = zfcaffe.Net(str(shared / "oracle" / "lenet" / "deploy.prototxt"), allow_missing_weights=True)
    assert segmentation.segmentation_head(net) is None
    with pytest.raises(ZfcaffeError, match="no segmentation output"):
        segmentation.class_map(net)
