"""compare(): both sides on the same input, matched and measured layer by layer."""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from ..errors import ZfcaffeError
from .sides import Match, Side


@dataclasses.dataclass
class Row:
    """One Caffe layer output (key) on both sides."""
    index: int                 # position in the net (layer order)
    key: str                   # zfcaffe's key: the layer name, or name#i
    layer: str
    type: str
    ours_shape: tuple
    other_shape: tuple | None  # None: the other side has no value for it
    other_name: str | None
    how: str | None            # how the other side's value was matched to the key
    rel: float | None          # max|diff| / max|ref| (ref: zfcaffe, Caffe's numerics)
    cos: float | None          # cosine similarity
    verdict: str               # ok, diverges, shape differs, absent, fused: ...
    holds: str | None = None   # fused: the later key whose value the other side's holds (rel, cos against it)

    @property
    def failed(self) -> bool:
        return self.verdict in ("diverges", "shape differs") or self.verdict.endswith("(beyond --tol)")

    @property
    def compared(self) -> bool:
        return self.verdict in ("ok", "diverges", "shape differs") or self.verdict.startswith("fused")


@dataclasses.dataclass
class Report:
    net: str
    weights: str | None
    other: str
    tol: float
    inputs: dict                      # input name -> shape
    fed: str                          # what the other side was fed
    rows: list[Row]
    first: str | None                 # key of the first diverging layer
    causes: list[dict]                # the guesses at the first divergence, each tested
    checks: list[str]                 # input-wide checks: channel order, the other side's own mean
    notes: list[str]
    seconds: dict                     # where the time went

    @property
    def ok(self) -> bool:
        """No compared layer beyond the tolerance (and no shape that differs)."""
        return not any(r.failed for r in self.rows)

    @property
    def compared(self) -> list[Row]:
        return [r for r in self.rows if r.compared]

    def row(self, key: str) -> Row:
        return next(r for r in self.rows if r.key == key)

    @property
    def summary(self) -> str:
        n = len(self.compared)
        if self.first is None:
            return (f"{n} layers compared, none beyond {self.tol:g}"
                    + ("" if n else " (no layer of the other side matched a Caffe layer)"))
        r = self.row(self.first)
        why = "; ".join(c["cause"] + ("" if c.get("layer") in (None, r.layer) else f" (at '{c['layer']}')")
                        for c in self.causes if c["matches"]) or "none of the usual causes reproduces it"
        bad = sum(1 for x in self.rows if x.failed)
        what = (f"shape {list(r.other_shape)} vs Caffe's {list(r.ours_shape)}" if r.verdict == "shape differs"
                else f"max|diff|/max|ref| {r.rel:.3g}, cosine {r.cos:.6f}")
        return f"first divergence at layer '{r.layer}' ({r.type}; {what}); {bad} of {n} layers beyond {self.tol:g}. Cause: {why}"

    def to_json(self) -> dict:
        return {"net": self.net, "weights": self.weights, "other": self.other, "tol": self.tol,
                "inputs": {k: list(v) for k, v in self.inputs.items()}, "fed": self.fed, "ok": self.ok,
                "summary": self.summary, "first_divergence": self.first, "causes": self.causes,
                "checks": self.checks, "notes": self.notes, "seconds": self.seconds,
                "layers": [dict(dataclasses.asdict(r), ours_shape=list(r.ours_shape),
                                other_shape=None if r.other_shape is None else list(r.other_shape))
                           for r in self.rows]}

    def write(self, out: str) -> str:
        """index.html, report.json and error.png into `out`, atomically; returns `out`."""
        from .report import write_report
        return write_report(self, out)


