"""zfcaffe compare: OpenCV and pycaffe dumps on the oracle cases, deliberately broken ONNX
files (each names its first layer and cause), the name mapping of renamed files, the
pycaffe subprocess, caffe2onnx, and the verb."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import zfcaffe
from conftest import layer_text as layer, load_case, oracle_cases, rel_err
from zfcaffe.compare import compare
from zfcaffe.errors import ZfcaffeError

SMALL = (layer("conv1", "Convolution", "data", "convolution_param { num_output: 4 kernel_size: 3 pad: 1 }")
         + layer("relu1", "ReLU", "conv1", tops=["conv1"])
         + layer("norm1", "LRN", "conv1", "lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 }")
         + layer("pool1", "Pooling", "norm1", "pooling_param { pool: MAX kernel_size: 3 stride: 2 }")
         + layer("conv2", "Convolution", "pool1", "convolution_param { num_output: 5 kernel_size: 3 pad: 1 }")
         + layer("bn2", "BatchNorm", "conv2", tops=["conv2"])
         + layer("scale2", "Scale", "conv2", "scale_param { bias_term: true }", tops=["conv2"])
         + layer("relu2", "ReLU", "conv2", tops=["conv2"])
         + layer("prob", "Softmax", "conv2"))


def _cv2():
    return pytest.importorskip("cv2", reason="OpenCV (opencv-python-headless<5) is an optional extra")


def _cli(*args) -> subprocess.CompletedProcess:
    """The verb in a fresh process (declared in zfcaffe.compare.verb)."""
    code = "import sys, zfcaffe.compare.verb; from zfcaffe.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, "compare", *map(str, args)], capture_output=True, text=True)


def _case_net(shared, name):
    c = load_case(shared, name)
    d = c["dir"]
    net = zfcaffe.Net(str(d / "deploy.prototxt"), c["weights_path"],
                      input_shapes={k: tuple(v) for k, v in c["input_shapes"].items()})
    return c, d, net, np.load(d / "input.npy")


@pytest.fixture
def small(build, tmp_path):
    rng = np.random.default_rng(3)
    blobs = {"conv1": [rng.standard_normal((4, 3, 3, 3)) * 0.5, rng.standard_normal(4) * 0.5],
             "conv2": [rng.standard_normal((5, 4, 3, 3)) * 0.5, rng.standard_normal(5) * 0.5],
             "bn2": [rng.standard_normal(5), rng.uniform(0.5, 1.5, 5), [2.0]],
             "scale2": [rng.uniform(0.5, 1.5, 5), rng.standard_normal(5)]}
    net = build(SMALL, {"data": (1, 3, 10, 12)}, blobs, name="small")
    path = tmp_path / "small.onnx"
    net.to_onnx(str(path), all_blobs=True)
    x = rng.standard_normal((1, 3, 10, 12)).astype(np.float32)
    return net, path, x


# -- the broken files, made by editing zfcaffe's own export ---------------------------------------------------
def _load(path):
    m = onnx.load(str(path))
    del m.graph.value_info[:]
    for o in m.graph.output:
        o.type.tensor_type.ClearField("shape")
    return m


def floor_pooling(src, dst, name):
    """The pooling's end padding dropped: ONNX's floor rounding of the output size."""
    m = _load(src)
    node = next(n for n in m.graph.node if n.op_type == "MaxPool" and n.name.startswith(name + "/"))
    pads = next(a for a in node.attribute if a.name == "pads")
    del pads.ints[:]
    pads.ints.extend([0, 0, 0, 0])
    onnx.save(m, str(dst))


def lrn_alpha_undivided(src, dst, name, size):
    """The LRN's alpha/size constant multiplied back by size."""
    m = _load(src)
    muls = {i for n in m.graph.node if n.op_type == "Mul" and n.name.startswith(name + "/") for i in n.input}
    init = next(i for i in m.graph.initializer if i.name in muls and i.name.startswith(name + "/const"))
    init.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(init) * size).astype(np.float32), init.name))
    onnx.save(m, str(dst))


