"""The backward engine: project layer units back to the input, through the
recorded forward pass. Three modes, which differ only at rectifiers (and LRN):

  deconvnet  Zeiler & Fergus (2013): a ReLU passes relu(signal from above); LRN
             passes the signal through; max pooling routes through the recorded
             switches; every other layer applies its adjoint (convolution: the
             transposed filters, without biases).
  backprop   Simonyan et al. (2014) saliency: the true gradient everywhere.
  guided     Springenberg et al. (2015): at a ReLU, signal * (input > 0) * (signal > 0);
             the true gradient elsewhere.

Each layer's rule is its `backward` method (zfcaffe/layers/); this module walks the
graph and keeps the bookkeeping: which rows of the forward batch each projection
belongs to, and the sum of the signals that reach a blob from several consumers.
"""
from __future__ import annotations

import numpy as np

from .errors import ZfcaffeError

MODES = ("deconvnet", "backprop", "guided")


class BackwardContext:
    """What a layer's backward rule may read: the mode, the forward values of the
    rows being projected, the max-pool switches of those rows, and the rounding bound
    of any recorded value (zfcaffe/rounding.py)."""

    def __init__(self, net, items: np.ndarray, mode: str, flag_rounding: bool = True):
        self.net, self.items, self.mode = net, items, mode
        #: False: nobody reads the near-tie flags (an optimisation's gradient steps), so the
        #: rounding bounds are not computed: decisions are flagged only at exact ties
        self.flag_rounding = flag_rounding
        # every row of the batch, in order: the recorded arrays serve as they are
        rows = next(iter(net.layer_outputs.values())).shape[0] if net.layer_outputs else -1
        self._whole = len(items) == rows and bool(np.all(items == np.arange(rows)))
        self._cache: dict[str, np.ndarray] = {}
        self.near_ties: dict[str, set] = {}

    def note_near_ties(self, layer_name: str, windows: list[tuple[int, int, int, int]]) -> None:
        self.near_ties.setdefault(layer_name, set()).update(windows)

    def bound(self, key: str) -> np.ndarray:
        """How far the recorded value of `key` (rows as data()) may lie from the exact
        one: an elementwise bound propagated from float32's rounding, computed the first
        time a backward pass after a forward pass asks."""
        want = self.data(key).shape
        if not self.flag_rounding:
            return np.zeros(want, np.float32)
        from .rounding import bounds_for
        b = bounds_for(self.net, key, self.items)
        if b.shape != want:      # a blob not indexed by the batch (a fork's shared map): flag every unit
            b = np.full(want, np.inf, np.float32)
        return b

    def check_decision(self, layer_name: str, x: np.ndarray, threshold: float, signal: np.ndarray,
                       bound: "np.ndarray | str") -> None:
        """Note the units where an elementwise rule compared x with a threshold (ReLU's
        x > 0, Clip's bounds), the signal is not zero, and another rounding of the
        forward pass may take the comparison the other way: |x - threshold| <= MARGIN x
        bound (bound > 0). There float rounding decided, as at a max-pool near-tie.
        `bound`: an array, or the key whose bound() it is (computed only if signal
        reaches the rule)."""
        from .kernels import mark_near_decisions  # Numba loads with the first backward pass
        from .rounding import MARGIN

        def flat(a):
            try:
                return np.ascontiguousarray(np.broadcast_to(a, x.shape), np.float32).reshape(-1)
            except ValueError:   # a bound shaped otherwise: no bound known, flag where signal passes
                return np.full(x.size, np.inf, np.float32)
        if not self.flag_rounding or not np.any(signal):
            return
        if isinstance(bound, str):
            bound = self.bound(bound)
        marks = np.zeros(x.shape, np.uint8)
        if mark_near_decisions(flat(x), np.float32(threshold), flat(signal), flat(bound), MARGIN,
                               marks.reshape(-1)):
            self.note_near_ties(layer_name, [(int(self.items[u[0]]),) + tuple(int(i) for i in u[1:])
                                             for u in zip(*np.nonzero(marks))])

    def full(self, key: str) -> np.ndarray:
        net = self.net
        if key in net.layer_outputs:
            return net.layer_outputs[key]
        if key in net._input_data:
            return net._input_data[key]
        raise ZfcaffeError(f"no forward value for '{key}'; run net.forward(...) first")

    def data(self, key: str) -> np.ndarray:
        if key not in self._cache:
            full = self.full(key)
            self._cache[key] = full if self._whole and len(full) == len(self.items) else full[self.items]
        return self._cache[key]

    def switches(self, layer_name: str) -> np.ndarray:
        if layer_name not in self.net.switches:
            raise ZfcaffeError(f"no recorded switches for '{layer_name}'; run net.forward(...) first")
        full = self.net.switches[layer_name]
        return full if self._whole and len(full) == len(self.items) else full[self.items]


def resolve_key(net, layer_or_key: str) -> str:
    """The key to project from: a key as it is, a one-output layer's own output (before
    its in-place layers), or a Caffe blob name's final value (Graph.resolve)."""
    return net.graph.resolve(layer_or_key, "a layer or blob to project from")


#: layers whose output rows are ROIs (rows of their second input), not images
ROI_TYPES = ("ROIPooling", "PSROIPooling")


def roi_layer_of(net, key: str):
    """The ROI layer whose rows `key`'s rows are (the last ROIPooling / PSROIPooling it is
    computed from, where `key` has as many rows as it: Fast R-CNN's fc7, cls_score), or None
    for a key whose rows are images."""
    g = net.graph
    need = {key}
    for layer in reversed(g.layers):
        if need.isdisjoint(layer.tops):
            continue
        if layer.type in ROI_TYPES:
            return layer if g.shapes[key] and g.shapes[key][0] == g.shapes[layer.tops[0]][0] else None
        need.update(layer.bottoms)
    return None


