"""Keypoint nets (OpenPose) seen the Zeiler–Fergus way: the heatmaps (one per body
part, plus background) and part-affinity fields the net writes, the peaks of the
heatmaps as OpenPose finds them, and "why is this keypoint here?": a Grad-CAM of
the part's heatmap value at its peak, with the deconvnet and guided projections of
that value.

OpenPose's Caffe nets end in a Concat ("net_output") of the last stage's two
branches: L2 (heatmaps: parts + background) and L1 (PAFs: x and y of each limb).
The branch is recognised by its channel counts: 19 + 38 (COCO, 18 parts), 16 + 28
(MPI, 15 parts), 26 + 52 (BODY_25, 25 parts). Coordinates are input pixels, the
centre of pixel (x, y) at (x, y).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import ZfcaffeError
from .common import input_hw
from .segmentation import MODES, DenseTrace, cam_key, dense_trace, record, resize_maps, seed_from_input

# CMU-Perceptual-Computing-Lab/openpose, src/openpose/pose/poseParameters.cpp: POSE_COCO_BODY_PARTS,
# POSE_MPI_BODY_PARTS, POSE_BODY_25_BODY_PARTS (the heatmap channels in order; the last is the background)
COCO_PARTS = ("Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "RHip", "RKnee",
              "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar")
MPI_PARTS = ("Head", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "RHip", "RKnee",
             "RAnkle", "LHip", "LKnee", "LAnkle", "Chest")
BODY_25_PARTS = ("Nose", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "MidHip", "RHip",
                 "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "REye", "LEye", "REar", "LEar", "LBigToe",
                 "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel")
#: heatmap channels (parts + background) -> (model, part names, PAF channels)
MODELS = {19: ("COCO", COCO_PARTS, 38), 16: ("MPI", MPI_PARTS, 28), 26: ("BODY_25", BODY_25_PARTS, 52)}
#: OpenPose's nmsCpu keeps at most this many peaks a part (POSE_MAX_PEOPLE)
MAX_PEAKS = 96


@dataclasses.dataclass
class KeypointHead:
    model: str                # "COCO" | "MPI" | "BODY_25"
    key: str                  # graph key of the heatmaps (the L2 branch's last conv), N x (P + 1) x h x w
    layer: str                # its layer
    paf_key: str              # the PAFs (the L1 branch), N x 2L x h x w
    paf_layer: str
    output: str               # the net's output blob (the Concat of both, or the heatmaps)
    parts: tuple              # the P part names (the background channel P follows)
    stride: tuple             # (input H / h, input W / w)

    @property
    def channels(self) -> int:
        return len(self.parts) + 1

    def describe(self) -> str:
        sy, sx = self.stride
        return (f"OpenPose {self.model} keypoints: heatmaps '{self.layer}' ({len(self.parts)} parts + background) "
                f"and part-affinity fields '{self.paf_layer}' ({self.paf_channels} channels) in output "
                f"'{self.output}', stride {sy:g}" + ("" if sy == sx else f" x {sx:g}"))

    @property
    def paf_channels(self) -> int:
        return MODELS[self.channels][2]

    def name(self, part: int) -> str:
        return self.parts[part] if 0 <= part < len(self.parts) else ("Background" if part == len(self.parts)
                                                                     else f"part {part}")


def keypoint_head(net) -> KeypointHead | None:
    """OpenPose's heatmaps and PAFs, or None: an output that concatenates (or two
    outputs that are) a heatmap map of 19/16/26 channels and a PAF map of 38/28/52."""
    g = net.graph
    if not net.inputs or len(g.inputs[net.inputs[0]]) != 4:
        return None
    outs = g.outputs()
    candidates = []
    for out in outs:
        layer = g.producer(out)
        if layer.type == "Concat" and getattr(layer, "axis", 1) == 1 and len(layer.bottoms) == 2:
            candidates.append((out, list(layer.bottoms)))
    if len(outs) == 2:
        candidates.append((outs[0], outs))
    for out, pair in candidates:
        shapes = [g.shapes[k] for k in pair]
        if any(len(s) != 4 for s in shapes) or shapes[0][2:] != shapes[1][2:]:
            continue
        for heat, paf in (pair, pair[::-1]):
            c, p = g.shapes[heat][1], g.shapes[paf][1]
            if c in MODELS and MODELS[c][2] == p:
                h, w = g.shapes[heat][2:]
                ih, iw = input_hw(net)
                model, parts, _ = MODELS[c]
                return KeypointHead(model, heat, g.producer(heat).name, paf, g.producer(paf).name,
                                    g.name_of(out), parts, (ih / h, iw / w))
    return None


def require_keypoint_head(net) -> KeypointHead:
    head = keypoint_head(net)
    if head is None:
        raise ZfcaffeError(f"{net.graph.path}: no keypoint output (expected OpenPose's heatmaps + PAFs: 19 + 38, "
                           f"16 + 28 or 26 + 52 channels; outputs: {', '.join(net.outputs)})")
    return head


def heatmaps(net, item: int = 0) -> np.ndarray:
    """(P + 1, H, W): the recorded heatmaps (background last) resized to the input
    (bilinear, gradcam.upsample; OpenPose resizes bicubically)."""
    head = require_keypoint_head(net)
    values = net.layer_outputs[head.key]
    if not 0 <= item < values.shape[0]:
        raise ZfcaffeError(f"item {item}: the recorded batch has items 0 to {values.shape[0] - 1}")
    return resize_maps(values[item], *input_hw(net))


@dataclasses.dataclass
class Peak:
    part: int                 # heatmap channel
    name: str
    x: float                  # OpenPose's refined position (score-weighted mean over 7 x 7), input pixels
    y: float
    value: float              # the heatmap value at the peak pixel
    px: int                   # the peak pixel itself (the 3 x 3 maximum)
    py: int

    def as_tuple(self) -> tuple:
        return (self.part, self.name, self.x, self.y, self.value)


def nms_peaks(heat: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """(y, x) of the peaks of one map, in row-major order, as OpenPose's
    nmsRegisterKernelCPU (src/openpose/net/nmsBase.cpp) marks them: inside the map
    (2 <= x < w - 2, 2 <= y < h - 2) a value above `threshold` and strictly above its
    8 neighbours; on the first inner ring (x or y 1 or w/h - 2) above the threshold and
    >= its neighbours, a neighbour off the map counting as the threshold; the outer
    ring never."""
    v = np.asarray(heat, np.float64)
    h, w = v.shape
    if h < 3 or w < 3:
        return []
    pad = np.pad(v, 1, constant_values=np.nan)
    neigh = np.stack([pad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                      if dy or dx])
    inner_ok = (v > threshold) & np.all(v > neigh, axis=0)          # NaN compares false: never at the edge
    ring_ok = (v > threshold) & np.all(v >= np.where(np.isnan(neigh), threshold, neigh), axis=0)
    yy, xx = np.mgrid[:h, :w]
    inner = (1 < xx) & (xx < w - 2) & (1 < yy) & (yy < h - 2)
    ring = ~inner & ((xx == 1) | (xx == w - 2) | (yy == 1) | (yy == h - 2))
    mask = (inner & inner_ok) | (ring & ring_ok)
    return [(int(y), int(x)) for y, x in zip(*np.nonzero(mask))][:MAX_PEAKS]


def refine(heat: np.ndarray, y: int, x: int) -> tuple[float, float]:
    """OpenPose's nmsAccuratePeakPosition: the positive values' weighted mean
    position over the 7 x 7 window around the peak (offset 0)."""
    h, w = heat.shape
    win = heat[max(y - 3, 0):y + 4, max(x - 3, 0):x + 4].astype(np.float64)
    yy, xx = np.mgrid[max(y - 3, 0):min(y + 4, h), max(x - 3, 0):min(x + 4, w)]
    pos = np.where(win > 0, win, 0)
    total = pos.sum()
    return (float((xx * pos).sum() / total), float((yy * pos).sum() / total)) if total > 0 else (float(x), float(y))


def find_peaks(maps: np.ndarray, threshold: float = 0.1, parts=None) -> list[Peak]:
    """Peaks of (P[+1], H, W) heatmaps, part by part (the background channel, the
    P + 1-th where names say so, is skipped)."""
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise ZfcaffeError(f"heatmaps: an array of shape {list(maps.shape)}; expected (parts, H, W)")
    names = tuple(parts) if parts is not None else tuple(f"part {i}" for i in range(maps.shape[0]))
    out = []
    for part in range(min(len(names), maps.shape[0])):
        for y, x in nms_peaks(maps[part], threshold):
            rx, ry = refine(maps[part], y, x)
            out.append(Peak(part, names[part], rx, ry, float(maps[part, y, x]), x, y))
    return out


def peaks(net, threshold: float = 0.1, item: int = 0) -> list[Peak]:
    """Every part's peaks in the recorded forward pass: OpenPose's 3 x 3 non-maximum
    suppression (nms_peaks) on the heatmaps resized to the input, each refined to
    the weighted mean of its 7 x 7 neighbourhood. threshold: OpenPose's default
    --render_threshold-like 0.1 on the heatmap value (its nmsCpu refuses outside [0, 1])."""
    from .. import checks
    threshold = checks.number("peaks(threshold", threshold)
    head = require_keypoint_head(net)
    return find_peaks(heatmaps(net, item), threshold, head.parts)


@dataclasses.dataclass
class KeypointTrace:
    peak: Peak
    head: KeypointHead
    trace: DenseTrace

    def __getattr__(self, name):
        if name == "trace":
            raise AttributeError(name)
        return getattr(self.trace, name)

    def describe(self) -> str:
        t, p = self.trace, self.peak
        return (f"{p.name} at ({p.x:.1f}, {p.y:.1f}): heatmap {t.value:.4g} at pixel ({p.px}, {p.py}); strongest "
                f"unit {self.head.layer} (channel {t.unit[1]}, y {t.unit[2]}, x {t.unit[3]}) = {t.unit_value:.4g}; "
                f"Grad-CAM at {t.cam_layer}")

    def arrays(self) -> dict[str, np.ndarray]:
        out = self.trace.arrays()
        p = self.peak
        out.update({"part": np.array(p.part), "peak_xy": np.array([p.x, p.y]), "peak_pixel": np.array([p.px, p.py]),
                    "peak_value": np.array(p.value)})
        return out


def explain_keypoint(net, x, peak: Peak, layer=None, modes=MODES) -> KeypointTrace:
    """Why is part `peak.part` at `peak`? The heatmap's value at the peak pixel (as
    the resized map holds it: its seed on the net's map is the resizing's adjoint)
    explained by Grad-CAM at `layer` (default: the last map the heatmap conv reads
    with other than P + 1 channels) and projected in `modes`."""
    if not isinstance(peak, Peak):
        raise ZfcaffeError(f"peak={peak!r}: expected a Peak from zfcaffe.analyses.keypoints.peaks")
    x = record(net, x)
    head = require_keypoint_head(net)
    if not 0 <= peak.part < head.channels:
        raise ZfcaffeError(f"peak.part {peak.part}: the heatmaps have channels 0 to {head.channels - 1}")
    ih, iw = input_hw(net)
    if not (0 <= peak.px < iw and 0 <= peak.py < ih):
        raise ZfcaffeError(f"peak pixel ({peak.px}, {peak.py}) is outside the {iw} x {ih} input")
    one = np.zeros((ih, iw))
    one[peak.py, peak.px] = 1
    h, w = net.graph.shapes[head.key][2:]
    seed = seed_from_input(one, h, w)
    at = cam_key(net, layer, head.key, head.channels)
    return KeypointTrace(peak, head, dense_trace(net, x, head.key, peak.part, seed, at, modes))
