"""Detections, seen the Zeiler–Fergus way: which unit made a box's score, and which
pixels made that unit.

A detector's output layer (SSD's DetectionOutput, eric612's YOLO outputs, the
Fast/Faster R-CNN and R-FCN heads) is read from a recorded forward pass; each
detection is traced back to the one unit whose value decided its score:

- SSD: the prior p and class c give the position p * C + c of DetectionOutput's
  confidence input; it is walked back through the structural layers (Softmax keeps
  the position; Flatten, Reshape, Concat, Permute move it) to the head convolution's
  output (layer, channel, y, x), whose value is the class logit before the softmax.
- YOLO: the scale (bottom), anchor and cell give the class logit's unit at that
  scale's convolution (before the sigmoid); the objectness unit is in `extra`.
- R-CNN / R-FCN: the ROI row r and class c give cls_score (row r, class c), before
  the softmax.

`explain_detection` then projects that unit to the input (deconvnet / guided, as
`net.project_many`), and takes Grad-CAM of its value at a layer (by default the input
of the unit's convolution; for R-CNN the conv map under the ROI pooling). Every
coordinate is in the net's input pixels.
"""
from __future__ import annotations

import dataclasses
import weakref

import numpy as np

from ..errors import ZfcaffeError
from .common import input_hw, recorded_value

#: layers that only move values: the position of one value is followed through them
_MOVING = {"Flatten", "Reshape", "Concat", "Permute", "Split"}
_SSD, _YOLO = ("DetectionOutput",), ("Yolov3DetectionOutput", "YoloDetectionOutput")
_ROI_POOLS = ("ROIPooling", "PSROIPooling")
#: net -> (recorded rows, layer, their row_sources)
_SOURCES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
#: py-faster-rcnn tools/demo.py (rbgirshick/py-faster-rcnn@781a917b): NMS_THRESH
RCNN_NMS = 0.3


@dataclasses.dataclass
class Unit:
    key: str           # graph key of the blob (the conf conv's output, before Permute/Flatten/Softmax)
    layer: str         # the producing layer's name
    index: tuple       # (item, c, y, x) for maps, (row, c) for 2-D blobs: what project_many takes
    value: float       # its recorded value (the score before the softmax / sigmoid)
    what: str          # one line, for captions


@dataclasses.dataclass
class Detection:
    index: int         # position in the list detections() returns (score-descending)
    item: int          # batch item
    label: int         # class index as the net numbers it (SSD/R-CNN: 0 is background; YOLO: class + 1)
    name: str          # class name
    score: float
    box: tuple         # (x0, y0, x1, y1) in input pixels, floats
    output: str        # the Caffe blob (or head) it was read from
    unit: Unit         # the score's unit
    extra: dict        # kind-specific indices (prior, roi row, yolo scale/anchor/cell), all ints

    def describe(self) -> str:
        x0, y0, x1, y1 = self.box
        return (f"#{self.index} {self.name} {self.score:.3f} at ({x0:.0f}, {y0:.0f})-({x1:.0f}, {y1:.0f}), "
                f"item {self.item}: {self.unit.what} = {self.unit.value:.4g}")


@dataclasses.dataclass
class DetectorHead:
    kind: str                      # "ssd" | "yolo" | "rcnn" | "rfcn"
    layer: str                     # the output layer (SSD/YOLO) or the class Softmax (R-CNN)
    output: str                    # the Caffe blob the detections are read from
    classes: int                   # as the net counts them (SSD/R-CNN: with the background)
    background: int | None         # the background class (None for YOLO)
    score_inputs: list             # keys the scores come from (SSD: the conf input; YOLO: each scale;
                                   # R-CNN: the class probabilities)
    logits: str | None = None      # R-CNN: cls_score (before the softmax)
    rois: str | None = None        # R-CNN: the ROI blob
    bbox: str | None = None        # R-CNN: bbox_pred
    agnostic: bool = False         # R-CNN: class-agnostic box regression (bg/fg, 8 values)
    pool: str | None = None        # R-CNN: the (PS)ROIPooling layer

    def describe(self) -> str:
        what = {"ssd": "SSD DetectionOutput", "yolo": "YOLO detection output",
                "rcnn": "Fast/Faster R-CNN head", "rfcn": "R-FCN head"}[self.kind]
        return f"{what} '{self.layer}' ({self.classes} classes), read from '{self.output}'"


