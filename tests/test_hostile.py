"""Hostile and broken inputs (issue 13): each class found by fuzzing gets one clear
project error (file, line or layer, what was expected), no foreign exception, no
allocation before the limits are checked, and nothing left half-written."""
from __future__ import annotations

import struct
import zlib

import matplotlib.cbook
import numpy as np
import pytest

import zfcaffe
from cli_here import cli_here as run_cli
from conftest import layer_text as L
from zfcaffe.errors import ZfcaffeError
from zfcaffe.io.mean import read_mean
from zfcaffe.preprocess import load_image, mean_from_arg

PHOTO = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)


def _png(w: int, h: int) -> bytes:
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * (1 + 3 * w) * 4)) + chunk(b"IEND", b""))


def test_images(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png(20000, 20000))                 # a small file whose header claims 400 Mpixels
    with pytest.raises(zfcaffe.ZfcaffeError, match="larger than 64,000,000 pixels.*ZFCAFFE_MAX_PIXELS"):
        load_image(str(bomb))
    monkeypatch.setenv("ZFCAFFE_MAX_PIXELS", "1000")
    with pytest.raises(zfcaffe.ZfcaffeError, match="larger than 1,000 pixels"):
        load_image(PHOTO)
    monkeypatch.delenv("ZFCAFFE_MAX_PIXELS")
    broken = tmp_path / "broken.png"
    broken.write_bytes(_png(100, 100)[:50])
    with pytest.raises(zfcaffe.ZfcaffeError, match="broken.png: the image data is broken"):
        load_image(str(broken))
    text = tmp_path / "x.gif"
    text.write_text("not a gif")
    with pytest.raises(zfcaffe.ZfcaffeError, match="GIF, TIFF, WebP"):   # no longer "only JPEG and PNG"
        load_image(str(text))


def test_npy_files_are_checked_before_loading(tmp_path):
    huge = tmp_path / "huge.npy"
    with open(huge, "wb") as f:                          # a header promising 3 x 99999 x 99999 floats
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                 "shape": (3, 99999, 99999)})
    with pytest.raises(zfcaffe.ZfcaffeError, match="over Caffe's limit"):
        read_mean(str(huge))
    strings = tmp_path / "strings.npy"
    np.save(strings, np.array(["a", "b"]))
    with pytest.raises(zfcaffe.ZfcaffeError, match="<U1 values; expected"):
        read_mean(str(strings))


def test_mean_arguments_and_legacy_dims(tmp_path):
    for text, message in (("--1", "no such file, and not per-channel numbers"), ("abc", "not per-channel numbers"),
                          ("1,nan,2", "finite")):
        with pytest.raises(zfcaffe.ZfcaffeError, match=message):
            mean_from_arg(text)
    assert mean_from_arg("-1.5,2e1").__getitem__(0).tolist() == [-1.5, 20.0]
    from zfcaffe import caffe_pb2
    blob = caffe_pb2.BlobProto(num=-1, channels=-3, height=2, width=2, data=[0.0] * 12)
    path = tmp_path / "neg.binaryproto"
    path.write_bytes(blob.SerializeToString())
    with pytest.raises(zfcaffe.ZfcaffeError, match=r"mean blob shape \[-1, -3, 2, 2\]"):
        read_mean(str(path))


@pytest.mark.parametrize("params,message", [
    ('L("pool", "Pooling", "data", "pooling_param { pool: MAX kernel_size: 2 stride: 0 }")', "must be positive"),
    ('L("conv", "Convolution", "data", "convolution_param { num_output: 2 kernel_size: 3 dilation: 0 }")',
     "dilation"),
    ('L("flat", "Flatten", "data", "flatten_param { axis: 2 end_axis: 1 }")', "end_axis 1 comes before axis 2"),
    ('L("ip", "InnerProduct", "data", "inner_product_param { num_output: 2000000000 }")', "over Caffe's limit"),
])
def test_shapes_and_parameters_are_refused_before_allocating(build, params, message):
    with pytest.raises(zfcaffe.ZfcaffeError, match=message):
        build(eval(params), {"data": (1, 3, 8, 8)})


