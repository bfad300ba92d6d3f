"""zfcaffe: open legacy Caffe models without Caffe, run them on ONNX Runtime, and see
what they learned (Zeiler & Fergus deconvnet and the methods after it)."""
import os
import sys

# NumPy's OpenBLAS keeps its idle threads spinning for ~0.1 s after each call: between a
# backward pass (BLAS) and the next forward pass (ONNX Runtime) they hold the cores (a
# ResNet-50 forward between projections took 28 ms instead of 19, measured). Asked before
# NumPy loads it, OpenBLAS lets them sleep at once (2^4 cycles).
if "numpy" not in sys.modules:
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from .errors import UnsupportedLayerError, ZfcaffeError  # noqa: E402 (after the environment above)

__version__ = "0.1.0"
__all__ = ["Net", "ZfcaffeError", "UnsupportedLayerError", "__version__"]


def __getattr__(name: str):
    # zfcaffe.Net loads the net machinery (NumPy, ONNX) when first asked for, so that
    # `import zfcaffe` and the command line (`zfcaffe --help`) start at once
    if name == "Net":
        from .net import Net
        return Net
    raise AttributeError(f"module 'zfcaffe' has no attribute '{name}'")