def rgb_input(src, dst):
    """The input's channels reversed before the first layer (a net fed RGB where Caffe's is BGR)."""
    m = _load(src)
    inp = m.graph.input[0].name
    for n in m.graph.node:
        for i, x in enumerate(n.input):
            if x == inp:
                n.input[i] = inp + "/rgb"
    m.graph.initializer.append(numpy_helper.from_array(np.array([2, 1, 0], np.int64), inp + "/order"))
    m.graph.node.insert(0, helper.make_node("Gather", [inp, inp + "/order"], [inp + "/rgb"], axis=1))
    onnx.save(m, str(dst))


def renamed(src, dst):
    """Every value renamed v0, v1, ... (a converter that keeps no Caffe names)."""
    m = _load(src)
    names = {}
    for n in m.graph.node:
        for o in n.output:
            names.setdefault(o, f"v{len(names)}")
    for n in m.graph.node:
        n.input[:] = [names.get(i, i) for i in n.input]
        n.output[:] = [names[o] for o in n.output]
        n.name = ""
    for o in m.graph.output:
        o.name = names[o.name]
    onnx.save(m, str(dst))
    return names


def test_clean_export_compares_clean(small):
    net, path, x = small
    r = compare(net, path, x)
    assert r.ok and r.first is None and len(r.compared) == len(net.layer_shapes)
    assert all(row.how == "by name" and row.rel <= 1e-6 for row in r.rows)


@pytest.mark.parametrize("breakage, first, cause", [
    ("floor", "pool1", "pooling output size rounded down"),
    ("lrn", "norm1", "LRN alpha not divided by the window size"),
    ("rgb", "conv1", "channel order"),
])
def test_broken_onnx_names_first_layer_and_cause(small, tmp_path, breakage, first, cause):
    net, path, x = small
    bad = tmp_path / f"{breakage}.onnx"
    {"floor": lambda: floor_pooling(path, bad, "pool1"), "lrn": lambda: lrn_alpha_undivided(path, bad, "norm1", 3),
     "rgb": lambda: rgb_input(path, bad)}[breakage]()
    r = compare(net, bad, x)
    assert not r.ok and r.first == first, r.summary
    hits = [c["cause"] for c in r.causes if c["matches"]]
    assert len(hits) == 1 and hits[0].startswith(cause), r.causes
    assert cause in r.summary
    if breakage == "floor":
        assert r.row("pool1").verdict == "shape differs"
    if breakage == "rgb":   # the input-wide check reruns the other side with the channels swapped
        assert any("matches better with the channels swapped" in c for c in r.checks), r.checks
        assert compare(net, bad, x, other_rgb=True).ok


def test_own_mean_check(small, tmp_path):
    """A file that subtracts its own mean, fed Caffe's already-meaned input: the check says so."""
    net, path, x = small
    m = _load(path)
    inp = m.graph.input[0].name
    for n in m.graph.node:
        n.input[:] = [inp + "/meaned" if i == inp else i for i in n.input]
    mean = np.array([0.3, -0.2, 0.5], np.float32).reshape(1, 3, 1, 1)
    m.graph.initializer.append(numpy_helper.from_array(mean, "own_mean"))
    m.graph.node.insert(0, helper.make_node("Sub", [inp, "own_mean"], [inp + "/meaned"]))
    onnx.save(m, str(tmp_path / "mean.onnx"))
    r = compare(net, tmp_path / "mean.onnx", x, mean=mean[0, :, 0, 0])
    assert not r.ok and r.first == "conv1"
    assert any("matches better fed the input without Caffe's mean" in c for c in r.checks), r.checks


