"""Property-based fuzzing of every reader and of the command line's options
(hypothesis, fixed seed, a few hundred cases in all): whatever the bytes or text, the
only exception is the project's own. tools/fuzz.py runs the long version (each case
in a child process with a memory cap and a timeout)."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import zfcaffe
from conftest import SHARED

FUZZ = settings(max_examples=60, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
M = SHARED / "models/cifar10_quick"


def _need(path: pathlib.Path) -> bytes:
    if not path.exists():
        from conftest import unavailable
        unavailable(f"{path} is missing")
    return path.read_bytes()


def mutated(data: bytes):
    """Bytes with a few positions overwritten, a slice cut out, or the end cut off."""
    n = max(len(data), 1)
    edit = st.tuples(st.integers(0, n - 1), st.integers(0, 255))
    return st.tuples(st.lists(edit, max_size=6), st.integers(0, n), st.integers(0, 64), st.booleans()).map(
        lambda t: _apply(data, *t))


def _apply(data: bytes, edits, cut_at, cut_len, truncate) -> bytes:
    b = bytearray(data)
    for i, v in edits:
        if i < len(b):
            b[i] = v
    del b[cut_at:cut_at + cut_len]
    return bytes(b[:cut_at] if truncate else b)


def only_project_errors(call):
    try:
        call()
    except zfcaffe.ZfcaffeError:
        pass


TOKENS = st.sampled_from(["0", "-1", "nan", "inf", "1e9", "2000000000", "{", "}", "\"", ":", "layer {", "top: \"x\"",
                          "bottom: \"data\"", "kernel_size: 0", "stride: 0", "axis: -9", "num_output: -3"])


@FUZZ
@given(st.data())
def test_prototxt_text(tmp_path, data):
    words = _need(M / "cifar10_quick.prototxt").decode().split(" ")
    for _ in range(data.draw(st.integers(1, 4))):
        words[data.draw(st.integers(0, len(words) - 1))] = data.draw(TOKENS)
    path = tmp_path / "net.prototxt"
    path.write_text(" ".join(words))
    only_project_errors(lambda: zfcaffe.Net(str(path)))


@FUZZ
@given(st.data())
def test_caffemodel_bytes(tmp_path, data):
    from zfcaffe.io.weights import read_weights
    path = tmp_path / "w.caffemodel"
    path.write_bytes(data.draw(mutated(_need(M / "cifar10_quick_iter_4000.caffemodel")[:20000])))
    only_project_errors(lambda: read_weights(str(path)))


@FUZZ
@given(st.data())
def test_mean_files_and_arguments(tmp_path, data):
    from zfcaffe.io.mean import read_mean
    from zfcaffe.preprocess import mean_from_arg
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(data.draw(mutated(_need(M / "mean.binaryproto"))))
    only_project_errors(lambda: read_mean(str(path)))
    npy = tmp_path / "mean.npy"
    buf = tmp_path / "src.npy"
    np.save(buf, np.zeros((3, 4, 4), np.float32))
    npy.write_bytes(data.draw(mutated(buf.read_bytes())))
    only_project_errors(lambda: read_mean(str(npy)))
    only_project_errors(lambda: mean_from_arg(data.draw(st.text(max_size=12))))


@FUZZ
@given(st.data())
def test_image_bytes(tmp_path, data):
    from PIL import Image

    from zfcaffe.preprocess import load_image
    src = tmp_path / "src.png"
    Image.new("RGB", (12, 9), (200, 30, 60)).save(src)
    path = tmp_path / data.draw(st.sampled_from(["x.png", "x.jpg", "x.gif", "x.bmp"]))
    path.write_bytes(data.draw(mutated(src.read_bytes())))
    only_project_errors(lambda: load_image(str(path)))


@FUZZ
@given(st.sampled_from(["--top", "--maps", "-k", "--batch", "--workers", "--size", "--stride", "--steps"]),
       st.one_of(st.integers(-10**12, 10**12).map(str), st.text(max_size=6)))
def test_cli_count_options(option, value):
    from zfcaffe.cli import build_parser
    verb = {"--top": "visualize", "--maps": "top9", "-k": "top9", "--batch": "top9", "--workers": "top9",
            "--size": "occlusion", "--stride": "occlusion", "--steps": "classviz"}[option]
    extra = {"top9": ["--images", "x"], "occlusion": ["--image", "x"]}.get(verb, [])
    try:
        args = build_parser().parse_args([verb, "n.prototxt", "w.caffemodel", *extra, option, value])
    except SystemExit as e:
        assert e.code == 2                               # argparse's one-line usage error
        return
    assert getattr(args, option.lstrip("-").replace("-", "_")) >= 0


ODD_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=4),
                       st.lists(st.integers(-3, 40), max_size=5), st.tuples(st.integers(-2, 40), st.floats()),
                       st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
                       st.sampled_from([np.zeros(5), np.zeros((0, 3, 3)), np.zeros((1, 3, 32, 32), complex),
                                        np.array([{}], dtype=object), np.zeros((2, 3, 32, 32)), np.full(3, np.nan)]))


@pytest.fixture(scope="module")
def cifar_net():
    _need(M / "cifar10_quick_iter_4000.caffemodel")
    net = zfcaffe.Net(str(M / "cifar10_quick.prototxt"), str(M / "cifar10_quick_iter_4000.caffemodel"))
    net.forward(data=np.zeros((1, 3, 32, 32), np.float32))
    return net


@FUZZ
@given(st.sampled_from(["project", "project_many", "forward", "backward", "vis_square", "set_batch", "Net"]),
       ODD_VALUES)
def test_api_arguments(cifar_net, call, value):
    """Whatever the value, an API call answers with the project's error (its TypeError and
    ValueError subclasses included) or works."""
    from zfcaffe.viz import vis_square
    net = cifar_net
    run = {"project": lambda: net.project("conv1", value), "project_many": lambda: net.project_many("conv1", value),
           "forward": lambda: net.forward(data=value), "backward": lambda: net.backward({"conv1": value}),
           "vis_square": lambda: vis_square(value), "set_batch": lambda: net.set_batch(value),
           "Net": lambda: zfcaffe.Net(str(M / "cifar10_quick.prototxt"), input_shapes={"data": value})}[call]
    try:
        run()
    except zfcaffe.ZfcaffeError as e:
        assert "\n" not in str(e)
    finally:
        net.set_batch(1)
        net.forward(data=np.zeros((1, 3, 32, 32), np.float32))
