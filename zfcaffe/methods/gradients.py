"""The one gradient helper under every attribution method: seed diffs on any blobs
of a recorded forward pass, take them back to the input (or any blob) in one of the
engine's modes, optionally averaged over noisy copies of the input (SmoothGrad)."""
from __future__ import annotations

import numpy as np

from ..errors import ZfcaffeError


def score_key(net, head) -> str:
    """The blob holding the class scores before the softmax: the Softmax's input when
    the class output is a Softmax layer, else the class output itself."""
    layer = net.graph.producer(head.key)
    return layer.bottoms[0] if layer.type == "Softmax" else head.key


def one_hot(shape, label: int) -> np.ndarray:
    d = np.zeros(shape, np.float32)
    d.reshape(shape[0], -1)[:, label] = 1
    return d


def record_with_label(net, x: np.ndarray, head, label: int | None = None) -> int:
    """Run x (1, C, H, W) forward (recording); the class asked for (checked against the
    class output) or, without one, the top class."""
    net.set_batch(1)
    net.forward(**{net.inputs[0]: x})
    if label is None:
        label = int(net.layer_outputs[head.key].reshape(1, -1)[0].argmax())
    head.check_label(label)
    return label


def gradients(net, x: np.ndarray, seeds, mode: str = "backprop", keys=None, smooth: int = 0,
              noise: float = 0.15, seed: int = 0, recorded: bool = False) -> dict[str, np.ndarray]:
    """Run x (1, C, H, W) forward (recording; skipped when `recorded` says the net has
    just run x), seed `seeds(net) -> {key: diff}` and go backward in `mode`, only as
    far down as the lowest of `keys` needs; returns the diffs of `keys` (default: the
    input).

    smooth=n > 0: SmoothGrad (Smilkov et al.): the average over n copies of x with
    Gaussian noise of standard deviation `noise` times the input's range."""
    input_key = net.inputs[0]
    keys = list(keys or [input_key])
    order = {k: i for i, l in enumerate(net.graph.layers) for k in l.tops}
    lowest = min(keys, key=lambda k: order.get(k, -1))
    stop = lowest if lowest not in net.graph.inputs else None
    net.set_batch(1)

    def once(xi, run=True):
        if run:
            net.forward(**{input_key: xi})
        diffs = net.backward(seeds(net), mode, stop_at=stop, flag_rounding=False)   # no one reads flags here
        missing = [k for k in keys if k not in diffs]
        if missing:
            raise ZfcaffeError(f"the signal does not reach {', '.join(missing)} from the seeded blobs")
        return {k: diffs[k] for k in keys}
    if smooth <= 0:
        return once(x, not recorded)
    rng = np.random.default_rng(seed)
    sigma = noise * float(x.max() - x.min())
    total = {k: 0 for k in keys}
    for _ in range(smooth):
        g = once((x + rng.normal(0, sigma, x.shape)).astype(np.float32))
        total = {k: total[k] + g[k] for k in keys}
    net.forward(**{input_key: x})          # leave the net recorded on x itself
    return {k: v / smooth for k, v in total.items()}
