"""The command line: inspect, convert, run."""
from __future__ import annotations

import json

import matplotlib.cbook
import numpy as np
import onnx

from conftest import rel_err, run_cli as zfcaffe


def test_inspect_caffenet_receptive_field(shared):
    proto = shared / "models/bvlc_reference_caffenet/deploy.prototxt"
    table = zfcaffe("inspect", proto).stdout
    conv5 = next(l for l in table.splitlines() if l.startswith("conv5 "))
    assert " 163 " in conv5 and " 16 " in conv5 and "13x13" in conv5
    assert "60.97M parameters" in table
    summary = json.loads(zfcaffe("inspect", proto, "--json").stdout)
    row = next(r for r in summary["layers"] if r["layer"] == "conv5")
    assert row["receptive_field"] == [163, 163] and row["jump"] == [16, 16]
    assert summary["total_params"] == 60965224


def test_inspect_v0_file_and_input_override(shared):
    proto = shared / "models/bvlc_legacy_formats/v0/imagenet_deploy.prototxt"
    out = zfcaffe("inspect", proto, "--input-shape", "data=1,3,227,227").stdout
    assert "V0 file" in out and "1x256x6x6" in out


def test_convert_and_run(shared, tmp_path):
    m = shared / "models/cifar10_quick"
    onnx_path = tmp_path / "c.onnx"
    out = zfcaffe("convert", m / "cifar10_quick.prototxt", m / "cifar10_quick_iter_4000.caffemodel", "-o", onnx_path)
    assert "wrote" in out.stdout
    model = onnx.load(str(onnx_path))
    onnx.checker.check_model(model)
    assert model.ir_version <= 10 and [o.name for o in model.graph.output] == ["prob"]

    case = shared / "oracle/cifar10_quick"
    x = np.load(case / "input.npy")[:1]
    np.save(tmp_path / "x.npy", x)
    save = tmp_path / "all.npz"
    zfcaffe("run", m / "cifar10_quick.prototxt", m / "cifar10_quick_iter_4000.caffemodel",
            "--input", tmp_path / "x.npy", "--save", save)
    saved = np.load(save)
    ref = np.load(case / "outputs.npz")
    assert rel_err(saved["conv1"], ref["conv1"][:1]) < 1e-4
    assert "pool1/switches" in saved.files


def test_run_on_an_image(shared, tmp_path):
    m = shared / "models/cifar10_quick"
    img = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    r = zfcaffe("run", m / "cifar10_quick.prototxt", m / "cifar10_quick_iter_4000.caffemodel",
                "--input", img, "--mean", m / "mean.binaryproto")
    assert "prob [1, 10]" in r.stdout and "preprocessing" in r.stderr
    bad = zfcaffe("run", m / "cifar10_quick.prototxt", m / "cifar10_quick_iter_4000.caffemodel",
                  "--input", tmp_path / "missing.jpg", check=False)
    assert bad.returncode == 2 and "missing.jpg" in bad.stderr


def test_train_test_net_takes_its_image_size_from_the_weights(shared, tmp_path):
    """A train/test net whose Data layer reads an LMDB: every verb takes the image size
    from the weights (zfcaffe.Net does it), with no --input-shape."""
    m = shared / "models/cifar10_quick"
    tt, w = m / "cifar10_quick_train_test.prototxt", m / "cifar10_quick_iter_4000.caffemodel"
    assert "100x3x32x32" in zfcaffe("inspect", tt, w).stdout        # the batch from the Data layer
    img = shared / "pycaffe_io/small.png"
    got = zfcaffe("run", tt, w, "--input", img, "--train-val", tt).stdout
    ref = zfcaffe("run", m / "cifar10_quick.prototxt", w, "--input", img, "--train-val", tt).stdout
    assert got.split(":", 1)[1].replace(" (softmaxed here)", "") == ref.split(":", 1)[1]
    out = tmp_path / "report"
    zfcaffe("visualize", tt, w, "--train-val", tt, "--image", img, "--layers", "conv1", "--top", "2",
            "-o", out, "--quiet")
    assert "taken from the weights" in (out / "index.html").read_text()
    bad = zfcaffe("inspect", tt, check=False)                           # no weights: the size is asked for
    assert bad.returncode == 2 and "--input-shape data=" in bad.stderr


