"""ONNX Runtime sessions: the CUDA provider where it truly loads, else CPU.

The probe runs once per process with ONNX Runtime's own logging silenced (the
CUDA provider prints pages of errors on a machine without a GPU) and reports the
choice in one line on stderr.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from ..errors import ZfcaffeError
from .onnx_export import IR_VERSION, OPSET, OnnxNet

_CHOICE: tuple[list, str] | None = None


@contextlib.contextmanager
def _quiet_stderr():
    """Silence C++-level stderr (file descriptor 2) for the duration."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(devnull)
        os.close(saved)


def _probe_model() -> bytes:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    return m.SerializeToString()


def prefer(device: str) -> str:
    """Ask for "cpu" or "gpu" (or "auto") for the sessions made from now on; returns
    the device line of the new choice (the GPU only where the CUDA provider loads)."""
    global _CHOICE
    os.environ["ZFCAFFE_DEVICE"] = {"gpu": "auto"}.get(device, device)
    _CHOICE = None
    return device_line()


def providers() -> list:
    """The execution providers to use, decided once per process."""
    global _CHOICE
    if _CHOICE is not None:
        return _CHOICE[0]
    want = os.environ.get("ZFCAFFE_DEVICE", "auto").lower()
    chosen, line = ["CPUExecutionProvider"], ""
    if want != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
        opts = ort.SessionOptions()
        opts.log_severity_level = 4
        ort.set_default_logger_severity(4)
        try:
            with _quiet_stderr():
                s = ort.InferenceSession(_probe_model(), opts,
                                         providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
                ok = "CUDAExecutionProvider" in s.get_providers()
                if ok:
                    s.run(None, {"x": np.zeros((1, 1, 4, 4), np.float32)})
        except Exception:  # noqa: BLE001 - any failure means "no usable GPU"
            ok = False
        ort.set_default_logger_severity(3)
        if ok:
            chosen = ["CUDAExecutionProvider", "CPUExecutionProvider"]
            line = f"zfcaffe: running on the GPU (ONNX Runtime {ort.__version__}, CUDA provider)"
        else:
            line = f"zfcaffe: running on the CPU (ONNX Runtime {ort.__version__}; the CUDA provider did not load)"
    else:
        ort.set_default_logger_severity(3)
        line = f"zfcaffe: running on the CPU (ONNX Runtime {ort.__version__})"
    _CHOICE = (chosen, line)
    if os.environ.get("ZFCAFFE_QUIET") != "1":
        print(line, file=sys.stderr)
    return chosen


def device_line() -> str:
    providers()
    return _CHOICE[1]


def threads_may_spin() -> bool:
    """Whether ONNX Runtime's threads may spin within a run: waking a sleeping thread for
    each of a ResNet's ~300 small nodes costs a tenth of a batch-1 pass (19.6 vs 17.7
    ms). Only where NumPy's BLAS threads sleep as soon as their call ends (OpenBLAS with
    a short OPENBLAS_THREAD_TIMEOUT, which zfcaffe asks for when imported before NumPy):
    with both spinning, the forward passes between projections took 2x as long."""
    timeout = os.environ.get("OPENBLAS_THREAD_TIMEOUT")   # unset where NumPy came first (zfcaffe/__init__.py)
    try:
        blas = str(np.__config__.CONFIG["Build Dependencies"]["blas"]["name"])
    except (AttributeError, KeyError, TypeError):   # NumPy before 1.26 does not say
        return False
    return "openblas" in blas.lower() and timeout is not None and timeout.isdigit() and int(timeout) <= 8


class Session:
    """One ONNX Runtime session. The weights are handed over as in-memory external
    initializers, so building a session for a new input shape never serialises them."""

    def __init__(self, onnx_net: OnnxNet):
        opts = ort.SessionOptions()
        opts.log_severity_level = 4      # a failing run raises its one line below, not ORT's log
        # Every rewrite, the blocked NCHWc layouts included: their rounding is as close to
        # Caffe's as the plain kernels' (within 1e-6 of each layer's largest value on the
        # oracle nets), and every oracle projection meets Caffe's or is flagged either way.
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Worker threads spin between the nodes of a run where that takes no core from anyone
        # (see threads_may_spin), and stop at its end.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if threads_may_spin() else "0")
        opts.add_session_config_entry("session.force_spinning_stop", "1")
        # a scan's worker given n cores (a Ray actor) runs on n threads, not on every core
        threads = os.environ.get("ZFCAFFE_THREADS", "")
        if threads.isdigit() and int(threads) > 0:
            opts.intra_op_num_threads = int(threads)
        if onnx_net.weights:
            # placeholders marked as external data, replaced by the arrays from memory
            names = list(onnx_net.weights)
            onnx_net.model.graph.initializer.extend(_external_placeholder(n, onnx_net.weights[n]) for n in names)
            values = [ort.OrtValue.ortvalue_from_numpy(onnx_net.weights[n]) for n in names]
            opts.add_external_initializers(names, values)
        self.outputs, self.keys = onnx_net.outputs, onnx_net.keys
        self.session = ort.InferenceSession(onnx_net.model.SerializeToString(), opts, providers=providers())
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The outputs by graph key (the ONNX file may name the net's outputs otherwise)."""
        try:
            values = self.session.run(self.outputs, feeds)
        except (ort.capi.onnxruntime_pybind11_state.Fail, ort.capi.onnxruntime_pybind11_state.RuntimeException,
                ort.capi.onnxruntime_pybind11_state.InvalidArgument) as e:
            # data a layer's parameters cannot take (a mask index past its output, an ROI's batch
            # index past the batch): one line naming the Caffe layer (the node names start with it)
            reason = " ".join(str(e).split())
            node = re.search(r"Name:'([^'/]+)/", reason)
            where = f"layer '{node.group(1)}': " if node else ""
            raise ZfcaffeError(f"{where}ONNX Runtime refused the forward pass ({reason[:300]}); expected inputs "
                               "and parameters this layer can take") from None
        return dict(zip(self.keys, values))


def _external_placeholder(name: str, arr: np.ndarray) -> TensorProto:
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=list(arr.shape))
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "zfcaffe-in-memory"), ("offset", "0"), ("length", str(arr.nbytes))):
        entry = t.external_data.add()
        entry.key, entry.value = k, v
    return t
