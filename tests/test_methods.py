"""The survey's methods (zfcaffe.methods, zfcaffe.optvis): Grad-CAM against an
independent float64 NumPy computation on small nets of every layer family; the
optimisation pieces against their definitions (adjoints, objective diffs); and the
methods' numbers on CIFAR-10, seeded, through their verbs."""
from __future__ import annotations

import matplotlib.cbook
import numpy as np
import pytest

import caffe_reference as ref
from conftest import layer_text as L, run_cli
from zfcaffe.analyses.heads import class_head
from zfcaffe.methods.gradcam import gradcam
from zfcaffe.methods.gradients import gradients, one_hot
from zfcaffe.optvis import objectives, transforms
from zfcaffe.optvis.param import FourierParam, irfft2_adjoint
from zfcaffe.optvis.render import gradient, trunk
from zfcaffe.verbs import verb

PHOTO = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
RNG = np.random.default_rng(12)


def w(*shape, s=0.5):
    return (RNG.standard_normal(shape) * s).astype(np.float32)


# The Grad-CAM layer is a convolution's own output: finite differences need no ReLU kinks or max-pool ties there.
CONV = L("conv1", "Convolution", "data", "convolution_param { num_output: 4 kernel_size: 3 }")
CONV_W = {"conv1": [w(4, 2, 3, 3), w(4)]}
IP = lambda bottom, n=3: L("ip", "InnerProduct", bottom, f"inner_product_param {{ num_output: {n} }}")  # noqa: E731