@dataclasses.dataclass
class DetectionTrace:
    detection: Detection
    unit: Unit
    projections: dict              # mode -> (C, H, W)
    gradcam: np.ndarray            # (H, W) in [0, 1]
    cam: np.ndarray                # (h, w) at cam_layer's resolution, rectified
    cam_layer: str                 # the graph key Grad-CAM was taken at
    neighbourhood: tuple           # (x0, y0, x1, y1) ints: the box grown by margin, clipped
    mass_in_box: float             # share of the Grad-CAM mass inside the box
    near_ties: dict                # mode -> {max-pool / ROI layer: windows decided by rounding}

    def arrays(self) -> dict[str, np.ndarray]:
        d = self.detection
        out = {"unit_index": np.array(self.unit.index, np.int64), "unit_value": np.array(self.unit.value),
               "box": np.array(d.box, np.float64), "neighbourhood": np.array(self.neighbourhood, np.int64),
               "score": np.array(d.score), "label": np.array(d.label), "item": np.array(d.item),
               "gradcam": self.gradcam.astype(np.float32), "cam": self.cam.astype(np.float32),
               "mass_in_box": np.array(self.mass_in_box)}
        out.update({f"extra/{k}": np.array(v, np.int64) for k, v in d.extra.items()})
        out.update({f"projection/{m}": p.astype(np.float32) for m, p in self.projections.items()})
        return out


# -- finding the head -----------------------------------------------------------------

def _downstream(g, starts) -> set:
    """Every key computed from the keys `starts` (themselves included)."""
    seen = set(starts)
    for layer in g.compute_layers:
        if any(b in seen for b in layer.bottoms):
            seen.update(layer.tops)
    return seen


def detector_head(net) -> DetectorHead | None:
    """The net's detection output, or None when it has none."""
    g = net.graph
    for layer in reversed(g.compute_layers):
        if layer.type in _SSD:
            return DetectorHead("ssd", layer.name, g.name_of(layer.tops[0]), layer.num_classes, layer.background,
                                [layer.bottoms[1]])
        if layer.type in _YOLO:
            return DetectorHead("yolo", layer.name, g.name_of(layer.tops[0]), layer.num_classes, None,
                                list(layer.bottoms if layer.type == "Yolov3DetectionOutput" else layer.bottoms[:2]))
    pools = [l for l in g.compute_layers if l.type in _ROI_POOLS]
    if not pools:
        return None
    below = _downstream(g, [t for l in pools for t in l.tops])
    softmaxes = [l for l in g.compute_layers if l.type == "Softmax" and l.tops[0] in below]
    if not softmaxes:
        return None
    sm = softmaxes[-1]
    prob = sm.tops[0]
    after = [l for l in g.compute_layers if l.bottoms == [prob] and l.type in ("Reshape", "Flatten")]
    if after:                                   # R-FCN: cls_prob_pre -> Reshape -> cls_prob
        prob = after[-1].tops[0]
    classes = int(np.prod(g.shapes[sm.tops[0]][1:]))
    bbox = g.blob_of.get("bbox_pred")
    if bbox is None or bbox not in below:
        cands = [k for k in g.outputs() if k in below and k != prob and int(np.prod(g.shapes[k][1:])) in
                 (4 * classes, 8)]
        bbox = cands[-1] if cands else None
    if bbox is None:
        return None
    agnostic = int(np.prod(g.shapes[bbox][1:])) == 8 and classes != 2
    pool = next(l for l in pools if any(t in _downstream(g, l.tops) for t in sm.bottoms))
    kind = "rfcn" if pool.type == "PSROIPooling" else "rcnn"
    return DetectorHead(kind, sm.name, g.name_of(prob), classes, 0, [prob], logits=sm.bottoms[0],
                        rois=pool.bottoms[1], bbox=bbox, agnostic=agnostic, pool=pool.name)


