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


PYCAFFE_IO_FILES = {"photo": "photo.jpg", "gray": "gray.png", "rgba": "rgba.png", "small": "small.png"}


def _pycaffe_io_keys(d, z, ilsvrc_mean) -> dict:
    """Every key of ../shared/pycaffe_io/pycaffe_io.npz, by the README's exact call,
    with zfcaffe's caffe.io."""
    io = caffe.io
    load = lambda n, color=True: io.load_image(str(d / PYCAFFE_IO_FILES[n]), color=color)  # noqa: E731
    bp = caffe_pb2.BlobProto()
    bp.ParseFromString((d.parent / "models/cifar10_quick/mean.binaryproto").read_bytes())
    cifar_mean = io.blobproto_to_array(bp)
    got = {}

    def put(key, a, chw=False):     # whole, or every 8th row and column plus the sum
        if key in z.files:
            got[key] = a
        if key + "_sub8" in z.files:
            got[key + "_sub8"] = a[:, ::8, ::8] if chw else a[::8, ::8, :]
            got[key + "_sum"] = a.astype(np.float64).sum()

    def transformer(size, mean, input_scale=None):
        t = io.Transformer({"data": (1, 3, size, size)})
        t.set_transpose("data", (2, 0, 1))
        t.set_channel_swap("data", (2, 1, 0))
        t.set_raw_scale("data", 255)
        t.set_mean("data", mean)
        if input_scale is not None:
            t.set_input_scale("data", input_scale)
        return t

    caffenet_mean = np.array([104.00698793, 116.66876762, 122.67891434])
    for n in PYCAFFE_IO_FILES:
        im = load(n)
        put(f"{n}/load_image", im)
        put(f"{n}/load_image_gray", load(n, False))
        for key in [k for k in z.files if k.startswith(f"{n}/resize_") and "ch_" not in k]:
            spec = key.split("/")[1][len("resize_"):].replace("_sub8", "").replace("_sum", "")
            (h, w), order = map(int, spec.split("_o")[0].split("x")), int(spec.split("_o")[1])
            put(f"{n}/resize_{spec}", io.resize_image(im, (h, w), order))
        t = transformer(227, caffenet_mean)
        pre = t.preprocess("data", im)
        put(f"{n}/preprocess_caffenet", pre, chw=True)
        put(f"{n}/deprocess_caffenet", t.deprocess("data", pre))
        put(f"{n}/preprocess_caffenet_fullmean", transformer(227, ilsvrc_mean).preprocess("data", im), chw=True)
        per_channel = cifar_mean[0].mean(1).mean(1)
        put(f"{n}/preprocess_cifar", transformer(32, per_channel).preprocess("data", im))
        put(f"{n}/preprocess_cifar_scaled", transformer(32, per_channel, 0.5).preprocess("data", im))
        put(f"{n}/preprocess_cifar_fullmean", transformer(32, cifar_mean[0]).preprocess("data", im))
        r256 = io.resize_image(im, (256, 256))
        crops = io.oversample([r256], (227, 227))
        boxes = [[y0, x0, y0 + 227, x0 + 227, m] for m in (0, 1) for y0, x0 in
                 ((0, 0), (0, 29), (29, 0), (29, 29), (14, 14))]
        for crop, (y0, x0, y1, x1, mirrored) in zip(crops, boxes):
            np.testing.assert_array_equal(crop, r256[y0:y1, x0:x1][:, ::-1 if mirrored else 1])
        got[f"{n}/oversample_227_boxes"] = np.array(boxes)
        got[f"{n}/oversample_227_sum"] = crops.astype(np.float64).sum(axis=(1, 2, 3))
    photo, small, gray = load("photo"), load("small"), load("gray")
    from PIL import Image
    rgba4 = (np.asarray(Image.open(d / "rgba.png")) / 255).astype(np.float32)      # alpha kept
    for o in (0, 1, 3):            # other channel counts: scipy.ndimage.zoom
        got[f"gray/resize_1ch_120x180_o{o}"] = io.resize_image(load("gray", False), (120, 180), o)
        got[f"photo/resize_5ch_32x32_o{o}"] = io.resize_image(np.concatenate([photo, photo[:, :, :2]], 2),
                                                              (32, 32), o)
        got[f"small/resize_2ch_48x80_o{o}"] = io.resize_image(small[:, :, :2].copy(), (48, 80), o)
        got[f"rgba/resize_4ch_140x40_o{o}"] = io.resize_image(rgba4, (140, 40), o)
    got["const/resize_7x5_o1"] = io.resize_image(np.full((10, 12, 3), 0.25, np.float32), (7, 5), 1)
    got["mean/cifar10"] = cifar_mean
    got["mean/cifar10_array_to_blobproto_bytes"] = np.frombuffer(
        io.array_to_blobproto(cifar_mean).SerializeToString(), np.uint8)
    got["mean/cifar10_roundtrip"] = io.blobproto_to_array(io.array_to_blobproto(cifar_mean))
    got["mean/cifar10_per_channel"] = cifar_mean[0].mean(1).mean(1)
    put("mean/ilsvrc_2012_mean_as_set_227", transformer(227, ilsvrc_mean).mean["data"], chw=True)
    got["small/oversample_27"] = io.oversample([small], (27, 27))
    got["gray/oversample_2x_45"] = io.oversample([gray, gray[::-1].copy()], (45, 45))
    return got


