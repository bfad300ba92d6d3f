"""OpenCV's dnn (cv2.dnn.readNetFromCaffe) on the same files: every layer OpenCV names.
OpenCV is an optional extra (opencv-python-headless<5), imported only here."""
from __future__ import annotations

import os

import numpy as np

from ...errors import ZfcaffeError
from . import Match, Side


def _cv2():
    try:
        import cv2
    except ImportError:
        raise ZfcaffeError("--against opencv needs OpenCV: pip install 'opencv-python-headless<5'") from None
    return cv2


def _is_hdf5(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(8) == b"\x89HDF\r\n\x1a\n"


class OpenCVSide(Side):
    def __init__(self, prototxt: str, weights: str | None, net=None):
        cv2 = _cv2()
        self.description = f"OpenCV {cv2.__version__} dnn"
        self._notes = []
        self._tmp = None
        if weights and net is not None and _is_hdf5(weights):
            # OpenCV reads binary caffemodels only: the same blobs, written as one
            import tempfile
            from ...io.weights import write_caffemodel
            self._tmp = tempfile.TemporaryDirectory(prefix="zfcaffe-compare-")
            binary = os.path.join(self._tmp.name, "weights.caffemodel")
            write_caffemodel(binary, [(l.name, l.type, l.blobs) for l in net.graph.layers if l.blobs])
            self._notes.append(f"{os.path.basename(weights)} is HDF5, which OpenCV does not read: OpenCV was given "
                               "the same blobs as a binary caffemodel")
            weights = binary
        try:
            self.cv = cv2.dnn.readNetFromCaffe(prototxt, weights) if weights else cv2.dnn.readNetFromCaffe(prototxt)
        except cv2.error as e:
            raise ZfcaffeError(f"{prototxt}: OpenCV's dnn refuses the net: {str(e).strip().splitlines()[-1]}") from None
        # one output per Caffe layer (fused layers would hide the convolution's own output)
        self.cv.enableFusion(False)
        self.cv.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self.cv.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        self.names = list(self.cv.getLayerNames())

    def notes(self):
        return self._notes

    def run(self, inputs: dict) -> dict[str, np.ndarray]:
        cv2 = _cv2()
        for k, v in inputs.items():
            self.cv.setInput(np.ascontiguousarray(v, np.float32), k)
        try:
            outs = self.cv.forward(self.names)
        except cv2.error as e:
            raise ZfcaffeError(f"OpenCV's dnn fails on the net: {str(e).strip().splitlines()[-1]}") from None
        return dict(zip(self.names, outs))

    def values(self, net, inputs, ours):
        got = self.last = self.run(inputs)   # kept: what OpenCV computed, by its layer names
        out = {}
        for layer in net.graph.compute_layers:
            if layer.name in got:
                # cv.forward(names) gives each layer's first output
                key = layer.tops[0]
                out[key] = Match(got[layer.name], layer.name, "layer name" + (" (its first top)" if len(layer.tops) > 1 else ""))
        return out