def _require_head(net) -> DetectorHead:
    head = detector_head(net)
    if head is None:
        raise ZfcaffeError(f"{net.graph.path}: the net has no detection output (expected DetectionOutput, "
                           "Yolov3DetectionOutput / YoloDetectionOutput, or a ROIPooling / PSROIPooling head)")
    return head


# -- recorded values -----------------------------------------------------------------

def detection_labels(net, head: DetectorHead, labels):
    """A function class index -> name (class indices as the scores number them)."""
    from ..labels import BUILT_IN, Labels, resolve_labels
    if isinstance(labels, Labels):
        return labels
    if isinstance(labels, (list, tuple)):
        return Labels(list(labels), "given")
    import os
    n = head.classes
    channels = int(net.graph.inputs[net.inputs[0]][1])
    if n == 2 and head.background == 0:
        # one class against the background: named by --labels (one name, two, or a file) or "object"
        if labels is None:
            return Labels(["background", "object"], "one class against the background (--labels NAME to name it)")
        if labels != "none" and "," not in labels and not os.path.exists(labels) and labels not in BUILT_IN:
            return Labels(["background", labels], f"given with --labels ({labels}), class 1")
        try:
            return resolve_labels(labels, 2, channels)
        except ZfcaffeError:
            one = resolve_labels(labels, 1, channels)
            return Labels(["background"] + one.names, f"{one.source} (class 1)")
    return resolve_labels(labels, n, channels)


# -- following one value back -----------------------------------------------------------

