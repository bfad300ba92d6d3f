"""Occlusion sensitivity (Zeiler & Fergus Fig. 7): a grey square slid over the image;
at each position, (b) the total activation of the feature map that responds most
to the unoccluded image, (d) the probability of the correct class, (e) the most
probable class; and (c) that map's projection for a few occluder positions. Over a
dataset (scan), the same maps for every image, on the local or the Ray engine.
"Grey" is the mean pixel: zero in the net's input after mean subtraction."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..imaging import signed_to_rgb
from ..errors import ZfcaffeError
from ..scan import Engine, Job
from .heads import require_class_head
from .common import progress, strongest_units


@dataclasses.dataclass
class Occlusion:
    layer: str
    feature_map: int
    label: int
    positions_y: np.ndarray        # top-left corners of the occluder
    positions_x: np.ndarray
    size: int
    activation: np.ndarray         # (ny, nx) total activation of the map
    probability: np.ndarray        # (ny, nx) of the label
    best_class: np.ndarray         # (ny, nx)
    unoccluded_activation: float
    unoccluded_probability: float
    image: np.ndarray              # RGB (H, W, 3) as the net sees it
    projections: list              # [(y, x, projection RGB)]

    def arrays(self) -> dict[str, np.ndarray]:
        return {"activation": self.activation, "probability": self.probability, "best_class": self.best_class,
                "positions_y": self.positions_y, "positions_x": self.positions_x}


def occluder_grid(net, layer_key: str, size: int, stride: int) -> tuple[int, np.ndarray, np.ndarray]:
    """(size, top-left ys, top-left xs) of the occluder positions, checked against the net."""
    grid = input_grid(net, size, stride)
    if len(net.graph.shapes[layer_key]) != 4:
        raise ZfcaffeError(f"layer '{layer_key}' has shape {list(net.graph.shapes[layer_key])}; occlusion follows a "
                           "feature map, expected a spatial layer (N x C x H x W)")
    return grid


def input_grid(net, size: int, stride: int) -> tuple[int, np.ndarray, np.ndarray]:
    """(size, top-left ys, top-left xs) of occluder positions over the whole input."""
    h, w = net.graph.inputs[net.inputs[0]][2:]
    size = size or max(4, h // 5)
    stride = stride or max(1, size // 2)
    if not 1 <= size <= min(h, w):
        raise ZfcaffeError(f"--size {size}: the occluder must fit the {h}x{w} input")
    return size, np.arange(0, h - size + 1, stride), np.arange(0, w - size + 1, stride)


def occluded_batch(x0: np.ndarray, chunk, size: int, rows: int) -> np.ndarray:
    """`rows` copies of x0 (C, H, W), copy i with the occluder (zeros: the mean, after its
    subtraction) at chunk[i] = (y, x); copies past the chunk left whole."""
    xb = np.repeat(x0[None], rows, axis=0)
    for i, (y, x) in enumerate(chunk):
        xb[i, :, y:y + size, x:x + size] = 0
    return xb


def sweep(evaluate, x0: np.ndarray, head, layer_key: str, fmap: int, label: int, size: int, ys, xs,
          batch: int, bar=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The occluder at every position, in batches: (total activation of the map, p(label),
    most probable class), each (len(ys), len(xs)). evaluate(keys, x) runs the lean net."""
    grid = [(y, x) for y in ys for x in xs]
    acts, probs, best = [], [], []
    for start in range(0, len(grid), batch):
        chunk = grid[start:start + batch]
        out = evaluate([layer_key, head.key], occluded_batch(x0, chunk, size, batch))
        p = head.probabilities(out[head.key][:len(chunk)])
        acts.append(out[layer_key][:len(chunk), fmap].reshape(len(chunk), -1).sum(axis=1))
        probs.append(p[:, label])
        best.append(p.argmax(axis=1))
        if bar is not None:
            bar.update(len(chunk))
    shape = (len(ys), len(xs))
    return (np.concatenate(acts).reshape(shape), np.concatenate(probs).reshape(shape),
            np.concatenate(best).reshape(shape))


def _evaluator(net):
    def evaluate(keys, x):
        net.set_batch(len(x))
        return net.evaluate(keys, **{net.inputs[0]: x})
    return evaluate


