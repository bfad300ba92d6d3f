"""Segmentation nets seen the Zeiler–Fergus way: which output holds the class
scores (N x K x H x W before any Softmax/ArgMax), the class of every input pixel,
and "why is this region class k?": a Grad-CAM of the class's score summed over the
region, with the deconvnet and guided projections of that same sum.

All coordinates are the net's input pixels. A score map smaller than the input
(PSPNet's conv6 before its Interp, a net cut short) is brought to the input by
bilinear resizing (zfcaffe.methods.gradcam.upsample), and a region's seed on the
score map is that resizing's adjoint, so the explained number is exactly the
region's summed score as the class map sees it.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import ZfcaffeError
from ..methods.gradcam import cam_and_heatmap, upsample
from ..methods.gradients import gradients
from .common import input_hw, recorded_value

#: what explain_class/explain_keypoint project by default
MODES = ("deconvnet", "guided")


@dataclasses.dataclass
class SegmentationHead:
    key: str                  # graph key of the class scores (pre-softmax), N x K x h x w
    blob: str                 # its Caffe blob name
    layer: str                # the layer that writes it
    classes: int
    stride: tuple             # (input H / h, input W / w): input pixels per score pixel
    output: str               # the net output it was found from (the score itself, a Softmax's, an ArgMax's)
    reason: str               # one line for the report

    def describe(self) -> str:
        return f"segmentation scores '{self.blob}' ({self.classes} classes, stride {_fmt(self.stride)}): {self.reason}"

    def check_label(self, label) -> int:
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label < self.classes:
            raise ZfcaffeError(f"label {label!r}: the segmentation scores '{self.blob}' have classes 0 to "
                               f"{self.classes - 1}")
        return int(label)


def _fmt(stride) -> str:
    sy, sx = stride
    return f"{sy:g}" if sy == sx else f"{sy:g} x {sx:g}"


def _spatial_maps(shape) -> bool:
    return len(shape) == 4 and shape[1] >= 2 and shape[2] > 1 and shape[3] > 1


def segmentation_head(net) -> SegmentationHead | None:
    """The net's class-score map, or None when the net is no segmenter.

    A segmenter has exactly one output of class maps (N x K x h x w, K >= 2, at
    most 8 input pixels per map pixel); a Softmax (over channels) or ArgMax above it
    is walked down to the scores it reads. Keypoint nets (OpenPose's heatmaps and
    PAFs) are not segmenters; nor are nets with several map outputs (YOLO's heads)."""
    from .keypoints import keypoint_head
    g = net.graph
    if not net.inputs or len(g.inputs[net.inputs[0]]) != 4 or keypoint_head(net) is not None:
        return None
    found = []
    for out in g.outputs():
        key, via = out, []
        while True:
            layer = g.producer(key)
            if layer.type == "Softmax" and getattr(layer, "axis", 1) == 1 or layer.type == "ArgMax":
                via.append(f"the {layer.type} '{layer.name}'")
                key = layer.bottoms[0]
                continue
            break
        if _spatial_maps(g.shapes[key]):
            found.append((out, key, via))
    if len(found) != 1:
        return None
    out, key, via = found[0]
    h, w = g.shapes[key][2:]
    ih, iw = input_hw(net)
    stride = (ih / h, iw / w)
    if max(stride) > 8:
        return None
    reason = "the net's only class-map output" + (f", read below {' and '.join(via)}" if via else "")
    if (h, w) != (ih, iw):
        reason += f"; {h} x {w}, resized to the {ih} x {iw} input"
    return SegmentationHead(key, g.name_of(key), g.producer(key).name, g.shapes[key][1], stride,
                            g.name_of(out), reason)


def require_segmentation_head(net) -> SegmentationHead:
    head = segmentation_head(net)
    if head is None:
        raise ZfcaffeError(f"{net.graph.path}: no segmentation output (expected one N x K x H x W class-score "
                           f"output, K >= 2; outputs: {', '.join(net.outputs)})")
    return head


def resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in): the weights gradcam.upsample gives each input row (or column)
    for each output one. upsample(M, H, W) == Ry @ M @ Rx.T (its bilinear resizing is
    separable), so a seed on the resized map R goes back to the map as Ry.T @ R @ Rx."""
    if n_in == n_out:
        return np.eye(n_in, dtype=np.float64)
    return upsample(np.eye(n_in, dtype=np.float32), n_out, n_in).astype(np.float64)


def resize_maps(maps: np.ndarray, height: int, width: int) -> np.ndarray:
    """(K, h, w) -> (K, height, width) by gradcam.upsample's bilinear weights."""
    k, h, w = maps.shape
    if (h, w) == (height, width):
        return np.asarray(maps, np.float64)
    ry, rx = resize_matrix(h, height), resize_matrix(w, width)
    return np.einsum("Yh,khw,Xw->kYX", ry, np.asarray(maps, np.float64), rx, optimize=True)