def walk_back_many(net, key: str, flats, through=("Softmax",)) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Follow positions `flats` (over the whole blob, items included) of `key` down through
    layers that only move values (Flatten, Reshape, Concat, Permute, Split; and the types
    in `through`, which keep the position) to the first keys a computing layer produced:
    [(key, which of flats arrive there, their positions there)], all at once."""
    g = net.graph
    producer = {t: l for l in g.layers for t in l.tops}
    shape = lambda k: tuple(g.shapes[k])   # noqa: E731  (what the recorded pass gave: host layers reshape the graph)
    out = []

    def down(key, which, flat):
        while key not in g.inputs:
            layer = producer[key]
            if layer.type not in _MOVING and layer.type not in through:
                break
            if layer.type == "Concat":
                idx = list(np.unravel_index(flat, shape(key)))
                a = layer.axis
                sizes = [shape(b)[a] for b in layer.bottoms]
                part = np.searchsorted(np.cumsum(sizes), idx[a], side="right")
                starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
                for i, b in enumerate(layer.bottoms):
                    sel = part == i
                    if sel.any():
                        sub = [v[sel] for v in idx]
                        sub[a] = sub[a] - starts[i]
                        down(b, which[sel], np.ravel_multi_index(sub, shape(b)))
                return
            if layer.type == "Permute":
                idx = np.unravel_index(flat, shape(key))
                src = [None] * len(idx)
                for k, o in enumerate(layer.order):
                    src[o] = idx[k]
                flat = np.ravel_multi_index(src, shape(layer.bottoms[0]))
            key = layer.bottoms[0]   # reshapes keep the C-order position; Softmax / Split keep it outright
        out.append((key, which, np.asarray(flat, np.int64)))

    flats = np.asarray(flats, np.int64).reshape(-1)
    down(key, np.arange(len(flats)), flats)
    return out


def walk_back(net, key: str, flat: int, through=("Softmax",)) -> tuple[str, int]:
    """walk_back_many for one position: (key, position there)."""
    (k, _, at), = walk_back_many(net, key, [flat], through)
    return k, int(at[0])


def _unit_at(net, key: str, flat: int, what: str) -> Unit:
    v = recorded_value(net, key)
    index = tuple(int(i) for i in np.unravel_index(flat, v.shape))
    return Unit(key, net.graph.producer(key).name, index, float(v[index]), what)


def _where(index) -> str:
    if len(index) == 4:
        return f"channel {index[1]}, y {index[2]}, x {index[3]}"
    return f"row {index[0]}, column {index[1]}"


# -- the detections -------------------------------------------------------------------------

def detections(net, threshold: float = 0.5, top: int | None = None, labels=None) -> list[Detection]:
    """The detections of the recorded forward pass with score >= threshold, best first
    (at most `top`), each with the unit its score came from. labels: None (automatic), a
    --labels spec, a list of names or a zfcaffe.labels.Labels."""
    head = _require_head(net)
    names = detection_labels(net, head, labels)
    found = {"ssd": _ssd, "yolo": _yolo, "rcnn": _rcnn, "rfcn": _rcnn}[head.kind](net, head, names, threshold)
    order = sorted(range(len(found)), key=lambda i: -found[i].score)     # stable: the output's order on ties
    out = [found[i] for i in order][:top]
    for i, d in enumerate(out):
        d.index = i
    return out


def _row_sources(net, layer, bottoms):
    """The output layer's row_sources on the recorded values, kept while the recorded rows
    are the same array (the detections of one forward pass are read many times)."""
    rows = recorded_value(net, layer.tops[0])
    memo = _SOURCES.get(net)
    if memo is not None and memo[0] is rows and memo[1] == layer.name:
        return memo[2]
    sources = layer.row_sources([recorded_value(net, b) for b in bottoms])
    _SOURCES[net] = (rows, layer.name, sources)
    return sources


def _ssd(net, head, names, threshold):
    layer = net.layer(head.layer)
    rows = recorded_value(net, layer.tops[0]).reshape(-1, 7)
    sources = _row_sources(net, layer, layer.bottoms)
    P, C = layer.num_priors, layer.num_classes
    h, w = input_hw(net)
    keep = np.nonzero(rows[:len(sources), 2] >= threshold)[0] if len(sources) else np.zeros(0, np.int64)
    item, label, prior = (sources[keep, i] for i in range(3))
    flats = item * P * C + prior * C + label
    units = [None] * len(keep)
    for key, which, at in walk_back_many(net, layer.bottoms[1], flats):
        v = recorded_value(net, key)
        idx = np.unravel_index(at, v.shape)
        vals = v[idx]
        name = net.graph.producer(key).name
        for j, i in enumerate(which):
            index = tuple(int(a[j]) for a in idx)
            units[i] = Unit(key, name, index, float(vals[j]),
                            f"prior {prior[i]} ({name}, {_where(index)}): class {label[i]} logit")
    out = []
    for i, r in enumerate(keep):
        row = rows[r]
        box = (float(row[3]) * w, float(row[4]) * h, float(row[5]) * w, float(row[6]) * h)
        out.append(Detection(0, int(item[i]), int(label[i]), names(int(label[i])), float(row[2]), box, head.output,
                             units[i], {"prior": int(prior[i]), "conf_index": int(flats[i])}))
    return out


def _yolo(net, head, names, threshold):
    layer = net.layer(head.layer)
    rows = recorded_value(net, layer.tops[0]).reshape(-1, 7)
    sources = _row_sources(net, layer, head.score_inputs)
    h, w = input_hw(net)
    K = layer.num_classes
    out = []
    for row, (item, t, n, cell, k) in zip(rows, sources):
        score = float(row[2])
        if score < threshold:
            continue
        bottom = head.score_inputs[int(t)]
        v = recorded_value(net, bottom)
        depth = 5 + K if layer.type == "Yolov3DetectionOutput" else v.shape[1] // layer.num_box
        y, x = divmod(int(cell), v.shape[3])
        ch = int(n) * depth + 5 + int(k)
        key, at = walk_back(net, bottom, int(np.ravel_multi_index((int(item), ch, y, x), v.shape)), through=())
        unit = _unit_at(net, key, at, "")
        unit.what = f"scale {t} anchor {n} cell ({y}, {x}) ({unit.layer}, {_where(unit.index)}): class {k} logit"
        box = (float(row[3]) * w, float(row[4]) * h, float(row[5]) * w, float(row[6]) * h)
        out.append(Detection(0, int(item), int(row[1]), names(int(k)), score, box, head.output, unit,
                             {"scale": int(t), "anchor": int(n), "cell": int(cell), "y": y, "x": x, "class": int(k),
                              "objectness_channel": int(n) * depth + 4}))
    return out


def rcnn_boxes(net, head) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """py-faster-rcnn's im_detect (rbgirshick/py-faster-rcnn@781a917b lib/fast_rcnn/test.py;
    py-R-FCN's class-agnostic variant takes columns 4:8 for every class): (scores [R, K],
    boxes [R, 4K] in input pixels, clipped to the image, rois [R, 5])."""
    from ..layers.rcnn import bbox_transform_inv, clip_boxes
    rois = recorded_value(net, head.rois).reshape(-1, 5)
    # rows by their own first axis, R (NumPy cannot infer a -1 axis when R is 0)
    scores, deltas = (v.reshape(v.shape[0], int(np.prod(v.shape[1:])))
                      for v in (recorded_value(net, k) for k in (head.score_inputs[0], head.bbox)))
    deltas = deltas.astype(np.float32)
    boxes = bbox_transform_inv(rois[:, 1:5].astype(np.float32), deltas)   # im_scale 1: input pixels
    boxes = clip_boxes(boxes, input_hw(net))
    if head.agnostic:
        boxes = np.tile(boxes[:, 4:8], (1, scores.shape[1]))
    return scores, boxes, rois


def _rcnn(net, head, names, threshold):
    """tools/demo.py's reading (rbgirshick/py-faster-rcnn@781a917b): per class, NMS 0.3 over
    every ROI's box (lib/nms/cpu_nms.pyx, zfcaffe.layers.rcnn.nms), then the threshold."""
    from ..layers.rcnn import nms
    scores, boxes, rois = rcnn_boxes(net, head)
    logits = recorded_value(net, head.logits)
    out = []
    for c in range(scores.shape[1]):
        if c == head.background:
            continue
        dets = np.hstack([boxes[:, 4 * c:4 * c + 4], scores[:, c:c + 1]]).astype(np.float32)
        for r in nms(dets, RCNN_NMS):
            score = float(scores[r, c])
            if score < threshold:
                continue
            index = (r, c) if logits.ndim == 2 else (r, c) + (0,) * (logits.ndim - 2)
            unit = Unit(head.logits, net.graph.producer(head.logits).name, index, float(logits[index]),
                        f"ROI {r} ({net.graph.producer(head.logits).name}, row {r}, column {c}): class {c} logit")
            out.append(Detection(0, int(rois[r, 0]), c, names(c), score, tuple(float(v) for v in dets[r, :4]),
                                 head.output, unit, {"roi": int(r), "class": c}))
    return out


