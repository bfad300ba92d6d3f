"""ONNX files whose batch and image size are left open (`convert --dynamic`).

Many Caffe layers are emitted with constants that hold for one input size, and a
net with an InnerProduct accepts only one image size at all. So which axes are
free is not assumed but measured: the open-axis model runs in ONNX Runtime at
other sizes and must give what zfcaffe's own forward pass gives at those sizes.
"""
from __future__ import annotations

import numpy as np

from ..errors import ZfcaffeError
from .onnx_export import build_onnx

#: other sizes tried: batch + 1, and height/width grown by odd amounts (rounding)
PROBE_BATCH, PROBE_GROW = 1, (7, 13)


def _probe_shapes(shapes: dict[str, tuple], axes: tuple[str, ...], rois=frozenset()) -> dict[str, tuple]:
    """The probe's input shapes: the batch (and an ROI input's row count) one larger, the
    images grown by odd amounts; `rois`: the inputs that are ROIs (R x 5)."""
    out = {}
    for k, s in shapes.items():
        s = list(s)
        if "batch" in axes:
            s[0] += PROBE_BATCH
        if "spatial" in axes and len(s) == 4 and k not in rois:
            s[2] += PROBE_GROW[0]
            s[3] += PROBE_GROW[1]
        out[k] = tuple(s)
    return out


def roi_inputs(graph) -> set[str]:
    """The inputs an ROIPooling / PSROIPooling reads as its ROIs."""
    return {l.bottoms[1] for l in graph.layers if l.type in ("ROIPooling", "PSROIPooling")
            and len(l.bottoms) > 1 and l.bottoms[1] in graph.inputs}


def _probe_inputs(probe: dict[str, tuple], rng, rois=frozenset()) -> dict[str, np.ndarray]:
    """Random values for every input; the ROI inputs (`rois`) valid for the images: a batch
    index of an image, corners inside it, x1 <= x2 and y1 <= y2 (random ones name images
    that are not there and boxes of nothing, and compare nothing)."""
    images = [s for k, s in probe.items() if len(s) == 4 and k not in rois]
    n, h, w = (images[0][0], images[0][2], images[0][3]) if images else (1, 16, 16)
    feeds = {}
    for k, s in probe.items():
        if k in rois and len(s) >= 2 and s[0] and int(np.prod(s[1:])) == 5:
            r = s[0]
            x = np.sort(rng.uniform(0, w - 1, (r, 2)), axis=1)
            y = np.sort(rng.uniform(0, h - 1, (r, 2)), axis=1)
            boxes = np.stack([rng.integers(0, max(n, 1), r), x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1)
            feeds[k] = boxes.astype(np.float32).reshape(s)
        else:
            feeds[k] = rng.standard_normal(s).astype(np.float32)
    return feeds


def _data_dependent(graph) -> dict[str, set[int]]:
    """Key -> the axes whose size a forward pass decides from the data: a host layer's
    detections or proposals (its open_axes), and every axis of that size in what is
    computed from them (the ROIs' features, scores) -- as onnx_export leaves them open."""
    axes = {t: set(a) for l in graph.layers for t, a in zip(l.tops, getattr(l, "open_axes", ()))}
    sizes = {t: {graph.shapes[t][i] for i in a} for t, a in axes.items()}
    for layer in graph.layers:
        inherited = set().union(*(sizes.get(b, set()) for b in layer.bottoms))
        for t in layer.tops:
            if inherited and t not in axes:
                sizes[t] = inherited
                axes[t] = {i for i, d in enumerate(graph.shapes[t]) if d in inherited}
    return axes


def _agrees(net, axes: tuple[str, ...], all_blobs: bool) -> bool:
    """Whether the open-axis model gives zfcaffe's own results at the probe's sizes: the
    values of the net's outputs and of every host layer's inputs; a host layer's outputs,
    and what is computed from them, by shape on all but their data-decided axes (their
    row count follows the data: one ulp may change which boxes pass a threshold)."""
    from .session import Session
    g = net.graph
    original = dict(g.inputs)
    host_inputs = [b for l in g.layers if l.host for b in l.bottoms if b not in g.inputs]
    try:   # ONNX Runtime refusing the graph or the size means "not free"
        onnx_net = build_onnx(g, record=all_blobs, dynamic=axes,
                              outputs=list(dict.fromkeys(g.outputs() + host_inputs)))
        session = Session(onnx_net)
    except Exception:  # noqa: BLE001
        return False
    rois = roi_inputs(g)
    probe = _probe_shapes(original, axes, rois)
    try:
        try:
            net.reshape(**probe)
        except ZfcaffeError:
            return False                   # zfcaffe itself refuses that size (an InnerProduct, say)
        decided = _data_dependent(g)
        cut = {name for name, _ in onnx_net.cut}
        feeds = _probe_inputs(probe, np.random.default_rng(0), rois)
        net.forward(**feeds)
        got = session.run({k: v for k, v in feeds.items() if k in session.input_names})
        for key in dict.fromkeys(g.outputs() + host_inputs):
            if key not in got:
                if g.producer(key).name in cut:
                    continue                # a layer the file leaves out (a host layer's inputs are compared)
                return False
            value, ref = got[key], np.asarray(net.layer_outputs[key])
            if key in decided:
                if value.ndim != ref.ndim or any(a != b for i, (a, b) in enumerate(zip(value.shape, ref.shape))
                                                 if i not in decided[key]):
                    return False
                continue
            if value.shape != ref.shape or \
                    np.abs(value - ref).max(initial=0) > 1e-4 * max(np.abs(ref).max(initial=0), 1e-30):
                return False
        return True
    except Exception:  # noqa: BLE001
        return False
    finally:
        net.reshape(**original)


def free_axes(net, all_blobs: bool = False) -> tuple[str, ...]:
    """The axes ("batch", "spatial") that can be left open, as measured."""
    for axes in (("batch", "spatial"), ("batch",)):
        if _agrees(net, axes, all_blobs):
            return axes
    raise ZfcaffeError(f"{net.graph.path}: no axis of the input can be left open: the exported graph gives "
                       "other results at another batch size; export without --dynamic")


def write_dynamic_onnx(net, path: str, all_blobs: bool = False) -> tuple[str, ...]:
    """Write the net with every free axis symbolic; returns those axes."""
    from .onnx_file import write_onnx
    axes = free_axes(net, all_blobs)
    write_onnx(net.graph, path, all_blobs=all_blobs, dynamic=axes)
    return axes