def test_api_misuse(shared):
    m = shared / "models/cifar10_quick"
    net = zfcaffe.Net(str(m / "cifar10_quick.prototxt"), str(m / "cifar10_quick_iter_4000.caffemodel"))
    net.forward(data=np.zeros((1, 3, 32, 32), np.float32))
    for call, message in ((lambda: net.project("conv1", ()), "outside"),
                          (lambda: net.project("conv1", (0, 2 ** 70)), "outside"),
                          (lambda: net.forward(blobs=["nope"]), "'nope' not a blob"),
                          (lambda: zfcaffe.Net(str(m / "cifar10_quick.prototxt"), phase="VAL"), "phase 'VAL'")):
        with pytest.raises(zfcaffe.ZfcaffeError, match=message):
            call()


def test_cli_options_and_outputs(shared, tmp_path):
    m = shared / "models/cifar10_quick"
    net = [m / "cifar10_quick.prototxt", m / "cifar10_quick_iter_4000.caffemodel", "--quiet"]
    for args, message in ((["top9", "--images", tmp_path, "--batch", "0"], "expected a number >= 1"),
                          (["top9", "--images", tmp_path, "-k", "-1"], "expected a number >= 1"),
                          (["occlusion", "--image", PHOTO, "--stride", "-1"], "expected a number >= 0"),
                          (["occlusion", "--image", PHOTO, "--size", "99"], "must fit the 32x32 input"),
                          (["occlusion", "--image", PHOTO, "--layer", "ip1"], "expected a spatial layer"),
                          (["occlusion", "--image", PHOTO, "--label", "10"], "classes 0 to 9")):
        r = run_cli(args[0], *net, *args[1:], "-o", tmp_path / "out", check=False)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = run_cli("convert", *net, "-o", tmp_path, check=False)          # onto a folder
    assert r.returncode == 2 and "is a folder" in r.stderr
    run_cli("convert", *net, "-o", tmp_path / "new/sub/c.onnx")        # into folders that do not exist yet
    bad = tmp_path / "bad_list.txt"
    bad.write_text("missing.jpg\n")
    r = run_cli("top9", *net, "--images", bad, "-o", tmp_path / "t9", check=False)
    assert r.returncode == 2 and not (tmp_path / "t9").exists()        # no empty folder left behind
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros((0, 3, 32, 32), np.float32))
    r = run_cli("run", *net, "--input", empty, check=False)
    assert r.returncode == 2 and "N >= 1" in r.stderr


def test_prototxt_typo_is_a_parse_error_not_a_fork_layer(build):
    with pytest.raises(zfcaffe.ZfcaffeError) as e:
        build(L("conv", "Convolution", "data", "convolution_param { num_output: 2 kernel_size: nan }"),
              {"data": (1, 3, 8, 8)})
    assert "net.prototxt:3:" in str(e.value) and "nan" in str(e.value) and "stop_before" not in str(e.value)


