"""What a scan computes from each batch of images."""
from __future__ import annotations

import io
import os

import numpy as np


class Job:
    """A function of one batch of images. Subclasses implement run().

    A job travels to a Ray cluster's workers by pickling: it holds how to rebuild its
    net (files and options, with absolute paths), not the net, which each worker
    builds once."""

    def __init__(self, net, pre, batch: int):
        """batch: images per call of run() (the engines cut the image list by it)."""
        self.prototxt = os.path.abspath(net.graph.path)
        self.weights = net.graph.weights_path and os.path.abspath(net.graph.weights_path)
        self.options = dict(net.options)
        self.pre, self.batch = pre, batch
        self._net = net

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_net": None}

    @property
    def net(self):
        if self._net is None:
            from ..net import Net
            self._net = Net(self.prototxt, self.weights, **self.options)
        return self._net

    def stack(self, inputs: list[np.ndarray]) -> np.ndarray:
        """One input batch; a short last batch is padded with zeros (and ignored), so
        that every batch has the same shape whichever engine runs it."""
        x = np.stack(inputs)
        if len(inputs) < self.batch:
            x = np.concatenate([x, np.zeros((self.batch - len(inputs),) + x.shape[1:], np.float32)])
        return x

    def evaluate(self, keys: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
        """The lean forward of an input batch (the net takes its batch size)."""
        net = self.net
        net.set_batch(len(x))
        return net.evaluate(keys, **{net.inputs[0]: x})

    def run(self, x: np.ndarray, real: int, start: int) -> dict[str, np.ndarray]:
        """The results of one batch: x holds images start .. start + real - 1 (then padding)."""
        raise NotImplementedError


def pack(arrays: dict[str, np.ndarray]) -> bytes:
    """A batch's results as bytes for the trip from a worker (an .npz, never a pickle)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def unpack(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}