def test_renamed_values_map_by_position_shape_and_correlation(small, tmp_path):
    net, path, x = small
    names = renamed(path, tmp_path / "renamed.onnx")
    r = compare(net, tmp_path / "renamed.onnx", x)
    assert r.ok, r.summary
    for row in r.rows:
        assert row.how.startswith("by position, shape and correlation"), row
        assert row.other_name == names[row.key], (row.key, row.other_name, names[row.key])
    # broken and renamed: still the right first layer and cause
    lrn_alpha_undivided(path, tmp_path / "lrn.onnx", "norm1", 3)
    renamed(tmp_path / "lrn.onnx", tmp_path / "lrn_renamed.onnx")
    r = compare(net, tmp_path / "lrn_renamed.onnx", x)
    assert r.first == "norm1" and "LRN alpha not divided" in r.summary


# -- OpenCV and the pycaffe dumps on the oracle --------------------------------------------------------------
@pytest.mark.parametrize("name", [c for c in oracle_cases() if c != "nsfw_resnet50"])  # ResNet-50: benchmarks/compare.py
def test_opencv_and_dump_on_oracle(shared, name):
    """Every layer both sides have is listed; no divergence beyond 1e-4 where OpenCV meets
    the oracle (real Caffe); the layer-keyed dump compares clean."""
    _cv2()
    from zfcaffe.compare.sides.opencv import OpenCVSide
    c, d, net, x = _case_net(shared, name)
    side = OpenCVSide(str(d / "deploy.prototxt"), c["weights_path"], net)
    r = compare(net, side, x)
    cv = side.last    # OpenCV's values of that run, by its layer names
    both = set(cv) & {l.name for l in net.graph.compute_layers}
    assert both <= {row.layer for row in r.compared}
    oracle = np.load(d / "outputs.npz")
    checked = 0
    for row in r.compared:
        if row.key in oracle.files and row.layer in cv and cv[row.layer].size == oracle[row.key].size:
            if rel_err(cv[row.layer].reshape(oracle[row.key].shape), oracle[row.key]) <= 1e-4:
                assert row.verdict == "ok", (row.key, row.rel)
                checked += 1
    assert checked >= min(len(oracle.files), len(both)) * 0.9
    dump = compare(net, d / "outputs.npz", x)
    assert dump.ok, dump.summary
    assert {row.key for row in dump.compared} == set(oracle.files) - set(net.inputs)


def test_dump_by_blob_name(shared, tmp_path):
    """A pycaffe-style dump {blob: net.blobs[blob].data}: in-place blobs hold their final value."""
    c, d, net, x = _case_net(shared, "cifar10_quick")
    net.forward(data=x)
    np.savez(tmp_path / "blobs.npz", **{k: b.data for k, b in net.blobs.items()})
    r = compare(net, tmp_path / "blobs.npz", x)
    assert r.ok
    row = r.row("relu1")    # in place on pool1: the blob pool1 holds the rectified value
    assert row.other_name == "pool1" and row.verdict == "ok" and "blob name" in row.how
    assert r.row("pool1").verdict == "absent"
    import h5py
    with h5py.File(tmp_path / "blobs.h5", "w") as f:
        for k, b in net.blobs.items():
            f[k] = b.data
    assert compare(net, tmp_path / "blobs.h5", x).ok


def test_pycaffe_subprocess(shared, tmp_path):
    """--against caffe runs pycaffe in another Python; here zfcaffe's own pycaffe surface
    stands in for it (a `caffe` package that re-exports zfcaffe.caffe)."""
    from zfcaffe.compare.sides.pycaffe import PycaffeSide
    fake = tmp_path / "fake" / "caffe"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("from zfcaffe.caffe import *  # noqa\n")
    c, d, net, x = _case_net(shared, "lenet")
    root = os.path.dirname(os.path.dirname(os.path.abspath(zfcaffe.__file__)))
    env = dict(os.environ, PYTHONPATH=f"{tmp_path / 'fake'}{os.pathsep}{root}", ZFCAFFE_QUIET="1")
    r = compare(net, PycaffeSide(str(d / "deploy.prototxt"), c["weights_path"], sys.executable, env=env), x)
    assert r.ok and len(r.compared) == len(net.layer_shapes)
    with pytest.raises(ZfcaffeError, match="cannot import caffe"):
        compare(net, PycaffeSide(str(d / "deploy.prototxt"), c["weights_path"], sys.executable,
                                 env=dict(os.environ, PYTHONPATH="")), x)


