"""Feature evolution during training (Zeiler & Fergus Fig. 4): for chosen feature
maps, the strongest activation over a dataset at each training snapshot, projected
to pixels; one row per map, one column per snapshot."""
from __future__ import annotations

import dataclasses
import glob
import os
import re

import numpy as np

from ..errors import ZfcaffeError
from .common import shown_key
from ..scan import Engine
from .top9 import project_top, scan


def snapshot_list(specs: list[str]) -> list[str]:
    """Snapshot files from paths, globs or a solver.prototxt (its snapshot prefix),
    ordered by iteration."""
    from ..io.solver import read_solver
    files = []
    for spec in specs:
        if spec.endswith(".prototxt"):
            solver = read_solver(spec)
            found = solver.snapshots()
            if not found:
                raise ZfcaffeError(f"{spec}: no snapshots at {solver.snapshot_prefix}_iter_N.caffemodel[.h5]")
            files += [p for _, p in found]
        elif any(c in spec for c in "*?["):
            matched = sorted(glob.glob(spec))
            if not matched:
                raise ZfcaffeError(f"{spec}: no snapshot matches this pattern")
            files += matched
        else:
            if not os.path.exists(spec):
                raise ZfcaffeError(f"{spec}: no such snapshot file")
            files.append(spec)
    unique = list({os.path.realpath(f): f for f in files}.values())   # a snapshot named twice counts once
    return sorted(unique, key=iteration)


def iteration(path: str) -> tuple:
    m = re.search(r"_iter_(\d+)", os.path.basename(path))
    return (int(m.group(1)) if m else -1, path)


@dataclasses.dataclass
class Evolution:
    layer: str
    maps: list[int]
    snapshots: list[str]
    values: np.ndarray          # (maps, snapshots) strongest activation over the dataset
    images: np.ndarray          # (maps, snapshots) which image
    projections: list           # [map][snapshot] uint8 RGB tile

    def arrays(self) -> dict[str, np.ndarray]:
        return {"values": self.values, "images": self.images, "maps": np.array(self.maps)}


def run(prototxt: str, snapshots: list[str], paths: list[str], pre_for, layer: str, maps: list[int] | None,
        n_maps: int = 8, batch: int = 16, workers: int = 2, show_progress: bool = True, **net_kw) -> Evolution:
    """pre_for(net) builds the preprocessing for a net (the same for every snapshot)."""
    from ..net import Net
    values, images, projections = [], [], []
    key = None
    for snap in snapshots:
        net = Net(prototxt, snap, **net_kw)
        key = shown_key(net, layer)
        pre = pre_for(net)
        top = scan(net, paths, [key], pre, k=1, batch=batch, engine=Engine(workers=workers),
                   show_progress=show_progress)[key]
        if maps is None:  # chosen on the first snapshot, then followed through the others
            maps = [int(m) for m in np.argsort(-top.values[:, 0], kind="stable")[:n_maps]]
        values.append(top.values[maps, 0])
        images.append(top.image[maps, 0])
        tiles = project_top(net, paths, key, top, maps, pre)
        projections.append([tiles.projections["deconvnet"][i, 0] for i in range(len(maps))])
    return Evolution(layer, maps, snapshots, np.array(values).T, np.array(images).T,
                     [[projections[j][i] for j in range(len(snapshots))] for i in range(len(maps))])
