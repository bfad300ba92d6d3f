"""Every case in ../shared/oracle (real BVLC Caffe outputs): exact shapes, outputs
within 1e-4 relative, and the exported .onnx giving the same numbers on its own."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import zfcaffe
from conftest import load_case, oracle_cases, rel_err

CASES = oracle_cases()


def expected_shapes(case) -> dict:
    shapes = json.loads((case["dir"] / "shapes.json").read_text())
    out = {}
    for name, tops in shapes.items():
        if len(tops) == 1:
            out[name] = tuple(tops[0])
        else:
            out.update({f"{name}#{i}": tuple(s) for i, s in enumerate(tops)})
    return out


@pytest.fixture(scope="module")
def nets():
    return {}


def open_case(shared, name, nets, source=False):
    key = (name, source)
    if key not in nets:
        case = load_case(shared, name)
        proto = case["source_path"] if source else str(case["dir"] / "deploy.prototxt")
        net = zfcaffe.Net(proto, case["weights_path"], input_shapes=case["input_shapes"])
        net.forward(data=np.load(case["dir"] / "input.npy"))
        nets[key] = (case, net)
    return nets[key]


@pytest.mark.parametrize("name", CASES)
def test_shapes_match_caffe(shared, nets, name):
    case, net = open_case(shared, name, nets)
    assert net.layer_shapes == expected_shapes(case)


@pytest.mark.parametrize("name", CASES)
def test_outputs_match_caffe(shared, nets, name):
    case, net = open_case(shared, name, nets)
    ref = np.load(case["dir"] / "outputs.npz")
    errors = {k: rel_err(net.layer_outputs[k], ref[k]) for k in ref.files}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-4, f"{worst}: {errors[worst]:.2e}"


LEGACY = [c for c in CASES if c.startswith(("v0_", "v1_"))] + ["cifar10_quick", "cifar10_full_h5", "nsfw_resnet50"]


@pytest.mark.parametrize("name", LEGACY)
def test_original_file_loads_the_same(shared, nets, name):
    """V0/V1 originals, upgraded by zfcaffe, give what Caffe's upgraded deploy gave."""
    case, net = open_case(shared, name, nets, source=True)
    assert net.layer_shapes == expected_shapes(case)
    ref = np.load(case["dir"] / "outputs.npz")
    for k in ref.files:
        assert rel_err(net.layer_outputs[k], ref[k]) <= 1e-4, k


@pytest.mark.parametrize("name", CASES)
def test_exported_onnx_runs_alone(shared, nets, tmp_path, name):
    case, net = open_case(shared, name, nets)
    path = tmp_path / f"{name}.onnx"
    net.to_onnx(str(path), all_blobs=True)
    onnx.checker.check_model(str(path))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    values = dict(zip(names, sess.run(None, {"data": np.load(case["dir"] / "input.npy")})))
    ref = np.load(case["dir"] / "outputs.npz")
    for k in ref.files:
        assert rel_err(values[k], ref[k]) <= 1e-4, k
    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert json.loads(props["caffe_layers"])["conv1" if "conv1" in values else next(iter(ref.files))]
