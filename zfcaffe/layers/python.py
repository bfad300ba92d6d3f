"""`type: "Python"` layers: the user's own pycaffe layer code, run as pycaffe runs it.

pycaffe instantiates the class `python_param.layer` of module `python_param.module`
and calls `setup(bottom, top)` once, then `reshape(bottom, top)` and
`forward(bottom, top)` on every pass, with `self.param_str` set (BVLC caffe
src/caffe/layers/python_layer.hpp; older pycaffe, py-faster-rcnn's, says
`param_str_`). Here that code runs between ONNX Runtime segments of the net, on
blobs with pycaffe's `.data`, `.shape`, `.reshape()`, `.count`, `.num`,
`.channels`, `.height`, `.width`. A user's module is imported only from a path
the user names (`python_path=`, CLI `--python-path`): a prototxt alone never runs
code. Without it, the well-known layers run as built-ins (PYTHON_BUILTINS).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys

import numpy as np

from .base import Layer


class PyBlob:
    """pycaffe's Blob as a Python layer sees it."""

    def __init__(self, shape=(), data: np.ndarray | None = None):
        self.data = np.zeros(shape, np.float32) if data is None else data
        self.diff = np.zeros_like(self.data)

    def reshape(self, *shape: int) -> None:
        shape = tuple(int(d) for d in (shape[0] if len(shape) == 1 and not np.isscalar(shape[0]) else shape))
        if shape != self.data.shape:
            self.data = np.zeros(shape, np.float32)
            self.diff = np.zeros(shape, np.float32)

    @property
    def shape(self) -> tuple:
        return tuple(self.data.shape)

    @property
    def count(self) -> int:
        return int(self.data.size)

    def _axis(self, i: int) -> int:
        return int(self.data.shape[i]) if self.data.ndim > i else 1

    num = property(lambda self: self._axis(0))
    channels = property(lambda self: self._axis(1))
    height = property(lambda self: self._axis(2))
    width = property(lambda self: self._axis(3))


def _import_user_module(module: str, path: list[str], who: Layer):
    for d in reversed(path):
        d = os.path.abspath(os.path.expanduser(d))
        if d not in sys.path:
            sys.path.insert(0, d)
    # the layer's own `import caffe` gets zfcaffe's pycaffe surface when no Caffe is installed
    if "caffe" not in sys.modules and importlib.util.find_spec("caffe") is None:
        sys.modules["caffe"] = importlib.import_module("zfcaffe.caffe")
    try:
        return importlib.import_module(module)
    except Exception as e:   # noqa: BLE001 - the user's code: say which module, where, and why
        raise who.error(f"cannot import its module '{module}' from --python-path {os.pathsep.join(path)}: "
                        f"{type(e).__name__}: {e}") from None


class PythonLayer(Layer):
    """A pycaffe Python layer, run from the user's module (host layer)."""
    host = True

    def setup(self, lp):
        p = lp.python_param
        self.module, self.class_name, self.param_str = p.module, p.layer, p.param_str
        self.python_path: list[str] = []
        self._obj = None
        self._shapes_for = None

    def n_bottoms(self):
        return (0, 1 << 30)

    def instance(self):
        if self._obj is None:
            mod = _import_user_module(self.module, self.python_path, self)
            cls = getattr(mod, self.class_name, None)
            if cls is None:
                raise self.error(f"module '{self.module}' ({getattr(mod, '__file__', '?')}) has no class "
                                 f"'{self.class_name}'")
            obj = cls.__new__(cls)
            obj.param_str = obj.param_str_ = self.param_str
            obj.phase = 1 if self.phase == "TEST" else 0
            obj.type = "Python"
            self._obj = obj
            self._setup_done = False
        return self._obj

    def _call(self, method: str, bottom, top) -> None:
        try:
            getattr(self.instance(), method)(bottom, top)
        except Exception as e:   # noqa: BLE001 - the user's code
            raise self.error(f"its {self.module}.{self.class_name}.{method} raised {type(e).__name__}: {e}") from None

    def _run(self, bottom: list[PyBlob]) -> list[PyBlob]:
        top = [PyBlob((1,)) for _ in self.tops]
        self.instance()
        if not self._setup_done:
            self._call("setup", bottom, top)
            self._setup_done = True
        self._call("reshape", bottom, top)
        return top

    def output_shapes(self, in_shapes):
        bottom = [PyBlob(s) for s in in_shapes]
        return [t.shape for t in self._run(bottom)]

    def forward(self, inputs):
        bottom = [PyBlob(data=np.array(x, np.float32)) for x in inputs]
        top = self._run(bottom)
        self._call("forward", bottom, top)
        return [np.asarray(t.data, np.float32) for t in top]

    def backward(self, ctx, top_diffs):
        """The layer's own `backward(top, propagate_down, bottom)`, as pycaffe calls it, in
        every mode (the user's code defines one rule): the rows being projected are run
        forward again first, so state the layer keeps from its forward matches them."""
        cls = type(self.instance())
        if not callable(getattr(cls, "backward", None)):
            raise self.error(f"its class {self.module}.{self.class_name} defines no backward(top, propagate_down, "
                             "bottom); project units of a layer below it")
        bottom = [PyBlob(data=np.array(ctx.data(k), np.float32)) for k in self.bottoms]
        top = self._run(bottom)
        self._call("forward", bottom, top)
        for t, d in zip(top, top_diffs):
            if d is not None and tuple(d.shape) != t.shape:
                raise self.error(f"its forward on the projected rows gives {list(t.shape)}, but the signal is "
                                 f"{list(d.shape)}; expected a layer that works row by row")
            t.diff = np.zeros(t.shape, np.float32) if d is None else np.array(d, np.float32)
        for b in bottom:
            b.diff = np.zeros(b.shape, np.float32)
        try:
            self.instance().backward(top, [True] * len(bottom), bottom)
        except Exception as e:   # noqa: BLE001 - the user's code
            raise self.error(f"its {self.module}.{self.class_name}.backward raised {type(e).__name__}: {e}") from None
        return [np.asarray(b.diff, np.float32) for b in bottom]

    def emit(self, e, ins, outs):
        raise self.error(f"runs Python code ({self.module}.{self.class_name}), which an ONNX file cannot hold")

    def summary(self):
        return f"{self.module}.{self.class_name}" + (f" '{self.param_str}'" if self.param_str else "")
