"""Write a graph as a self-contained .onnx file, atomically."""
from __future__ import annotations

import os
import tempfile

from ..graph import Graph
from .onnx_export import build_onnx


def write_onnx(graph: Graph, path: str, all_blobs: bool = False) -> None:
    onnx_net = build_onnx(graph, record=all_blobs, embed_weights=True)
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".zfcaffe-", suffix=".onnx.tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(onnx_net.model.SerializeToString())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