def measure(ours: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """(max|other - ours| / max|ours|, cosine similarity), in float32 passes (BLAS dots)."""
    a = np.ascontiguousarray(ours, np.float32).ravel()
    b = np.ascontiguousarray(other, np.float32).ravel()
    ref = float(np.abs(a).max()) if a.size else 0.0
    diff = float(np.abs(a - b).max()) if a.size else 0.0
    if not np.isfinite(diff):
        return float("inf"), float("nan")
    rel = diff / ref if ref > 0 else (0.0 if diff == 0 else float("inf"))
    na, nb = float(np.sqrt(np.dot(a, a))), float(np.sqrt(np.dot(b, b)))
    cos = float(np.dot(a, b)) / (na * nb) if na > 0 and nb > 0 else (1.0 if na == nb else 0.0)
    return rel, cos


def comparable(ours: np.ndarray, other: np.ndarray) -> np.ndarray | None:
    """The other value shaped like ours where only the layout of singleton axes differs
    (an InnerProduct's (N, C) against a converter's (N, C, 1, 1)); None where the shapes
    really differ."""
    if ours.shape == other.shape:
        return other
    if ours.size == other.size and [d for d in ours.shape if d != 1] == [d for d in other.shape if d != 1]:
        return other.reshape(ours.shape)
    return None


def side_for(spec, net=None, caffe_python: str | None = None) -> Side:
    """A Side from the command line's --against: opencv, caffe, FILE.onnx, DUMP.npz, DUMP.h5."""
    if isinstance(spec, Side):
        return spec
    spec = os.fspath(spec)
    low = spec.lower()
    if low == "opencv":
        from .sides.opencv import OpenCVSide
        return OpenCVSide(net.graph.path, net.graph.weights_path, net)
    if low == "caffe":
        from .sides.pycaffe import PycaffeSide
        return PycaffeSide(net.graph.path, net.graph.weights_path, caffe_python)
    if low.endswith(".onnx"):
        from .sides.onnx import OnnxSide
        return OnnxSide(spec)
    if low.endswith((".npz", ".h5", ".hdf5")):
        from .sides.dump import DumpSide
        return DumpSide(spec)
    raise ZfcaffeError(f"--against '{spec}': expected opencv, caffe (with --caffe-python), "
                       "a FILE.onnx, or a dump DUMP.npz / DUMP.h5")


def _inputs(net, inputs) -> dict[str, np.ndarray]:
    if isinstance(inputs, np.ndarray):
        inputs = {net.inputs[0]: inputs}
    out = {}
    for k, v in dict(inputs).items():
        if k not in net.graph.inputs:
            raise ZfcaffeError(f"compare(): input '{k}' is not an input of the net (inputs: {', '.join(net.inputs)})")
        v = np.ascontiguousarray(v, np.float32)
        out[k] = v if v.ndim == len(net.graph.inputs[k]) else v[None]
    return out


def swap_channels(inputs: dict) -> dict:
    """Every 3-channel input with its channel order reversed (BGR <-> RGB)."""
    return {k: np.ascontiguousarray(v[:, ::-1]) if v.ndim == 4 and v.shape[1] == 3 else v for k, v in inputs.items()}


def _fused(net, rows: list[Row], ours: dict, theirs: dict, tol: float) -> None:
    """A diverging value that is Caffe's value a layer or two later (a converter that writes
    BatchNorm + Scale, or a convolution + ReLU, as one node under the first one's name) is
    a fusion, not a numerical difference: its verdict says which layers it holds."""
    readers: dict[str, list] = {}
    for layer in net.graph.compute_layers:
        for b in layer.bottoms:
            readers.setdefault(b, []).append(layer)
    for r in rows:
        if r.verdict != "diverges":
            continue
        key, chain = r.key, []
        for _ in range(3):
            nxt = readers.get(key, [])
            if len(nxt) != 1 or len(nxt[0].tops) != 1:
                break
            key = nxt[0].tops[0]
            chain.append(nxt[0].name)
            b = comparable(ours[key], theirs[r.key].value)
            if b is None:
                continue
            rel, cos = measure(ours[key], b)
            if rel <= tol or (cos > 0.9999 and rel < r.rel * 0.01):
                r.verdict = f"fused: holds '{r.layer}' + " + " + ".join(f"'{c}'" for c in chain)
                r.rel, r.cos, r.holds = rel, cos, key
                if rel > tol:
                    r.verdict += " (beyond --tol)"
                break


def compare(net, other, inputs, tol: float = 1e-4, other_rgb: bool = False, mean=None,
            caffe_python: str | None = None) -> Report:
    """Run zfcaffe's `net` and `other` (a Side, or a spec: "opencv", "caffe", a .onnx file,
    a .npz/.h5 dump) on `inputs` ({input name: array} or the first input's array) and
    compare every layer both have. other_rgb: feed the other side the channels reversed.
    mean: the per-channel mean the input was made with (for the check that the other side
    subtracts its own)."""
    import time
    from . import diagnose
    t0 = time.perf_counter()
    side = side_for(other, net, caffe_python)
    inputs = _inputs(net, inputs)
    if set(inputs) != set(net.graph.inputs):
        missing = sorted(set(net.graph.inputs) - set(inputs))
        raise ZfcaffeError(f"compare(): no array for the net's input(s) {', '.join(missing)}")
    for k, v in inputs.items():
        if net.graph.inputs[k] != v.shape:
            net.reshape(**{k: v.shape})
    keys = [k for l in net.graph.compute_layers for k in l.tops]
    t1 = time.perf_counter()
    ours = net.evaluate(keys, **inputs)
    ours.update(inputs)
    t2 = time.perf_counter()
    fed = swap_channels(inputs) if other_rgb else inputs
    theirs = side.values(net, fed, ours)
    t3 = time.perf_counter()
    rows = []
    for i, layer in enumerate(net.graph.compute_layers):
        for key in layer.tops:
            m: Match | None = theirs.get(key)
            a = ours[key]
            if m is None:
                rows.append(Row(i, key, layer.name, layer.type, tuple(a.shape), None, None, None, None, None, "absent"))
                continue
            b = comparable(a, m.value)
            if b is None:
                rows.append(Row(i, key, layer.name, layer.type, tuple(a.shape), tuple(m.value.shape), m.name, m.how,
                                None, None, "shape differs"))
                continue
            rel, cos = measure(a, b)
            rows.append(Row(i, key, layer.name, layer.type, tuple(a.shape), tuple(m.value.shape), m.name, m.how,
                            rel, cos, "ok" if rel <= tol else "diverges"))
    if not any(r.compared for r in rows):
        names = sorted(getattr(side, "arrays", None) or getattr(side, "output_names", None) or getattr(side, "names", []))
        raise ZfcaffeError(f"{side.description}: none of its values matched a layer of {net.graph.path}"
                           + (f" (its names: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''})" if names else "")
                           + "; expected values named by Caffe layer or blob, or of the layers' shapes")
    _fused(net, rows, ours, theirs, tol)
    t4 = time.perf_counter()
    first = next((r.key for r in rows if r.failed), None)
    causes, checks = [], []
    if first is not None:
        row = next(r for r in rows if r.key == first)
        # where the error left float rounding: a drift that grows along the depth starts before the first failure
        origin = next((r for r in rows if r.rel is not None and r.rel > tol / 100), row)
        if origin.key != first:
            causes.append({"cause": f"the error grows along the depth from '{origin.layer}' (max|diff|/max|ref| "
                                    f"{origin.rel:.2g}) to '{row.layer}' ({f'{row.rel:.2g}' if row.rel is not None else 'its shape'})",
                           "test": f"the usual causes tested at '{origin.layer}' too", "rel": origin.rel,
                           "matches": False, "result": "a small difference that accumulates", "layer": origin.layer})
            causes += diagnose.causes(net, origin.key, ours, theirs, tol, holds=origin.holds, small=True)
        causes += diagnose.causes(net, first, ours, theirs, tol, holds=row.holds)
        checks = diagnose.input_checks(net, side, inputs, fed, ours, theirs, first, tol, other_rgb, mean)
    t5 = time.perf_counter()
    notes = list(side.notes())
    absent = [r.layer for r in rows if r.verdict == "absent"]
    if absent:
        notes.append(f"{len(absent)} layer output(s) have no counterpart on {side.description}: "
                     + ", ".join(absent[:20]) + (" ..." if len(absent) > 20 else ""))
    return Report(net=net.graph.path, weights=net.graph.weights_path, other=side.description, tol=tol,
                  inputs={k: tuple(v.shape) for k, v in inputs.items()},
                  fed="the same array with its channels reversed (--other-rgb)" if other_rgb else "the same array",
                  rows=rows, first=first, causes=causes, checks=checks, notes=notes,
                  seconds={"setup": round(t1 - t0, 4), "zfcaffe": round(t2 - t1, 4), "other": round(t3 - t2, 4),
                           "measure": round(t4 - t3, 4), "diagnose": round(t5 - t4, 4)})
