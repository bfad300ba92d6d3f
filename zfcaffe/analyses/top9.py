"""Top-9 (Zeiler & Fergus Fig. 2): for each feature map of the chosen layers, the 9
images of a dataset where it responds most, with the deconvnet projection of each
response and the receptive-field patch under it.

The scan streams the dataset in batches through the lean forward graph (only the
chosen layers as outputs), on this machine or a Ray cluster (zfcaffe.scan), keeping
for every map its k best (value, image, y, x): memory is bounded by maps x k whatever
the dataset size, and merging is exact in any order. The state is saved to a
cache every few batches, so an interrupted scan resumes where it stopped.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from ..atomic import atomic_savez
from ..scan import Engine, Job
from .common import progress, scan_fingerprint


FIELDS = ("values", "image", "y", "x")


@dataclasses.dataclass
class TopK:
    """Per feature map (rows), the k best responses over the dataset, best first."""
    values: np.ndarray      # (C, k) float32, -inf where fewer than k images were seen
    image: np.ndarray       # (C, k) int64 index into the image list
    y: np.ndarray
    x: np.ndarray

    @staticmethod
    def empty(channels: int, k: int) -> "TopK":
        return TopK(np.full((channels, k), -np.inf, np.float32), np.full((channels, k), -1, np.int64),
                    np.zeros((channels, k), np.int64), np.zeros((channels, k), np.int64))

    @staticmethod
    def of_batch(act: np.ndarray, first_image: int, k: int) -> "TopK":
        """The top-k of a batch (B, C, h, w): each image offers its best position per map
        (the first maximum)."""
        b, c, h, w = act.shape
        flat = act.reshape(b, c, h * w)
        pos = flat.argmax(axis=2)                                   # (B, C)
        val = np.take_along_axis(flat, pos[..., None], axis=2)[..., 0]
        image = np.broadcast_to(np.arange(first_image, first_image + b), (c, b))
        return TopK.empty(c, k).merge(TopK(val.T, image, (pos // w).T, (pos % w).T))

    def merge(self, other: "TopK") -> "TopK":
        """The top-k of both, best first, ties to the lower image index: the same
        whatever order the batches are merged in (so any engine gives the same result)."""
        k = self.values.shape[1]
        both = [np.concatenate([getattr(self, f), getattr(other, f)], axis=1) for f in FIELDS]
        order = np.lexsort((both[1], -both[0]), axis=1)[:, :k]
        return TopK(*(np.take_along_axis(a, order, 1) for a in both))

    def arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {f"{prefix}{f}": getattr(self, f) for f in FIELDS}

    @staticmethod
    def from_arrays(arrays, prefix: str = "") -> "TopK":
        return TopK(*(arrays[f"{prefix}{f}"] for f in FIELDS))


class ScanJob(Job):
    """One batch -> the top-k of every chosen layer's maps among its images."""

    def __init__(self, net, pre, batch: int, keys: list[str], k: int):
        super().__init__(net, pre, batch)
        self.keys, self.k = keys, k

    def run(self, x: np.ndarray, real: int, start: int) -> dict[str, np.ndarray]:
        out = self.evaluate(self.keys, x)
        result = {}
        for key in self.keys:
            result.update(TopK.of_batch(out[key][:real], start, self.k).arrays(f"{key}/"))
        return result


def _fingerprint(net, paths, keys, k) -> str:
    return scan_fingerprint(net, [keys, k, paths])


def scan(net, paths: list[str], keys: list[str], pre, k: int = 9, batch: int = 16, engine: Engine | None = None,
         cache: str | None = None, show_progress: bool = True, checkpoint_every: int = 8) -> dict[str, TopK]:
    """Stream the images through the net (on `engine`, local by default); returns the
    top-k state of every key."""
    tops = {key: TopK.empty(net.graph.shapes[key][1], k) for key in keys}
    done = 0
    print_ = _fingerprint(net, paths, keys, k)
    if cache and os.path.exists(cache):
        with np.load(cache, allow_pickle=False) as z:
            if str(z["fingerprint"]) == print_:
                done = int(z["done"])
                tops = {key: TopK.from_arrays(z, f"{key}/") for key in keys}
    bar = progress(len(paths), "scan", show_progress, unit="img")
    bar.update(done)
    job = ScanJob(net, pre, batch, keys, k)
    for n_batches, (start, real, result) in enumerate((engine or Engine()).map(job, paths, done), 1):
        tops = {key: tops[key].merge(TopK.from_arrays(result, f"{key}/")) for key in keys}
        bar.update(real)
        if cache and (n_batches % checkpoint_every == 0 or start + real == len(paths)):
            _save(cache, tops, start + real, print_)
    bar.close()
    return tops


def _save(path: str, tops: dict[str, TopK], done: int, fingerprint: str) -> None:
    arrays = {"fingerprint": np.array(fingerprint), "done": np.array(done)}
    for key, t in tops.items():
        arrays.update(t.arrays(f"{key}/"))
    atomic_savez(path, arrays)


@dataclasses.dataclass
class TopTiles:
    """Display-ready tiles of the top-k units of some maps (uint8, grey = zero)."""
    maps: list[int]
    projections: dict[str, np.ndarray]     # mode -> (maps, k, S, S, 3)
    patches: np.ndarray                    # (maps, k, S, S, 3)
    valid: np.ndarray                      # (maps, k) bool: fewer than k images leave gaps
    boxes: np.ndarray                      # (maps, k, 4) y0, y1, x0, x1 of each tile in the input
    near_ties: dict[str, set]


def project_top(net, paths: list[str], key: str, top: TopK, maps: list[int], pre,
                modes=("deconvnet",), size: int = 96) -> TopTiles:
    """Projections and image patches of the top-k units of the given maps, as tiles.
    Each image is run once; all its units of this layer are projected in one pass."""
    from .projection import project_tiles
    input_name = net.inputs[0]
    net.set_batch(1)
    k = top.values.shape[1]
    wanted: dict[int, list[tuple[int, int]]] = {}
    for i, m in enumerate(maps):
        for j in range(k):
            if top.image[m, j] >= 0:
                wanted.setdefault(int(top.image[m, j]), []).append((i, j))
    shape = (len(maps), k, size, size, 3)
    result = TopTiles(list(maps), {m: np.zeros(shape, np.uint8) for m in modes}, np.zeros(shape, np.uint8),
                      np.zeros((len(maps), k), bool), np.zeros((len(maps), k, 4), np.int64), {})
    for img_index, entries in sorted(wanted.items()):
        x, rgb = pre.prepare(paths[img_index])
        net.forward(**{input_name: x[None]})
        units = [(0, maps[i], int(top.y[maps[i], j]), int(top.x[maps[i], j])) for i, j in entries]
        t = project_tiles(net, key, units, list(modes), rgb, size)
        for n, (i, j) in enumerate(entries):
            for m in modes:
                result.projections[m][i, j] = t.projections[m][n]
            result.patches[i, j] = t.patches[n]
            result.boxes[i, j] = t.boxes[n]
            result.valid[i, j] = True
        for layer, windows in t.near_ties.items():
            result.near_ties.setdefault(layer, set()).update(windows)
    return result