# (layers above the Grad-CAM layer, their weights, the same head in float64 NumPy: A (4, 8, 8) -> scores)
FAMILIES = {
    "pooling+innerproduct": (
        L("pool", "Pooling", "conv1", "pooling_param { pool: MAX kernel_size: 2 stride: 2 }") + IP("pool"),
        lambda: {"ip": [w(3, 4 * 4 * 4), w(3)]},
        lambda a, p: p["ip"][0].astype(np.float64) @ ref.pool(a[None], (2, 2), (2, 2), (0, 0))[0].ravel()
        + p["ip"][1]),
    "normalization+scale+eltwise": (
        L("bn", "BatchNorm", "conv1", tops=["bn"]) + L("sc", "Scale", "bn", "scale_param { bias_term: true }")
        + L("sum", "Eltwise", ["sc", "conv1"]) + L("gap", "Pooling", "sum", "pooling_param { pool: AVE "
                                                  "global_pooling: true }") + IP("gap"),
        lambda: {"bn": [w(4), np.abs(w(4)) + 0.5, np.array([2.0], np.float32)], "sc": [w(4), w(4)],
                 "ip": [w(3, 4), w(3)]},
        lambda a, p: p["ip"][0].astype(np.float64) @ (
            ((a - p["bn"][0].reshape(4, 1, 1) / 2) / np.sqrt(p["bn"][1].reshape(4, 1, 1) / 2 + 1e-5)
             * p["sc"][0].reshape(4, 1, 1) + p["sc"][1].reshape(4, 1, 1)) + a).mean(axis=(1, 2)) + p["ip"][1]),
    "routing+lrn": (
        L("sl", "Slice", "conv1", "slice_param { slice_point: 1 }", ["s0", "s1"])
        + L("c0", "Convolution", "s0", "convolution_param { num_output: 2 kernel_size: 1 }")
        + L("cat", "Concat", ["c0", "s1"]) + L("lrn", "LRN", "cat", "lrn_param { local_size: 3 alpha: 0.1 "
                                                                  "beta: 0.75 }") + IP("lrn"),
        lambda: {"c0": [w(2, 1, 1, 1), w(2)], "ip": [w(3, 5 * 8 * 8), w(3)]},
        lambda a, p: p["ip"][0].astype(np.float64) @ ref.lrn_across(np.concatenate(
            [ref.conv(a[None, :1], p["c0"][0].astype(np.float64), p["c0"][1]), a[None, 1:]], axis=1),
            3, 0.1, 0.75, 1.0)[0].ravel() + p["ip"][1]),
    "activations": (
        L("prelu", "PReLU", "conv1") + L("tanh", "TanH", "prelu") + IP("tanh"),
        lambda: {"prelu": [np.full(4, 0.3, np.float32)], "ip": [w(3, 4 * 8 * 8, s=0.1), w(3)]},
        lambda a, p: p["ip"][0].astype(np.float64) @ np.tanh(np.where(a > 0, a, 0.3 * a)).ravel() + p["ip"][1]),
    "relu": (
        L("relu", "ReLU", "conv1") + IP("relu"),
        lambda: {"ip": [w(3, 4 * 8 * 8, s=0.1), w(3)]},
        lambda a, p: p["ip"][0].astype(np.float64) @ np.maximum(a, 0).ravel() + p["ip"][1]),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_gradcam_equals_float64_numpy(build, family):
    layers, weights, head_fn = FAMILIES[family]
    params = {**CONV_W, **weights()}
    net = build(CONV + layers + L("prob", "Softmax", "ip"), {"data": (1, 2, 10, 10)}, params)
    x = w(1, 2, 10, 10, s=1.0)
    head = class_head(net)
    r = gradcam(net, x, head, layer="conv1", method="gradcam", guided=False)
    a = net.layer_outputs["conv1"][0].astype(np.float64)
    p = {k: [np.asarray(b, np.float64) for b in v] for k, v in params.items()}
    label = r.label
    grad = np.zeros_like(a)
    for i in np.ndindex(a.shape):                             # central differences in float64
        d = np.zeros_like(a)
        d[i] = 1e-5
        grad[i] = (head_fn(a + d, p)[label] - head_fn(a - d, p)[label]) / 2e-5
    expect = np.maximum(np.tensordot(grad.mean(axis=(1, 2)), a, axes=1), 0)
    assert label == int(head_fn(a, p).argmax())
    np.testing.assert_allclose(r.cam, expect, rtol=1e-4, atol=1e-5 * np.abs(expect).max())


def test_cam_is_grad_cam_for_global_average_pooling(build):
    layers, weights, _ = FAMILIES["normalization+scale+eltwise"]
    net = build(CONV + L("gap", "Pooling", "conv1", "pooling_param { pool: AVE global_pooling: true }")
                + IP("gap") + L("prob", "Softmax", "ip"), {"data": (1, 2, 10, 10)}, {**CONV_W, "ip": [w(3, 4), w(3)]})
    x = w(1, 2, 10, 10, s=1.0)
    cam = gradcam(net, x, class_head(net), method="cam", guided=False)
    grad_cam = gradcam(net, x, class_head(net), method="gradcam", guided=False)
    assert cam.method == "CAM" and grad_cam.method == "Grad-CAM"
    # Grad-CAM's weights are CAM's divided by the map's area
    np.testing.assert_allclose(grad_cam.weights * 64, cam.weights, rtol=1e-4)


def test_smoothgrad_without_noise_is_the_gradient(build):
    net = build(CONV + L("relu1", "ReLU", "conv1", tops=["conv1"]) + IP("conv1") + L("prob", "Softmax", "ip"),
                {"data": (1, 2, 10, 10)},
                {**CONV_W, "ip": [w(3, 4 * 8 * 8), w(3)]})
    x = w(1, 2, 10, 10, s=1.0)
    seeds = lambda n: {"ip": one_hot((1, 3), 1)}  # noqa: E731
    plain = gradients(net, x, seeds)["data"]
    np.testing.assert_allclose(gradients(net, x, seeds, smooth=3, noise=0.0)["data"], plain, rtol=1e-6)
    noisy = gradients(net, x, seeds, smooth=8, noise=0.2, seed=1)["data"]
    assert noisy.shape == plain.shape and not np.allclose(noisy, plain)


# -- optvis pieces against their definitions ------------------------------------------------------------------
def _dot_test(forward, adjoint, x_shape, y_shape):
    a, b = RNG.standard_normal(x_shape), RNG.standard_normal(y_shape)
    lhs = float(np.sum(forward(a) * b))
    rhs = float(np.sum(a * adjoint(b)))
    assert abs(lhs - rhs) <= 1e-9 * max(abs(lhs), 1)


@pytest.mark.parametrize("hw", [(6, 8), (7, 9)])
def test_fourier_adjoint_is_exact(hw):
    h, wd = hw
    _dot_test(lambda t: np.fft.irfft2(t[..., 0] + 1j * t[..., 1], s=(h, wd), norm="ortho"),
              lambda g: irfft2_adjoint(g, wd), (3, h, wd // 2 + 1, 2), (3, h, wd))
    p = FourierParam(3, h, wd, lambda px: px * 2 - 1, lambda g: g * 2, seed=0)   # the full chain, linearised
    theta = p.theta.copy()
    g = RNG.standard_normal((3, h, wd))
    eps = 1e-4                     # image() is float32: a step large enough to rise above its rounding
    d = RNG.standard_normal(theta.shape)
    p.theta = theta + eps * d
    up = float(np.sum(p.image().astype(np.float64) * g))
    p.theta = theta - eps * d
    down = float(np.sum(p.image().astype(np.float64) * g))
    p.theta = theta
    p.image()
    adjoint = float(np.sum(p.adjoint(g) * d))
    assert abs((up - down) / (2 * eps) - adjoint) < 1e-3 * abs(adjoint)


@pytest.mark.parametrize("make", [lambda: transforms.jitter(3), lambda: transforms.pad_shift(3),
                                  lambda: transforms.scale((1.1,)), lambda: transforms.rotate((7,))])
def test_transform_adjoints_are_exact(make):
    t = make()
    y, adjoint = t(np.zeros((3, 12, 10)), np.random.default_rng(4))
    forward = lambda x: t(x, np.random.default_rng(4))[0]  # noqa: E731 - the same random draw
    _dot_test(forward, adjoint, (3, 12, 10), (3, 12, 10))


def test_standard_transforms_adjoint_is_exact():
    moves = transforms.standard_transforms()

    def forward(x, adjoints=None):
        rng = np.random.default_rng(9)
        for t in moves:
            x, adjoint = t(x, rng)
            if adjoints is not None:
                adjoints.append(adjoint)
        return x
    adjoints = []
    forward(np.zeros((3, 20, 18)), adjoints)

    def back(g):
        for adjoint in reversed(adjoints):
            g = adjoint(g)
        return g
    _dot_test(forward, back, (3, 20, 18), (3, 20, 18))


def test_fourier_image_cannot_overflow():
    """A spectrum far past any step's reach: pixels saturate to 0 and 1 without an
    overflow warning, and the gradient stays finite."""
    import warnings
    p = FourierParam(3, 16, 16, lambda px: px * 255 - 120, lambda g: g * 255, seed=0)
    p.theta *= 1e6
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x = p.image()
        g = p.adjoint(np.ones_like(x))
    assert np.all(np.isfinite(x)) and x.min() >= -120 and x.max() <= 135 and np.all(np.isfinite(g))


def test_the_net_runs_only_up_to_the_target(build):
    """trunk: the cut net ends at the target's layer, shares the net's weight arrays,
    and gives the same objective and gradient as the whole net."""
    net = build(CONV + L("relu1", "ReLU", "conv1", tops=["conv1"]) + IP("conv1") + L("prob", "Softmax", "ip"),
                {"data": (1, 2, 10, 10)}, {**CONV_W, "ip": [w(3, 4 * 8 * 8), w(3)]})
    obj = objectives.channel("relu1", 2)
    cut = trunk(net, obj.keys)
    assert [layer.name for layer in cut.graph.layers] == ["data", "conv1", "relu1"]
    assert cut.graph.layer("conv1").blobs[0] is net.graph.layer("conv1").blobs[0]
    assert trunk(net, objectives.class_logit("ip", 1).keys).graph.layers[-1].name == "ip"
    assert trunk(net, objectives.class_logit("prob", 1).keys) is net
    x = w(2, 10, 10, s=1.0)
    value, grad = gradient(net, obj, x)
    cut_value, cut_grad = gradient(cut, obj, x)
    assert cut_value == value and np.array_equal(cut_grad, grad) and np.any(grad)


@pytest.mark.parametrize("name", ["tv", "l6", "match", "logp", "l2"])
def test_objective_diffs_against_finite_differences(name):
    x = RNG.standard_normal((1, 2, 5, 6))
    obj = {"tv": objectives.total_variation("x"), "l6": objectives.lp_norm("x", 6),
           "match": objectives.feature_match("x", RNG.standard_normal(x.shape)),
           "logp": objectives.log_probability("x", 3, softmaxed=True),
           "l2": objectives.layer_l2("x") * 0.5 + objectives.channel("x", 1)}[name]
    value, diffs = obj({"x": x})
    num = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        d = np.zeros_like(x)
        d[i] = 1e-6
        num[i] = (obj({"x": x + d})[0] - obj({"x": x - d})[0]) / 2e-6
    np.testing.assert_allclose(diffs["x"], num, rtol=2e-3, atol=2e-3 * np.abs(num).max())


def test_verbs_are_registered_once():
    import zfcaffe.recipes.methods  # noqa: F401 - registers gradcam
    with pytest.raises(ValueError, match="registered twice"):
        verb("gradcam", "again")(lambda ctx, args: 0)


# -- the methods on CIFAR-10, through their verbs ------------------------------------------------------------------
def _run(verb_name, cifar, tmp_path, *args):
    out = tmp_path / verb_name
    run_cli(verb_name, *cifar, *args, "-o", out)
    assert (out / "index.html").stat().st_size > 1000
    return np.load(out / "results.npz")


def test_class_model_raises_the_score_tenfold_inside_the_input_range(shared, cifar, tmp_path):
    import zfcaffe
    from zfcaffe.preprocess import for_net
    r = _run("classviz", cifar, tmp_path, "--label", "3", "--steps", "150", "--seed", "0")
    assert r["start_score"] > 0 and r["score"] >= 10 * r["start_score"]
    net = zfcaffe.Net(str(cifar[0]))
    low, high = for_net(net, mean=str(cifar[3])).input_range()
    assert np.all(r["image"] >= low - 1e-4) and np.all(r["image"] <= high + 1e-4)
    fourier = _run("classviz", cifar, tmp_path, "--label", "3", "--steps", "60", "--param", "fourier",
                   "--lr", "0.05")
    assert fourier["score"] > 3 * fourier["start_score"]


def test_lucid_recipe_is_the_default_on_resnet50_and_its_page_renders(nsfw, tmp_path):
    """classviz's defaults on nsfw's ResNet-50 (224 px: Lucid's recipe), few steps: the
    channel's mean activation passes the photo's, no pixel at the input's bounds, a
    photo's contrast, no overflow, and the page loads in Chromium. (The full recipe on
    4 channels at 3 depths: benchmarks/optvis.py.)"""
    from conftest import render_in_chromium
    import zfcaffe
    from zfcaffe.preprocess import for_net
    args = [nsfw / "deploy.prototxt", nsfw / "resnet_50_1by2_nsfw.caffemodel", "--mean", "104,117,123", "--quiet"]
    out = tmp_path / "classviz"
    proc = run_cli("classviz", *args, "--layer", "relu_stage0_block0", "--channel", "12", "--steps", "24", "-o", out)
    assert "overflow" not in proc.stderr
    r = np.load(out / "results.npz")
    net = zfcaffe.Net(str(args[0]), str(args[1]))
    pre = for_net(net, mean="104,117,123")
    x, shown = pre.prepare(PHOTO)
    net.forward(data=x[None])
    photo = float(net.layer_outputs["relu_stage0_block0"][0, 12].mean())
    img = pre.to_image(r["image"])
    assert r["score"] >= photo and r["score"] >= 2 * r["start_score"]
    assert np.mean(np.any((img <= 0.5 / 255) | (img >= 254.5 / 255), axis=2)) < 0.02
    assert img.std() >= shown.std() / 5             # a quarter after 24 steps (0.31), 256 in the benchmark
    page = (out / "index.html").read_text()
    assert "Lucid" in page and "up to the target" in page
    title, _ = render_in_chromium(out / "index.html", "classviz_resnet50.png", tmp_path)
    assert title.startswith("images 1/1")


def test_inversion_of_conv3_reaches_a_fifth(cifar, tmp_path):
    r = _run("invert", cifar, tmp_path, "--image", PHOTO, "--layer", "conv3", "--seed", "0")
    assert r["distance"] <= 0.2


def test_fooling_a_photo_within_eight_pixels_and_from_noise(cifar, tmp_path):
    r = _run("fool", cifar, tmp_path, "--image", PHOTO, "--target", "0")      # the photo is an automobile to it
    assert r["probability"] >= 0.99 and r["linf"] <= 8 and r["start_probability"] < 0.01
    r = _run("fool", cifar, tmp_path / "noise", "--from-noise", "--target", "3")
    assert r["probability"] >= 0.99


def test_deepdream_objective_rises(cifar, tmp_path):
    r = _run("dream", cifar, tmp_path, "--image", PHOTO, "--layer", "conv2", "--octaves", "2", "--steps", "6")
    values, ends = r["values"], r["octave_ends"]
    for start, end in zip([0, *ends[:-1]], ends):
        assert values[end - 1] > values[start]                  # within each octave (sizes differ between)


def test_gradcam_and_saliency_verbs(cifar, tmp_path):
    r = _run("gradcam", cifar, tmp_path, "--image", PHOTO)
    assert r["heatmap"].shape == (32, 32) and r["heatmap"].max() == 1 and r["guided_gradcam"].shape == (3, 32, 32)
    r = _run("saliency", cifar, tmp_path, "--image", PHOTO, "--mode", "backprop,guided,deconvnet", "--smooth", "4")
    assert {k.split("/")[0] for k in r.files} == {"backprop", "guided", "deconvnet"}
