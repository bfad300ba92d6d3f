"""The dataset-scale analyses, on nets where the answer is known by construction,
and every verb end to end on CIFAR-10 quick and nsfw's ResNet-50."""
from __future__ import annotations

import json
import os
import shutil

import matplotlib.cbook
import numpy as np
import pytest
from PIL import Image

import zfcaffe
from cli_here import cli_here as run_cli
from conftest import render_in_chromium
from zfcaffe.analyses import correspondence, invariance, occlusion
from zfcaffe.analyses.common import list_images
from zfcaffe.analyses.top9 import TopK, scan
from zfcaffe.preprocess import Preprocess, for_net

PHOTO = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
RNG = np.random.default_rng(3)


def cli(*args):
    return run_cli(*args, "--quiet")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    img = Image.open(PHOTO)
    for i in range(10):
        img.crop((i * 25, i * 18, i * 25 + 260, i * 18 + 260)).rotate(i * 9).save(d / f"{i:02d}.jpg")
    return d


# -- the outputs' summary -------------------------------------------------------------------------------
def test_outputs_without_rows_are_summarised_empty(build):
    """A Fast R-CNN fed no ROIs (rois 0 x 5): its outputs have 0 rows; the summary (zfcaffe run's
    lines, the report's table) gives their shapes, no statistics, no top-5 (an IndexError before)."""
    from conftest import layer_text as L

    from zfcaffe.analyses.heads import class_head, summarize_outputs, top_classes
    text = (L("c", "Convolution", "data", "convolution_param { num_output: 2 kernel_size: 1 }")
            + L("roi", "ROIPooling", ["c", "rois"], "roi_pooling_param { pooled_h: 2 pooled_w: 2 spatial_scale: 0.5 }")
            + L("cls_score", "InnerProduct", "roi", "inner_product_param { num_output: 3 }")
            + L("cls_prob", "Softmax", "cls_score")
            + L("bbox_pred", "InnerProduct", "roi", "inner_product_param { num_output: 12 }"))
    net = build(text, {"data": (1, 2, 12, 14), "rois": (0, 5)})
    net.forward(data=RNG.standard_normal((1, 2, 12, 14)).astype(np.float32))
    head = class_head(net)
    assert head.blob == "cls_prob"
    got = {o.blob: o for o in summarize_outputs(net, net.layer_outputs, head)}
    assert {b: (o.shape, o.stats, o.kind) for b, o in got.items()} == {"cls_prob": ((0, 3), {}, "empty"),
                                                                       "bbox_pred": ((0, 12), {}, "empty")}
    assert top_classes(head, net.layer_outputs[head.key], str) == []
    net.forward(rois=np.array([[0, 1, 1, 9, 7]], np.float32))         # one ROI: the usual summary
    got = {o.blob: o for o in summarize_outputs(net, net.layer_outputs, head)}
    assert got["cls_prob"].kind == "class scores" and got["bbox_pred"].stats["max"] >= got["bbox_pred"].stats["min"]


def test_fast_rcnn_without_rois_runs_and_visualizes(shared, tmp_path):
    """The real Fast R-CNN fed rois 0 x 5 from the command line: `run` prints its empty
    outputs and no detection, `visualize` writes its report (errors before)."""
    case = shared / "oracle_forks/fast_rcnn_zf"
    x = tmp_path / "x.npy"
    np.save(x, np.load(case / "input.npy"))
    net = [case / "deploy.prototxt", case / "weights.caffemodel", "--input-shape", "rois=0,5"]
    out = cli("run", *net, "--input", x).stdout
    assert "cls_prob [0, 21]: no values" in out and "detections (rcnn" in out and out.rstrip().endswith(": 0")
    cli("visualize", *net, "--image", x, "--layers", "conv1", "--top", "1", "-o", tmp_path / "v")
    assert (tmp_path / "v/index.html").exists()


