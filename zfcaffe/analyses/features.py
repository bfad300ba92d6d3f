"""Feature codes of a whole dataset: the outputs of chosen layers for every image
(spatial maps pooled to one value per channel, or kept whole), written as Parquet
shards with a manifest.

Layout of a features folder:
  _manifest.json         what was computed (net, weights, preprocessing, layers, pooling,
                         image source, classes) and which shards are complete
  part-00000.parquet ... one row per image: index, path, label (null when unknown), and one
                         fixed-size list<float32> column per layer, named by the layer

The extraction streams (memory: one shard's row groups at most, whatever the dataset
size), writes each shard under a temporary name and renames it, then records it in the
manifest: an interrupted run resumes at the first missing shard.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from ..atomic import atomic_file
from ..errors import ZfcaffeError
from ..extras import require
from ..scan import Engine, Job
from .common import progress, scan_fingerprint

FORMAT = "zfcaffe-features/1"
#: the manifest's name: a leading "_" keeps Parquet readers (pyarrow datasets,
#: pandas.read_parquet(folder)) from taking it for a shard
MANIFEST = "_manifest.json"
POOLS = ("max", "mean", "none")
SHARD_BYTES = 256 << 20          # a shard holds about this much (whole batches; one batch at least)
ROW_GROUP_BYTES = 32 << 20       # rows buffered before they are written
#: the most feature bytes read into memory at once (ZFCAFFE_MAX_FEATURE_BYTES raises it)
MAX_READ_BYTES = 8 << 30


def _pools(shape: tuple, pool: str) -> bool:
    """Whether a layer of this shape is pooled: spatial maps larger than 1x1, unless none."""
    return len(shape) == 4 and shape[2] * shape[3] > 1 and pool != "none"


def pooled(act: np.ndarray, pool: str) -> np.ndarray:
    """(N, ...) -> (N, D): spatial maps (N, C, H, W) to one value per channel (max or
    mean) or flattened (none); vectors as they are."""
    if _pools(act.shape, pool):
        return (act.max(axis=(2, 3)) if pool == "max" else act.mean(axis=(2, 3), dtype=np.float64)).astype(np.float32)
    return act.reshape(act.shape[0], -1)


def code_size(shape: tuple, pool: str) -> int:
    return int(shape[1]) if _pools(shape, pool) else int(np.prod(shape[1:]))


class FeatureJob(Job):
    """One batch -> the pooled codes of each chosen layer, (real, D) each."""

    def __init__(self, net, pre, batch: int, keys: list[str], pool: str):
        super().__init__(net, pre, batch)
        self.keys, self.pool = keys, pool

    def run(self, x: np.ndarray, real: int, start: int) -> dict[str, np.ndarray]:
        out = self.evaluate(self.keys, x)
        return {key: pooled(out[key][:real], self.pool) for key in self.keys}


def _read_manifest(out: str) -> dict | None:
    path = os.path.join(out, MANIFEST)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise ZfcaffeError(f"{path}: cannot read the features manifest: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ZfcaffeError(f"{path}: not a zfcaffe features manifest (expected format {FORMAT})")
    return manifest


def _write_manifest(out: str, manifest: dict) -> None:
    with atomic_file(os.path.join(out, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=1)


def extract(net, entries: list[tuple[str, int | None]], out: str, pre, layers: list[str], keys: list[str],
            pool: str = "max", batch: int = 16, engine: Engine | None = None, classes: list[str] | None = None,
            source: str = "", show_progress: bool = True, shard_rows: int | None = None) -> dict:
    """Write the codes of `keys` (named `layers`) for every (path, label) into `out`;
    returns the manifest. Resumes an interrupted run of the same extraction."""
    pa = require("pyarrow", "zfcaffe features")
    import pyarrow.parquet as pq
    if pool not in POOLS:
        raise ZfcaffeError(f"--pool {pool}: expected one of {', '.join(POOLS)}")
    paths = [os.path.abspath(p) for p, _ in entries]
    labels = [lab for _, lab in entries]
    dims = {key: code_size(net.graph.shapes[key], pool) for key in keys}
    row_bytes = 4 * sum(dims.values()) + 64
    fingerprint = scan_fingerprint(net, {"preprocessing": pre.describe(), "keys": keys, "pool": pool,
                                         "images": paths, "labels": labels, "batch": batch})
    manifest = _read_manifest(out)
    if manifest is None:
        if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
            raise ZfcaffeError(f"{out}: exists and is not a features folder (no {MANIFEST}); choose a new -o")
        rows = shard_rows or max(1, SHARD_BYTES // row_bytes // batch) * batch
        weights = net.graph.weights_path
        manifest = {"format": FORMAT, "fingerprint": fingerprint, "net": os.path.abspath(net.graph.path),
                    "weights": weights and os.path.abspath(weights), "preprocessing": pre.describe(),
                    "source": source, "images": len(paths),
                    "pool": pool, "layers": [{"name": n, "key": k, "shape": list(net.graph.shapes[k][1:]),
                                              "size": dims[k]} for n, k in zip(layers, keys)],
                    "classes": classes, "batch": batch, "shard_rows": rows, "shards": [], "complete": False}
        os.makedirs(out, exist_ok=True)
        _write_manifest(out, manifest)
    elif manifest.get("fingerprint") != fingerprint:
        raise ZfcaffeError(f"{out}: holds features of another extraction (net, weights or their time of change, images, layers, "
                           "pooling or batch differ); choose a new -o or remove it")
    rows = int(manifest["shard_rows"])
    done = sum(s["rows"] for s in manifest["shards"])
    names = dict(zip(keys, layers))
    schema = pa.schema([("index", pa.int64()), ("path", pa.string()), ("label", pa.int64())] +
                       [(names[k], pa.list_(pa.float32(), dims[k])) for k in keys])
    bar = progress(len(paths), "features", show_progress, unit="img")
    bar.update(done)
    shard = _Shard(out, len(manifest["shards"]), schema, pq)
    buffered: list = []

    def flush():
        if buffered:
            shard.write(pa.concat_tables(buffered))
            buffered.clear()

    try:
        for start, real, codes in (engine or Engine()).map(FeatureJob(net, pre, batch, keys, pool), paths, done):
            index = np.arange(start, start + real)
            columns = [pa.array(index), pa.array(paths[start:start + real]), pa.array(labels[start:start + real],
                                                                                   pa.int64())]
            columns += [pa.FixedSizeListArray.from_arrays(pa.array(codes[k].ravel()), dims[k]) for k in keys]
            buffered.append(pa.Table.from_arrays(columns, schema=schema))
            if sum(t.num_rows for t in buffered) * row_bytes >= ROW_GROUP_BYTES:
                flush()
            bar.update(real)
            if start + real - done >= rows or start + real == len(paths):
                flush()
                manifest["shards"].append(shard.close(first=done, rows=start + real - done))
                done = start + real
                manifest["complete"] = done == len(paths)
                _write_manifest(out, manifest)
                shard = _Shard(out, len(manifest["shards"]), schema, pq)
    finally:
        shard.abandon()
        bar.close()
    if not manifest["complete"] and done == len(paths):   # nothing was left to do
        manifest["complete"] = True
        _write_manifest(out, manifest)
    return manifest


class _Shard:
    """One Parquet file being written under a temporary name."""

    def __init__(self, out: str, number: int, schema, pq):
        self.name = f"part-{number:05d}.parquet"
        self.path = os.path.join(out, self.name)
        self.tmp = os.path.join(out, f".{self.name}.tmp")
        self.schema, self.pq, self.writer = schema, pq, None

    def write(self, table) -> None:
        if self.writer is None:
            self.writer = self.pq.ParquetWriter(self.tmp, self.schema)
        self.writer.write_table(table)

    def close(self, first: int, rows: int) -> dict:
        self.writer.close()
        self.writer = None
        os.replace(self.tmp, self.path)
        return {"file": self.name, "first": first, "rows": rows}

    def abandon(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)


@dataclasses.dataclass
class Features:
    """One layer's codes of a features folder, in image order."""
    layer: str
    codes: np.ndarray          # (N, D) float32
    paths: list[str]
    labels: np.ndarray         # (N,) int64, -1 where unknown
    manifest: dict

    @property
    def classes(self) -> list[str] | None:
        return self.manifest.get("classes")