def image_of(net, key: str, row: int) -> int:
    """The input image row `row` of `key` belongs to: the row itself, or for ROI rows the
    ROI's batch index, column 0 of the rois blob its ROI layer reads (truncated to an
    integer, as the forks' kernels take it)."""
    layer = roi_layer_of(net, key)
    if layer is None:
        return int(row)
    rois_key = layer.bottoms[1]
    rois = net._input_data[rois_key] if rois_key in net.graph.inputs else net.layer_outputs[rois_key]
    return int(np.asarray(rois, np.float32).reshape(-1, 5)[row, 0])


def seed_diffs(net, key: str, units, values) -> tuple[np.ndarray, np.ndarray]:
    """The top diff of each projection: one unit (n, c, y, x) / (n, c) holding its own
    activation (or the given value), all else zero. A shorter index, e.g. (n, c) on a
    4-D blob, seeds the whole feature map with its activations."""
    act = net.layer_outputs[key]
    rank = act.ndim
    try:
        units = [tuple(int(i) for i in u) for u in units]
    except (TypeError, ValueError):
        raise ZfcaffeError(f"units {list(units)[:3]}: expected index tuples (n, c[, y, x]) of '{key}'") from None
    for u in units:
        if not 1 <= len(u) <= rank or any(not 0 <= i < s for i, s in zip(u, act.shape)):
            raise ZfcaffeError(f"unit {list(u)} is outside '{key}' of shape {list(act.shape)}")
    items = np.array([u[0] for u in units], dtype=np.int64)
    diffs = np.zeros((len(units),) + act.shape[1:], np.float32)
    for r, u in enumerate(units):
        v = None if values is None else values[r]
        diffs[(r,) + u[1:]] = act[u] if v is None else v
    return diffs, items


def backward(net, diffs: dict[str, np.ndarray], mode: str = "backprop", items=None,
             stop_at: str | None = None, layers: tuple[int, int] | None = None,
             needs_backward=None, flag_rounding: bool = True) -> dict[str, np.ndarray]:
    """The general backward pass through the recorded forward pass.

    diffs: blob key -> its top diff, one row per entry of `items` (default: every row
    of the forward batch). The signal goes down from the last layer that produced a
    seeded key, through every layer below it (or the index range `layers`, inclusive,
    of net.graph.layers), down to the inputs or, with `stop_at`, to that key (the
    layers below its producer are not run). Where a key feeds several layers, their
    diffs are summed (Caffe's Split). `needs_backward(layer)` False skips a layer, as
    Caffe skips layers whose bottoms need no diff. Returns the diff of every key the
    signal reached, the seeds included. flag_rounding=False: no near-decision flags but
    exact ties (no rounding bounds computed), for gradient steps nobody reads flags of.
    """
    if mode not in MODES:
        raise ZfcaffeError(f"mode '{mode}' is not one of {', '.join(MODES)}")
    g = net.graph
    for key, d in diffs.items():
        if key not in g.shapes:
            raise ZfcaffeError(f"'{key}' is not a blob key of the net")
    first = next(iter(diffs.values())) if diffs else None
    rows = len(first) if first is not None else 0
    items = np.arange(rows, dtype=np.int64) if items is None else np.asarray(items, np.int64)
    ctx = BackwardContext(net, items, mode, flag_rounding)
    order = {k: i for i, l in enumerate(g.layers) for k in l.tops}
    hi = max((order[k] for k in diffs if k in order), default=-1) if layers is None else layers[1]
    lo = 0 if layers is None else layers[0]
    if stop_at is not None:
        if stop_at not in order and stop_at not in g.inputs:
            raise ZfcaffeError(f"stop_at '{stop_at}' is not a blob key of the net")
        lo = max(lo, order.get(stop_at, -1) + 1)
    signal = {k: np.asarray(d, np.float32) for k, d in diffs.items()}
    reached = dict(signal)
    for layer in reversed(g.layers[lo:hi + 1]):
        if layer.is_input or (needs_backward is not None and not needs_backward(layer)):
            continue
        tops = [signal.pop(t, None) for t in layer.tops]
        if all(t is None for t in tops):
            continue
        for bottom, d in zip(layer.bottoms, layer.backward(ctx, tops)):
            if d is None:
                continue
            d = np.asarray(d, dtype=np.float32)
            signal[bottom] = signal[bottom] + d if bottom in signal else d
            reached[bottom] = signal[bottom]
    net.last_near_ties = {k: sorted(v) for k, v in ctx.near_ties.items()}
    return reached


def project_units(net, layer_or_key: str, units, mode: str = "deconvnet", values=None,
                  input_name: str | None = None) -> np.ndarray:
    """Project each unit to the input; returns (len(units), C, H, W)."""
    if mode not in MODES:
        raise ZfcaffeError(f"mode '{mode}' is not one of {', '.join(MODES)}")
    key = resolve_key(net, layer_or_key)
    if key not in net.layer_outputs:
        raise ZfcaffeError(f"no recorded forward value for '{key}'; run net.forward(...) first")
    target = input_name or net.inputs[0]
    diffs, items = seed_diffs(net, key, units, values)
    out = backward(net, {key: diffs}, mode, items).get(target)
    if out is None:
        return np.zeros((len(items),) + tuple(net.graph.inputs[target][1:]), np.float32)
    return out
