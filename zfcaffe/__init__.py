"""zfcaffe: open legacy Caffe models without Caffe, run them on ONNX Runtime, and see
what they learned (Zeiler & Fergus deconvnet and the methods after it)."""
from .errors import UnsupportedLayerError, ZfcaffeError
from .net import Net

__version__ = "0.1.0"
__all__ = ["Net", "ZfcaffeError", "UnsupportedLayerError", "__version__"]