def run(net, image: str, pre, layer_key: str, label: int | None = None, size: int = 0, stride: int = 0,
        batch: int = 16, n_projections: int = 3, show_progress: bool = True,
        class_output: str | None = None) -> Occlusion:
    input_name = net.inputs[0]
    size, ys, xs = occluder_grid(net, layer_key, size, stride)
    head = require_class_head(net, class_output)
    x0, rgb = pre.prepare(image)
    net.set_batch(1)
    net.forward(**{input_name: x0[None]})
    act0 = net.layer_outputs[layer_key][0]
    fmap = strongest_units(act0, 1)[0][0]
    probs0 = head.probabilities(net.layer_outputs[head.key])[0]
    label = int(probs0.argmax()) if label is None else int(label)
    head.check_label(label)
    bar = progress(len(ys) * len(xs), "occlusion", show_progress)
    activation, probability, best = sweep(_evaluator(net), x0, head, layer_key, fmap, label, size, ys, xs, batch, bar)
    bar.close()
    result = Occlusion(layer_key, fmap, label, ys, xs, size, activation, probability, best,
                       float(act0[fmap].sum()), float(probs0[label]), rgb, [])
    # (c): the occluder positions that change the map most, least, and in between
    order = np.argsort(activation.ravel())
    picks = [order[0], order[len(order) // 2], order[-1]][:n_projections]
    net.set_batch(1)
    for flat in picks:
        y, x = int(ys[flat // len(xs)]), int(xs[flat % len(xs)])
        xo = x0.copy()
        xo[:, y:y + size, x:x + size] = 0
        net.forward(**{input_name: xo[None]})
        a = net.layer_outputs[layer_key][0, fmap]
        uy, ux = np.unravel_index(int(a.argmax()), a.shape)
        p = net.project(layer_key, (0, fmap, uy, ux))[0]
        result.projections.append((y, x, signed_to_rgb(p)))
    return result


class OcclusionJob(Job):
    """One image per call: its strongest map of the layer and its class (the list's
    label, else its top-1), then the occluder swept over it in batches."""

    def __init__(self, net, pre, labels: list[int | None], layer_key: str, size: int, ys, xs, batch: int,
                 class_output: str | None):
        super().__init__(net, pre, 1)
        self.labels, self.layer_key, self.size, self.ys, self.xs = labels, layer_key, size, ys, xs
        self.occluders, self.class_output = batch, class_output

    def run(self, x: np.ndarray, real: int, start: int) -> dict[str, np.ndarray]:
        head = require_class_head(self.net, self.class_output)
        out = self.evaluate([self.layer_key, head.key], x)
        act0 = out[self.layer_key][0]
        fmap = strongest_units(act0, 1)[0][0]
        p0 = head.probabilities(out[head.key])[0]
        label = int(p0.argmax()) if self.labels[start] is None else int(self.labels[start])
        head.check_label(label)
        a, p, b = sweep(self.evaluate, x[0], head, self.layer_key, fmap, label, self.size, self.ys, self.xs,
                        self.occluders)
        return {"activation": a[None], "probability": p[None], "best_class": b[None],
                "feature_map": np.array([fmap]), "label": np.array([label]),
                "unoccluded_probability": np.array([p0[label]]), "unoccluded_activation": np.array([act0[fmap].sum()])}


@dataclasses.dataclass
class OcclusionScan:
    """Occlusion of every image of a dataset: per image (rows) its maps and numbers."""
    layer: str
    size: int
    positions_y: np.ndarray
    positions_x: np.ndarray
    values: dict                   # name -> (N, ...) array, as OcclusionJob returns them

    def arrays(self) -> dict[str, np.ndarray]:
        return {**self.values, "positions_y": self.positions_y, "positions_x": self.positions_x}

    def summary(self) -> dict[str, np.ndarray]:
        """Per image: the lowest p(label) over the occluder positions, and the share of
        positions where the top-1 class is no longer the label."""
        p = self.values["probability"].reshape(len(self.values["label"]), -1)
        best = self.values["best_class"].reshape(p.shape)
        return {"lowest_probability": p.min(axis=1),
                "changed_share": (best != self.values["label"][:, None]).mean(axis=1)}


def scan(net, entries: list[tuple[str, int | None]], pre, layer_key: str, size: int = 0, stride: int = 0,
         batch: int = 16, engine: Engine | None = None, class_output: str | None = None,
         show_progress: bool = True) -> OcclusionScan:
    """Occlusion of every image (path, label) on `engine`; a label of None takes the
    image's top-1."""
    size, ys, xs = occluder_grid(net, layer_key, size, stride)
    head = require_class_head(net, class_output)
    for path, label in entries:     # here, not in a worker: a wrong label is one clear line
        if label is not None and not 0 <= label < head.classes:
            raise ZfcaffeError(f"{path}: label {label}; the class output '{head.blob}' has classes 0 to "
                               f"{head.classes - 1}")
    job = OcclusionJob(net, pre, [label for _, label in entries], layer_key, size, ys, xs, batch, class_output)
    parts: dict[str, list] = {}
    bar = progress(len(entries), "occlusion", show_progress, unit="img")
    for _, real, result in (engine or Engine()).map(job, [p for p, _ in entries]):
        for k, v in result.items():
            parts.setdefault(k, []).append(v)
        bar.update(real)
    bar.close()
    return OcclusionScan(layer_key, size, ys, xs, {k: np.concatenate(v) for k, v in parts.items()})


# -- one detection's score (occlusion --detection K) -----------------------------------------------------------
@dataclasses.dataclass
class DetectionOcclusion:
    """The paper's occlusion map for one detection: its score (same prior / ROI / anchor
    and class as the unoccluded detection) at every occluder position, and how much of
    its box each position hides."""
    detection: object              # zfcaffe.analyses.detections.Detection
    positions_y: np.ndarray
    positions_x: np.ndarray
    size: int
    score: np.ndarray              # (ny, nx)
    hidden: np.ndarray             # (ny, nx) share of the box under the occluder
    unoccluded_score: float
    image: np.ndarray              # RGB (H, W, 3) as the net sees it

    def arrays(self) -> dict[str, np.ndarray]:
        d = self.detection
        return {"score": self.score, "hidden": self.hidden, "unoccluded_score": np.array(self.unoccluded_score),
                "positions_y": self.positions_y, "positions_x": self.positions_x, "size": np.array(self.size),
                "detection/index": np.array(d.index), "detection/label": np.array(d.label),
                "detection/box": np.array(d.box, np.float64), "detection/unit_index": np.array(d.unit.index),
                **{f"detection/extra/{k}": np.array(v, np.int64) for k, v in d.extra.items()}}


def run_detection(net, image: str, pre, k: int, size: int = 0, stride: int = 0, batch: int = 16, labels=None,
                  show_progress: bool = True) -> DetectionOcclusion:
    """Occlusion of detection k (its index in detections(net, threshold=0): best first)
    of one image: a grey square slid over the input, the detection's score read at
    each position with zfcaffe.analyses.detections.detection_scores."""
    from . import detections as dets
    head = dets.detector_head(net)
    if head is None:
        raise ZfcaffeError(f"{net.graph.path}: --detection {k}: the net has no detection output "
                           "(DetectionOutput, a YOLO output or an R-CNN head)")
    size, ys, xs = input_grid(net, size, stride)
    if head.kind in ("rcnn", "rfcn"):
        batch = 1                  # their proposal layers and im_info take one image at a time
    input_name = net.inputs[0]
    x0, rgb = pre.prepare(image)
    net.set_batch(1)
    net.forward(**{input_name: x0[None]})
    found = [d for d in dets.detections(net, threshold=0.0, labels=labels) if d.item == 0]
    if not 0 <= k < len(found):
        raise ZfcaffeError(f"{image}: --detection {k}, but the net finds {len(found)} detection(s) in it"
                           + (f"; expected 0 to {len(found) - 1}" if found else ""))
    det = found[k]
    keys = dets.score_keys(net, det)
    base = float(dets.detection_scores(net, det, {key: net.layer_outputs[key] for key in keys})[0])
    grid = [(y, x) for y in ys for x in xs]
    bar = progress(len(grid), "occlusion", show_progress)
    scores = []
    for start in range(0, len(grid), batch):
        chunk = grid[start:start + batch]
        net.set_batch(len(chunk))
        values = net.evaluate(keys, **{input_name: occluded_batch(x0, chunk, size, len(chunk))})
        scores.append(dets.detection_scores(net, det, values)[:len(chunk)])
        bar.update(len(chunk))
    bar.close()
    net.set_batch(1)
    bx0, by0, bx1, by1 = det.box
    area = max((bx1 - bx0) * (by1 - by0), 1e-9)
    hidden = np.array([max(0.0, min(x + size, bx1) - max(x, bx0)) * max(0.0, min(y + size, by1) - max(y, by0)) / area
                       for y, x in grid])
    shape = (len(ys), len(xs))
    return DetectionOcclusion(det, ys, xs, size, np.concatenate(scores).reshape(shape), hidden.reshape(shape), base,
                              rgb)
