"""Write outputs to a temporary name and rename them into place, so that nothing is
ever half-written and a rerun replaces the old output cleanly."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import numpy as np

from .errors import ZfcaffeError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _normal_mode(path: str, directory: bool) -> None:
    """mkstemp/mkdtemp create 0600/0700 entries; outputs get what open() and mkdir()
    would give them under the user's umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_file(path: str, mode: str = "wb"):
    """Yield an open file; on success it replaces `path`, on failure it vanishes."""
    if os.path.isdir(path):
        raise ZfcaffeError(f"{path}: is a folder; expected a file name to write (nothing was written)")
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".zfcaffe-", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
        _normal_mode(tmp, directory=False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_savez(path: str, arrays: dict[str, np.ndarray]) -> None:
    """np.savez into `path`, atomically."""
    with atomic_file(path) as f:
        np.savez(f, **arrays)


@contextlib.contextmanager
def atomic_dir(path: str):
    """Yield a fresh temporary folder beside `path`; on success it becomes `path`
    (an older `path` is removed only after the new one is in place)."""
    path = os.path.abspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ZfcaffeError(f"{path}: exists and is not a folder; expected an output folder (nothing was written)")
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}-", dir=parent)
    try:
        yield tmp
        _normal_mode(tmp, directory=True)
        old = None
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}-old-", dir=parent)
            os.rmdir(old)
            os.rename(path, old)
        os.rename(tmp, path)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
