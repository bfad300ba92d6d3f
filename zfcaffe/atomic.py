"""Write outputs to a temporary name and rename them into place, so that nothing is
ever half-written and a rerun replaces the old output cleanly."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import numpy as np


@contextlib.contextmanager
def atomic_file(path: str, mode: str = "wb"):
    """Yield an open file; on success it replaces `path`, on failure it vanishes."""
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".zfcaffe-", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
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
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}-", dir=parent)
    try:
        yield tmp
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
