"""Fooling images (Szegedy et al. 2014; Nguyen et al. 2015): from a photo, the
smallest perturbation found that makes the net say a target class with high
confidence (projected gradient ascent on log p(target) under growing L-infinity
budgets), reported as L-infinity and L2 in 0-255 pixel units; from noise, an image
the net labels the target with high confidence while it looks like nothing."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import ZfcaffeError
from ..optvis import objectives
from ..optvis.render import gradient

BUDGETS = (0.5, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32)   # L-infinity budgets tried, in pixel units


@dataclasses.dataclass
class Fooling:
    target: int
    start: np.ndarray            # the photo (or noise) the search began from (C, H, W)
    image: np.ndarray            # the fooling input
    probability: float           # p(target) reached
    start_probability: float
    linf: float                  # the perturbation's L-infinity and L2 norms, in pixel units
    l2: float

    def arrays(self) -> dict[str, np.ndarray]:
        return {"start": self.start, "image": self.image, "probability": np.array(self.probability),
                "start_probability": np.array(self.start_probability), "linf": np.array(self.linf),
                "l2": np.array(self.l2), "target": np.array(self.target)}


def _probability(net, head, x, label: int) -> float:
    net.forward(**{net.inputs[0]: x[None]})
    return float(head.probabilities(net.layer_outputs[head.key])[0, label])


def fool(net, pre, head, x: np.ndarray | None, target: int, confidence: float = 0.99, steps: int = 60,
         seed: int = 0) -> Fooling:
    """From x (C, H, W; None: from uniform noise) to an input with p(target) >=
    confidence: for each L-infinity budget in turn (pixel units; unbounded from noise),
    `steps` of signed-gradient ascent on log p(target), projected on the budget and the
    valid range; the first budget that reaches the confidence is kept."""
    head.check_label(target)
    low, high = pre.input_range()
    net.set_batch(1)
    from_noise = x is None
    if from_noise:
        rng = np.random.default_rng(seed)
        x = (low + (high - low) * rng.random(low.shape)).astype(np.float32)
    obj = objectives.log_probability(head.key, target, head.softmaxed)
    p0 = _probability(net, head, x, target)
    unit = float(pre.pixel_units(np.ones(1))[0])          # input units per pixel unit
    best = None
    for budget in ([None] if from_noise else BUDGETS):
        eps = None if budget is None else budget / unit * (1 - 1e-5)   # float32 rounding stays inside
        adv = x.copy()
        step = (eps if eps is not None else float(np.max(high - low)) / 50) / 8
        for _ in range(steps if budget is not None else 10 * steps):
            _, g = gradient(net, obj, adv)
            adv = adv + step * np.sign(g)
            if eps is not None:
                adv = np.clip(adv, x - eps, x + eps)
            adv = np.clip(adv, low, high).astype(np.float32)
            if budget is None and _probability(net, head, adv, target) >= confidence:
                break
        p = _probability(net, head, adv, target)
        best = (adv, p)
        if p >= confidence:
            break
    adv, p = best
    if p < confidence:
        raise ZfcaffeError(f"no input within an L-infinity budget of {BUDGETS[-1]} pixels made p(class {target}) "
                           f"reach {confidence:g} (reached {p:.3g}); try more --steps")
    d = pre.pixel_units(adv - x)
    return Fooling(target, x, adv, p, p0, float(np.abs(d).max()) if not from_noise else float("nan"),
                   float(np.linalg.norm(d)) if not from_noise else float("nan"))
