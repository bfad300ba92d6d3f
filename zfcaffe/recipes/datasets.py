"""Recipes for whole datasets: feature codes (Parquet shards), their t-SNE map, and
linear probes of every layer, with their verbs.

Declaring the verbs imports nothing heavy: each recipe imports the analyses, NumPy and
the figures when it runs, so the command line starts at once."""
from __future__ import annotations

import csv
import io
import os
from typing import TYPE_CHECKING

from ..errors import ZfcaffeError
from ..verbs import int_between, layer_list, positive_int, verb

if TYPE_CHECKING:
    import numpy as np

    from ..analyses import features

#: zfcaffe.analyses.features.POOLS, named here so that building the command line does not
#: import the analysis (tests/test_cli.py checks that the two agree)
POOLS = ("max", "mean", "none")


def write_csv(path: str, header: list[str], rows: list[list]) -> None:
    from ..atomic import atomic_file
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    with atomic_file(path, "w") as f:
        f.write(text.getvalue())


def feature_layers(net) -> list[str]:
    """Default layers: convolutions across the depth, then every InnerProduct."""
    from ..analyses.common import default_layers
    return default_layers(net) + [l.name for l in net.layers if l.type == "InnerProduct"]


def run_features(net, images: str, out: str, pre, layers: list[str] | None = None, pool: str = "max",
                 batch: int = 16, engine=None, show_progress: bool = True) -> dict:
    from ..analyses import features
    from ..analyses.common import folder_classes, list_images, shown_key
    entries = list_images(images)
    entries, classes = folder_classes(images, entries)
    layers = layers or feature_layers(net)
    keys = [shown_key(net, name) for name in layers]
    return features.extract(net, entries, out, pre, layers, keys, pool=pool, batch=min(batch, len(entries)),
                            engine=engine, classes=classes, source=os.path.abspath(images),
                            show_progress=show_progress)


def labels_for(feats: "features.Features", labels: str | None) -> np.ndarray:
    """Each image's label: from a list file ('path label' lines; matched by path, else
    by file name), else those stored with the features (-1: none)."""
    import numpy as np

    from ..analyses.common import list_images
    if not labels:
        return feats.labels
    by_path, by_name = {}, {}
    for path, label in list_images(labels):
        if label is None:
            raise ZfcaffeError(f"{labels}: line for {path} has no label; expected 'path label' lines")
        by_path[os.path.abspath(path)] = label
        by_name.setdefault(os.path.basename(path), []).append(label)
    out = np.empty(len(feats.paths), np.int64)
    for i, path in enumerate(feats.paths):
        named = by_name.get(os.path.basename(path), [])
        label = by_path.get(path, named[0] if len(named) == 1 else None)
        if label is None:
            raise ZfcaffeError(f"{labels}: no label for {path} (image {i} of the features); expected a "
                               "'path label' line for every image")
        out[i] = label
    return out


def run_tsne(folder: str, out: str, layer: str | None = None, labels: str | None = None,
             perplexity: float = 30.0, max_points: int = 20000, seed: int = 0) -> str:
    from ..analyses import embedding, features
    from ..atomic import atomic_file
    from ..viz.dataset_figures import tsne_figure
    feats = features.read(folder, layer)
    classes = None if labels else feats.classes
    lab = labels_for(feats, labels)
    emb = embedding.tsne(feats.codes, perplexity, max_points, seed)
    paths = [feats.paths[i] for i in emb.rows]
    fig = tsne_figure(feats.layer, emb.coords, paths, lab[emb.rows], classes, emb.method)
    stem = os.path.splitext(out)[0]
    write_csv(stem + ".csv", ["index", "path", "label", "x", "y"],
              [[int(row), path, int(lab[row]), f"{x:.6g}", f"{y:.6g}"]
               for row, path, (x, y) in zip(emb.rows, paths, emb.coords)])
    with atomic_file(out) as f:
        f.write(fig.png)
    print(f"t-SNE of {feats.layer} ({len(emb.rows)} of {len(feats.paths)} images, {emb.method}); "
          f"coordinates in {stem}.csv")
    return out


