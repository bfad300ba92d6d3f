"""Blobs saved from real pycaffe ({name: net.blobs[name].data}), from a layer-keyed dump
(the oracle's outputs.npz: in-place layers written to their own blobs), or from any
framework's hooks: .npz or HDF5, matched by layer name or blob name."""
from __future__ import annotations

import os

import numpy as np

from ...errors import ZfcaffeError
from . import Match, Side


def read_dump(path: str) -> dict[str, np.ndarray]:
    if not os.path.exists(path):
        raise ZfcaffeError(f"{path}: no such file; expected a dump of blobs (.npz or .h5)")
    if path.lower().endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: np.asarray(z[k]) for k in z.files}
        except (ValueError, OSError) as e:
            raise ZfcaffeError(f"{path}: not a readable .npz of arrays ({e})") from None
    import h5py
    out = {}
    try:
        with h5py.File(path, "r") as f:
            def visit(name, obj):
                if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "fiub":
                    out[name] = np.asarray(obj[()])
            f.visititems(visit)
    except OSError as e:
        raise ZfcaffeError(f"{path}: not a readable HDF5 file ({e})") from None
    return out


class DumpSide(Side):
    reruns = False

    def __init__(self, path: str, arrays: dict | None = None, description: str | None = None):
        self.path = path
        self.arrays = read_dump(path) if arrays is None else arrays
        self.description = description or f"the dump {os.path.basename(path)}"
        self.unmatched: list[str] = []

    def values(self, net, inputs, ours):
        g = net.graph
        layer_keys = {k for l in g.compute_layers for k in l.tops}
        out: dict[str, Match] = {}
        self.unmatched = []
        for name, value in self.arrays.items():
            cands = []
            if name in layer_keys:
                cands.append((name, "layer name"))
            if name in g.blob_of and g.blob_of[name] in layer_keys and g.blob_of[name] != name:
                cands.append((g.blob_of[name], "blob name (its final value, after in-place layers)"))
            if not cands:
                if name not in g.inputs:
                    self.unmatched.append(name)
                continue
            if len(cands) > 1:   # a blob that is also a layer's name (conv1 before/after relu1): the closer
                from ..core import comparable, measure
                def err(c):
                    b = comparable(ours[c[0]], np.asarray(value, np.float32))
                    return measure(ours[c[0]], b)[0] if b is not None else float("inf")
                best = min(cands, key=err)
                cands = [(best[0], best[1] + " (the name is a layer and a blob: the closer of the two)")]
            key, how = cands[0]
            if key in out and out[key].how == "layer name":
                continue
            out[key] = Match(np.asarray(value), name, how)
        return out

    def notes(self):
        if not self.unmatched:
            return []
        return [f"{len(self.unmatched)} array(s) of {self.description} name no layer or blob of the net: "
                + ", ".join(self.unmatched[:12]) + (" ..." if len(self.unmatched) > 12 else "")]
