"""`from zfcaffe import caffe`: pycaffe scripts run with only the import changed, and
give real Caffe's numbers (../shared/oracle)."""
from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import matplotlib.cbook
import numpy as np
import pytest

import zfcaffe
from conftest import ROOT, load_case, rel_err
from zfcaffe import caffe, caffe_pb2

SCRIPTS = pathlib.Path(__file__).parent / "pycaffe_scripts"
PHOTO = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


def run_script(name: str, tmp_path, **env) -> str:
    """Run a pycaffe script with `import caffe` swapped for zfcaffe's, nothing else."""
    text = (SCRIPTS / name).read_text()
    assert "\nimport caffe\n" in text
    script = tmp_path / name
    script.write_text(text.replace("\nimport caffe\n", "\nfrom zfcaffe import caffe\n"))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, "OUT": str(tmp_path), "PYTHONPATH": str(ROOT), **env})
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_seed_cifar10_script(shared, tmp_path):
    case = load_case(shared, "cifar10_quick")
    out = run_script("cifar10_filters.py", tmp_path, MODELS=str(shared / "models"),
                     INPUT=str(case["dir"] / "input.npy"))
    assert "('conv1', (32, 3, 5, 5))" in out and "('ip1', (64, 1024))" in out
    assert "('data', (100, 3, 32, 32))" in out                 # batch from the data layer, size from the weights
    ref = np.load(case["dir"] / "outputs.npz")
    assert rel_err(np.load(tmp_path / "ip2.npy"), ref["ip2"]) < 1e-4
    assert rel_err(np.load(tmp_path / "conv1.npy"), ref["conv1"]) < 1e-4     # (relu1 acts on pool1 here)
    assert "conv1 range after show_feature: 0.0 1.0" in out    # in-place edits reach the params, as in pycaffe
    for f in ("conv1.png", "conv2.png", "conv3.png"):
        assert (tmp_path / f).stat().st_size > 1000


@pytest.mark.parametrize("name", ["cifar10_quick", "caffenet_fc256", "mobilenet_v2"])
def test_deepdream_loop_matches_caffe_backward(shared, tmp_path, name):
    case = load_case(shared, name)
    layer = case["seed_layers"][-2]
    seed = case["seeds"][layer]
    x = np.load(case["dir"] / "input.npy")
    np.save(tmp_path / "x.npy", x)
    weights = case["dir"] / "weights.caffemodel"
    run_script("deepdream.py", tmp_path, DEPLOY=str(case["dir"] / "deploy.prototxt"),
               WEIGHTS=str(weights if weights.exists() else case["weights_path"]), INPUT=str(tmp_path / "x.npy"),
               END=layer, UNIT=json.dumps(seed["unit"]), VALUE=str(seed["value"]))
    grads = np.load(case["dir"] / "grads.npz")
    assert rel_err(np.load(tmp_path / "first_grad.npy"), grads[f"backprop/{layer}"]) < 1e-4
    act = np.load(tmp_path / "activations.npy")
    assert act[-1] > act[0]                                    # the ascent raises the unit


def test_net_surgery_save_reload_classify(shared, tmp_path):
    out = run_script("net_surgery.py", tmp_path, MODELS=str(shared / "models"), IMAGE=PHOTO)
    assert "conv1 doubled: True" in out and "reloaded bit-identically" in out
    probs = np.load(tmp_path / "probs.npy")
    assert probs.shape == (2, 10) and np.allclose(probs.sum(1), 1, atol=1e-5)
    # what Caffe's NetParameter reader expects: V2 layers, blobs shaped by BlobShape
    saved = caffe_pb2.NetParameter.FromString((tmp_path / "surgery.caffemodel").read_bytes())
    assert not len(saved.layers) and [l.name for l in saved.layer if l.blobs] == \
        ["conv1", "conv2", "conv3", "ip1", "ip2"]
    conv1 = saved.layer[1]
    assert conv1.type == "Convolution" and list(conv1.blobs[0].shape.dim) == [32, 3, 5, 5]
    assert not conv1.blobs[0].HasField("num") and conv1.convolution_param.num_output == 32
    assert list(conv1.bottom) == ["data"] and list(conv1.top) == ["conv1"]
    m = shared / "models/cifar10_quick"
    for weights in ("surgery.caffemodel", "surgery.caffemodel.h5"):
        a = zfcaffe.Net(str(m / "cifar10_quick.prototxt"), str(tmp_path / weights))
        assert np.array_equal(a.params["conv1"][0].data, 2 * zfcaffe.Net(
            str(m / "cifar10_quick.prototxt"), str(m / "cifar10_quick_iter_4000.caffemodel")).params["conv1"][0].data)