def run_probe(folder: str, out: str, labels: str | None = None, layers: list[str] | None = None,
              folds: int = 5, seed: int = 0) -> str:
    import numpy as np

    from ..analyses import features
    from ..analyses.probe import probe
    from ..viz.dataset_figures import probe_figure
    from .output import write_output
    names = layers or features.layer_names(folder)
    results, lab = [], None
    for name in names:
        feats = features.read(folder, name)
        lab = labels_for(feats, labels) if lab is None else lab
        known = lab >= 0
        if not known.any():
            raise ZfcaffeError(f"{folder}: the images have no labels; give --labels LIST ('path label' lines) "
                               "or extract features from class folders (DIR/CLASS/image)")
        results.append(probe(name, feats.codes[known], lab[known], folds, seed))
    chance = results[0].chance
    header = ["layer", "code size", "accuracy", "std", "folds", "chance"]
    rows = [[r.layer, r.size, f"{r.accuracy:.3f}", f"{r.std:.3f}", len(r.folds), f"{r.chance:.3f}"] for r in results]
    print("  ".join(f"{h:>10}" for h in header))
    for row in rows:
        print("  ".join(f"{str(v):>10}" for v in row))
    m = features.open_manifest(folder)
    text = [f"features {os.path.abspath(folder)}: net {m['net']}; weights {m['weights']}; pooling {m['pool']}",
            f"{int(known.sum())} labelled images, {len(np.unique(lab[known]))} classes; logistic regression on "
            f"standardised codes, {len(results[0].folds)}-fold stratified cross-validation (seed {seed})",
            (header, rows)]
    arrays = {f"{r.layer}/folds": r.folds for r in results}
    arrays["accuracy"] = np.array([r.accuracy for r in results])
    path = write_output(out, "zfcaffe probe: how generic is each layer?",
                        [("Linear probes", [probe_figure(results, chance)], text)], arrays)
    write_csv(os.path.join(out, "probe.csv"), header, rows)
    return path


# -- the verbs ------------------------------------------------------------------------------------------------
def _features_arguments(p) -> None:
    p.add_argument("--images", required=True, help="image folder (class folders give labels), or a list file "
                                                   "('path [label]' per line)")
    p.add_argument("--layers", help="comma-separated layers (default: four convolutions across the depth and "
                                    "every InnerProduct)")
    p.add_argument("--pool", choices=POOLS, default="max",
                   help="spatial maps to one value per channel: max (default) or mean; none keeps them whole")
    p.add_argument("--batch", type=positive_int, default=16, help="images per forward pass (default 16)")


@verb("features", "feature codes of chosen layers for every image, as Parquet shards (resumable)",
      ("net", "preprocess", "engine", "output:features"), _features_arguments)
def features_verb(ctx, args) -> str:
    from ..analyses import features
    m = run_features(ctx.net, args.images, args.output, ctx.pre, layer_list(args), args.pool, args.batch, ctx.engine,
                     show_progress=ctx.progress)
    shown = ", ".join(f"{e['name']} ({e['size']})" for e in m["layers"])
    print(f"{m['images']} images x [{shown}] in {len(m['shards'])} shard(s)"
          f"{'; classes from folders: ' + ', '.join(m['classes']) if m['classes'] else ''}")
    return os.path.join(args.output, features.MANIFEST)


def _tsne_arguments(p) -> None:
    p.add_argument("features", help="a folder written by 'zfcaffe features'")
    p.add_argument("--layer", help="the layer to map (default: the last one extracted)")
    p.add_argument("--labels", help="list file of 'path label' lines (default: the labels stored with the features)")
    p.add_argument("--perplexity", type=float, default=30.0, help="t-SNE perplexity (default 30)")
    p.add_argument("--max-points", type=int_between(4, 1_000_000), default=20000,
                   help="images mapped; a seeded sample where there are more (default 20000)")
    p.add_argument("--seed", type=int, default=0)


@verb("tsne", "2-D t-SNE map of a layer's codes, with thumbnails and class colours",
      ("output:tsne.png",), _tsne_arguments)
def tsne_verb(ctx, args) -> str:
    return run_tsne(args.features, args.output, args.layer, args.labels, args.perplexity, args.max_points, args.seed)


def _probe_arguments(p) -> None:
    p.add_argument("features", help="a folder written by 'zfcaffe features'")
    p.add_argument("--labels", help="list file of 'path label' lines (default: the labels stored with the features)")
    p.add_argument("--layers", help="comma-separated layers (default: every layer extracted)")
    p.add_argument("--folds", type=int_between(2, 100), default=5, help="cross-validation folds (default 5)")
    p.add_argument("--seed", type=int, default=0)


@verb("probe", "linear-probe accuracy of each layer's codes (how generic are the features?)",
      ("output:probe",), _probe_arguments)
def probe_verb(ctx, args) -> str:
    return run_probe(args.features, args.output, args.labels, layer_list(args), args.folds, args.seed)