# -- top-9 --------------------------------------------------------------------------------------------
def test_top9_equals_brute_force_sort(build, tmp_path):
    net = build('layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
                'convolution_param { num_output: 5 kernel_size: 3 } }\n'
                'layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }\n',
                {"data": (1, 1, 10, 10)}, {"conv": [RNG.standard_normal((5, 1, 3, 3)), RNG.standard_normal(5)]})
    paths = []
    for i in range(23):
        p = tmp_path / f"{i}.png"
        Image.fromarray((RNG.random((12, 14)) * 255).astype(np.uint8)).save(p)
        paths.append(str(p))
    pre = Preprocess(10, 10, 1, None, "none", 255.0, 1.0)
    top = scan(net, paths, ["relu"], pre, k=9, batch=4, show_progress=False)["relu"]
    # brute force: every image's activations, sorted per map
    net.reshape(data=(1, 1, 10, 10))
    acts = np.stack([net.forward(data=pre(p)[None], blobs=["conv"])["conv"][0] for p in paths])  # (23, 5, 8, 8)
    best = acts.reshape(23, 5, -1).max(axis=2)                                                    # (23, 5)
    for m in range(5):
        order = np.argsort(-best[:, m], kind="stable")[:9]
        np.testing.assert_array_equal(top.image[m], order)
        np.testing.assert_allclose(top.values[m], best[order, m], rtol=1e-6)
        for j, n in enumerate(order):
            assert acts[n, m, top.y[m, j], top.x[m, j]] == best[n, m]


def test_top9_scan_resumes_from_its_cache(shared, photos, tmp_path):
    m = shared / "models/cifar10_quick"
    net = zfcaffe.Net(str(m / "cifar10_quick.prototxt"), str(m / "cifar10_quick_iter_4000.caffemodel"))
    pre = for_net(net, mean=str(m / "mean.binaryproto"))
    paths = [p for p, _ in list_images(str(photos))]
    full = scan(net, paths, ["conv2", "relu3"], pre, batch=3, show_progress=False)
    cache = str(tmp_path / "scan.npz")
    # a scan that stopped after 6 images left this cache behind ...
    scan(net, paths[:6], ["conv2", "relu3"], pre, batch=3, show_progress=False, cache=cache, checkpoint_every=1)
    with np.load(cache) as z:
        saved = dict(z)
    from zfcaffe.analyses.top9 import _fingerprint, _save
    tops = {k: TopK(*(saved[f"{k}/{f}"] for f in ("values", "image", "y", "x"))) for k in ("conv2", "relu3")}
    _save(cache, tops, 6, _fingerprint(net, paths, ["conv2", "relu3"], 9))
    # ... and the full run picks up from image 6
    resumed = scan(net, paths, ["conv2", "relu3"], pre, batch=3, show_progress=False, cache=cache)
    for key in full:
        np.testing.assert_array_equal(full[key].image, resumed[key].image)
        np.testing.assert_allclose(full[key].values, resumed[key].values)


def test_image_lists(tmp_path, photos):
    lst = tmp_path / "list.txt"
    rel = os.path.relpath(photos / "01.jpg", tmp_path)
    lst.write_text(f"# caffe ImageData list\n{rel} 3\n{photos / '02.jpg'}\n")
    assert list_images(str(lst)) == [(str(tmp_path / rel), 3), (str(photos / "02.jpg"), None)]
    assert len(list_images(str(photos))) == 10
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(zfcaffe.ZfcaffeError, match="no images"):
        list_images(str(tmp_path / "empty_dir"))


# -- occlusion ------------------------------------------------------------------------------------------
def test_occluding_the_only_informative_region_drops_the_class(build, tmp_path):
    # class 0's score reads only the top-left 4x4 quadrant of an 8x8 image
    w = np.zeros((2, 64), np.float32)
    quadrant = np.zeros((8, 8), np.float32)
    quadrant[:4, :4] = 1
    w[0] = quadrant.ravel() * 0.5
    net = build('layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
                'convolution_param { num_output: 1 kernel_size: 1 bias_term: false } }\n'
                'layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip" inner_product_param { num_output: 2 } }\n'
                'layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }\n',
                {"data": (1, 1, 8, 8)}, {"conv": [np.ones((1, 1, 1, 1))], "ip": [w, np.zeros(2)]})
    img = tmp_path / "bright.png"
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(img)
    pre = Preprocess(8, 8, 1, None, "none", 1.0, 1.0)
    r = occlusion.run(net, str(img), pre, "conv", label=0, size=4, stride=4, batch=4, show_progress=False)
    assert r.label == 0 and r.unoccluded_probability > 0.99
    assert r.probability.shape == (2, 2)
    assert r.probability[0, 0] == pytest.approx(0.5, abs=1e-6)            # occluder on the quadrant
    assert np.all(r.probability.ravel()[1:] > 0.99)                      # elsewhere: no change
    assert r.activation[0, 0] == pytest.approx(48) and r.activation[1, 1] == pytest.approx(48)
    assert r.best_class.tolist() == [[0, 0], [0, 0]]                     # a 0.5 tie -> the first class


