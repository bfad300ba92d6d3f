"""Mean images: Caffe's .binaryproto (a BlobProto) and NumPy .npy."""
from __future__ import annotations

import numpy as np

from .. import caffe_pb2
from ..errors import ZfcaffeError
from .npy import MAX_ELEMENTS, load_npy
from google.protobuf.message import DecodeError


def read_mean(path: str) -> np.ndarray:
    """The mean as a float32 (C, H, W) array (or (C,) for per-channel values)."""
    if path.endswith(".npy"):
        arr = np.asarray(load_npy(path, "a mean image (C, H, W) or per-channel values (C,)"), dtype=np.float32)
    else:
        blob = caffe_pb2.BlobProto()
        try:
            with open(path, "rb") as f:
                raw = f.read()
            blob.ParseFromString(raw)
        except OSError as e:
            raise ZfcaffeError(f"{path}: cannot read mean file: {e.strerror}") from None
        except DecodeError:
            raise ZfcaffeError(f"{path}: not a BlobProto; expected a Caffe mean .binaryproto") from None
        shape = tuple(blob.shape.dim) if blob.HasField("shape") else (
            blob.num, blob.channels, blob.height, blob.width)
        if any(d < 0 for d in shape) or int(np.prod(shape, dtype=object)) > MAX_ELEMENTS:
            raise ZfcaffeError(f"{path}: mean blob shape {list(shape)}; expected a Caffe mean .binaryproto")
        data = np.asarray(blob.data if len(blob.data) else blob.double_data, dtype=np.float32)
        if data.size == 0 or data.size != int(np.prod(shape)):
            raise ZfcaffeError(
                f"{path}: mean blob has {data.size} values for shape {list(shape)}; expected a Caffe mean .binaryproto")
        arr = data.reshape(shape)
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim not in (1, 3):
        raise ZfcaffeError(f"{path}: mean has shape {list(arr.shape)}; expected (C, H, W) or (C,)")
    return arr
