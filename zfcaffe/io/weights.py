"""Weights: binary caffemodel (V0/V1/V2), HDF5 .caffemodel.h5, sniffed snapshots.

The binary reader walks the protobuf wire format itself instead of parsing the
whole NetParameter: blob data are packed float runs, so each becomes a NumPy
view of the file's bytes with no copy and no per-float Python work. A 233 MB
AlexNet loads in a fraction of a second and at about its own size in memory.
"""
from __future__ import annotations

import dataclasses
import mmap
import os

import numpy as np

from ..atomic import atomic_file
from ..errors import ZfcaffeError
from .upgrade import V1_TYPE_NAMES
from .wire import enc_varint, field_key, len_field

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


@dataclasses.dataclass
class WeightBlob:
    data: np.ndarray                  # float32, shaped as stored
    legacy: bool                      # shape came from num/channels/height/width


@dataclasses.dataclass
class LayerWeights:
    name: str
    type: str                         # as stored: V2 string, V1 enum name, V0 string
    blobs: list[WeightBlob]


class _Truncated(Exception):
    pass


def _varint(buf, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _Truncated
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 70:
            raise ValueError("varint too long")


def _fields(buf, pos: int, end: int):
    """Yield (field number, wire type, value or (start, end) span)."""
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield field, wire, value
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise _Truncated
            yield field, wire, (pos, pos + length)
            pos += length
        elif wire == 5:
            if pos + 4 > end:
                raise _Truncated
            yield field, wire, (pos, pos + 4)
            pos += 4
        elif wire == 1:
            if pos + 8 > end:
                raise _Truncated
            yield field, wire, (pos, pos + 8)
            pos += 8
        else:
            raise ValueError(f"wire type {wire} of field {field} at byte {pos}")


def _packed_varints(buf, start: int, end: int) -> list[int]:
    out, pos = [], start
    while pos < end:
        v, pos = _varint(buf, pos, end)
        out.append(v)
    return out


def _blob(buf, start: int, end: int) -> WeightBlob:
    legacy = [0, 0, 0, 0]
    shape = None
    chunks32, chunks64 = [], []
    for field, wire, v in _fields(buf, start, end):
        if field in (1, 2, 3, 4) and wire == 0:
            legacy[field - 1] = v
        elif field == 7 and wire == 2:          # BlobShape
            dims = []
            for f2, w2, v2 in _fields(buf, *v):
                if f2 == 1 and w2 == 2:
                    dims.extend(_packed_varints(buf, *v2))
                elif f2 == 1 and w2 == 0:
                    dims.append(v2)
            shape = tuple(d if d < 1 << 63 else d - (1 << 64) for d in dims)
        elif field == 5:                         # float data, packed (wire 2) or one value (wire 5)
            if wire not in (2, 5):
                raise ValueError(f"blob data (field 5) has wire type {wire}; expected floats")
            s, e = v
            chunks32.append(np.frombuffer(buf, dtype="<f4", count=(e - s) // 4, offset=s))
        elif field == 8:                         # double_data, packed (wire 2) or one value (wire 1)
            if wire not in (2, 1):
                raise ValueError(f"blob double_data (field 8) has wire type {wire}; expected doubles")
            s, e = v
            chunks64.append(np.frombuffer(buf, dtype="<f8", count=(e - s) // 8, offset=s))
    if chunks32:
        data = chunks32[0] if len(chunks32) == 1 else np.concatenate(chunks32)
    elif chunks64:
        data = np.concatenate(chunks64).astype(np.float32)
    else:
        data = np.zeros(0, np.float32)
    is_legacy = shape is None
    if is_legacy:
        shape = tuple(legacy)
    count = int(np.prod(shape, dtype=object)) if shape else 1
    if any(d < 0 for d in shape) or data.size != count:
        raise ValueError(f"blob holds {data.size} values but its shape {list(shape)} needs {count}")
    return WeightBlob(data.reshape(shape), is_legacy)


def _layer(buf, start: int, end: int, fmt: str) -> LayerWeights:
    # field numbers of name, type, blobs in LayerParameter / V1LayerParameter / V0LayerParameter
    f_name, f_type, f_blobs = {"V2": (1, 2, 7), "V1": (4, 5, 6), "V0": (1, 2, 50)}[fmt]
    name, typ, blobs = "", "", []
    for field, wire, v in _fields(buf, start, end):
        if field == f_name and wire == 2:
            name = bytes(buf[v[0]:v[1]]).decode("utf-8", "replace")
        elif field == f_type:
            typ = bytes(buf[v[0]:v[1]]).decode("utf-8", "replace") if wire == 2 else _v1_type(v)
        elif field == f_blobs and wire == 2:
            try:
                blobs.append(_blob(buf, *v))
            except ValueError as e:
                raise ValueError(f"layer '{name}' blob {len(blobs)}: {e}") from None
        elif fmt == "V1" and field == 1 and wire == 2:   # V1 wrapping a V0 layer
            inner = _layer(buf, *v, "V0")
            name, typ = name or inner.name, typ or inner.type
            blobs.extend(inner.blobs)
    return LayerWeights(name, typ, blobs)


def _v1_type(value: int) -> str:
    from .. import caffe_pb2
    try:
        return caffe_pb2.V1LayerParameter.LayerType.Name(value)
    except ValueError:
        return str(value)


def read_caffemodel(path: str) -> list[LayerWeights]:
    """All layers with blobs in a binary caffemodel, in file order."""
    size = os.path.getsize(path)
    if size == 0:
        raise ZfcaffeError(f"{path}: file is empty; expected a binary caffemodel")
    with open(path, "rb") as f:
        buf = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
    layers = []
    current = "(header)"
    try:
        for field, wire, v in _fields(buf, 0, len(buf)):
            if wire != 2 or field not in (100, 2):
                continue
            fmt = "V2" if field == 100 else "V1"
            lw = _layer(buf, *v, fmt)
            current = lw.name
            layers.append(lw)
    except _Truncated:
        raise ZfcaffeError(
            f"{path}: truncated caffemodel: the data ends ({size} bytes) inside a message "
            f"after layer '{current}'; expected a complete file (re-download or re-copy it)") from None
    except ValueError as e:
        raise ZfcaffeError(f"{path}: not a valid caffemodel after layer '{current}': {e}") from None
    if not layers:
        raise ZfcaffeError(f"{path}: no layers found; expected a binary caffemodel (NetParameter)")
    return layers


def read_hdf5(path: str) -> list[LayerWeights]:
    import h5py
    layers = []
    try:
        with h5py.File(path, "r") as f:
            if "data" not in f:
                raise ZfcaffeError(f"{path}: HDF5 file has no 'data' group; expected a Caffe .caffemodel.h5")
            group = f["data"]
            # Caffe writes layers in net order; h5py lists them sorted, so keep creation
            # order where the file tracked it.
            if not isinstance(group, h5py.Group):
                raise ZfcaffeError(f"{path}: 'data' is not a group; expected a Caffe .caffemodel.h5")
            for name in list(group.keys()):
                g = group.get(name)
                if not isinstance(g, h5py.Group):
                    raise ZfcaffeError(f"{path}: data/{name} is not a group of blobs; expected a Caffe "
                                       ".caffemodel.h5 (data/LAYER/0, 1, ...)")
                blobs = []
                for i in range(len(g.keys())):
                    d = g.get(str(i))
                    if not isinstance(d, h5py.Dataset):
                        raise ZfcaffeError(f"{path}: data/{name} has no dataset '{i}'; expected its blobs "
                                           "numbered 0, 1, ...")
                    if d.dtype.kind not in "biuf" or d.size > 2**31 - 1:
                        raise ZfcaffeError(f"{path}: data/{name}/{i} holds {d.size:,} {d.dtype} values; expected "
                                           "at most 2^31-1 numbers")
                    blobs.append(WeightBlob(np.asarray(d, dtype=np.float32), False))
                layers.append(LayerWeights(name, "", blobs))
    except ZfcaffeError:
        raise
    except (OSError, KeyError, TypeError, ValueError, RuntimeError) as e:   # h5py's own, on a broken file
        reason = " ".join(str(e).split())[:200]
        raise ZfcaffeError(f"{path}: cannot read HDF5 weights ({e.__class__.__name__}: {reason}); expected a "
                           "Caffe .caffemodel.h5") from None
    return layers


def read_weights(path: str) -> list[LayerWeights]:
    """Read any Caffe weights file, choosing the reader by its first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise ZfcaffeError(f"{path}: cannot read weights: {e.strerror}") from None
    if head == HDF5_MAGIC:
        return read_hdf5(path)
    if head[:1] and head.lstrip()[:1] in (b"n", b"l", b"i", b"#") and _looks_textual(path):
        raise ZfcaffeError(
            f"{path}: looks like a text prototxt; expected binary weights (.caffemodel or .caffemodel.h5)")
    return read_caffemodel(path)


def _looks_textual(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(2048)
    return b"\x00" not in head and all(32 <= c < 127 or c in (9, 10, 13) for c in head)


# -- writing ------------------------------------------------------------------------------
def _blob_header(arr: np.ndarray, legacy: bool) -> bytes:
    if legacy:
        dims = (1,) * (4 - arr.ndim) + tuple(arr.shape)
        head = b"".join(field_key(f, 0) + enc_varint(d) for f, d in zip((1, 2, 3, 4), dims))
    else:
        packed = b"".join(enc_varint(d) for d in arr.shape)
        shape = len_field(1, len(packed)) + packed
        head = len_field(7, len(shape)) + shape
    return head + len_field(5, arr.size * 4)


def write_caffemodel(path: str, layers: list[tuple], legacy: bool = False, net_name: str = "") -> None:
    """Write (name, type, blobs[, LayerParameter]) layers as a binary caffemodel,
    streaming the data.

    With a LayerParameter, the layer is written as Caffe's Net::ToProto writes it: the
    layer's own definition (bottoms, tops, parameters) with its blobs. legacy=True
    writes a 2014 V1 file: `layers` with enum types and blobs shaped by
    num/channels/height/width, as old snapshots are. Written atomically.
    """
    v1_enum = {v: k for k, v in V1_TYPE_NAMES.items()}
    with atomic_file(path) as f:
        if net_name:
            name_b = net_name.encode()
            f.write(len_field(1, len(name_b)) + name_b)
        for name, typ, blobs, *definition in layers:
            arrays = [np.array(b, dtype="<f4", order="C", copy=None) for b in blobs]  # keeps 0-d shapes
            name_b = name.encode()
            if legacy:
                head = len_field(4, len(name_b)) + name_b + field_key(5, 0) + enc_varint(v1_enum.get(typ, 0))
                blob_field, layer_field = 6, 2
            else:
                typ_b = typ.encode()
                head = len_field(1, len(name_b)) + name_b + len_field(2, len(typ_b)) + typ_b
                if definition and definition[0] is not None:
                    lp = type(definition[0])()
                    lp.CopyFrom(definition[0])
                    lp.ClearField("blobs")
                    head = lp.SerializeToString()
                blob_field, layer_field = 7, 100
            blob_heads = [_blob_header(a, legacy) for a in arrays]
            blob_lens = [len(h) + a.nbytes for h, a in zip(blob_heads, arrays)]
            body = len(head) + sum(len(len_field(blob_field, n)) + n for n in blob_lens)
            f.write(len_field(layer_field, body) + head)
            for h, a, n in zip(blob_heads, arrays, blob_lens):
                f.write(len_field(blob_field, n) + h)
                f.write(memoryview(a).cast("B"))


def write_hdf5_weights(path: str, layers: list[tuple[str, list[np.ndarray]]]) -> None:
    """Write parameters as Caffe's Net::ToHDF5 does (a .caffemodel.h5): group `data`,
    one group per layer in net order, datasets "0", "1", ... Written atomically."""
    import h5py
    with atomic_file(path) as f:
        with h5py.File(f, "w", track_order=True) as h5:
            data = h5.create_group("data", track_order=True)
            for name, blobs in layers:
                group = data.create_group(name, track_order=True)
                for i, b in enumerate(blobs):
                    group.create_dataset(str(i), data=np.asarray(b, np.float32))


def layer_filters(prototxt: str, weights: str, layer_name: str) -> np.ndarray:
    """A convolution's filters (O, C, kh, kw) straight from the files: filters do not
    depend on the input shape, so no net is built (a train_val whose data shape only
    its database knows works too)."""
    import difflib

    from .prototxt import parse_net_text
    from .upgrade import upgrade_net
    parsed = parse_net_text(prototxt)
    net, _ = upgrade_net(parsed.param, list(parsed.layer_lines), where=prototxt)
    types = {lp.name: lp.type for lp in net.layer}
    if layer_name not in types:
        close = difflib.get_close_matches(layer_name, list(types), n=3, cutoff=0.5)
        raise ZfcaffeError(f"{prototxt}: no layer named '{layer_name}'"
                           + (f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""))
    if types[layer_name] not in ("Convolution", "Deconvolution"):
        raise ZfcaffeError(f"{prototxt}: layer '{layer_name}' ({types[layer_name]}) has no convolution filters; "
                           "expected a Convolution or Deconvolution layer")
    for lw in read_weights(weights):
        if lw.name == layer_name and lw.blobs:
            w = lw.blobs[0].data
            if w.ndim != 4:
                raise ZfcaffeError(f"{weights}: layer '{layer_name}' filters have shape {list(w.shape)}; "
                                   "expected 4 axes (outputs, inputs, height, width)")
            return w
    raise ZfcaffeError(f"{weights}: no weights for layer '{layer_name}'; expected the caffemodel of {prototxt}")
