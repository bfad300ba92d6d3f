"""Optional dependencies: a verb that needs one says which extra installs it."""
from __future__ import annotations

import importlib

from .errors import ZfcaffeError

#: module -> the extra of zfcaffe that installs it
EXTRAS = {"pyarrow": "analysis", "sklearn": "analysis", "openTSNE": "analysis", "ray": "scale", "starlette": "serve",
          "uvicorn": "serve"}


def require(module: str, what: str):
    """Import `module`, or fail with one line naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = EXTRAS.get(module.split(".")[0], "analysis")
        raise ZfcaffeError(f"{what} needs {module.split('.')[0]}: pip install 'zfcaffe[{extra}]'") from None
