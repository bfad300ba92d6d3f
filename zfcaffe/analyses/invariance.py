"""Invariance (Zeiler & Fergus Fig. 5): vertical translation, scaling and rotation of
an image; the Euclidean distance between the feature vectors of the original and
the transformed image at two layers, and the probability of the true class."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import ZfcaffeError
from .heads import require_class_head


def default_sweeps(height: int) -> dict:
    """The paper's ranges: +-60 px of a 224 px input (scaled to this input), scale
    1 to 1.8, a full turn."""
    shift = max(1, round(0.27 * height))
    return {
        "vertical translation (px)": np.unique(np.round(np.linspace(-shift, shift, 13)).astype(int)),
        "scale": np.round(np.arange(1.0, 1.81, 0.1), 2),
        "rotation (degrees)": np.arange(0, 361, 15),
    }


def transform(img: np.ndarray, kind: str, amount: float) -> np.ndarray:
    """One transform of an RGB [0, 1] image of the input size, in float (no 8-bit
    rounding); uncovered pixels are mid grey. The identity returns the image as is."""
    from PIL import Image
    h, w = img.shape[:2]
    identity = (amount == 0 if kind.startswith("vertical") else amount == 1 if kind == "scale"
                else amount % 360 == 0)
    if identity:
        return img

    def one(channel: np.ndarray) -> np.ndarray:
        pil = Image.fromarray(channel.astype(np.float32), mode="F")
        if kind.startswith("vertical"):
            out = pil.transform(pil.size, Image.AFFINE, (1, 0, 0, 0, 1, -amount), fillcolor=0.5)
        elif kind == "scale":
            big = pil.resize((round(w * amount), round(h * amount)), Image.BILINEAR)
            x0, y0 = (big.size[0] - w) // 2, (big.size[1] - h) // 2
            out = big.crop((x0, y0, x0 + w, y0 + h))
        else:
            out = pil.rotate(amount, resample=Image.BILINEAR, fillcolor=0.5)
        return np.asarray(out, np.float32)

    return np.stack([one(img[:, :, c]) for c in range(img.shape[2])], axis=2)


@dataclasses.dataclass
class Invariance:
    layers: list[str]
    label: int
    sweeps: dict            # kind -> amounts
    distances: dict         # kind -> (len(layers), n) Euclidean distances
    probability: dict       # kind -> (n,)

    def arrays(self) -> dict[str, np.ndarray]:
        out = {f"{k}/distance/{kind.split()[0]}": self.distances[kind][i]
               for i, k in enumerate(self.layers) for kind in self.sweeps}
        out.update({f"probability/{kind.split()[0]}": v for kind, v in self.probability.items()})
        out.update({f"amounts/{kind.split()[0]}": np.asarray(v) for kind, v in self.sweeps.items()})
        return out


def run(net, image: str, pre, layer_keys: list[str], label: int | None = None, sweeps=None,
        class_output: str | None = None) -> Invariance:
    input_name = net.inputs[0]
    shape = net.graph.inputs[input_name]
    sweeps = sweeps or default_sweeps(shape[2])
    if str(image).lower().endswith(".npy"):
        raise ZfcaffeError(f"{image}: invariance shifts, scales and rotates an image; expected an image file, "
                           "not a .npy input")
    head = require_class_head(net, class_output)
    pkey = head.key
    _, rgb = pre.prepare(image)
    keys = list(layer_keys) + [pkey]

    def features(imgs: list[np.ndarray]) -> dict[str, np.ndarray]:
        xb = np.stack([pre.transform(i) for i in imgs])
        net.set_batch(len(imgs))
        return net.evaluate(keys, **{input_name: xb})

    base = features([rgb])
    p0 = head.probabilities(base[pkey])[0]
    label = int(p0.argmax()) if label is None else int(label)
    head.check_label(label)
    distances, probability = {}, {}
    for kind, amounts in sweeps.items():
        out = features([transform(rgb, kind, float(a)) for a in amounts])
        distances[kind] = np.array([np.linalg.norm((out[k] - base[k]).reshape(len(amounts), -1), axis=1)
                                    for k in layer_keys])
        probability[kind] = head.probabilities(out[pkey])[:, label]
    return Invariance(list(layer_keys), label, dict(sweeps), distances, probability)
