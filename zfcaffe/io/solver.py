"""solver.prototxt: which net it trains and where its snapshots are."""
from __future__ import annotations

import dataclasses
import glob
import os
import re

from .. import caffe_pb2
from .prototxt import parse_message_text


@dataclasses.dataclass
class Solver:
    path: str
    param: caffe_pb2.SolverParameter
    net_path: str | None          # resolved path of the train/test net, if found
    snapshot_prefix: str | None   # resolved prefix, if set

    def snapshots(self) -> list[tuple[int, str]]:
        """(iteration, path) of every snapshot on disk, oldest first."""
        return find_snapshots(self.snapshot_prefix) if self.snapshot_prefix else []


def _resolve(path: str, solver_dir: str) -> str:
    """Caffe resolves paths from its working directory (usually Caffe's root); the
    files usually travel together, so fall back to the solver's own folder."""
    for candidate in (path, os.path.join(solver_dir, path)):
        if os.path.exists(candidate):
            return candidate
    return os.path.join(solver_dir, os.path.basename(path))


_SOLVER_FIELD = re.compile(r"^\s*(base_lr|lr_policy|max_iter|train_net|test_net|solver_mode|snapshot_prefix|"
                           r"solver_type|type|net)\s*:", re.M)
_LAYER_BLOCK = re.compile(r"^\s*(layers?|input)\s*[:{]", re.M)


def is_solver_text(path: str) -> bool:
    """Whether a prototxt is a solver (fields like base_lr, net:) rather than a net."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read(1 << 20)
    except OSError:
        return False
    return bool(_SOLVER_FIELD.search(text)) and not _LAYER_BLOCK.search(text) and "base_lr" in text


def read_solver(path: str) -> Solver:
    param = caffe_pb2.SolverParameter()
    parse_message_text(path, param)
    d = os.path.dirname(os.path.abspath(path))
    net = param.net or param.train_net or (param.test_net[0] if len(param.test_net) else "")
    net_path = _resolve(net, d) if net else None
    prefix = None
    if param.snapshot_prefix:
        p = param.snapshot_prefix
        prefix = p if glob.glob(glob.escape(p) + "_iter_*") else os.path.join(d, os.path.basename(p))
    return Solver(path, param, net_path, prefix)


_ITER = re.compile(r"_iter_(\d+)\.caffemodel(\.h5)?$")


def find_snapshots(prefix: str) -> list[tuple[int, str]]:
    found = []
    for p in glob.glob(glob.escape(prefix) + "_iter_*.caffemodel*"):
        m = _ITER.search(p)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)
