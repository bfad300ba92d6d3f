"""Where does another implementation of a Caffe net stop agreeing with Caffe's numbers?

`compare(net, other, inputs)` runs zfcaffe (Caffe's numerics) and another side
(OpenCV's dnn, an ONNX file another converter wrote, a dump of real pycaffe's blobs,
or real pycaffe in another Python) on the same array, matches their values layer by
layer and names the first layer that diverges, with the usual causes tested."""
from __future__ import annotations

__all__ = ["Report", "Row", "compare", "side_for"]


def __getattr__(name: str):
    # the verb's module sits in this package: declaring it must not load NumPy and the sides
    if name in __all__:
        from . import core
        return getattr(core, name)
    raise AttributeError(name)
