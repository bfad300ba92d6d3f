"""One exception type for everything a user can get wrong.

Messages are one line and name the file, the line or layer, and what was expected,
so the CLI can print them as they are.
"""


class ZfcaffeError(Exception):
    """A user-facing error: bad file, bad shape, unsupported layer."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class UnsupportedLayerError(ZfcaffeError):
    """A layer type zfcaffe cannot run (Python layers, fork-only layers)."""

    def __init__(self, message: str, layer_name: str, layer_type: str):
        super().__init__(message)
        self.layer_name = layer_name
        self.layer_type = layer_type


class ZfcaffeTypeError(ZfcaffeError, TypeError):
    """An API argument of the wrong type (`except TypeError` catches it too); the
    message names the argument and what it takes."""


class ZfcaffeValueError(ZfcaffeError, ValueError):
    """An API argument of the right type but a value it cannot take (`except
    ValueError` catches it too); the message names the argument and what it takes."""