def test_resize_says_which_and_pycaffe_gives_pycaffes_blob(shared):
    """--resize pycaffe: pycaffe's load_image + resize_image (scikit-image), the numbers
    of real pycaffe (../shared/pycaffe_io); the default warp is Pillow's and says so."""
    import zfcaffe as zf
    from zfcaffe.preprocess import for_net
    m, d = shared / "models/cifar10_quick", shared / "pycaffe_io"
    z = np.load(d / "pycaffe_io.npz")
    net = zf.Net(str(m / "cifar10_quick.prototxt"), str(m / "cifar10_quick_iter_4000.caffemodel"))
    mean = ",".join(repr(float(v)) for v in z["mean/cifar10_per_channel"])
    pycaffe, warp = for_net(net, mean=mean, resize="pycaffe"), for_net(net, mean=mean)
    for name in ("photo.jpg", "gray.png", "rgba.png"):
        ref = z[f"{name.split('.')[0]}/preprocess_cifar"]
        assert rel_err(pycaffe(str(d / name)), ref) <= 1e-5
        assert rel_err(warp(str(d / name)), ref) > 1e-2                 # Pillow's is another resize
    r = zfcaffe("run", m / "cifar10_quick.prototxt", m / "cifar10_quick_iter_4000.caffemodel",
                "--input", d / "photo.jpg", "--no-mean")
    assert "resize (warp) to 32x32 [default] by Pillow's bilinear filter" in r.stderr
    r = zfcaffe("run", m / "cifar10_quick.prototxt", m / "cifar10_quick_iter_4000.caffemodel",
                "--input", d / "photo.jpg", "--no-mean", "--resize", "pycaffe")
    assert "resize (pycaffe) to 32x32 as pycaffe's caffe.io.resize_image (scikit-image" in r.stderr


# -- start-up: the command imports only what the verb uses (times: benchmarks/cli_start.py) ----------------------
HEAVY = ("numpy", "onnx", "onnxruntime", "matplotlib", "numba", "PIL", "scipy", "skimage", "h5py", "pyarrow",
         "ray", "google.protobuf")


def _loaded_by(code: str) -> set[str]:
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "-c", f"import sys\n{code}\nprint(' '.join(sys.modules))"],
                       capture_output=True, text=True, check=True)
    return set(r.stdout.split()) & set(HEAVY)


def test_help_and_inspect_load_only_what_they_use(shared):
    # every verb declared (all the verb modules imported), nothing heavy loaded
    assert _loaded_by("from zfcaffe.cli import build_parser; build_parser()") == set()
    assert _loaded_by("import zfcaffe") == set()
    proto = shared / "models/bvlc_reference_caffenet/deploy.prototxt"
    code = ("import contextlib, io\nfrom zfcaffe.cli import main\n"
            f"with contextlib.redirect_stdout(io.StringIO()): main(['inspect', {str(proto)!r}])")
    assert _loaded_by(code) <= {"numpy", "google.protobuf"}       # no ONNX, no figures, no kernels


def test_names_kept_light_agree_with_their_modules():
    from zfcaffe.analyses.features import POOLS
    from zfcaffe.cli import ENGINES
    from zfcaffe.recipes.datasets import POOLS as CLI_POOLS
    from zfcaffe.scan import ENGINES as SCAN_ENGINES
    assert ENGINES == SCAN_ENGINES and CLI_POOLS == POOLS
    import zfcaffe
    from zfcaffe.net import Net
    assert zfcaffe.Net is Net


def test_a_net_posted_without_weights_runs_with_fillers_when_asked(shared, tmp_path):
    """Census nets come as prototxts alone: --allow-missing-weights runs them with Caffe's
    fillers and no weights file; without the flag, one line says what is missing."""
    from cli_here import cli_here
    proto = shared / "models/zf_faster_rcnn/rpn_test.prototxt"
    r = cli_here("run", proto, "--input", matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False),
                 "--quiet", check=False)
    assert r.returncode == 2 and "no weights given" in r.stderr and "--allow-missing-weights" in r.stderr
    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).normal(0, 1, (1, 3, 224, 224)).astype(np.float32))
    r = cli_here("run", shared / "census/shufflenet/shufflenet_1x_g3_deploy.prototxt", "--allow-missing-weights", "--input",
                 x, "--quiet", check=False)
    assert r.returncode == 0, r.stderr
