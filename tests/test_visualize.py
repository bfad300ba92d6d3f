"""Preprocessing, tiling, `zfcaffe visualize` / `filters`, and the report in a real browser."""
from __future__ import annotations

import os
import pathlib

import matplotlib.cbook
import numpy as np
import pytest
from PIL import Image

import zfcaffe
from conftest import render_in_chromium, run_cli as cli
from zfcaffe.preprocess import Preprocess, for_net, load_image
from zfcaffe.analyses.common import strongest_units
from zfcaffe.imaging import cut
from zfcaffe.recipes.visualize import visualize
from zfcaffe.viz import filter_tiles, vis_square

PHOTO = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


@pytest.fixture
def image_folder(tmp_path) -> pathlib.Path:
    """Real-photo crops in the formats users have: RGB JPEG, grey PNG, RGBA PNG."""
    d = tmp_path / "images"
    d.mkdir()
    img = Image.open(PHOTO)
    img.crop((0, 0, 300, 300)).save(d / "a.jpg")
    img.crop((100, 50, 400, 350)).convert("L").save(d / "b.png")
    img.crop((50, 100, 350, 400)).convert("RGBA").save(d / "c.png")
    return d


# -- tiling ---------------------------------------------------------------------------------------
def test_vis_square_layout_and_normalisation():
    data = np.arange(5 * 4 * 3, dtype=np.float32).reshape(5, 4, 3)
    t = vis_square(data, pad=1)
    assert t.shape == (2 * 5 - 1, 3 * 4 - 1)          # 5 tiles on a 3x2 grid
    assert t.min() == 0 and t.max() == 1
    np.testing.assert_allclose(t[:4, :3], (data[0] - data.min()) / (data.max() - data.min()))
    np.testing.assert_allclose(t[5:9, 4:7], (data[4] - data.min()) / (data.max() - data.min()))
    assert np.all(t[4, :] == 1)                        # padding rows are background
    per = vis_square(data, per_item=True)
    assert per[:4, :3].max() == 1 and per[:4, :3].min() == 0


def test_filter_tiles_modes():
    w = np.random.default_rng(0).standard_normal((6, 3, 5, 5)).astype(np.float32)
    assert filter_tiles(w).shape == (2 * 6 - 1, 3 * 6 - 1, 3)            # colour, 3 x 2 grid
    np.testing.assert_allclose(filter_tiles(w, "color", per_filter=True)[:5, :5],
                               (lambda f: (f - f.min()) / (f.max() - f.min()))(w[0].transpose(1, 2, 0)[..., ::-1]),
                               rtol=1e-5)
    assert filter_tiles(w, "channels").shape == (4 * 6 - 1, 5 * 6 - 1)  # 18 grey tiles, 5 x 4
    assert filter_tiles(w, "sum").ndim == 2


def test_receptive_field_box_caffenet(shared):
    net = zfcaffe.Net(str(shared / "models/bvlc_reference_caffenet/deploy.prototxt"))
    g = net.graph.geometry["conv5"]
    y0, y1, x0, x1 = g.box(6, 6, 227, 227)
    assert (y1 - y0, x1 - x0) == (163, 163)
    assert (y0, x0) == (32, 32)        # unit 6 is centred on pixel 17 + 6 * 16 = 113, the image centre
    assert g.box(0, 0, 227, 227)[0] < 0                                    # hangs off the image: padded


def test_cut_pads_outside_the_image():
    img = np.arange(16, dtype=np.float32).reshape(4, 4)
    p = cut(img, (-1, 2, 2, 6), fill=-1)
    assert p.shape == (3, 4) and p[0, 0] == -1 and p[1, 0] == 2 and p[2, 1] == 7 and p[1, 3] == -1


def test_strongest_units():
    act = np.zeros((3, 2, 2), np.float32)
    act[1, 1, 0], act[2, 0, 1] = 5, 3
    assert strongest_units(act, 2) == [(1, 1, 0, 5.0), (2, 0, 1, 3.0)]


# -- preprocessing ------------------------------------------------------------------------------------
def test_preprocess_matches_pycaffe_transformer_steps(image_folder):
    mean = np.array([104, 117, 123], np.float32)
    pre = Preprocess(32, 32, 3, mean, "values", 255.0, 0.5)
    x, rgb = pre.prepare(str(image_folder / "a.jpg"))
    assert x.shape == (3, 32, 32) and rgb.shape == (32, 32, 3)
    expect = (rgb.transpose(2, 0, 1)[::-1] * 255 - mean.reshape(3, 1, 1)) * 0.5
    np.testing.assert_allclose(x, expect, rtol=1e-5, atol=1e-4)
    assert load_image(str(image_folder / "b.png")).shape[2] == 3       # grey -> 3 channels
    assert load_image(str(image_folder / "c.png")).shape[2] == 3       # RGBA -> composited
    assert load_image(str(image_folder / "a.jpg"), gray=True).shape[2] == 1


def test_train_val_defaults_and_mean_fitting(shared):
    m = shared / "models/bvlc_reference_caffenet"
    net = zfcaffe.Net(str(m / "deploy.prototxt"))
    pre = for_net(net, train_val=str(m / "train_val.prototxt"))
    assert pre.mean.shape == (3, 256, 256) and "imagenet_mean.binaryproto" in pre.mean_source
    x = pre(PHOTO)
    assert x.shape == (3, 227, 227)
    assert "minus mean" in pre.describe()
    cifar = zfcaffe.Net(str(shared / "models/cifar10_quick/cifar10_quick.prototxt"))
    with pytest.raises(zfcaffe.ZfcaffeError, match="mean"):
        for_net(cifar, mean="1,2")(PHOTO)


