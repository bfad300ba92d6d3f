"""Class probabilities of a net, whatever its head: the output of a Softmax layer
as it is, any other 2-D output through a softmax."""
from __future__ import annotations

import numpy as np

from ..errors import ZfcaffeError


def class_score_outputs(net) -> list[str]:
    """The net's N x K outputs (K >= 2): class scores or probabilities."""
    return [k for k in net.outputs if len(net.graph.shapes[k]) == 2 and net.graph.shapes[k][1] >= 2]


def prob_key(net) -> str:
    outs = class_score_outputs(net)
    outs += [k for k in net.outputs if len(net.graph.shapes[k]) == 4 and net.graph.shapes[k][2:] == (1, 1)]
    if not outs:
        raise ZfcaffeError(f"{net.graph.path}: the net does not end in a classifier (no N x K output)")
    return outs[0]


def probabilities(net, values: np.ndarray, key: str) -> np.ndarray:
    v = values.reshape(values.shape[0], -1).astype(np.float64)
    if net.graph.producer(key).type == "Softmax":
        return v
    e = np.exp(v - v.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
