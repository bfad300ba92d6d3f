"""OpenPose keypoints (issue 22): the heatmap/PAF head, OpenPose's 3 x 3 peak rule on
crafted maps, peaks and a keypoint's Grad-CAM on the COCO net with filler weights."""
from __future__ import annotations

import numpy as np
import pytest

import zfcaffe
from zfcaffe.analyses import keypoints, segmentation
from zfcaffe.errors import ZfcaffeError
from zfcaffe.viz import dense_figures


def bump(h, w, cy, cx, sigma=1.5):
    yy, xx = np.mgrid[:h, :w]
    return np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2))


def test_nms_as_openpose():
    m = bump(20, 30, 8, 12)
    assert keypoints.nms_peaks(m, 0.1) == [(8, 12)]
    assert keypoints.nms_peaks(m, 1.0) == []                       # above the threshold, strictly
    x, y = keypoints.refine(m, 8, 12)
    assert (x, y) == pytest.approx((12, 8))
    two = bump(20, 30, 5, 5) + bump(20, 30, 14, 22) * 0.5
    assert keypoints.nms_peaks(two, 0.1) == [(5, 5), (14, 22)]     # row-major, as OpenPose lists them
    flat = np.zeros((20, 30))
    flat[8, 12:14] = 1                                             # a two-pixel plateau inside: no peak (strict >)
    assert keypoints.nms_peaks(flat, 0.1) == []
    ring = np.zeros((20, 30))
    ring[1, 10:12] = 1                                             # on the first inner ring: >= , both kept
    assert keypoints.nms_peaks(ring, 0.1) == [(1, 10), (1, 11)]
    edge = np.zeros((20, 30))
    edge[0, 10] = edge[10, 29] = 1                                 # the outer ring never (off the ring lines)
    assert keypoints.nms_peaks(edge, 0.1) == []
    peaks = keypoints.find_peaks(np.stack([m, two, np.zeros((20, 30))]), 0.1, ("a", "b"))
    assert [(p.name, p.px, p.py) for p in peaks] == [("a", 12, 8), ("b", 5, 5), ("b", 22, 14)]


@pytest.fixture(scope="module")
def openpose(shared):
    net = zfcaffe.Net(str(shared / "census/openpose_coco/pose_deploy_linevec.prototxt"),
                      input_shapes={"image": (1, 3, 96, 96)}, allow_missing_weights=True)
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (1, 3, 96, 96)).astype(np.float32)
    net.forward(image=x)
    return net, x


def test_openpose_head_heatmaps_and_peaks(openpose):
    net, x = openpose
    head = keypoints.keypoint_head(net)
    assert (head.model, head.layer, head.paf_layer, head.output, head.stride) == \
        ("COCO", "Mconv7_stage6_L2", "Mconv7_stage6_L1", "net_output", (8.0, 8.0))
    assert head.parts[:2] == ("Nose", "Neck") and len(head.parts) == 18 and head.name(18) == "Background"
    assert segmentation.segmentation_head(net) is None
    maps = keypoints.heatmaps(net)
    assert maps.shape == (19, 96, 96) and np.ptp(maps[:18]) > 0     # filler weights: tiny, but not flat
    assert keypoints.peaks(net, threshold=0.0)                      # found on the fillers' own maps
    # a known peak by design: part 3's map peaks at cell (y 6, x 4), a little towards (7, 5)
    crafted = np.zeros_like(net.layer_outputs[head.key])
    crafted[0, 3, 6, 4], crafted[0, 3, 6, 5], crafted[0, 3, 7, 4] = 1.0, 0.5, 0.5
    saved = net.layer_outputs[head.key]
    net.layer_outputs[head.key] = crafted
    try:
        found = keypoints.peaks(net, threshold=0.1)
    finally:
        net.layer_outputs[head.key] = saved
    assert [(p.part, p.name, p.px, p.py) for p in found] == [(3, "RElbow", 36, 52)]   # cell 4's centre is 35.5
    assert found[0].value == pytest.approx(0.9375, rel=1e-5)          # bilinear: 15/16 to cell (6, 4) on each axis
    assert 35 < found[0].x < 40 and 51 < found[0].y < 56
    t = keypoints.explain_keypoint(net, x, found[0])
    assert t.unit[:2] == (0, 3) and (t.unit[2], t.unit[3]) in {(6, 4), (6, 5), (7, 4), (7, 5)}
    assert t.seed.sum() == pytest.approx(1, rel=1e-5)               # a bilinear weight per map cell
    assert t.cam_layer == net.graph.blob_of["Mconv6_stage6_L2"]     # the rectified map the heatmap conv reads
    assert t.gradcam.shape == (96, 96) and np.isfinite(t.gradcam).all()
    assert all(p.shape == (3, 96, 96) and np.isfinite(p).all() for p in t.projections.values())
    assert {"peak_xy", "peak_pixel", "part", "gradcam", "projection_deconvnet"} <= set(t.arrays())
    image = np.random.default_rng(1).random((96, 96, 3))
    assert dense_figures.keypoints_figure(image, maps, found, head.parts).startswith(b"\x89PNG")
    assert dense_figures.keypoint_trace_figure(image, t).startswith(b"\x89PNG")
    with pytest.raises(ZfcaffeError, match="expected a Peak"):
        keypoints.explain_keypoint(net, x, (3, "RElbow", 36, 52, 1.0))