# -- the Net's surface ------------------------------------------------------------------------------------
@pytest.fixture
def cifar(shared):
    m = shared / "models/cifar10_quick"
    return caffe.Net(str(m / "cifar10_quick.prototxt"), str(m / "cifar10_quick_iter_4000.caffemodel"), caffe.TEST)


def test_net_structure_like_pycaffe(cifar):
    net = cifar
    assert net.inputs == ["data"] and net.outputs == ["prob"]
    assert list(net.blobs) == ["data", "conv1", "pool1", "conv2", "pool2", "conv3", "pool3", "ip1", "ip2", "prob"]
    assert net._layer_names[:4] == ["data", "conv1", "pool1", "relu1"]
    assert net.top_names["relu1"] == ["pool1"] and net.bottom_names["relu1"] == ["pool1"]
    assert [l.type for l in net.layers][:3] == ["Input", "Convolution", "Pooling"]
    assert net.layer_dict["conv1"].blobs[0].data.shape == (32, 3, 5, 5)
    b = net.blobs["conv1"]
    assert (b.num, b.channels, b.height, b.width, b.count) == (1, 32, 32, 32, 32 * 32 * 32)
    assert net.blobs["ip2"].height == 1 and net.blob_loss_weights["prob"] == 0
    assert "Convolution" in caffe.layer_type_list()
    with pytest.raises(zfcaffe.ZfcaffeError, match="no parameter gradients"):
        net.params["conv1"][0].diff
    with pytest.raises(zfcaffe.ZfcaffeError, match="does not train"):
        caffe.SGDSolver("solver.prototxt")
    with pytest.raises(zfcaffe.ZfcaffeError, match="no layer named 'conv9'; did you mean"):
        net.forward(end="conv9")


def test_in_place_semantics_and_start_end(cifar):
    net = cifar
    x = np.random.default_rng(0).uniform(-50, 50, (1, 3, 32, 32)).astype(np.float32)
    out = net.forward(data=x)
    pool1 = net.blobs["pool1"].data.copy()
    assert pool1.min() >= 0                                    # after the in-place ReLU
    net.forward(end="pool1")
    assert net.blobs["pool1"].data.min() < 0                   # the pooling's own output: relu1 not run yet
    net.forward(start="relu1")                                 # on the data already in the blobs
    np.testing.assert_array_equal(net.blobs["prob"].data, out["prob"])
    net.blobs["conv3"].data[...] = 0                           # edit a blob, run the rest from there
    r = net.forward(start="relu3")
    ip1 = net.params["ip1"][1].data
    expected = ip1 @ net.params["ip2"][0].data.T + net.params["ip2"][1].data     # pool3 of zeros is 0
    np.testing.assert_allclose(net.blobs["ip2"].data[0], expected, rtol=1e-5, atol=1e-5)
    assert set(r) == {"prob"}


def test_backward_diffs_by_blob_name(cifar):
    net = cifar
    x = np.random.default_rng(1).uniform(-50, 50, (1, 3, 32, 32)).astype(np.float32)
    net.forward(data=x)
    d = net.backward(prob=np.eye(1, 10, 3, dtype=np.float32))
    assert set(d) == {"data"} and np.abs(d["data"]).max() > 0
    # blobs['pool1'].diff is the pooling output's diff: the in-place ReLU's bottom diff
    pool1 = net.blobs["pool1"]
    assert np.all(pool1.diff[pool1.data <= 0] == 0)
    e = zfcaffe.Net(net._engine.graph.path, net._engine.graph.weights_path)
    e.forward(data=x)
    ref = e.backward({"prob": np.eye(1, 10, 3, dtype=np.float32)})
    np.testing.assert_allclose(d["data"], ref["data"], rtol=1e-6)
    np.testing.assert_allclose(net.blobs["conv2"].diff, ref["conv2"], rtol=1e-6)


def test_forward_all_batches_and_pads(shared):
    m = shared / "models/cifar10_quick"
    net = caffe.Net(str(m / "cifar10_quick.prototxt"), str(m / "cifar10_quick_iter_4000.caffemodel"), caffe.TEST)
    net.blobs["data"].reshape(2, 3, 32, 32)
    net.reshape()
    x = np.random.default_rng(2).uniform(-50, 50, (5, 3, 32, 32)).astype(np.float32)
    out = net.forward_all(data=x)["prob"]
    assert out.shape == (5, 10)
    single = zfcaffe.Net(str(m / "cifar10_quick.prototxt"), str(m / "cifar10_quick_iter_4000.caffemodel"))
    np.testing.assert_allclose(out, single.forward(data=x)["prob"], rtol=1e-5, atol=1e-7)
    outs, diffs = net.forward_backward_all(data=x, prob=np.ones((5, 10), np.float32))
    assert outs["prob"].shape == (5, 10) and diffs["data"].shape == (5, 3, 32, 32)
    with pytest.raises(zfcaffe.ZfcaffeError, match="Input blob arguments do not match"):
        net.forward(image=x[:2])


