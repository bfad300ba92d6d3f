"""Feature inversion (Mahendran & Vedaldi 2015): the input whose code at a layer is
closest to a given image's, under a total-variation prior and an alpha-norm prior;
reports the relative feature distance ||phi(x) - phi0|| / ||phi0|| it reaches."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..optvis import objectives
from ..optvis.param import PixelParam
from ..optvis.render import Adam, render
from ..optvis.transforms import jitter


@dataclasses.dataclass
class Inversion:
    layer: str
    target: np.ndarray           # the original input (C, H, W)
    image: np.ndarray            # the reconstruction
    distance: float              # relative feature distance reached
    values: list[float]

    def arrays(self) -> dict[str, np.ndarray]:
        return {"target": self.target, "image": self.image, "distance": np.array(self.distance),
                "values": np.array(self.values)}


def invert(net, x: np.ndarray, layer: str, low: np.ndarray, high: np.ndarray, steps: int = 300,
           tv: float = 0.2, alpha: float = 6.0, alpha_weight: float = 1.0, lr: float | None = None,
           jitter_px: int = 0, seed: int = 0, progress: bool = False) -> Inversion:
    """Reconstruct x (C, H, W) from its code at `layer`, starting from the mean image.
    The data term is relative to the code's squared norm; the priors are normalised
    as Mahendran & Vedaldi do, by the image's area and its range B:
    tv / (H W B^2) * TV(x) + alpha_weight / (H W (B/2)^alpha) * sum |x|^alpha."""
    from ..analyses.common import shown_key
    key = shown_key(net, layer)
    input_key = net.inputs[0]
    net.set_batch(1)
    net.forward(**{input_key: x[None]})
    code = net.layer_outputs[key].copy()
    span = float(np.max(high - low))
    area = x.shape[1] * x.shape[2]
    obj = objectives.feature_match(key, code) \
        + objectives.total_variation(input_key) * (tv / (area * span ** 2)) \
        + objectives.lp_norm(input_key, alpha) * (alpha_weight / (area * (span / 2) ** alpha))
    p = PixelParam(np.clip(np.zeros_like(x), low, high), low, high)
    r = render(net, obj, p, [jitter(jitter_px)] if jitter_px else [], steps,
               Adam(lr if lr is not None else 0.01 * span), seed=seed, progress=progress, desc="invert")
    net.forward(**{input_key: r.image[None]})
    got = net.layer_outputs[key].astype(np.float64)
    distance = float(np.linalg.norm(got - code) / max(np.linalg.norm(code), 1e-30))
    return Inversion(key, x, r.image, distance, r.values)
