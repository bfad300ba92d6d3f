"""Whole datasets: feature codes (Parquet shards), t-SNE maps, linear probes, and the
exact top-k merge that lets any engine scan (zfcaffe.analyses.features, embedding,
probe; zfcaffe.recipes.datasets)."""
from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import pytest

from cli_here import cli_here as run_cli
from conftest import render_in_chromium
from shapes import CLASSES, make_shapes

pytest.importorskip("pyarrow")
pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("shapes")
    make_shapes(folder, per_class=30)
    return folder


@pytest.fixture(scope="module")
def feats(cifar, shapes, tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("feats") / "feats"
    r = run_cli("features", *cifar, "--images", shapes, "-o", out)
    assert "150 images x [conv1 (32), conv2 (32), conv3 (64), ip1 (64), ip2 (10)]" in r.stdout
    assert "classes from folders: " + ", ".join(sorted(CLASSES)) in r.stdout
    return out


def test_features_are_the_nets_codes_with_paths_and_labels(feats, cifar, shapes):
    import pyarrow.parquet as pq
    import zfcaffe
    from zfcaffe.analyses import features
    from zfcaffe.preprocess import for_net
    manifest = json.loads((feats / "_manifest.json").read_text())
    assert manifest["complete"] and manifest["images"] == 150 and manifest["pool"] == "max"
    table = pq.read_table(feats / manifest["shards"][0]["file"])
    assert table.column_names == ["index", "path", "label", "conv1", "conv2", "conv3", "ip1", "ip2"]
    import pandas
    frame = pandas.read_parquet(feats)                 # the folder reads as one table
    assert len(frame) == 150 and list(frame["index"]) == list(range(150))
    f = features.read(str(feats), "conv2")
    assert f.codes.shape == (150, 32) and sorted(set(f.labels)) == list(range(5))
    assert f.classes == sorted(CLASSES)
    # image 7's codes are the max over its rectified conv2 maps, as a forward pass gives them
    net = zfcaffe.Net(str(cifar[0]), str(cifar[1]))
    pre = for_net(net, str(cifar[3]))
    net.forward(data=pre(f.paths[7])[None])
    np.testing.assert_allclose(f.codes[7], net.blobs["conv2"].data[0].max(axis=(1, 2)), rtol=1e-5, atol=1e-5)
    assert pathlib.Path(f.paths[7]).parent.name == sorted(CLASSES)[f.labels[7]]


def test_probe_is_well_above_chance_at_every_layer_and_its_page_renders(feats, tmp_path):
    out = tmp_path / "probe"
    r = run_cli("probe", feats, "-o", out)
    rows = [line.split() for line in r.stdout.splitlines()[1:] if line.split()[0] in ("conv1", "conv2", "conv3",
                                                                                      "ip1", "ip2")]
    assert [row[0] for row in rows] == ["conv1", "conv2", "conv3", "ip1", "ip2"]
    accuracy = {row[0]: float(row[2]) for row in rows}
    assert all(row[5] == "0.200" for row in rows)                    # 5 balanced classes
    assert min(accuracy.values()) >= 0.45, accuracy                  # chance is 0.2
    assert (out / "probe.png").stat().st_size > 10_000
    assert (out / "probe.csv").read_text().splitlines()[0] == "layer,code size,accuracy,std,folds,chance"
    title, shot = render_in_chromium(out / "index.html", "probe.png", tmp_path, height=900)
    assert title.startswith("images 1/1"), title


def test_tsne_map_has_every_image_and_saves_its_coordinates(feats, tmp_path):
    out = tmp_path / "map.png"
    r = run_cli("tsne", feats, "--layer", "conv3", "-o", out)
    assert "t-SNE of conv3 (150 of 150 images" in r.stdout
    lines = (tmp_path / "map.csv").read_text().splitlines()
    assert lines[0] == "index,path,label,x,y" and len(lines) == 151
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run_cli("tsne", feats, "--max-points", "40", "-o", tmp_path / "small.png")
    assert len((tmp_path / "small.csv").read_text().splitlines()) == 41


def test_probe_takes_labels_from_a_list_file(feats, tmp_path):
    from zfcaffe.analyses import features
    f = features.read(str(feats))
    # label by colour of nothing: by position in the list, two classes
    listing = tmp_path / "labels.txt"
    listing.write_text("".join(f"{p} {i % 2}\n" for i, p in enumerate(f.paths)))
    r = run_cli("probe", feats, "--labels", listing, "--layers", "ip2", "-o", tmp_path / "p")
    assert "ip2" in r.stdout and " 0.500" in r.stdout     # chance of 2 balanced classes
    listing.write_text(f"{f.paths[0]} 1\n")
    r = run_cli("probe", feats, "--labels", listing, "-o", tmp_path / "p2", check=False)
    assert r.returncode == 2 and "no label for" in r.stderr and "image 1 of the features" in r.stderr


def test_features_resume_after_an_interruption_and_refuse_another_extraction(cifar, shapes, tmp_path):
    import zfcaffe
    from zfcaffe.analyses import features
    from zfcaffe.analyses.common import folder_classes, list_images
    from zfcaffe.errors import ZfcaffeError
    from zfcaffe.preprocess import for_net
    from zfcaffe.scan import Engine
    net = zfcaffe.Net(str(cifar[0]), str(cifar[1]))
    pre = for_net(net, str(cifar[3]))
    entries, classes = folder_classes(str(shapes), list_images(str(shapes)))

    class Interrupted(Engine):
        def map(self, job, paths, first=0):
            for n, item in enumerate(super().map(job, paths, first)):
                if n == 5:
                    raise KeyboardInterrupt
                yield item

    args = (net, entries, None, pre, ["conv3", "ip1"], ["conv3", "ip1"])
    whole = tmp_path / "whole"
    features.extract(*args[:2], str(whole), *args[3:], batch=8, shard_rows=16, show_progress=False)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        features.extract(*args[:2], str(part), *args[3:], batch=8, shard_rows=16, engine=Interrupted(),
                         show_progress=False)
    m = json.loads((part / "_manifest.json").read_text())
    assert len(m["shards"]) == 2 and not m["complete"]              # 5 batches of 8: two whole shards of 16
    assert sorted(p.name for p in part.iterdir()) == ["_manifest.json", "part-00000.parquet", "part-00001.parquet"]
    features.extract(*args[:2], str(part), *args[3:], batch=8, shard_rows=16, show_progress=False)
    for layer in ("conv3", "ip1"):
        a, b = features.read(str(whole), layer), features.read(str(part), layer)
        assert np.array_equal(a.codes, b.codes) and a.paths == b.paths
    with pytest.raises(ZfcaffeError, match="holds features of another extraction"):
        features.extract(net, entries, str(part), pre, ["conv1"], ["conv1"], batch=8, show_progress=False)


def test_reading_checks_the_size_before_allocating(feats, monkeypatch):
    from zfcaffe.analyses import features
    from zfcaffe.errors import ZfcaffeError
    monkeypatch.setenv("ZFCAFFE_MAX_FEATURE_BYTES", "1000")
    with pytest.raises(ZfcaffeError, match="more than the 0.0 GB limit; extract it with --pool"):
        features.read(str(feats), "conv3")
    r = run_cli("tsne", feats, "--layer", "nope", "-o", "x.png", check=False)
    assert r.returncode == 2 and "no layer 'nope' in these features; expected one of conv1, conv2" in r.stderr


def test_a_missing_extra_is_named(monkeypatch):
    from zfcaffe.errors import ZfcaffeError
    from zfcaffe.extras import require
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ZfcaffeError, match=r"zfcaffe features needs pyarrow: pip install 'zfcaffe\[analysis\]'"):
        require("pyarrow", "zfcaffe features")
    monkeypatch.setitem(sys.modules, "ray", None)
    from zfcaffe.scan import Engine, Job
    with pytest.raises(ZfcaffeError, match=r"--engine ray needs Ray: pip install 'zfcaffe\[scale\]'"):
        list(Engine("ray").map(Job.__new__(Job), ["a.png"]))


def test_top_k_merge_gives_the_same_result_in_any_order():
    from zfcaffe.analyses.top9 import TopK
    rng = np.random.default_rng(0)
    acts = rng.integers(0, 4, (40, 6, 3, 3)).astype(np.float32)      # many exact ties across images
    parts = [TopK.of_batch(acts[s:s + 8], s, 9) for s in range(0, 40, 8)]
    in_order = TopK.empty(6, 9)
    for p in parts:
        in_order = in_order.merge(p)
    shuffled = TopK.empty(6, 9)
    for i in rng.permutation(len(parts)):
        shuffled = shuffled.merge(parts[i])
    for f in ("values", "image", "y", "x"):
        assert np.array_equal(getattr(in_order, f), getattr(shuffled, f))
    # against a direct computation: each image's first maximum, best first, ties to the lower image
    flat = acts.reshape(40, 6, 9)
    for c in range(6):
        best = flat[:, c].max(axis=1)
        order = sorted(range(40), key=lambda i: (-best[i], i))[:9]
        assert list(in_order.image[c]) == order
        assert list(in_order.y[c] * 3 + in_order.x[c]) == [int(flat[i, c].argmax()) for i in order]