# -- caffe.io ---------------------------------------------------------------------------------------------
def test_io_conversions_round_trip():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    assert np.array_equal(caffe.io.blobproto_to_array(caffe.io.array_to_blobproto(a)), a)
    legacy = caffe_pb2.BlobProto(num=1, channels=2, height=3, width=4, data=list(range(24)))
    assert caffe.io.blobproto_to_array(legacy).shape == (1, 2, 3, 4)
    arrays = caffe.io.blobprotovector_str_to_arraylist(caffe.io.arraylist_to_blobprotovector_str([a, a[0]]))
    assert [x.shape for x in arrays] == [(2, 3, 4), (3, 4)]
    u8 = (np.arange(24) % 255).astype(np.uint8).reshape(2, 3, 4)
    datum = caffe.io.array_to_datum(u8, label=7)
    assert datum.label == 7 and np.array_equal(caffe.io.datum_to_array(datum), u8)
    assert caffe.io.datum_to_array(caffe.io.array_to_datum(a)).dtype == np.float64


def test_io_images_and_transformer():
    img = caffe.io.load_image(PHOTO)
    assert img.dtype == np.float32 and img.shape[2] == 3 and 0 <= img.min() and img.max() <= 1
    assert caffe.io.load_image(PHOTO, color=False).shape[2] == 1
    small = caffe.io.resize_image(img, (32, 40))
    assert small.shape == (32, 40, 3) and small.dtype == np.float32
    crops = caffe.io.oversample([small], (28, 28))
    assert crops.shape == (10, 28, 28, 3)
    np.testing.assert_array_equal(crops[5], crops[0][:, ::-1])          # the mirrors come last
    np.testing.assert_array_equal(crops[4], small[2:30, 6:34])          # the centre crop
    t = caffe.io.Transformer({"data": (1, 3, 32, 40)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    t.set_mean("data", np.array([104, 117, 123]))
    t.set_input_scale("data", 0.5)
    x = t.preprocess("data", small)
    expect = (small.transpose(2, 0, 1)[::-1] * 255 - np.array([104, 117, 123]).reshape(3, 1, 1)) * 0.5
    np.testing.assert_allclose(x, expect, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(t.deprocess("data", x), small, atol=1e-5)
    with pytest.raises(ValueError, match="Mean channels"):
        t.set_mean("data", np.zeros(4))


def test_copy_from_share_with_and_modes(shared, cifar, capfd):
    m = shared / "models/cifar10_quick"
    x = np.random.default_rng(3).uniform(-50, 50, (1, 3, 32, 32)).astype(np.float32)
    ref = cifar.forward(data=x)["prob"].copy()
    cifar.params["conv1"][0].data[...] = 0
    assert not np.allclose(cifar.forward(data=x)["prob"], ref)
    cifar.copy_from(str(m / "cifar10_quick_iter_5000.caffemodel.h5"))        # another snapshot
    other = caffe.Net(str(m / "cifar10_quick.prototxt"), caffe.TEST)
    other.share_with(cifar)
    np.testing.assert_array_equal(other.forward(data=x)["prob"], cifar.forward(data=x)["prob"])
    cifar.copy_from(str(m / "cifar10_quick_iter_4000.caffemodel"))
    np.testing.assert_allclose(cifar.forward(data=x)["prob"], ref, rtol=1e-6)
    np.testing.assert_allclose(other.forward(data=x)["prob"], ref, rtol=1e-6)   # shared arrays
    caffe.set_mode_gpu()
    caffe.set_mode_cpu()
    assert "set_mode_gpu" in capfd.readouterr().err                             # no GPU here: one line says so


def test_classifier_centre_crop_and_detector_windows(shared):
    m = shared / "models/cifar10_quick"
    args = (str(m / "cifar10_quick.prototxt"), str(m / "cifar10_quick_iter_4000.caffemodel"))
    mean = np.array([125.0, 123.0, 114.0])
    clf = caffe.Classifier(*args, image_dims=(40, 40), mean=mean, raw_scale=255, channel_swap=(2, 1, 0))
    image = caffe.io.load_image(PHOTO)
    p = clf.predict([image], oversample=False)
    assert p.shape == (1, 10) and abs(p.sum() - 1) < 1e-5
    det = caffe.Detector(*args, mean=mean, raw_scale=255, channel_swap=(2, 1, 0), context_pad=4)
    windows = [(0, 0, 200, 200), (100, 150, 300, 400)]
    found = det.detect_windows([(PHOTO, windows)])
    assert [d["window"] for d in found] == windows and found[0]["prediction"].shape == (10,)
    with pytest.raises(zfcaffe.ZfcaffeError, match="detect_windows"):
        det.detect_selective_search([PHOTO])