def seed_from_input(weights: np.ndarray, h: int, w: int) -> np.ndarray:
    """Weights on input pixels (H, W) -> the weights on the (h, w) map whose resized
    values they sum (the resizing's adjoint)."""
    height, width = weights.shape
    if (h, w) == (height, width):
        return np.asarray(weights, np.float64)
    return resize_matrix(h, height).T @ np.asarray(weights, np.float64) @ resize_matrix(w, width)


def class_scores(net, item: int = 0, head: SegmentationHead | None = None) -> np.ndarray:
    """(K, H, W) class scores of the recorded forward pass at every input pixel."""
    head = head or require_segmentation_head(net)
    values = net.layer_outputs[head.key]
    if not 0 <= item < values.shape[0]:
        raise ZfcaffeError(f"item {item}: the recorded batch has items 0 to {values.shape[0] - 1}")
    return resize_maps(values[item], *input_hw(net))


def class_map(net, item: int = 0) -> np.ndarray:
    """(H, W) int: the class with the largest score at every input pixel, from the
    recorded forward pass (net.forward first); ties go to the lower class, as Caffe's
    ArgMax. Scores smaller than the input are resized to it first."""
    head = require_segmentation_head(net)
    values = net.layer_outputs[head.key]
    if tuple(values.shape[2:]) == input_hw(net):
        if not 0 <= item < values.shape[0]:
            raise ZfcaffeError(f"item {item}: the recorded batch has items 0 to {values.shape[0] - 1}")
        return values[item].argmax(axis=0)
    return class_scores(net, item, head).argmax(axis=0)


def default_cam_key(net, score_key: str, channels: int) -> str:
    """Grad-CAM's default layer under a dense score: the last spatial blob the score
    reads whose channel count is not the score's (the features the class head reads:
    FCN's rectified fc7, ENet's last bottleneck, PSPNet's conv5_4, OpenPose's stage's
    last 128-channel map), after its in-place layers; in a net too shallow for one, the
    last spatial blob, else the input."""
    g = net.graph
    needed, todo = set(), [score_key]
    while todo:
        k = todo.pop()
        if k in needed or k in g.inputs:
            continue
        needed.add(k)
        todo.extend(g.producer(k).bottoms)
    order = [k for l in g.compute_layers for k in l.tops]
    below = order[:order.index(score_key)]
    spatial = [k for k in below if k in needed and len(g.shapes[k]) == 4 and min(g.shapes[k][2:]) > 1]
    keys = [k for k in spatial if g.shapes[k][1] != channels]
    # a net too shallow to have such a map (one convolution): its last map, else its input
    return (keys or spatial or [net.inputs[0]])[-1]


def cam_key(net, layer: str | None, score_key: str, channels: int) -> str:
    from .common import shown_key
    if layer is None:
        return default_cam_key(net, score_key, channels)
    if not isinstance(layer, str):
        raise ZfcaffeError(f"layer={layer!r}: expected a layer name")
    key = shown_key(net, layer)
    if len(net.graph.shapes[key]) != 4:
        raise ZfcaffeError(f"layer '{layer}' has shape {list(net.graph.shapes[key])}; Grad-CAM needs a spatial "
                           "layer (N x C x H x W)")
    return key


def record(net, x) -> np.ndarray:
    """x (1, C, H, W) or (C, H, W) run forward, recorded; returns it as (1, C, H, W)."""
    from .. import checks
    x = checks.array("x", x, expected="(1, C, H, W)")
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ZfcaffeError(f"x: an array of shape {list(x.shape)}; expected one image (1, C, H, W)")
    net.set_batch(1)
    net.forward(**{net.inputs[0]: x})
    return x


@dataclasses.dataclass
class DenseTrace:
    """What a seed on a dense score map (a region of a class, a keypoint's peak)
    explains: Grad-CAM at `cam_layer` and the projections of the same seed."""
    key: str                       # the seeded blob's graph key
    channel: int                   # the seeded channel
    seed: np.ndarray               # (h, w) weights on that channel's map (the explained value's gradient)
    value: float                   # the explained value: sum(seed * map)
    unit: tuple                    # (0, channel, y, x): the seeded unit of largest value (what Z-F would project)
    unit_value: float
    cam_layer: str                 # graph key of the Grad-CAM layer
    cam_weights: np.ndarray        # (C,) its maps' weights (spatial mean of the gradient)
    cam: np.ndarray                # (h', w') rectified, at the layer's resolution
    gradcam: np.ndarray            # (H, W) in [0, 1] over the input
    projections: dict              # mode -> (C, H, W) the seed taken back to the input

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"seed": self.seed.astype(np.float32), "value": np.array(self.value),
               "unit": np.array(self.unit, np.int64), "unit_value": np.array(self.unit_value),
               "cam_weights": self.cam_weights.astype(np.float32), "cam": self.cam.astype(np.float32),
               "gradcam": self.gradcam.astype(np.float32)}
        out.update({f"projection_{m}": p.astype(np.float32) for m, p in self.projections.items()})
        return out


