"""Reading .npy files users hand over: the header is checked (numbers only, at most
Caffe's 2^31-1 elements) before anything is allocated, and nothing is unpickled."""
from __future__ import annotations

import numpy as np

from ..errors import ZfcaffeError

MAX_ELEMENTS = 2**31 - 1


def load_npy(path: str, what: str) -> np.ndarray:
    """The array in `path` (a .npy), or one clear error naming the file and `what` it
    was expected to be."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f"unknown .npy version {version}")
            shape, _, dtype = read_header(f)
    except FileNotFoundError:
        raise ZfcaffeError(f"{path}: no such file; expected {what}") from None
    except Exception as e:  # noqa: BLE001 - numpy's header parser raises whatever its tokenizer meets
        raise ZfcaffeError(f"{path}: not a readable .npy ({e.__class__.__name__}: {e}); expected {what}") from None
    if dtype.kind not in "biuf":
        raise ZfcaffeError(f"{path}: holds {dtype} values; expected {what} (numbers)")
    count = int(np.prod(shape, dtype=object))
    if count > MAX_ELEMENTS:
        raise ZfcaffeError(f"{path}: its header promises shape {list(shape)} = {count:,} elements, over Caffe's "
                           f"limit of 2^31-1; expected {what}")
    try:
        return np.load(path, allow_pickle=False)          # never unpickle user files
    except (OSError, ValueError, EOFError) as e:
        raise ZfcaffeError(f"{path}: cannot read the array ({e}); expected {what}") from None