def test_broken_weight_files(tmp_path):
    import h5py
    from zfcaffe.io.wire import enc_varint, field_key, len_field
    from zfcaffe.io.weights import read_caffemodel, read_hdf5

    def h5(name, fill):
        path = tmp_path / name
        with h5py.File(path, "w") as f:
            fill(f)
        return str(path)
    cases = {
        "a dataset where the group goes": (h5("a.h5", lambda f: f.create_dataset("data", data=np.zeros(3))),
                                           "'data' is not a group"),
        "a layer that is a dataset": (h5("b.h5", lambda f: f.create_group("data").create_dataset("c", data=[1.0])),
                                      "data/c is not a group of blobs"),
        "no blob 0": (h5("c.h5", lambda f: f.create_group("data").create_group("c").create_dataset("1", data=[1.0])),
                      "has no dataset '0'"),
        "a soft link": (h5("d.h5", lambda f: f.create_group("data").create_group("c").__setitem__(
            "0", h5py.SoftLink("/nowhere"))), "has no dataset '0'"),
        "strings": (h5("e.h5", lambda f: f.create_group("data").create_group("c").create_dataset(
            "0", data=np.array(["x"], dtype=h5py.string_dtype()))), r"expected at most 2\^31-1 numbers"),
    }
    corrupt = tmp_path / "f.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100)
    cases["a corrupted header"] = (str(corrupt), "cannot read HDF5 weights")
    for what, (path, message) in cases.items():
        with pytest.raises(zfcaffe.ZfcaffeError, match=message):
            read_hdf5(path)
    blob = field_key(5, 0) + enc_varint(7)                       # blob data with the wrong wire type
    layer = len_field(1, 1) + b"a" + len_field(7, len(blob)) + blob
    model = tmp_path / "w.caffemodel"
    model.write_bytes(len_field(100, len(layer)) + layer)
    with pytest.raises(zfcaffe.ZfcaffeError, match="wire type 0; expected floats"):
        read_caffemodel(str(model))


def test_analysis_inputs_and_existing_outputs(shared, tmp_path):
    import json
    m = shared / "models/cifar10_quick"
    net = [m / "cifar10_quick.prototxt", m / "cifar10_quick_iter_4000.caffemodel", "--quiet"]
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        (photos / f"{i}.jpg").write_bytes(open(PHOTO, "rb").read())
    for spec in ([1, 2], {"0.jpg": [1, 2, 3, 4]}, {"0.jpg": {"eye": [5, 5, 1, 1]}}, {"0.jpg": {"eye": "x"}}):
        parts = tmp_path / "parts.json"
        parts.write_text(json.dumps(spec))
        r = run_cli("correspondence", *net, "--images", photos, "--parts", parts, "-o", tmp_path / "c", check=False)
        assert r.returncode == 2 and "expected {image: {part: [x0, y0, x1, y1]}}" in r.stderr, r.stderr
    labels = tmp_path / "labels.txt"
    labels.write_bytes(b"\xff\xfe not utf-8 \x80\n" * 10)
    r = run_cli("run", *net, "--input", PHOTO, "--labels", labels, check=False)
    assert r.returncode == 2 and "not UTF-8" in r.stderr
    r = run_cli("evolution", m / "cifar10_quick.prototxt", net[1], net[1], "--images", photos, "--layer", "conv1",
                "--maps", "2", "--quiet", "-o", tmp_path / "evo")                  # the same snapshot twice
    assert np.load(tmp_path / "evo/results.npz")["values"].shape == (2, 1)
    existing = tmp_path / "report"
    existing.write_text("the user's file")
    r = run_cli("visualize", *net, "-o", existing, check=False)
    assert r.returncode == 2 and "not a folder" in r.stderr and existing.read_text() == "the user's file"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".report")]
    huge = tmp_path / "huge.npy"
    with open(huge, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                 "shape": (3, 99999, 99999)})
    r = run_cli("run", *net, "--input", huge, check=False)
    assert r.returncode == 2 and "over Caffe's limit" in r.stderr


def test_fillers_refuse_impossible_parameters(build):
    for params, message in (('weight_filler { type: "gaussian" std: -1 }', "std -1 < 0"),
                            ('weight_filler { type: "uniform" min: 2 max: 1 }', "min 2 > max 1"),
                            ('weight_filler { type: "gaussian" std: nan }', "not a finite number")):
        with pytest.raises(zfcaffe.ZfcaffeError, match=message):
            build(L("ip", "InnerProduct", "data", f"inner_product_param {{ num_output: 2 {params} }}"),
                  {"data": (1, 3)})
    net = build(L("ip", "InnerProduct", "data", "inner_product_param { num_output: 2 }"), {"data": (0, 3)})
    assert net.params["ip"][0].data.shape == (2, 3)             # an empty batch fills the parameters as usual