def dense_trace(net, x: np.ndarray, key: str, channel: int, seed: np.ndarray, cam_at: str,
                modes=MODES) -> DenseTrace:
    """Grad-CAM and projections of sum(seed * map[channel]) of blob `key`, after a
    recorded forward pass of x (record(net, x))."""
    values = net.layer_outputs[key][0, channel].astype(np.float64)
    if not np.any(seed):
        raise ZfcaffeError(f"'{net.graph.name_of(key)}' channel {channel}: the seed is zero everywhere; "
                           "nothing to explain")
    full = np.zeros(net.layer_outputs[key].shape, np.float32)
    full[0, channel] = seed
    seeds = lambda n: {key: full}  # noqa: E731
    grad = gradients(net, x, seeds, "backprop", keys=[cam_at], recorded=True)[cam_at][0].astype(np.float64)
    act = recorded_value(net, cam_at)[0].astype(np.float64)
    weights = grad.mean(axis=(1, 2))
    cam, heat = cam_and_heatmap(weights, act, *x.shape[2:])
    heat = heat.astype(np.float64)
    projections = {m: gradients(net, x, seeds, m, recorded=True)[net.inputs[0]][0] for m in modes}
    inside = np.where(seed != 0, values, -np.inf)
    y, xx = np.unravel_index(int(inside.argmax()), inside.shape)
    return DenseTrace(key, channel, np.asarray(seed, np.float64), float((seed * values).sum()),
                      (0, channel, int(y), int(xx)), float(values[y, xx]), cam_at, weights, cam, heat, projections)


@dataclasses.dataclass
class ClassTrace:
    label: int
    name: str
    head: SegmentationHead
    region: np.ndarray             # (H, W) bool: the input pixels whose scores were summed
    region_from: str               # "where the class wins" | "given" | why the whole image
    trace: DenseTrace
    mass_in_region: float          # share of the Grad-CAM's mass inside the region

    # the DenseTrace's fields, read through
    def __getattr__(self, name):
        if name == "trace":
            raise AttributeError(name)
        return getattr(self.trace, name)

    def describe(self) -> str:
        t = self.trace
        return (f"class {self.label} ({self.name}): summed score {t.value:.4g} over {int(self.region.sum())} "
                f"pixels ({self.region_from}); strongest unit {self.head.layer} (channel {t.unit[1]}, "
                f"y {t.unit[2]}, x {t.unit[3]}) = {t.unit_value:.4g}; Grad-CAM at {t.cam_layer}, "
                f"{100 * self.mass_in_region:.0f}% of its mass in the region")

    def arrays(self) -> dict[str, np.ndarray]:
        out = self.trace.arrays()
        out.update({"label": np.array(self.label), "region": self.region,
                    "mass_in_region": np.array(self.mass_in_region)})
        return out


def _region(region, cmap: np.ndarray, label: int) -> tuple[np.ndarray, str]:
    h, w = cmap.shape
    if region is None:
        mask = cmap == label
        if mask.any():
            return mask, "where the class wins"
        return np.ones((h, w), bool), "the class wins at no pixel: the whole image"
    if isinstance(region, (tuple, list)) and len(region) == 4 and np.ndim(region) == 1:
        x0, y0, x1, y1 = (int(round(float(v))) for v in region)
        mask = np.zeros((h, w), bool)
        mask[max(y0, 0):max(min(y1, h), 0), max(x0, 0):max(min(x1, w), 0)] = True
        if not mask.any():
            raise ZfcaffeError(f"region={region}: the box (x0, y0, x1, y1) holds no pixel of the {w} x {h} input")
        return mask, f"the box {tuple(region)}"
    mask = np.asarray(region)
    if mask.shape != (h, w):
        raise ZfcaffeError(f"region: an array of shape {list(mask.shape)}; expected a ({h}, {w}) mask of input "
                           "pixels or a box (x0, y0, x1, y1)")
    mask = mask.astype(bool)
    if not mask.any():
        raise ZfcaffeError("region: the mask selects no pixel")
    return mask, "given"


def explain_class(net, x, label, region=None, layer=None, modes=MODES, labels=None) -> ClassTrace:
    """Why is `region` (default: the pixels where `label` wins) class `label`?

    x: one input image (1, C, H, W), run forward here. region: None, a (H, W) mask
    or a box (x0, y0, x1, y1) in input pixels. layer: Grad-CAM's layer (default:
    default_cam_key). The explained value is the class's score summed over the
    region; Grad-CAM weights the layer's maps by its gradient's spatial mean, and
    `modes` take the same seed back to the input."""
    x = record(net, x)
    head = require_segmentation_head(net)
    label = head.check_label(label)
    cmap = class_map(net)
    mask, source = _region(region, cmap, label)
    h, w = net.graph.shapes[head.key][2:]
    seed = seed_from_input(mask.astype(np.float64), h, w)
    at = cam_key(net, layer, head.key, head.classes)
    trace = dense_trace(net, x, head.key, label, seed, at, modes)
    total = float(trace.gradcam.sum())
    mass = float(trace.gradcam[mask].sum()) / total if total > 0 else 0.0
    name = labels(label) if labels is not None else f"class {label}"
    return ClassTrace(label, name, head, mask, source, trace, mass)
