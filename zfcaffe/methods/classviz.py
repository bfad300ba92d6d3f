"""Feature visualisation by optimisation for a class, a channel or a unit of any
layer: Lucid's recipe (Olah et al. 2017: a decorrelated Fourier image, robustness
transforms, Adam) on ImageNet-sized inputs, and class model visualisation (Simonyan
et al. 2014: the class score before the softmax, minus an L2 decay, from the mean
image) with DVT's regularisers (Yosinski et al. 2015: Gaussian blur every few steps,
jitter, clipping of pixels with small norm) on small ones. Always inside the valid
input range; the net runs only up to the target."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import ZfcaffeError
from ..optvis import objectives
from ..optvis.param import FourierParam, PixelParam
from ..optvis.render import Adam, gradient, render, trunk
from ..optvis.transforms import gaussian_blur, jitter, standard_transforms
from .gradients import score_key


@dataclasses.dataclass
class ClassModel:
    target: str                   # what was maximised, in words
    image: np.ndarray             # the input made (C, H, W)
    start_score: float            # the target's value at the start (the mean image; Lucid's: near grey)
    score: float                  # ... and at the end, without transforms
    values: list[float]           # the objective at every step
    snapshots: dict[int, np.ndarray]
    param: str = "pixels"         # the recipe: "fourier" (Lucid's) or "pixels" (Simonyan's + DVT's)
    recipe: str = ""              # the recipe in words (steps, step size, transforms, seed)

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


#: the smallest input side (pixels) on which `param="auto"` takes Lucid's recipe: its
#: 8-pixel shifts, 1/f spectrum and rotations are made for ImageNet-sized inputs
LUCID_MIN_SIDE = 64


def recipe_for(pre, param: str = "auto") -> str:
    """"fourier" (Lucid's recipe) or "pixels" (Simonyan's class model with DVT's
    regularisers); "auto" takes Lucid's on inputs of at least LUCID_MIN_SIDE pixels
    a side (ImageNet nets), the pixel recipe on small ones (CIFAR's 32x32)."""
    if param not in ("auto", "fourier", "pixels"):
        raise ZfcaffeError(f"--param '{param}': expected auto, fourier or pixels")
    if param != "auto":
        return param
    return "fourier" if min(pre.height, pre.width) >= LUCID_MIN_SIDE else "pixels"


def class_model(net, pre, head=None, label: int | None = None, layer: str | None = None, channel: int | None = None,
                unit=None, steps: int | None = None, lr: float | None = None, seed: int = 0,
                decay: float | None = None, blur_every: int = 4, blur_sigma: float = 0.5,
                jitter_px: int | None = None, clip_percentile: float = 0.0, param: str = "auto", thresholds=(),
                progress: bool = False) -> ClassModel:
    """Maximise the target with Adam, on the net cut after the target's layer.

    param "fourier" is Lucid's recipe: a decorrelated, 1/f-scaled Fourier image through
    a sigmoid (always inside the input range), Lucid's standard transforms (shift,
    zoom, rotate, shift), Adam at lr 0.05 on the spectrum, 256 steps, no decay.
    "pixels" is Simonyan's class model with DVT's regularisers: from the mean image,
    L2 `decay` (relative to the input's range squared, default 1e-4), blur every few
    steps, a 2-pixel jitter, clipping to the range, Adam at 2% of the range, 200 steps.
    "auto" (default): recipe_for(pre). None takes the recipe's value; jitter_px given
    replaces the recipe's transforms by a jitter of that many pixels (0: none)."""
    target, what = target_objective(net, head, label, layer, channel, unit)
    param = recipe_for(pre, param)
    fourier = param == "fourier"
    steps = steps if steps is not None else 256 if fourier else 200
    decay = decay if decay is not None else 0.0 if fourier else 1e-4
    input_key = net.inputs[0]
    low, high = pre.input_range()
    span = float(np.max(high - low))
    obj = target + objectives.lp_norm(input_key, 2) * (decay / span) if decay else target
    if fourier:
        p = FourierParam(pre.channels, pre.height, pre.width, lambda px: pre.transform(px.transpose(1, 2, 0)),
                         lambda g: _transform_adjoint(pre, g), seed=seed)
        lr = 0.05 if lr is None else lr
    else:
        p = PixelParam(np.clip(np.zeros(low.shape, np.float32), low, high), low, high)
        lr = 0.02 * span if lr is None else lr
    if jitter_px is not None:
        moves, moves_text = ([jitter(jitter_px)] if jitter_px else []), f"jitter {jitter_px}"
    elif fourier:
        moves = standard_transforms()
        moves_text = "Lucid's transforms (shift 8, zoom 0.9-1.1, rotate up to 10 degrees, shift 4)"
    else:
        moves, moves_text = [jitter(2)], "jitter 2"

    def regularize(step, theta):
        if fourier:
            return
        if blur_every and step % blur_every == 0 and blur_sigma > 0:
            theta[...] = gaussian_blur(theta, blur_sigma)
        if clip_percentile > 0:           # DVT: pixels whose norm is among the smallest go to the mean
            norm = np.linalg.norm(theta, axis=0)
            theta[:, norm < np.percentile(norm, clip_percentile)] = 0
        np.clip(theta, low, high, out=theta)

    cut = trunk(net, target.keys)        # forward and backward only up to the target
    start = gradient(cut, target, p.image())[0]
    r = render(cut, obj, p, moves, steps, Adam(lr), regularize, thresholds, seed, progress, "classviz")
    end = gradient(cut, target, r.image)[0]
    if fourier:
        recipe = (f"{steps} steps of Adam (lr {lr:g}) on a decorrelated Fourier image (Lucid's), {moves_text}"
                  + (f", decay {decay:g}" if decay else "") + f", seed {seed}")
    else:
        recipe = (f"{steps} steps of Adam (lr {lr:g}) on pixels from the mean image, decay {decay:g}, blur every "
                  f"{blur_every} (sigma {blur_sigma:g}), {moves_text}, seed {seed}")
    return ClassModel(what, r.image, start, end, r.values, r.snapshots, param, recipe)


def _transform_adjoint(pre, grad: np.ndarray) -> np.ndarray:
    """The adjoint of pixels (C, H, W) -> pre.transform (linear up to the mean)."""
    g = np.asarray(grad, np.float64) * pre.input_scale * pre.raw_scale
    return g[::-1] if pre.bgr and pre.channels == 3 else g