def test_occlusion_over_a_dataset_gives_each_images_own_occlusion(shared, tmp_path):
    from shapes import make_shapes
    m = shared / "models/cifar10_quick"
    net = zfcaffe.Net(str(m / "cifar10_quick.prototxt"), str(m / "cifar10_quick_iter_4000.caffemodel"))
    pre = for_net(net, mean=str(m / "mean.binaryproto"))
    paths = make_shapes(tmp_path / "shapes", per_class=1)
    entries = [(p, 3 if i % 2 else None) for i, p in enumerate(paths)]    # a label, or the top-1
    r = occlusion.scan(net, entries, pre, "conv3", size=8, stride=4, batch=5, show_progress=False)
    assert r.values["probability"].shape == (5, 7, 7)
    for i, (path, label) in enumerate(entries):
        one = occlusion.run(net, path, pre, "conv3", label, size=8, stride=4, n_projections=0, show_progress=False)
        assert (one.label, one.feature_map) == (r.values["label"][i], r.values["feature_map"][i])
        for name in ("activation", "probability", "best_class"):
            np.testing.assert_allclose(r.values[name][i], getattr(one, name), rtol=1e-5, atol=1e-6)
    s = r.summary()
    assert np.all(s["lowest_probability"] <= r.values["unoccluded_probability"] + 1e-6)
    out = tmp_path / "occ"
    listing = tmp_path / "list.txt"
    listing.write_text(f"{paths[0]} 3\n{paths[1]} 12\n")
    res = run_cli("occlusion", m / "cifar10_quick.prototxt", m / "cifar10_quick_iter_4000.caffemodel", "--mean",
                  m / "mean.binaryproto", "--images", listing, "--quiet", "-o", out, check=False)
    assert res.returncode == 2 and "label 12; the class output 'prob' has classes 0 to 9" in res.stderr


# -- invariance ---------------------------------------------------------------------------------------------
def test_translation_by_zero_has_distance_zero(shared):
    m = shared / "models/cifar10_quick"
    net = zfcaffe.Net(str(m / "cifar10_quick.prototxt"), str(m / "cifar10_quick_iter_4000.caffemodel"))
    pre = for_net(net, mean=str(m / "mean.binaryproto"))
    sweeps = {"vertical translation (px)": np.array([-4, 0, 4]), "rotation (degrees)": np.array([0, 90, 360])}
    r = invariance.run(net, PHOTO, pre, ["conv1", "ip1"], sweeps=sweeps)
    for kind in sweeps:
        zero = list(sweeps[kind]).index(0)
        assert np.all(r.distances[kind][:, zero] == 0)
    assert np.all(r.distances["vertical translation (px)"][:, [0, 2]] > 0)
    assert r.distances["rotation (degrees)"][0, 2] == 0                  # a full turn is the identity
    assert 0 <= r.probability["rotation (degrees)"].min() <= r.probability["rotation (degrees)"].max() <= 1


# -- correspondence -------------------------------------------------------------------------------------------
def test_delta_is_the_mean_pairwise_sign_disagreement():
    same = np.array([[1.0, -2, 3], [2, -1, 1], [5, -5, 0.1]])
    assert correspondence.delta(same) == 0
    assert correspondence.delta(np.array([[1.0, 1], [-1, -1]])) == 1
    assert correspondence.delta(np.array([[1.0, 1], [1, -1]])) == 0.5