def test_top9_counts_beyond_the_dataset(shared, tmp_path):
    m = shared / "models/cifar10_quick"
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        (photos / f"{i}.jpg").write_bytes(open(PHOTO, "rb").read())
    run_cli("top9", m / "cifar10_quick.prototxt", m / "cifar10_quick_iter_4000.caffemodel", "--images", photos,
            "-k", "99999", "--batch", "99999", "--maps", "2", "--layers", "conv1", "--quiet", "-o", tmp_path / "t9")
    assert np.load(tmp_path / "t9/results.npz")["conv1/values"].shape == (32, 3)   # k = the 3 images


# -- issue 24: the fuzzer's list, one test per item ----------------------------------------------------------
def test_a_net_with_only_inputs_is_refused_at_load(build, tmp_path):
    # only inputs left: ONNX Runtime refused the empty graph in its own words
    with pytest.raises(zfcaffe.ZfcaffeError, match="no layer computes anything for phase TEST, only the input"):
        build("", {"data": (1, 3, 8, 8)})
    legacy = tmp_path / "legacy.prototxt"
    legacy.write_text('input: "data"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 8\ninput_dim: 8\n')
    with pytest.raises(zfcaffe.ZfcaffeError, match="only the input.*expected at least one layer"):
        zfcaffe.Net(str(legacy))
    proto, _ = build.write(L("relu", "ReLU", "data"), {"data": (1, 3, 8, 8)})
    with pytest.raises(zfcaffe.ZfcaffeError, match="stop_before='relu' leaves only them"):
        zfcaffe.Net(str(proto), stop_before="relu")


def test_fillers_are_bounded_before_allocating(build, monkeypatch):
    import time

    from zfcaffe.graph import graph
    ip = L("ip", "InnerProduct", "data", 'inner_product_param { num_output: 10000 weight_filler { type: "gaussian" '
                                         'std: 0.01 } }')
    start = time.perf_counter()                 # 1.5e9 values: 5.6 GiB, under Caffe's 2^31-1 per blob
    with pytest.raises(zfcaffe.ZfcaffeError, match=r"'ip' \(InnerProduct\): Caffe's fillers would make "
                                                   r"1,505,290,000 parameter values \(5.61 GiB\).*over the limit of "
                                                   r"268,435,456 filled values \(ZFCAFFE_MAX_FILL raises it\); "
                                                   r"expected a smaller num_output \(now 10000\)"):
        build(ip, {"data": (1, 3, 224, 224)})
    assert time.perf_counter() - start < 5      # nothing was drawn
    monkeypatch.setenv("ZFCAFFE_MAX_FILL", str(10**12))
    monkeypatch.setattr(graph, "memory_available", lambda: 2**30)
    with pytest.raises(zfcaffe.ZfcaffeError, match=r"more than the 1.00 GiB of memory available"):
        build(ip, {"data": (1, 3, 224, 224)})


