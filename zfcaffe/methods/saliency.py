"""Saliency maps: the gradient of a class score with respect to the input
(Simonyan et al.), guided backprop (Springenberg et al.) and the deconvnet (Zeiler &
Fergus), from one helper, with SmoothGrad as an option."""
from __future__ import annotations

import dataclasses

import numpy as np

from .gradients import gradients, one_hot, record_with_label, score_key


@dataclasses.dataclass
class Saliency:
    label: int
    mode: str
    gradient: np.ndarray          # (C, H, W), in the input's channel order
    map: np.ndarray               # (H, W): max over channels of |gradient| (Simonyan's map)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"gradient": self.gradient, "map": self.map, "label": np.array(self.label)}


def saliency(net, x: np.ndarray, head, label: int | None = None, mode: str = "backprop", smooth: int = 0,
             seed: int = 0) -> Saliency:
    """The class score's gradient (before the softmax) for the top class or `label`."""
    key = score_key(net, head)
    label = record_with_label(net, x, head, label)
    g = gradients(net, x, lambda n: {key: one_hot(n.layer_outputs[key].shape, label)}, mode, smooth=smooth,
                  seed=seed, recorded=True)[net.inputs[0]][0]
    return Saliency(label, mode, g, np.abs(g).max(axis=0))