def test_correspondence_with_parts_file(shared, photos, tmp_path):
    m = shared / "models/cifar10_quick"
    parts = {f"{i:02d}.jpg": {"eyes": [90, 120, 170, 160], "hat": [60, 0, 200, 60]} for i in range(10)}
    pj = tmp_path / "parts.json"
    pj.write_text(json.dumps(parts))
    out = tmp_path / "corr"
    cli("correspondence", m / "cifar10_quick.prototxt", m / "cifar10_quick_iter_4000.caffemodel",
        "--images", photos, "--parts", pj, "--mean", m / "mean.binaryproto", "-o", out)
    z = np.load(out / "results.npz")
    assert z["delta"].shape == (3, 2) and np.all((z["delta"] >= 0) & (z["delta"] <= 1))
    assert "random (same size)" in (out / "index.html").read_text()


# -- evolution ------------------------------------------------------------------------------------------------
def test_evolution_over_identical_snapshots_gives_identical_columns(shared, photos, tmp_path):
    m = shared / "models/cifar10_quick"
    for it in (100, 200):
        shutil.copy(m / "cifar10_quick_iter_4000.caffemodel", tmp_path / f"snap_iter_{it}.caffemodel")
    out = tmp_path / "evo"
    cli("evolution", m / "cifar10_quick.prototxt", tmp_path / "snap_iter_*.caffemodel", "--images", photos,
        "--layer", "conv2", "--maps", "4", "--mean", m / "mean.binaryproto", "-o", out)
    z = np.load(out / "results.npz")
    assert z["values"].shape == (4, 2)
    np.testing.assert_array_equal(z["values"][:, 0], z["values"][:, 1])
    np.testing.assert_array_equal(z["images"][:, 0], z["images"][:, 1])


# -- every verb end to end ------------------------------------------------------------------------------------
def test_every_verb_on_cifar10_quick(shared, photos, tmp_path):
    m = shared / "models/cifar10_quick"
    net = [m / "cifar10_quick.prototxt", m / "cifar10_quick_iter_4000.caffemodel"]
    mean = ["--mean", m / "mean.binaryproto"]
    cli("top9", *net, "--images", photos, *mean, "--maps", "4", "-o", tmp_path / "t9")
    cli("occlusion", *net, "--image", photos / "00.jpg", *mean, "-o", tmp_path / "occ")
    cli("invariance", *net, "--image", photos / "00.jpg", *mean, "-o", tmp_path / "inv")
    for sub, figure in (("t9", "top9_conv3.png"), ("occ", "00_occlusion.png"), ("inv", "00_invariance.png")):
        assert (tmp_path / sub / figure).exists() and (tmp_path / sub / "index.html").exists()
    z = np.load(tmp_path / "t9/results.npz")
    assert z["relu3/values"].shape == (64, 9) and z["images"].shape == (10,)


def test_every_verb_on_nsfw_resnet50(nsfw, photos, tmp_path):
    net = [nsfw / "deploy.prototxt", nsfw / "resnet_50_1by2_nsfw.caffemodel"]
    mean = ["--mean", "104,117,123"]
    few = tmp_path / "few"
    few.mkdir()
    for i in range(2):          # two images: each verb's page (correspondence compares pairs)
        shutil.copy(photos / f"{i:02d}.jpg", few)
    cli("top9", *net, "--images", few, *mean, "--layers", "conv_1,eltwise_stage1_block0", "--maps", "2", "-k", "2",
        "-o", tmp_path / "t9")
    cli("occlusion", *net, "--image", few / "00.jpg", *mean, "--size", "56", "--stride", "56", "-o", tmp_path / "occ")
    cli("invariance", *net, "--image", few / "00.jpg", *mean, "-o", tmp_path / "inv")
    cli("correspondence", *net, "--images", few, *mean, "-o", tmp_path / "corr")
    cli("evolution", nsfw / "deploy.prototxt", net[1], net[1], "--images", few, *mean, "--layer", "conv_1",
        "--maps", "2", "-o", tmp_path / "evo")
    for sub in ("t9", "occ", "inv", "corr", "evo"):
        assert (tmp_path / sub / "index.html").stat().st_size > 1000
        # every page is looked at in a real browser; the screenshots are CI artifacts
        title, _ = render_in_chromium(tmp_path / sub / "index.html", f"{sub}_nsfw.png", tmp_path, height=1600)
        loaded, total = map(int, title.split()[1].split("/"))
        assert loaded == total > 0, (sub, title)