def test_mean_with_wrong_channels_is_one_line_error(shared, tmp_path):
    bad = tmp_path / "gray_mean.npy"
    np.save(bad, np.zeros((1, 32, 32), np.float32))
    m = shared / "models/cifar10_quick"
    r = cli("visualize", m / "cifar10_quick.prototxt", m / "cifar10_quick_iter_4000.caffemodel",
            "--image", PHOTO, "--mean", bad, "-o", tmp_path / "out", check=False)
    assert r.returncode == 2 and r.stderr.startswith("zfcaffe: error: ") and str(bad) in r.stderr
    assert r.stderr.strip().count("\n") == 0
    assert not (tmp_path / "out").exists()


# -- visualize and filters -------------------------------------------------------------------------------
def test_visualize_cifar10_quick(shared, image_folder, tmp_path):
    m = shared / "models/cifar10_quick"
    out = tmp_path / "report"
    images = sorted(image_folder.iterdir())
    net = zfcaffe.Net(str(m / "cifar10_quick.prototxt"), str(m / "cifar10_quick_iter_4000.caffemodel"))
    index = visualize(net, [str(p) for p in images], str(out), top=4, progress=False,
                      preprocess=for_net(net, mean=str(m / "mean.binaryproto")))
    files = sorted(os.listdir(out))
    assert index == str(out / "index.html")
    for stem in ("a", "b", "c"):
        assert f"{stem}_input.png" in files
        for layer in ("conv1", "conv2", "conv3"):
            assert f"{stem}_{layer}_projections.png" in files and f"{stem}_{layer}_activations.png" in files
    assert "filters_conv1.png" in files
    html = (out / "index.html").read_text()
    assert html.count("<img") == 3 * 7 + 3 and "Preprocessing" in html and "5 most probable classes" in html
    assert "CIFAR-10 names, chosen because the class output has 10 classes" in html
    assert "http" not in html.replace("http-equiv", "")    # no outside assets

    # rerunning into the same folder replaces it cleanly
    (out / "stale.png").write_bytes(b"x")
    cli("visualize", m / "cifar10_quick.prototxt", m / "cifar10_quick_iter_4000.caffemodel", "--image", images[0],
        "--layers", "conv2", "--top", "3", "--quiet", "-o", out)
    files = sorted(os.listdir(out))
    assert "stale.png" not in files and "a_conv2_projections.png" in files and "b_input.png" not in files
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".report")]   # no temp folders left


def test_visualize_without_images_and_bad_image(shared, tmp_path):
    m = shared / "models/cifar10_quick"
    args = [m / "cifar10_quick.prototxt", m / "cifar10_quick_iter_4000.caffemodel"]
    cli("visualize", *args, "--quiet", "-o", tmp_path / "empty")
    html = (tmp_path / "empty/index.html").read_text()
    assert "--image" in html and "filters_conv1.png" in html
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    r = cli("visualize", *args, "--image", bad, "-o", tmp_path / "x", check=False)
    assert r.returncode == 2 and "broken.jpg" in r.stderr and not (tmp_path / "x").exists()


def test_filters_command(shared, tmp_path):
    m = shared / "models/cifar10_quick"
    out = tmp_path / "conv1.png"
    r = cli("filters", m / "cifar10_quick.prototxt", m / "cifar10_quick_iter_4000.caffemodel", "--layer", "conv1",
            "-o", out)
    assert "32 filters" in r.stdout and Image.open(out).size[0] >= 384
    bad = cli("filters", m / "cifar10_quick.prototxt", m / "cifar10_quick_iter_4000.caffemodel", "--layer", "pool1",
              "-o", out, check=False)
    assert bad.returncode == 2 and "pool1" in bad.stderr


# -- the report in a real browser ---------------------------------------------------------------------------
def test_report_renders_in_headless_chromium(shared, image_folder, tmp_path):
    m = shared / "models/cifar10_quick"
    out = tmp_path / "report"
    cli("visualize", m / "cifar10_quick.prototxt", m / "cifar10_quick_iter_4000.caffemodel",
        "--image", image_folder / "a.jpg", "--mean", m / "mean.binaryproto", "--quiet", "-o", out)
    title, shot = render_in_chromium(out / "index.html", "visualize_report.png", tmp_path)
    loaded, total = map(int, title.split()[1].split("/"))
    assert total >= 8 and loaded == total, title
    assert int(title.split()[3]) > 500                     # the page has real text
    pixels = np.asarray(Image.open(shot).convert("L"), np.float32)
    assert pixels.std() > 10                               # not a blank page


def test_visualize_grey_net_with_train_val_defaults(shared, image_folder, tmp_path):
    m = shared / "models/lenet_mnist"
    r = cli("visualize", m / "lenet.prototxt", m / "lenet_iter_10000.caffemodel", "--train-val",
            m / "lenet_train_test.prototxt", "--image", image_folder / "a.jpg", "-o", tmp_path / "lenet")
    assert "x0.00390625" in r.stderr                     # the TEST data layer's scale
    patch = np.asarray(Image.open(tmp_path / "lenet/a_conv2_projections.png").convert("RGB"), np.float32)
    assert patch.shape[2] == 3 and (tmp_path / "lenet/filters_conv1.png").exists()
