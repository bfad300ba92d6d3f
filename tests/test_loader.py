"""Reading every legacy artifact, and the one-line errors for bad input."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import zfcaffe
from zfcaffe.graph import load_graph
from zfcaffe.io.mean import read_mean
from zfcaffe.io.prototxt import parse_net_text
from zfcaffe.io.solver import read_solver
from zfcaffe.io.weights import read_weights, write_caffemodel

# Prototxts no Caffe zfcaffe knows can build, and why (the fork nets of ../shared/models all load now).
UNBUILDABLE: dict[str, tuple[str, str]] = {}
# train/test nets whose data shape only the database knows
DB_SHAPES = {"mnist": (4, 1, 28, 28), "cifar": (4, 3, 32, 32), "pair_data": (4, 2, 28, 28)}


def all_net_files(shared):
    return sorted(p for p in (shared / "models").rglob("*.prototxt") if "solver" not in p.name)


def test_every_shared_prototxt_parses_or_fails_clearly(shared):
    built = 0
    for path in all_net_files(shared):
        rel = str(path.relative_to(shared / "models"))
        parse_net_text(str(path))  # the text itself always parses
        if rel in UNBUILDABLE:
            layer, why = UNBUILDABLE[rel]
            with pytest.raises(zfcaffe.UnsupportedLayerError) as e:
                load_graph(str(path))
            msg = str(e.value)
            assert f"layer '{layer}'" in msg and why in msg and f"stop_before='{layer}'" in msg
            assert f"{path}:" in msg and "\n" not in msg
            # ... and the net loads up to the layer before it
            g = load_graph(str(path), stop_before=layer, input_shapes=None)
            assert g.layers
            continue
        try:
            g = load_graph(str(path))
        except zfcaffe.ZfcaffeError as e:
            assert "input_shapes=" in str(e), rel
            top = str(e).split("input '")[1].split("'")[0]
            g = load_graph(str(path), input_shapes={top: DB_SHAPES.get(top, (1, 3, 256, 256))})
        assert g.layers
        built += 1
    assert built >= 25


def test_every_shared_solver_parses(shared):
    solvers = sorted((shared / "models").rglob("*solver*.prototxt"))
    assert len(solvers) >= 10
    for path in solvers:
        s = read_solver(str(path))
        assert s.net_path or len(s.param.net_param.layers) or len(s.param.train_net_param.layer), path


def test_forks_nets_bvlc_cannot_build_load(shared):
    """ZF Faster R-CNN: ROIPooling (caffe-fast-rcnn) and the Python proposal layer (built in)."""
    d = shared / "models/zf_faster_rcnn"
    g = load_graph(str(d / "fast_rcnn_test.prototxt"))
    assert [l.type for l in g.layers if l.name == "roi_pool_conv5"] == ["ROIPooling"]
    g = load_graph(str(d / "faster_rcnn_end2end_test.prototxt"))
    assert any("rpn.proposal_layer.ProposalLayer" in n and "built-in" in n for n in g.notes)


def test_train_val_selects_test_phase(shared):
    g = load_graph(str(shared / "models/bvlc_reference_caffenet/train_val.prototxt"))
    assert g.inputs == {"data": (50, 3, 227, 227)}  # crop_size 227, TEST batch 50
    assert "loss" not in [l.name for l in g.layers] and any("dropped" in n for n in g.notes)
    g = load_graph(str(shared / "models/bvlc_reference_caffenet/train_val.prototxt"), phase="TRAIN")
    assert g.inputs["data"] == (256, 3, 227, 227)


def test_phase_stage_and_level_rules(tmp_path):
    text = '''
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }
layer { name: "a" type: "ReLU" bottom: "data" top: "a" include { phase: TEST stage: "deploy" } }
layer { name: "b" type: "ReLU" bottom: "data" top: "b" exclude { min_level: 2 } }
layer { name: "c" type: "ReLU" bottom: "data" top: "c" include { not_stage: "deploy" } }
'''
    p = tmp_path / "n.prototxt"
    p.write_text(text)
    names = lambda **kw: [l.name for l in load_graph(str(p), **kw).compute_layers]  # noqa: E731
    assert names() == ["b", "c"]
    assert names(stages=["deploy"]) == ["a", "b"]
    assert names(level=3) == ["c"]


def test_solver_and_snapshots(shared, tmp_path):
    s = read_solver(str(shared / "models/cifar10_quick/cifar10_quick_solver.prototxt"))
    assert s.net_path.endswith("cifar10_quick_train_test.prototxt") and os.path.exists(s.net_path)
    src = shared / "models/cifar10_quick/cifar10_quick_iter_4000.caffemodel"
    for it in (500, 4000):
        (tmp_path / f"snap_iter_{it}.caffemodel").write_bytes(src.read_bytes())
    (tmp_path / "solver.prototxt").write_text(f'net: "x.prototxt"\nsnapshot_prefix: "{tmp_path}/snap"\n')
    snaps = read_solver(str(tmp_path / "solver.prototxt")).snapshots()
    assert [i for i, _ in snaps] == [500, 4000]


def test_real_weight_files_load(shared, nsfw):
    cases = [
        ("bvlc_legacy_formats/v1/lenet.prototxt", "bvlc_legacy_formats/v1/lenet_iter_10000_v1.caffemodel"),
        ("bvlc_legacy_formats/v1/cifar10_quick.prototxt", "bvlc_legacy_formats/v1/cifar10_quick_iter_5000_v1.caffemodel"),
        ("lenet_mnist/lenet.prototxt", "lenet_mnist/lenet_iter_10000.caffemodel"),
        ("cifar10_quick/cifar10_quick.prototxt", "cifar10_quick/cifar10_quick_iter_5000.caffemodel.h5"),
        ("cifar10_full/cifar10_full.prototxt", "cifar10_full/cifar10_full_iter_60000.caffemodel.h5"),
    ]
    m = shared / "models"
    for proto, weights in cases:
        net = zfcaffe.Net(str(m / proto), str(m / weights))
        for layer in net.layers:
            expected = layer.param_shapes(layer.in_shapes)
            assert [b.shape for b in layer.blobs] == [tuple(s) for s in expected]
    net = zfcaffe.Net(str(nsfw / "deploy.prototxt"), str(nsfw / "resnet_50_1by2_nsfw.caffemodel"))
    assert len(net.params) > 100
    assert net.params["conv_1"][0].data.shape == (64, 3, 7, 7)
    assert net.params["bn_1"][2].data.size == 1


def test_v1_binary_keeps_legacy_shapes(shared):
    layers = read_weights(str(shared / "models/bvlc_legacy_formats/v1/lenet_iter_10000_v1.caffemodel"))
    ip1 = next(l for l in layers if l.name == "ip1")
    assert ip1.type == "INNER_PRODUCT" and ip1.blobs[0].data.shape == (1, 1, 500, 800) and ip1.blobs[0].legacy


def test_mean_files(shared):
    m = read_mean(str(shared / "models/bvlc_reference_caffenet/imagenet_mean.binaryproto"))
    n = read_mean(str(shared / "models/bvlc_reference_caffenet/ilsvrc_2012_mean.npy"))
    assert m.shape == (3, 256, 256) and n.shape == (3, 256, 256)
    assert abs(m.mean() - n.mean()) < 1.0
    assert read_mean(str(shared / "models/cifar10_quick/mean.binaryproto")).shape == (3, 32, 32)


def test_double_data_and_legacy_shapes(tmp_path):
    """double_data loads as float32; legacy num/channels/height/width shapes are kept."""
    from zfcaffe import caffe_pb2
    net = caffe_pb2.NetParameter()
    layer = net.layer.add(name="conv1", type="Convolution")
    w = layer.blobs.add()
    w.shape.dim.extend([2, 1, 3, 3])
    w.double_data.extend(np.arange(18, dtype=np.float64) / 7)
    b = layer.blobs.add()
    b.num, b.channels, b.height, b.width = 1, 1, 1, 2
    b.data.extend([0.5, -1.5])
    path = tmp_path / "old.caffemodel"
    path.write_bytes(net.SerializeToString())
    layers = read_weights(str(path))
    np.testing.assert_allclose(layers[0].blobs[0].data.ravel(), np.arange(18) / 7, rtol=1e-7)
    assert layers[0].blobs[0].data.dtype == np.float32
    assert layers[0].blobs[1].legacy and layers[0].blobs[1].data.shape == (1, 1, 1, 2)


def test_snapshot_without_extension_is_sniffed(shared, tmp_path):
    for src in ("cifar10_quick_iter_4000.caffemodel", "cifar10_quick_iter_5000.caffemodel.h5"):
        dst = tmp_path / "snapshot"
        dst.write_bytes((shared / "models/cifar10_quick" / src).read_bytes())
        net = zfcaffe.Net(str(shared / "models/cifar10_quick/cifar10_quick.prototxt"), str(dst))
        assert net.params["conv1"][0].data.shape == (32, 3, 5, 5)


# -- errors: one line, naming the file and what was expected -------------------------------------
LENET_LIKE = '''name: "t"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 2 kernel_size: 3 } }
layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip" inner_product_param { num_output: 3 } }
'''


def error_of(fn, *args, **kw) -> str:
    with pytest.raises(zfcaffe.ZfcaffeError) as e:
        fn(*args, **kw)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


@pytest.fixture
def small(tmp_path):
    proto = tmp_path / "t.prototxt"
    proto.write_text(LENET_LIKE)
    weights = tmp_path / "t.caffemodel"
    write_caffemodel(str(weights), [("conv1", "Convolution", [np.ones((2, 1, 3, 3)), np.zeros(2)]),
                                    ("ip", "InnerProduct", [np.ones((3, 72)), np.zeros(3)])])
    return proto, weights


def test_truncated_caffemodel(small, tmp_path):
    proto, weights = small
    cut = tmp_path / "cut.caffemodel"
    cut.write_bytes(weights.read_bytes()[:-100])
    msg = error_of(zfcaffe.Net, str(proto), str(cut))
    assert str(cut) in msg and "truncated" in msg


def test_syntax_error_has_file_line_col(tmp_path):
    p = tmp_path / "bad.prototxt"
    p.write_text(LENET_LIKE.replace("num_output: 3", "num_output: three"))
    msg = error_of(zfcaffe.Net, str(p))
    assert f"{p}:5:" in msg


def test_unbalanced_braces(tmp_path):
    p = tmp_path / "bad.prototxt"
    p.write_text(LENET_LIKE + 'layer { name: "x" type: "ReLU" bottom: "ip" top: "ip"\n')
    assert f"{p}:6:1" in error_of(zfcaffe.Net, str(p))


def test_weights_that_do_not_fit(small, tmp_path):
    proto, _ = small
    w = tmp_path / "other.caffemodel"
    write_caffemodel(str(w), [("conv1", "Convolution", [np.ones((2, 1, 5, 5)), np.zeros(2)]),
                              ("ip", "InnerProduct", [np.ones((3, 72)), np.zeros(3)])])
    msg = error_of(zfcaffe.Net, str(proto), str(w))
    assert "conv1" in msg and "blob 0" in msg and "[2, 1, 5, 5]" in msg and "[2, 1, 3, 3]" in msg


def test_missing_layer_weights_error_unless_allowed(small, tmp_path):
    proto, _ = small
    w = tmp_path / "partial.caffemodel"
    write_caffemodel(str(w), [("conv1", "Convolution", [np.ones((2, 1, 3, 3)), np.zeros(2)]),
                              ("extra", "ReLU", [np.ones(1)])])
    assert "'ip'" in error_of(zfcaffe.Net, str(proto), str(w)) or "ip" in error_of(zfcaffe.Net, str(proto), str(w))
    net = zfcaffe.Net(str(proto), str(w), allow_missing_weights=True)
    assert any("extra" in n for n in net.notes)
    assert net.params["ip"][0].data.shape == (3, 72)


def test_unknown_layer_type(tmp_path):
    p = tmp_path / "u.prototxt"
    p.write_text(LENET_LIKE + 'layer { name: "pb" type: "PriorBox" bottom: "conv1" top: "pb" }\n')
    msg = error_of(zfcaffe.Net, str(p))
    assert f"{p}:6:" in msg and "'pb'" in msg and "PriorBox" in msg
    assert "ip" in zfcaffe.Net(str(p), stop_before="pb").layer_shapes


def test_huge_input_refused_before_allocation(small):
    proto, weights = small
    msg = error_of(zfcaffe.Net, str(proto), str(weights), input_shapes={"data": (10000, 100, 1000, 1000)})
    assert "2^31-1" in msg and "data" in msg


def test_empty_and_binary_files(small, tmp_path):
    proto, weights = small
    empty = tmp_path / "empty.prototxt"
    empty.write_text("")
    assert "empty" in error_of(zfcaffe.Net, str(empty))
    assert "binary" in error_of(zfcaffe.Net, str(weights))          # caffemodel given as prototxt
    assert "text prototxt" in error_of(zfcaffe.Net, str(proto), str(proto))  # prototxt given as weights
    ew = tmp_path / "empty.caffemodel"
    ew.write_bytes(b"")
    assert "empty" in error_of(zfcaffe.Net, str(proto), str(ew))


def test_cli_error_is_one_line(small, tmp_path):
    proto, weights = small
    r = subprocess.run([sys.executable, "-m", "zfcaffe", "inspect", str(proto), str(tmp_path / "nope.caffemodel")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "nope.caffemodel" in r.stderr


def test_twenty_thousand_layers_parse(tmp_path):
    """The parser is linear in the file (each entry was once re-parsed behind a padding
    of all the lines before it: 20,000 layers never finished); benchmarks/parse.py
    prints the scaling."""
    path = tmp_path / "big.prototxt"
    path.write_text('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 8 } } }\n'
                    + "".join(f'layer {{ name: "r{i}" type: "ReLU" bottom: "data" top: "data" }}\n'
                              for i in range(20000))
                    + 'layer { name: "bad" type: "ReLU" bottom: "data" top: "data" relu_param { nope: 1 } }\n')
    with pytest.raises(zfcaffe.ZfcaffeError, match=r"big.prototxt:20002:"):   # lines still the file's own
        load_graph(str(path))
