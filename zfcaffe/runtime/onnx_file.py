"""Write a graph as one self-contained .onnx file, streaming the weights.

The ModelProto is written field by field: everything but the weights is serialised
by onnx, and each weight goes out as a TensorProto whose raw_data is written
straight from the array (a view of the memory-mapped caffemodel), so converting a
233 MB model needs about its own size in memory, not three copies of it.
"""
from __future__ import annotations

import numpy as np
import onnx

from ..atomic import atomic_file
from ..graph import Graph
from ..io.wire import len_field
from .onnx_export import build_onnx

_GRAPH_FIELD, _INITIALIZER_FIELD, _RAW_DATA_FIELD = 7, 5, 9


def _tensor_header(name: str, arr: np.ndarray) -> bytes:
    t = onnx.TensorProto(name=name, data_type=onnx.TensorProto.FLOAT, dims=list(arr.shape))
    return t.SerializeToString() + len_field(_RAW_DATA_FIELD, arr.nbytes)


def write_onnx(graph: Graph, path: str, all_blobs: bool = False, dynamic: tuple[str, ...] = ()) -> list:
    """Returns the layers the file leaves out, with why (see OnnxNet.cut)."""
    onnx_net = build_onnx(graph, record=all_blobs, embed_weights=False, dynamic=dynamic)
    model = onnx_net.model
    graph_bytes = model.graph.SerializeToString()
    model.ClearField("graph")
    head = model.SerializeToString()

    weights = [(n, np.ascontiguousarray(a, dtype="<f4")) for n, a in onnx_net.weights.items()]
    records = []
    for name, arr in weights:
        tensor_head = _tensor_header(name, arr)
        records.append((len_field(_INITIALIZER_FIELD, len(tensor_head) + arr.nbytes) + tensor_head, arr))
    graph_len = len(graph_bytes) + sum(len(h) + a.nbytes for h, a in records)

    with atomic_file(path) as f:
        f.write(head)
        f.write(len_field(_GRAPH_FIELD, graph_len))
        f.write(graph_bytes)
        for h, arr in records:
            f.write(h)
            f.write(memoryview(arr).cast("B"))
    return onnx_net.cut