def layer_names(folder: str) -> list[str]:
    return [entry["name"] for entry in open_manifest(folder)["layers"]]


def open_manifest(folder: str) -> dict:
    manifest = _read_manifest(folder)
    if manifest is None:
        raise ZfcaffeError(f"{folder}: no {MANIFEST}; expected a folder written by 'zfcaffe features'")
    return manifest


def read(folder: str, layer: str | None = None) -> Features:
    """The codes of one layer (default: the last one extracted)."""
    require("pyarrow", "reading features")
    import pyarrow.parquet as pq
    manifest = open_manifest(folder)
    entries = {e["name"]: e for e in manifest["layers"]}
    layer = layer or manifest["layers"][-1]["name"]
    if layer not in entries:
        raise ZfcaffeError(f"{folder}: no layer '{layer}' in these features; expected one of {', '.join(entries)}")
    rows = sum(s["rows"] for s in manifest["shards"])
    if rows == 0:
        raise ZfcaffeError(f"{folder}: no complete shard yet; run 'zfcaffe features' again to resume it")
    size = int(entries[layer]["size"])
    limit = int(os.environ.get("ZFCAFFE_MAX_FEATURE_BYTES", MAX_READ_BYTES))
    if rows * size * 4 > limit:
        raise ZfcaffeError(f"{folder}: layer '{layer}' holds {rows} x {size} codes ({rows * size * 4 / 1e9:.1f} GB), "
                           f"more than the {limit / 1e9:.1f} GB limit; extract it with --pool max or mean, or "
                           "raise ZFCAFFE_MAX_FEATURE_BYTES")
    codes = np.empty((rows, size), np.float32)
    paths: list[str] = []
    labels = np.empty(rows, np.int64)
    n = 0
    for s in manifest["shards"]:
        path = os.path.join(folder, s["file"])
        try:
            table = pq.read_table(path, columns=["path", "label", layer])
        except (OSError, ValueError) as e:
            raise ZfcaffeError(f"{path}: cannot read this shard: {e}") from None
        if table.num_rows != s["rows"]:
            raise ZfcaffeError(f"{path}: holds {table.num_rows} rows; the manifest says {s['rows']}")
        column = table.column(layer).combine_chunks()
        codes[n:n + s["rows"]] = column.flatten().to_numpy().reshape(s["rows"], size)
        paths += table.column("path").to_pylist()
        labels[n:n + s["rows"]] = table.column("label").fill_null(-1).to_numpy()
        n += s["rows"]
    return Features(layer, codes, paths, labels, manifest)
