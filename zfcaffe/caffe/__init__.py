"""pycaffe without Caffe: `from zfcaffe import caffe` in place of `import caffe`.

The same names, argument orders, array layouts and dtypes as pycaffe: caffe.Net
(forward/backward between named layers, writable blobs and parameters, save),
caffe.io, caffe.Classifier, caffe.Detector, caffe.proto.caffe_pb2, TEST/TRAIN and the
mode functions. What pycaffe has and zfcaffe does not (solvers, parameter
gradients, Python layers) raises one clear error naming the alternative.
"""
from __future__ import annotations

import sys

from ..errors import ZfcaffeError
from . import io, proto  # noqa: F401
from ._net import TEST, TRAIN, Blob, Layer, Net  # noqa: F401
from .classifier import Classifier, Detector  # noqa: F401

__version__ = "1.0.0"   # the pycaffe API this module follows


def _device(kind: str, note: str = "") -> None:
    from ..runtime.session import prefer
    line = prefer(kind)
    if kind == "gpu" and "GPU" not in line:
        print(f"zfcaffe.caffe: set_mode_gpu: {line.removeprefix('zfcaffe: ')}{note}", file=sys.stderr)


def set_mode_cpu() -> None:
    """Run the nets made from now on on the CPU."""
    _device("cpu")


def set_mode_gpu() -> None:
    """Run the nets made from now on on the GPU (ONNX Runtime's CUDA provider) where it
    loads; else a one-line note, and the CPU."""
    _device("gpu")


def set_device(device_id: int) -> None:
    """pycaffe's GPU choice; ONNX Runtime uses the first visible GPU (set
    CUDA_VISIBLE_DEVICES to choose another before starting Python)."""
    if int(device_id) != 0:
        print(f"zfcaffe.caffe: set_device({device_id}): choose the GPU with CUDA_VISIBLE_DEVICES={device_id} "
              "before starting Python; using the first visible one", file=sys.stderr)


def set_random_seed(seed: int) -> None:
    """Caffe's RNG seed: zfcaffe's test-time passes use no randomness."""


def layer_type_list() -> list[str]:
    """The layer types zfcaffe runs (Caffe's registered types that matter at test time)."""
    from ..layers import REGISTRY
    return sorted(REGISTRY)


def _unsupported(name: str, why: str):
    def refuse(*args, **kwargs):
        raise ZfcaffeError(f"caffe.{name}: {why}")
    refuse.__name__ = name
    return refuse


_TRAINING = ("zfcaffe runs and analyses trained nets; it does not train them. Train with a maintained "
             "framework, then load its snapshots here")
get_solver = _unsupported("get_solver", _TRAINING)
SGDSolver = NesterovSolver = AdaGradSolver = RMSPropSolver = AdaDeltaSolver = AdamSolver = \
    _unsupported("Solver", _TRAINING)
NetSpec = _unsupported("NetSpec", "writing prototxts from Python is not supported; write the prototxt text, "
                                  "or build the net in a maintained framework")
set_multiprocess = _unsupported("set_multiprocess", _TRAINING)


def __getattr__(name: str):
    """Any other pycaffe name: one clear line instead of a bare AttributeError."""
    if name.startswith("__"):
        raise AttributeError(name)
    raise AttributeError(f"caffe.{name}: zfcaffe.caffe does not provide this part of pycaffe (it covers Net, io, "
                         "Classifier, Detector, proto and the mode functions); see the README's 'Coming from "
                         "pycaffe'")