def test_fillers_draw_in_chunks_the_same_values(monkeypatch):
    from zfcaffe import caffe_pb2
    from zfcaffe.graph import fillers
    monkeypatch.setattr(fillers, "_CHUNK", 4000)
    for f in (caffe_pb2.FillerParameter(type="gaussian", std=0.1, mean=1), caffe_pb2.FillerParameter(type="xavier"),
              caffe_pb2.FillerParameter(type="uniform", min=-2, max=3), caffe_pb2.FillerParameter(type="msra")):
        shape = (3 * fillers._CHUNK // 1000 + 7, 1000)          # over three chunks
        got = fillers.fill(f, shape, np.random.default_rng(5))
        rng = np.random.default_rng(5)
        scale = np.sqrt(3.0 / 1000), np.sqrt(2.0 / 1000)
        want = {"gaussian": lambda: rng.normal(f.mean, f.std, shape),      # the filler's float32 fields
                "xavier": lambda: rng.uniform(-scale[0], scale[0], shape),
                "uniform": lambda: rng.uniform(-2, 3, shape), "msra": lambda: rng.normal(0, scale[1], shape)}[f.type]()
        assert got.dtype == np.float32 and np.array_equal(got, want.astype(np.float32)), f.type


def test_a_v0_net_with_a_huge_num_output_fails_fast(shared, tmp_path):
    import time
    text = (shared / "models/bvlc_legacy_formats/v0/imagenet_deploy.prototxt").read_text()
    huge = tmp_path / "v0.prototxt"
    huge.write_text(text.replace("num_output: 4096", "num_output: 65536", 1))   # fc6: 604M values to fill
    start = time.perf_counter()
    with pytest.raises(zfcaffe.ZfcaffeError, match=r"'fc6' \(InnerProduct\): Caffe's fillers would make"):
        zfcaffe.Net(str(huge))
    assert time.perf_counter() - start < 10     # it took over 20 s drawing random numbers
    r = run_cli("inspect", huge, check=False)  # the table needs no fillers
    assert r.returncode in (0, 2) and "Traceback" not in r.stderr, r.stderr


def test_lenet_with_missing_weights_and_an_image(shared, tmp_path, capsys, monkeypatch):
    from zfcaffe.cli import main                 # in this process: five runs, one import
    monkeypatch.setenv("ZFCAFFE_QUIET", "1")     # what --quiet sets, restored after the test
    m = shared / "models/lenet_mnist"
    for proto in ("lenet.prototxt", "lenet_train_test.prototxt"):
        for verb in ("visualize", "invariance"):
            code = main([verb, str(m / proto), str(m / "lenet_iter_10000.caffemodel"), "--allow-missing-weights",
                         "--image", PHOTO, "--quiet", "-o", str(tmp_path / f"{verb}-{proto}")])
            assert code == 0, capsys.readouterr().err                  # was KeyError: 'data'
    code = main(["invariance", str(m / "lenet.prototxt"), str(m / "lenet_iter_10000.caffemodel"), "--image", PHOTO,
                 "--stop-before", "conv1", "--quiet", "-o", str(tmp_path / "cut")])
    err = capsys.readouterr().err
    assert code == 2 and "only the input(s) data (stop_before='conv1'" in err, err


def test_part_boxes_beyond_any_image(tmp_path):
    import json

    from zfcaffe.preprocess import Preprocess
    from zfcaffe.recipes.analyses import load_parts
    tiny = tmp_path / "tiny.png"                # 1 pixel high: a box maps 32x taller
    from PIL import Image
    Image.new("RGB", (40, 1)).save(tiny)
    pre = Preprocess(32, 32)
    for box in ([0, 0, 1e308, 5], [0, 0, float("inf"), 5], [float("-inf"), 0, 5, 5], [0, 0, 10**30, 5],
                [0, 0, True, 5]):
        parts = tmp_path / "parts.json"
        parts.write_text(json.dumps({"tiny.png": {"eye": box}}))      # json writes Infinity for inf
        with pytest.raises(zfcaffe.ZfcaffeError, match="each a pixel coordinate within"):
            load_parts(str(parts), [str(tiny)], pre)
    parts.write_text(json.dumps({"tiny.png": {"eye": [0, 0, 2**31, 1]}}))
    assert load_parts(str(parts), [str(tiny)], pre)["eye"][0][2] == 2**31 * 32 // 40


def test_api_arguments_are_checked_at_the_edge(shared):
    from zfcaffe.errors import ZfcaffeTypeError, ZfcaffeValueError
    from zfcaffe.viz import vis_square
    m = shared / "models/cifar10_quick"
    proto = str(m / "cifar10_quick.prototxt")
    net = zfcaffe.Net(proto, str(m / "cifar10_quick_iter_4000.caffemodel"))
    net.forward(data=np.zeros((1, 3, 32, 32), np.float32))
    x = np.zeros((1, 3, 32, 32), np.float32)
    cases = [
        (lambda: net.project("conv1", None), ZfcaffeTypeError, r"project\(unit=None\): expected a unit index"),
        (lambda: net.project("conv1", (0, 1.5)), ZfcaffeTypeError, r"project\(unit\[1\]=1.5\): expected an integer"),
        (lambda: net.project(None, (0, 1)), ZfcaffeTypeError, r"project\(layer=None\)"),
        (lambda: net.project("conv1", (0, 1), value="x"), ZfcaffeTypeError, r"project\(value='x'\)"),
        (lambda: net.project_many("conv1", 5), ZfcaffeTypeError, r"project_many\(units=5\)"),
        (lambda: net.project_many("conv1", [(0, 1)], values=[1, 2]), ZfcaffeValueError, "2 values for 1 units"),
        (lambda: net.forward(data="abc"), ZfcaffeTypeError, r"forward\(data='abc'\): expected an array of numbers "
                                                            r"shaped \[1, 3, 32, 32\], not str"),
        (lambda: net.forward(data=np.zeros(x.shape, complex)), ZfcaffeTypeError, "complex numbers"),
        (lambda: net.forward(data=[[1]]), ZfcaffeValueError, r"forward\(data=...\): input 'data' has shape \[1, 1\]"),
        (lambda: net.forward(blobs=5), ZfcaffeTypeError, r"forward\(blobs=5\): expected a list of names"),
        (lambda: net.forward(nope=x), ZfcaffeValueError, "'nope' is not an input"),
        (lambda: zfcaffe.Net(None), ZfcaffeTypeError, r"Net\(prototxt=None\): expected a file path, not NoneType"),
        (lambda: zfcaffe.Net(proto, input_shapes={"data": (1, 3, "x", 2)}), ZfcaffeTypeError,
         r"Net\(input_shapes\['data'\]\[2\]='x'\): expected an integer"),
        (lambda: zfcaffe.Net(proto, seed=-1), ZfcaffeValueError, r"Net\(seed=-1\): expected an integer >= 0"),
        (lambda: zfcaffe.Net(proto, stages=5), ZfcaffeTypeError, r"Net\(stages=5\)"),
        (lambda: zfcaffe.Net(proto, rounding="exact"), ZfcaffeValueError, "expected caffe or fast"),
        (lambda: net.backward(None), ZfcaffeTypeError, r"backward\(diffs=None\): expected a dict"),
        (lambda: net.backward({"conv1": np.zeros((1, 2))}), ZfcaffeValueError,
         r"backward\(diffs\['conv1'\]=...\): an array of shape \[1, 2\]; expected 4 axes"),
        (lambda: net.backward({"conv1": np.zeros((2, 32, 32, 32))}), ZfcaffeValueError,
         "2 rows for 'conv1', whose forward value has 1"),
        (lambda: net.backward({"conv1": np.zeros((1, 32, 32, 32))}, items=[5]), ZfcaffeValueError,
         r"backward\(items\[0\]=5\): expected an integer from 0 to 0"),
        (lambda: net.set_batch("2"), ZfcaffeTypeError, r"set_batch\(size='2'\)"),
        (lambda: vis_square(np.zeros(5)), ZfcaffeValueError, r"vis_square\(data=...\): an array of shape \[5\]; "
                                                             r"expected \(N, h, w\) grey or \(N, h, w, 3\) colour"),
        (lambda: vis_square(np.zeros((0, 3, 3))), ZfcaffeValueError, "at least one"),
        (lambda: vis_square(np.zeros((2, 3, 3)), pad=-1), ZfcaffeValueError, r"vis_square\(pad=-1\)"),
    ]
    for call, kind, message in cases:
        with pytest.raises(kind, match=message) as e:
            call()
        assert isinstance(e.value, zfcaffe.ZfcaffeError) and "\n" not in str(e.value)
    assert issubclass(ZfcaffeTypeError, TypeError) and issubclass(ZfcaffeValueError, ValueError)
    assert net.project("conv1", (np.int64(0), 1)).shape == (1, 3, 32, 32)     # NumPy integers are integers
    assert vis_square(np.ones((4, 3, 3, 3))).shape == (7, 7, 3)


@pytest.mark.parametrize("params,message", [      # found by tools/fuzz.py --kinds fork (issue 24)
    ('L("pb", "PriorBox", ["data", "data"], "prior_box_param { min_size: 4 aspect_ratio: 0 flip: true }")',
     r"aspect_ratio \[0.0\]; expected every aspect_ratio > 0"),
    ('L("pb", "PriorBox", ["data", "data"], "prior_box_param { min_size: 4 aspect_ratio: -1 }")',
     "expected every aspect_ratio > 0"),
    ('L("pb", "PriorBox", ["data", "data"], "prior_box_param { min_size: inf }")', "expected finite sizes"),
    ('L("drop", "Dropout", "data", "dropout_param { dropout_ratio: 1 }")', "expected 0 <= dropout_ratio < 1"),
])
def test_fork_parameters_are_refused_before_dividing(build, params, message):
    with pytest.raises(zfcaffe.ZfcaffeError, match=message):
        build(eval(params), {"data": (1, 3, 8, 8)})


def test_data_a_layer_cannot_take_is_one_line_naming_it(build):
    """A SegNet Upsample whose output is smaller than its mask's plane (Caffe aborts): ONNX
    Runtime's refusal becomes one project error naming the layer."""
    net = build('layer { name: "pool" type: "Pooling" bottom: "data" top: "p" top: "mask" '
                'pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n'
                'layer { name: "up" type: "Upsample" bottom: "p" bottom: "mask" top: "u" '
                'upsample_param { upsample_h: 4 upsample_w: 4 } }\n', {"data": (1, 1, 8, 8)})
    x = np.arange(64, dtype=np.float32).reshape(1, 1, 8, 8)
    with pytest.raises(ZfcaffeError, match=r"^layer 'up': ONNX Runtime refused the forward pass") as e:
        net.forward(data=x)
    assert "\n" not in str(e.value)


def test_fork_net_findings_of_the_detection_fuzz(shared, tmp_path):
    """tools/fuzz.py --kinds fork (visualize with --detections): a DetectionOutput with
    num_classes 2e9 is one line (it built a 2e9-entry label list in setup: MemoryError); an
    output of ~50 MB is summarised without float64 copies; an output holding inf/NaN gets
    its histogram of the finite values (numpy's histogram raised)."""
    from zfcaffe.analyses.heads import _stats
    from zfcaffe.viz.figures import output_figure
    case = shared / "oracle_ssd/ssd_layers_c"
    text = (case / "deploy.prototxt").read_text().replace("num_classes: 4", "num_classes: 2000000000", 1)
    (tmp_path / "big.prototxt").write_text(text)
    with pytest.raises(ZfcaffeError, match=r"DetectionOutput.*expected \d+ \(priors x 2000000000"):
        zfcaffe.Net(str(tmp_path / "big.prototxt"), str(case / "weights.caffemodel"))
    big = np.full((1, 13_000_000), 3.0, np.float32)
    big[0, ::2] = 1.0
    assert _stats(big[0]) == {"min": 1.0, "max": 3.0, "mean": 2.0, "std": 1.0}
    odd = np.array([[1.0, np.inf, np.nan, 2.0] * 40], np.float32)
    assert output_figure("odd", "values", odd[0])[:4] == b"\x89PNG"
    assert np.isnan(_stats(odd)["max"])                     # said as it is: the output holds NaN
