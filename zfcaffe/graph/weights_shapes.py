"""Input shapes of a train/test net whose data layer reads a database (LMDB, LevelDB,
HDF5): Caffe takes the image size from the data; without the data, the weights pin it.
Shared by zfcaffe.Net (so every verb and the Python API get it) and zfcaffe.caffe."""
from __future__ import annotations

import numpy as np

from ..errors import ZfcaffeError

#: image sides tried first (the common ones), then every side up to 512
_SIDES = (32, 28, 227, 224, 256, 299, 64, 96, 112, 48, 24, 12, *range(1, 513))


def shapes_from_weights(prototxt: str, weights: str, phase: str = "TEST", level: int = 0, stages=(),
                        given: dict | None = None, python_path=None) -> dict | None:
    """{top: (batch, channels, side, side)} for each input whose shape the file leaves
    to the data (and `given` does not set): the batch from the data layer, the channels
    and a square image size from the weights (the first size at which every stored
    blob has the size the net needs), with the `given` shapes included. None when no
    input's shape is missing. Raises ZfcaffeError when no size fits the weights."""
    from ..io.weights import read_weights
    from .graph import load_graph
    given = dict(given or {})
    text = open(prototxt, encoding="utf-8", errors="replace").read()
    probe = load_graph(prototxt, phase=phase, level=level, stages=tuple(stages or ()), text=text, infer=False,
                       python_path=python_path)
    missing = []
    for layer in probe.layers:
        if not layer.is_input:
            continue
        declared = layer.declared_shapes()
        declared = [declared[i] for i in layer.top_index] if declared else [None] * len(layer.tops)
        for i, (top, shape) in enumerate(zip(layer.tops, declared)):
            if shape is None and top not in given and not (i == 0 and layer.name in given):
                missing.append((layer, top))
    if not missing:
        return None
    stored = {lw.name: [b.data.size for b in lw.blobs] for lw in read_weights(weights) if lw.blobs}
    for side in _SIDES:
        for channels in (3, 1):
            shapes = {**given, **{top: _image_or_label(layer, top, channels, side) for layer, top in missing}}
            try:
                g = load_graph(prototxt, phase=phase, level=level, stages=tuple(stages or ()), text=text,
                               input_shapes=shapes, python_path=python_path)
            except ZfcaffeError:
                continue
            if all([int(np.prod(s)) for s in l.param_shapes(l.in_shapes)] == stored.get(l.name, [])
                   for l in g.layers if l.param_shapes(l.in_shapes)):
                return shapes
    tops = ", ".join(top for _, top in missing)
    raise ZfcaffeError(f"{prototxt}: the shape of input {tops} is not in the file (Caffe reads it from the "
                       f"data), and no image size up to 512x512 fits the blobs of {weights}; pass "
                       f"input_shapes={{'{missing[0][1]}': (N, C, H, W)}} (CLI: --input-shape "
                       f"{missing[0][1]}=N,C,H,W)")


def _image_or_label(layer, top: str, channels: int, side: int) -> tuple:
    """The data top as an image batch; a data layer's later tops (labels) as (batch,)."""
    batch = batch_of(layer)
    return (batch, channels, side, side) if top == layer.tops[0] else (batch,)


def batch_of(layer) -> int:
    """A data layer's batch_size (1 when it names none)."""
    for field in ("data_param", "image_data_param", "hdf5_data_param", "memory_data_param", "window_data_param"):
        if layer.lp.HasField(field) and getattr(layer.lp, field).batch_size:
            return int(getattr(layer.lp, field).batch_size)
    return 1