def test_io_gives_real_pycaffes_numbers(shared):
    """Every key of ../shared/pycaffe_io (real pycaffe's caffe.io over scikit-image,
    SciPy and NumPy) within 1e-5 of its largest value (bit-exact but for a few
    float32 roundings of the mean subtraction)."""
    d = shared / "pycaffe_io"
    z = np.load(d / "pycaffe_io.npz")
    got = _pycaffe_io_keys(d, z, np.load(shared / "models/bvlc_reference_caffenet/ilsvrc_2012_mean.npy"))
    keys = [k for k in z.files if not k.startswith("meta/")]
    assert sorted(got) == sorted(keys)
    for k in keys:
        assert np.shape(got[k]) == z[k].shape, k
        assert rel_err(np.asarray(got[k]), z[k]) <= 1e-5, (k, rel_err(np.asarray(got[k]), z[k]))
    assert all(np.asarray(got[k]).dtype == z[k].dtype for k in keys if "/resize_" in k or "process" in k)


def test_seed_cifar10_script_on_images_gives_pycaffes_data_blob(shared, tmp_path):
    """The seed's CIFAR-10 net fed photos the pycaffe way: its `data` blob is real
    pycaffe's (pycaffe_io's preprocess_cifar: the Transformer with the CIFAR-10 mean)."""
    d = shared / "pycaffe_io"
    z = np.load(d / "pycaffe_io.npz")
    names = list(PYCAFFE_IO_FILES)
    run_script("cifar10_image.py", tmp_path, MODELS=str(shared / "models"),
               IMAGES=",".join(str(d / PYCAFFE_IO_FILES[n]) for n in names))
    data = np.load(tmp_path / "data.npy")
    assert data.shape == (4, 3, 32, 32)
    for i, n in enumerate(names):
        assert rel_err(data[i], z[f"{n}/preprocess_cifar"]) <= 1e-5, n
    m = shared / "models/cifar10_quick"
    deploy = zfcaffe.Net(str(m / "cifar10_quick.prototxt"), str(m / "cifar10_quick_iter_4000.caffemodel"))
    ref = deploy.forward(data=np.stack([z[f"{n}/preprocess_cifar"] for n in names]))
    assert rel_err(np.load(tmp_path / "ip2.npy"), deploy.layer_outputs["ip2"]) < 1e-5 and "prob" in ref


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
