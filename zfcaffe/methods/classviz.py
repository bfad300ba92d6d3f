"""Class model visualisation (Simonyan et al. 2014: the class score before the
softmax, minus an L2 decay, from the mean image) and DVT-style regularised
activation maximisation (Yosinski et al. 2015: decay, Gaussian blur every few steps,
jitter, clipping of pixels with small norm) for a class, a channel or a unit of any
layer. Optimised in the net's input space, kept inside the valid input range."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import ZfcaffeError
from ..optvis import objectives
from ..optvis.param import FourierParam, PixelParam
from ..optvis.render import Adam, gradient, render
from ..optvis.transforms import gaussian_blur, jitter
from .gradients import score_key


@dataclasses.dataclass
class ClassModel:
    target: str                   # what was maximised, in words
    image: np.ndarray             # the input made (C, H, W)
    start_score: float            # the target's value at the start (the mean image)
    score: float                  # ... and at the end, without transforms
    values: list[float]           # the objective at every step
    snapshots: dict[int, np.ndarray]

    def arrays(self) -> dict[str, np.ndarray]:
        return {"image": self.image, "values": np.array(self.values), "start_score": np.array(self.start_score),
                "score": np.array(self.score)}


def target_objective(net, head, label: int | None, layer: str | None, channel: int | None, unit=None):
    """The class score (before the softmax), a channel's mean or one unit of a layer."""
    from ..analyses.common import shown_key
    if layer is None:
        if head is None or label is None:
            raise ZfcaffeError(f"{net.graph.path}: name a class (--label) of a net with a class output, or a "
                               "--layer and --channel")
        head.check_label(label)
        key = score_key(net, head)
        return objectives.class_logit(key, label), f"class {label} score ('{net.graph.name_of(key)}')"
    key = shown_key(net, layer)
    c = int(channel or 0)
    if not 0 <= c < net.graph.shapes[key][1]:
        raise ZfcaffeError(f"--channel {c}: layer '{layer}' has channels 0 to {net.graph.shapes[key][1] - 1}")
    if unit is not None:
        return objectives.neuron(key, c, *unit), f"unit {c} {tuple(unit)} of {layer}"
    if len(net.graph.shapes[key]) == 4:
        return objectives.channel(key, c), f"channel {c} of {layer} (mean)"
    return objectives.neuron(key, c), f"unit {c} of {layer}"


def class_model(net, pre, head=None, label: int | None = None, layer: str | None = None, channel: int | None = None,
                unit=None, steps: int = 200, lr: float | None = None, seed: int = 0, decay: float = 1e-4,
                blur_every: int = 4, blur_sigma: float = 0.5, jitter_px: int = 2, clip_percentile: float = 0.0,
                param: str = "pixels", thresholds=(), progress: bool = False) -> ClassModel:
    """Maximise the target from the mean image (the zero input) with Adam; `decay` is
    the L2 weight (relative to the input's range squared), blur/jitter/clipping as DVT."""
    target, what = target_objective(net, head, label, layer, channel, unit)
    input_key = net.inputs[0]
    low, high = pre.input_range()
    span = float(np.max(high - low))
    obj = target + objectives.lp_norm(input_key, 2) * (decay / span)
    if param == "fourier":
        p = FourierParam(pre.channels, pre.height, pre.width, lambda px: pre.transform(px.transpose(1, 2, 0)),
                         lambda g: _transform_adjoint(pre, g), seed=seed)
    else:
        p = PixelParam(np.clip(np.zeros(low.shape, np.float32), low, high), low, high)

    def regularize(step, theta):
        if param != "pixels":
            return
        if blur_every and step % blur_every == 0 and blur_sigma > 0:
            theta[...] = gaussian_blur(theta, blur_sigma)
        if clip_percentile > 0:           # DVT: pixels whose norm is among the smallest go to the mean
            norm = np.linalg.norm(theta, axis=0)
            theta[:, norm < np.percentile(norm, clip_percentile)] = 0
        np.clip(theta, low, high, out=theta)

    start = gradient(net, target, p.image())[0]
    r = render(net, obj, p, [jitter(jitter_px)] if jitter_px else [], steps,
                      Adam(lr if lr is not None else 0.02 * span), regularize, thresholds, seed, progress, "classviz")
    end = gradient(net, target, r.image)[0]
    return ClassModel(what, r.image, start, end, r.values, r.snapshots)


def _transform_adjoint(pre, grad: np.ndarray) -> np.ndarray:
    """The adjoint of pixels (C, H, W) -> pre.transform (linear up to the mean)."""
    g = np.asarray(grad, np.float64) * pre.input_scale * pre.raw_scale
    return g[::-1] if pre.bgr and pre.channels == 3 else g
