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


def _probe_shapes(shapes: dict[str, tuple], axes: tuple[str, ...]) -> dict[str, tuple]:
    out = {}
    for k, s in shapes.items():
        s = list(s)
        if "batch" in axes:
            s[0] += PROBE_BATCH
        if "spatial" in axes and len(s) == 4:
            s[2] += PROBE_GROW[0]
            s[3] += PROBE_GROW[1]
        out[k] = tuple(s)
    return out


def _agrees(net, axes: tuple[str, ...], all_blobs: bool) -> bool:
    from .session import Session
    original = dict(net.graph.inputs)
    try:   # ONNX Runtime refusing the graph or the size means "not free"
        session = Session(build_onnx(net.graph, record=all_blobs, dynamic=axes))
    except Exception:  # noqa: BLE001
        return False
    probe = _probe_shapes(original, axes)
    try:
        try:
            net.reshape(**probe)
        except ZfcaffeError:
            return False                   # zfcaffe itself refuses that size (an InnerProduct, say)
        rng = np.random.default_rng(0)
        feeds = {k: rng.standard_normal(s).astype(np.float32) for k, s in probe.items()}
        want = net.forward(**feeds)
        got = session.run({k: v for k, v in feeds.items() if k in session.input_names})
        for key in net.graph.outputs():
            ref = want[net.graph.name_of(key)]
            if got[key].shape != ref.shape or \
                    np.abs(got[key] - ref).max() > 1e-4 * max(np.abs(ref).max(), 1e-30):
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