def test_caffe2onnx_within_channel_lrn(build, tmp_path):
    """caffe2onnx (PyPI) writes every LRN as ACROSS_CHANNELS: on a WITHIN_CHANNEL net (as
    the ZF trunk's norm1) the report names the LRN and the region."""
    pytest.importorskip("caffe2onnx")
    rng = np.random.default_rng(5)
    text = (layer("conv1", "Convolution", "data", "convolution_param { num_output: 4 kernel_size: 3 }")
            + layer("relu1", "ReLU", "conv1", tops=["conv1"])
            + layer("norm1", "LRN", "conv1", "lrn_param { local_size: 3 alpha: 0.5 beta: 0.75 norm_region: WITHIN_CHANNEL }")
            + layer("conv2", "Convolution", "norm1", "convolution_param { num_output: 2 kernel_size: 3 }"))
    proto, weights = build.write(text, {"data": (1, 3, 12, 12)}, {
        "conv1": [rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)],
        "conv2": [rng.standard_normal((2, 4, 3, 3)), rng.standard_normal(2)]}, name="within")
    out = tmp_path / "within.onnx"
    env = dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python")  # its _pb2 files predate protobuf 4
    run = subprocess.run([sys.executable, "-m", "caffe2onnx.convert", "--prototxt", str(proto), "--caffemodel",
                          str(weights), "--onnx", str(out)], capture_output=True, text=True, env=env, timeout=120)
    if run.returncode != 0:
        pytest.skip(f"caffe2onnx does not run here: {run.stderr.strip().splitlines()[-1:]}")
    net = zfcaffe.Net(str(proto), str(weights))
    r = compare(net, out, rng.standard_normal((1, 3, 12, 12)).astype(np.float32))
    assert r.first == "norm1"
    assert "LRN normalising region swapped" in r.summary
    assert any("opset" in n for n in r.notes)   # it stamps a newer opset than ONNX Runtime runs


# -- the verb ------------------------------------------------------------------------------------------------
def test_verb_writes_report_and_exit_status(small, tmp_path, capsys):
    from conftest import render_in_chromium
    from zfcaffe.cli import main
    import zfcaffe.compare.verb  # noqa: F401  (the lead adds it to VERB_MODULES)
    net, path, x = small
    np.save(tmp_path / "x.npy", x)
    proto, weights = net.graph.path, net.graph.weights_path
    assert main(["compare", proto, weights, "--against", str(path), "--input", str(tmp_path / "x.npy"),
                 "-o", str(tmp_path / "ok"), "--quiet"]) == 0
    assert main(["compare", proto, weights, "--against", str(tmp_path / "nothing.txt"), "--input",
                 str(tmp_path / "x.npy"), "-o", str(tmp_path / "w"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--against" in err and not (tmp_path / "w").exists()
    floor_pooling(path, tmp_path / "floor.onnx", "pool1")
    bad = _cli(proto, weights, "--against", tmp_path / "floor.onnx", "--input", tmp_path / "x.npy",
               "-o", tmp_path / "bad", "--quiet")
    assert bad.returncode == 1, bad.stderr
    assert "pooling output size rounded down" in bad.stdout
    report = json.loads((tmp_path / "bad" / "report.json").read_text())
    assert report["first_divergence"] == "pool1" and not report["ok"]
    assert len(report["layers"]) == len(net.layer_shapes)
    assert {"index.html", "report.json", "error.png"} <= set(os.listdir(tmp_path / "bad"))
    title, shot = render_in_chromium(tmp_path / "bad" / "index.html", "compare.png", tmp_path, height=1400)
    assert title.startswith("images 1/1") and shot.exists()