# -- a detection's score on other inputs (occlusion) ---------------------------------------

def score_keys(net, det: Detection) -> list[str]:
    """The blob keys `detection_scores` reads."""
    head = _require_head(net)
    if head.kind == "ssd":
        return list(head.score_inputs)
    if head.kind == "yolo":
        return [head.score_inputs[det.extra["scale"]]]
    return [head.score_inputs[0]] + ([head.rois] if head.rois not in net.graph.inputs else [])


def detection_scores(net, det: Detection, values: dict) -> np.ndarray:
    """(N,) the detection's score (same prior / anchor / ROI and class, the softmax or
    sigmoid as the net applies it) for a batch of N inputs, from values[key] for key in
    score_keys(net, det) (e.g. net.evaluate(score_keys(net, det), data=batch)). R-CNN: the
    ROIs change with the input; each item's score is that of its ROI overlapping the
    detection's ROI most; where the ROIs are an input of the net, row r of each item's copy of the
    recorded ROIs (rows r, r + R, r + 2R, ...: the caller repeats them per item)."""
    head = _require_head(net)
    keys = score_keys(net, det)
    if head.kind == "ssd":
        v = np.asarray(values[keys[0]])
        return v.reshape(v.shape[0], -1)[:, det.extra["conf_index"] % (v.size // v.shape[0])].astype(np.float64)
    if head.kind == "yolo":
        from ..layers.yolo import _exp, _sigmoid
        layer = net.layer(head.layer)
        v = np.asarray(values[keys[0]], np.float32)
        n, y, x, k = det.extra["anchor"], det.extra["y"], det.extra["x"], det.extra["class"]
        obj = _sigmoid(v[:, det.extra["objectness_channel"], y, x])
        if layer.type == "Yolov3DetectionOutput":
            return (obj * _sigmoid(v[:, det.unit.index[1], y, x])).astype(np.float64)
        depth = v.shape[1] // layer.num_box
        logits = v[:, n * depth + 5:n * depth + 5 + layer.num_classes, y, x]
        e = _exp(logits - logits.max(axis=1, keepdims=True))
        return (obj * e[:, k] / e.sum(axis=1)).astype(np.float64)
    prob = np.asarray(values[keys[0]])
    prob = prob.reshape(prob.shape[0], -1)
    c, r = det.extra["class"], det.extra["roi"]
    if len(keys) == 1:                            # the ROIs are an input: the same row
        return prob[r::len(recorded_value(net, head.rois))][:, c].astype(np.float64) if prob.shape[0] > r else \
            np.zeros(0)
    rois = np.asarray(values[keys[1]]).reshape(-1, 5)
    ref = recorded_value(net, head.rois).reshape(-1, 5)[r, 1:5]
    items = int(rois[:, 0].max()) + 1 if len(rois) else 0
    out = np.zeros(items)
    for i in range(items):
        rows = np.nonzero(rois[:, 0] == i)[0]
        if len(rows):
            best = rows[np.argmax(_iou(rois[rows, 1:5], ref))]
            out[i] = prob[best, c]
    return out


def _iou(boxes: np.ndarray, ref) -> np.ndarray:
    ix = np.clip(np.minimum(boxes[:, 2], ref[2]) - np.maximum(boxes[:, 0], ref[0]) + 1, 0, None)
    iy = np.clip(np.minimum(boxes[:, 3], ref[3]) - np.maximum(boxes[:, 1], ref[1]) + 1, 0, None)
    inter = ix * iy
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    return inter / (area + (ref[2] - ref[0] + 1) * (ref[3] - ref[1] + 1) - inter)


# -- why this detection ------------------------------------------------------------------

def cam_key(net, det: Detection, layer: str | None = None) -> str:
    """Where Grad-CAM is taken: `layer` (after its in-place layers), else the input of
    the unit's layer (SSD/YOLO), or the conv map under the ROI pooling (R-CNN)."""
    from .common import shown_key
    g = net.graph
    if layer:
        return shown_key(net, layer)
    head = _require_head(net)
    if head.kind in ("rcnn", "rfcn"):
        return net.layer(head.pool).bottoms[0]
    return g.producer(det.unit.key).bottoms[0]


def clip_box(box, width: int, height: int) -> tuple[float, float, float, float]:
    """The box clipped to the image (one pixel of slack; NaN read as 0), for drawing: a
    net with filler weights decodes boxes millions of pixels wide. The detection keeps
    the box as found."""
    b = np.nan_to_num(np.asarray(box, np.float64), nan=0.0)
    return tuple(float(v) for v in np.clip(b, -1, [width + 1, height + 1, width + 1, height + 1]))


def neighbourhood(box, margin: float, height: int, width: int, least: int = 16) -> tuple[int, int, int, int]:
    """The box grown by `margin` times its width (height) on each side, in whole pixels,
    clipped to the image, and at least `least` pixels each way (a box of zero width, as
    YOLO decodes with filler weights, would have none): (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = clip_box(box, width, height)
    mw, mh = margin * (x1 - x0), margin * (y1 - y0)

    def span(lo: float, hi: float, size: int) -> tuple[int, int]:
        a, b = int(max(np.floor(lo), 0)), int(min(np.ceil(hi), size))
        if b - a < least:
            centre = (a + b) // 2
            a = max(0, min(centre - least // 2, size - least))
            b = min(size, a + least)
        return a, b
    (nx0, nx1), (ny0, ny1) = span(x0 - mw, x1 + mw, width), span(y0 - mh, y1 + mh, height)
    return nx0, ny0, nx1, ny1


def mass_in_box(heat: np.ndarray, box) -> float:
    """The share of a map's mass (H, W) whose pixel centres lie inside the box."""
    total = float(heat.sum())
    if total <= 0:
        return 0.0
    x0, y0, x1, y1 = box
    ys, xs = np.arange(heat.shape[0]) + 0.5, np.arange(heat.shape[1]) + 0.5
    inside = ((ys >= y0) & (ys <= y1))[:, None] & ((xs >= x0) & (xs <= x1))[None, :]
    return float(heat[inside].sum() / total)


def explain_detection(net, x: np.ndarray | None, det: Detection, modes=("deconvnet", "guided"),
                      layer: str | None = None, margin: float = 0.5) -> DetectionTrace:
    """The detection's unit projected to the input in each mode, and Grad-CAM of the
    unit's value at `layer` (see cam_key). x: the input the detections came from
    (1, C, H, W), run forward again; None: the net's recorded forward pass as it is."""
    from ..methods.gradcam import cam_and_heatmap
    from ..methods.gradients import gradients
    if x is not None:
        net.forward(**{net.inputs[0]: x})
    if net.graph.inputs[net.inputs[0]][0] != 1:
        raise ZfcaffeError(f"explain_detection traces one image; the net holds a batch of "
                           f"{net.graph.inputs[net.inputs[0]][0]}: pass x (1 x C x H x W)")
    unit = det.unit
    projections, ties = {}, {}
    for mode in modes:
        projections[mode] = net.project_many(unit.key, [unit.index], mode)[0]
        ties[mode] = {k: list(v) for k, v in net.last_near_ties.items() if v}
    key = cam_key(net, det, layer)
    if len(net.graph.shapes[key]) != 4:
        raise ZfcaffeError(f"{net.graph.path}: layer '{layer or key}' has shape {list(net.graph.shapes[key])}; "
                           "Grad-CAM needs a spatial layer (N x C x H x W)")

    def seeds(n):
        d = np.zeros(n.layer_outputs[unit.key].shape, np.float32)
        d[unit.index] = 1
        return {unit.key: d}
    x_now = recorded_value(net, net.inputs[0])
    grad = gradients(net, x_now, seeds, "backprop", keys=[key], recorded=True)[key]
    item = det.item if grad.shape[0] > det.item else 0
    act = recorded_value(net, key)[det.item].astype(np.float64)
    weights = grad[item].astype(np.float64).mean(axis=(1, 2))
    h, w = input_hw(net)
    cam, heat = cam_and_heatmap(weights, act, h, w)
    heat = heat.astype(np.float64)
    near = neighbourhood(det.box, margin, h, w)
    return DetectionTrace(det, unit, projections, heat, cam, key, near, mass_in_box(heat, det.box), ties)


__all__ = ["Unit", "Detection", "DetectorHead", "DetectionTrace", "detector_head", "detections", "walk_back", "walk_back_many",
           "rcnn_boxes", "score_keys", "detection_scores", "cam_key", "clip_box", "neighbourhood", "detection_labels", "mass_in_box",
           "explain_detection"]

# the dense heads' traces live beside this one (zfcaffe.analyses.segmentation / keypoints)
try:
    from .segmentation import class_map, explain_class, segmentation_head
    __all__ += ["segmentation_head", "class_map", "explain_class"]
except ImportError:
    pass
try:
    from .keypoints import explain_keypoint, keypoint_head, peaks
    __all__ += ["keypoint_head", "peaks", "explain_keypoint"]
except ImportError:
    pass
