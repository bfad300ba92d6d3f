"""The SSD fork's DetectionOutput: decode the location predictions against the priors,
per-class non-maximum suppression, keep the best boxes per image.

A host layer: its output has a data-dependent number of rows and the fork's exact order
(std::sort over tied scores), so a Net runs it in NumPy (`forward`). Its `emit` serves the
ONNX export with standard operators (NonMaxSuppression, TopK), equal to the fork except
for ties and corner-swapped boxes (see `DetectionOutput.emit`).
"""
from __future__ import annotations

import numpy as np

from .. import caffe_pb2
from ..stdsort import std_sort_order
from .base import Layer, register

CodeType = caffe_pb2.PriorBoxParameter
CORNER, CENTER_SIZE, CORNER_SIZE = CodeType.CORNER, CodeType.CENTER_SIZE, CodeType.CORNER_SIZE
CODE_NAMES = {CORNER: "CORNER", CENTER_SIZE: "CENTER_SIZE", CORNER_SIZE: "CORNER_SIZE"}
FLT_MAX = float(np.finfo(np.float32).max)


def _legacy(shape, i: int) -> int:
    """Blob::LegacyShape: num/channels/height/width, 1 past the blob's axes."""
    return int(shape[i]) if i < len(shape) else 1


# -- the fork's std::sort, for tied scores -------------------------------------------------
def _keep_best(scores: np.ndarray, labels: np.ndarray, keep: int) -> np.ndarray:
    """The fork's keep_top_k: std::sort by score, descending, the first `keep`. A NumPy
    sort gives the same unless tied scores straddle the cut or two tied rows of one label
    are kept (their order then shows); only then is libstdc++'s algorithm replayed."""
    order = np.argsort(-scores, kind="stable")
    s, best = scores[order], order[:keep]
    straddle = keep < len(s) and s[keep] == s[keep - 1]
    pairs = np.stack([scores[best], labels[best]], 1)
    if straddle or len(np.unique(pairs, axis=0)) < len(pairs):
        return std_sort_order(scores)[:keep]
    return best


def _sift_up(h, i):
    """Min-heap h[0..i]: move h[i] up to its place."""
    while i > 0:
        parent = (i - 1) // 2
        if h[parent] <= h[i]:
            break
        h[parent], h[i] = h[i], h[parent]
        i = parent


def _sift_down(h, i, n):
    """Min-heap h[0..n): move h[i] down to its place."""
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        if child + 1 < n and h[child + 1] < h[child]:
            child += 1
        if h[i] <= h[child]:
            break
        h[i], h[child] = h[child], h[i]
        i = child


def _nms_groups(scores, bits, boxes, sizes, box_of_group, conf_thresh, top_k, nms_threshold, eta):
    """GetMaxScoreIndex + ApplyNMSFast for each group (image, label): scores [G, P] (no
    -0.0) and their bits as int32, boxes [B, P, 4] with their BBoxSize [B, P],
    box_of_group [G] -> (kept prior indices [G, cap] in NMS order, counts [G]). float32
    arithmetic throughout, as the fork."""
    G, P = scores.shape
    cap = P if (top_k < 0 or top_k > P) else top_k
    kept = np.empty((G, cap), np.int64)
    counts = np.zeros(G, np.int64)
    keys = np.empty(P, np.int64)
    order = np.empty(P, np.int64)
    for g in range(G):
        # one unique key per candidate: larger score first, then the lower prior index
        # (std::stable_sort's order); the score's bits made monotone as a signed integer
        n = 0
        for p in range(P):
            if scores[g, p] > conf_thresh:
                i = np.int64(bits[g, p])
                if i < 0:
                    i = i ^ 0x7FFFFFFF
                keys[n] = (i << 32) | (0xFFFFFFFF - p)
                n += 1
        if n == 0 or top_k == 0:
            continue
        # the best k keys, best first: a min-heap of the k largest, then heapsort it
        k = n if (top_k < 0 or top_k > n) else top_k
        for i in range(k):
            _sift_up(keys, i)
        for i in range(k, n):
            if keys[i] > keys[0]:
                keys[0] = keys[i]
                _sift_down(keys, 0, k)
        for end in range(k - 1, 0, -1):
            keys[0], keys[end] = keys[end], keys[0]
            _sift_down(keys, 0, end)
        n = k
        for i in range(n):
            order[i] = 0xFFFFFFFF - (keys[i] & 0xFFFFFFFF)
        b = box_of_group[g]
        thr = nms_threshold
        m = 0
        for i in range(n):
            p = order[i]
            keep = True
            for j in range(m):
                q = kept[g, j]
                # JaccardOverlap(bboxes[p], bboxes[q]): 0 unless the boxes overlap
                iw = min(boxes[b, p, 2], boxes[b, q, 2]) - max(boxes[b, p, 0], boxes[b, q, 0])
                ih = min(boxes[b, p, 3], boxes[b, q, 3]) - max(boxes[b, p, 1], boxes[b, q, 1])
                if iw > 0 and ih > 0:
                    inter = iw * ih
                    overlap = inter / (sizes[b, p] + sizes[b, q] - inter)
                    if not overlap <= thr:
                        keep = False
                        break
            if keep:
                kept[g, m] = p
                m += 1
                if eta < 1 and thr > 0.5:
                    thr = thr * eta
        counts[g] = m
    return kept, counts


_JIT = None


def _nms_kernel():
    """_nms_groups compiled by Numba, loaded at the first forward (not when a net loads)."""
    global _JIT, _sift_up, _sift_down
    if _JIT is None:
        from numba import njit
        _sift_up, _sift_down = njit(cache=True)(_sift_up), njit(cache=True)(_sift_down)
        _JIT = njit(cache=True)(_nms_groups)
    return _JIT


@register("DetectionOutput")
class DetectionOutput(Layer):
    """SSD's detection output (test time, CPU): rows [image, label, score, xmin, ymin,
    xmax, ymax], by image, then label ascending, then NMS order; [1, 1, K, 7].

    Transcribes weiliu89/caffe@4817bf8b (branch ssd) src/caffe/layers/detection_output_layer.cpp
    (Reshape, Forward_cpu) and src/caffe/util/bbox_util.cpp (GetLocPredictions,
    GetConfidenceScores, GetPriorBBoxes, DecodeBBox(es)(All), GetMaxScoreIndex,
    ApplyNMSFast, JaccardOverlap, BBoxSize). Decoded boxes are not clipped (Forward_cpu
    passes clip_bbox = false). save_output_param (files) and visualize (windows) are side
    effects of the fork's evaluation runs and are not performed.
    """

    host = True
    #: per top, the axes whose size each forward decides (the row count K): an exported
    #: file could leave them open instead of Reshape's [1, 1, 1, 7]
    open_axes = ((2,),)

    def setup(self, lp):
        p = lp.detection_output_param
        if not p.HasField("num_classes"):
            raise self.error("detection_output_param.num_classes is required (expected the number of classes)")
        self.num_classes = int(p.num_classes)
        self.share_location = bool(p.share_location)
        self.num_loc_classes = 1 if self.share_location else self.num_classes
        self.background = int(p.background_label_id)
        self.code_type = int(p.code_type)
        if self.code_type not in CODE_NAMES:
            raise self.error(f"code_type {self.code_type}: expected CORNER, CENTER_SIZE or CORNER_SIZE")
        self.var_in_target = bool(p.variance_encoded_in_target)
        # `clip` is OpenCV's field (its face detector's prototxt), no Caffe fork's: the decoded
        # boxes clipped to [0, 1] before NMS, as the fork's ClipBBox (size from the clipped box)
        self.clip = bool(getattr(p, "clip", False))
        self.keep_top_k = int(p.keep_top_k)
        self.conf_thresh = np.float32(p.confidence_threshold if p.HasField("confidence_threshold") else -FLT_MAX)
        nms = p.nms_param
        self.nms_threshold = np.float32(nms.nms_threshold)
        self.eta = np.float32(nms.eta)
        self.top_k = int(nms.top_k) if nms.HasField("top_k") else -1
        if not self.nms_threshold >= 0:
            raise self.error(f"nms_threshold {nms.nms_threshold:g}: expected a non-negative value")
        if not 0 < self.eta <= 1:
            raise self.error(f"nms_param.eta {nms.eta:g}: expected 0 < eta <= 1")

    @property
    def labels(self) -> np.ndarray:
        """The labels that get rows: every class but the background, ascending (made when
        used: num_classes is checked against the confidence input only by output_shapes)."""
        every = np.arange(self.num_classes, dtype=np.int64)
        return every[every != self.background]

    def n_bottoms(self):
        return (3, 4)   # a 4th bottom (the image) serves only the fork's `visualize`

    def output_shapes(self, in_shapes):
        loc, conf, prior = in_shapes[:3]
        if _legacy(loc, 0) != _legacy(conf, 0):
            raise self.error(f"location batch {_legacy(loc, 0)} and confidence batch {_legacy(conf, 0)}: "
                             "expected the same number of images")
        self.num_priors = _legacy(prior, 2) // 4
        if self.num_priors * self.num_loc_classes * 4 != _legacy(loc, 1):
            raise self.error(f"{_legacy(loc, 1)} location values per image for {self.num_priors} priors: expected "
                             f"{self.num_priors * self.num_loc_classes * 4} (priors x {self.num_loc_classes} x 4)")
        if self.num_priors * self.num_classes != _legacy(conf, 1):
            raise self.error(f"{_legacy(conf, 1)} confidences per image for {self.num_priors} priors: expected "
                             f"{self.num_priors * self.num_classes} (priors x {self.num_classes} classes)")
        return [(1, 1, 1, 7)]   # Caffe's Reshape; Forward gives the real row count

    def geometry(self, in_geoms):
        return [None]

    def summary(self):
        parts = [f"{self.num_classes} classes", CODE_NAMES[self.code_type],
                 f"nms {float(self.nms_threshold):g}"]
        if self.top_k > -1:
            parts.append(f"top_k {self.top_k}")
        if self.eta < 1:
            parts.append(f"eta {float(self.eta):g}")
        if self.keep_top_k > -1:
            parts.append(f"keep {self.keep_top_k}")
        if self.conf_thresh > -FLT_MAX:
            parts.append(f"conf > {float(self.conf_thresh):g}")
        if not self.share_location:
            parts.append("per-class loc")
        if self.clip:
            parts.append("clip")
        return ", ".join(parts)

    # -- the fork's forward pass ---------------------------------------------------------
    def _check_background(self):
        if self.share_location and self.background == -1:
            # DecodeBBoxesAll skips the shared label -1 as the background, then Forward_cpu
            # finds no boxes for it: LOG(FATAL) in the fork.
            raise self.error("background_label_id -1 with share_location true: the fork aborts "
                             "(\"Could not find location predictions for label -1\"); expected a background "
                             "label in 0..num_classes-1, or share_location: false")

    def _decode(self, loc: np.ndarray, prior: np.ndarray) -> np.ndarray:
        """DecodeBBox over every prior: loc [..., P, 4] (float32) -> boxes [..., P, 4]."""
        pb, var = prior[0], prior[1]                      # [P, 4] each
        px0, py0, px1, py1 = pb[:, 0], pb[:, 1], pb[:, 2], pb[:, 3]
        l0, l1, l2, l3 = loc[..., 0], loc[..., 1], loc[..., 2], loc[..., 3]
        if self.var_in_target:
            v0 = v1 = v2 = v3 = None
        else:
            v0, v1, v2, v3 = var[:, 0], var[:, 1], var[:, 2], var[:, 3]

        def sc(v, x):
            return x if v is None else v * x

        if self.code_type == CORNER:
            x0, y0, x1, y1 = px0 + sc(v0, l0), py0 + sc(v1, l1), px1 + sc(v2, l2), py1 + sc(v3, l3)
        else:
            pw, ph = px1 - px0, py1 - py0
            if not (np.all(pw > 0) and np.all(ph > 0)):
                raise self.error(f"{CODE_NAMES[self.code_type]} decoding needs priors of positive width and "
                                 "height (the fork's CHECK_GT(prior_width, 0)); some prior has none")
            if self.code_type == CENTER_SIZE:
                cx = sc(v0, l0) * pw + (px0 + px1) / np.float32(2)
                cy = sc(v1, l1) * ph + (py0 + py1) / np.float32(2)
                # exp in double, rounded once to float: glibc's expf is correctly rounded too
                w = np.exp(sc(v2, l2).astype(np.float64)).astype(np.float32) * pw
                h = np.exp(sc(v3, l3).astype(np.float64)).astype(np.float32) * ph
                hw, hh = w / np.float32(2), h / np.float32(2)
                x0, y0, x1, y1 = cx - hw, cy - hh, cx + hw, cy + hh
            else:
                x0, y0 = px0 + sc(v0, l0) * pw, py0 + sc(v1, l1) * ph
                x1, y1 = px1 + sc(v2, l2) * pw, py1 + sc(v3, l3) * ph
        boxes = np.stack([x0, y0, x1, y1], axis=-1)
        if self.clip:
            boxes = np.clip(boxes, np.float32(0), np.float32(1))
        return boxes

    def forward(self, inputs):
        self._check_background()
        with np.errstate(over="ignore", invalid="ignore"):   # exploding boxes are the fork's too
            return [self._forward(inputs)[0]]

    def row_sources(self, inputs) -> np.ndarray:
        """For each row forward gives on these inputs, in its order: (image, label, prior)
        as int64 [K, 3] (no rows for the fork's "nothing detected" rows): which prior's
        confidence (conf input at image * P * C + prior * C + label) made the row."""
        self._check_background()
        with np.errstate(over="ignore", invalid="ignore"):
            return self._forward(inputs)[1]

    def _forward(self, inputs):
        loc, conf, prior = (np.asarray(x, dtype=np.float32) for x in inputs[:3])
        N, P, L, C = loc.shape[0], self.num_priors, self.num_loc_classes, self.num_classes
        # the fork walks the raw arrays: image i starts at i * (values per image)
        loc = loc.reshape(-1)[:N * P * L * 4].reshape(N, P, L, 4)
        conf = conf.reshape(-1)[:N * P * C].reshape(N, P, C)
        prior = prior.reshape(-1)[:2 * P * 4].reshape(2, P, 4)
        labels = self.labels
        Cp = len(labels)
        scores = np.ascontiguousarray(conf[:, :, labels].transpose(0, 2, 1)).reshape(N * Cp, P)   # [G, P]
        if self.share_location:
            boxes = self._decode(loc[:, :, 0], prior)                              # [N, P, 4]
            box_of_group = np.repeat(np.arange(N), Cp)
        else:
            used = loc[:, :, labels]                                               # background not decoded
            boxes = self._decode(used.transpose(0, 2, 1, 3), prior).reshape(N * Cp, P, 4)
            box_of_group = np.arange(N * Cp)
        boxes = np.ascontiguousarray(boxes, dtype=np.float32)
        x0, y0, x1, y1 = (boxes[..., i] for i in range(4))
        sizes = np.where((x1 < x0) | (y1 < y0), np.float32(0), (x1 - x0) * (y1 - y0))   # BBoxSize
        scores = scores + np.float32(0)                                            # -0.0 ties +0.0
        kept, counts = _nms_kernel()(scores, scores.view(np.int32), boxes, sizes, box_of_group, self.conf_thresh,
                                     self.top_k, self.nms_threshold, self.eta)
        g, pos = np.nonzero(np.arange(kept.shape[1]) < counts[:, None])  # image-major, label ascending, NMS order
        p = kept[g, pos]
        img = g // Cp
        rows = np.empty((len(g), 7), np.float32)
        rows[:, 0] = img
        rows[:, 1] = labels[g % Cp]
        rows[:, 2] = scores[g, p]
        rows[:, 3:] = boxes[box_of_group[g], p]
        sources = np.stack([img, labels[g % Cp], p], axis=1)                       # (image, label, prior)
        if self.keep_top_k > -1:
            per_image = np.bincount(img, minlength=N)
            if np.any(per_image > self.keep_top_k):
                bounds = np.concatenate([[0], np.cumsum(per_image)])
                parts = []
                for i in range(N):
                    at = np.arange(bounds[i], bounds[i + 1])
                    r = rows[at]
                    if len(r) > self.keep_top_k:
                        best = _keep_best(r[:, 2], r[:, 1], self.keep_top_k)
                        # regrouped by label (a std::map), each label in the sorted order
                        at = at[best[np.argsort(r[best, 1], kind="stable")]]
                    parts.append(at)
                at = np.concatenate(parts)
                rows, sources = rows[at], sources[at]
        if len(rows) == 0:
            rows = np.full((N, 7), -1, np.float32)
            rows[:, 0] = np.arange(N)
        return rows.reshape(1, 1, -1, 7), sources

    # -- ONNX export -----------------------------------------------------------------------
    def emit(self, e, ins, outs):
        """Standard operators: the arithmetic decode, TopK for top_k, NonMaxSuppression
        per (image, class) group (ONNX Runtime: overlap > threshold suppresses, score >
        threshold passes, as the fork), keep_top_k by TopK over each image's scores, then
        the rows put back in NMS-output order (label ascending, score descending).
        A box with xmax < xmin or ymax < ymin (CORNER decoding makes them) enters the NMS
        as a point, since ONNX Runtime would swap its corners where the fork gives it size
        0. Differs from the fork only where scores tie (NonMaxSuppression's priority queue
        and TopK order equal scores their own way)."""
        self._check_background()
        if self.eta < 1:
            raise self.error(f"nms_param.eta {float(self.eta):g} cannot be exported: ONNX NonMaxSuppression "
                             "has no adaptive threshold (expected eta 1)")
        N, P, L, C = self.in_shapes[0][0], self.num_priors, self.num_loc_classes, self.num_classes
        labels = [int(c) for c in self.labels]
        Cp, G = len(labels), N * len(labels)
        out = outs[0]

        def fallback():                        # the fork's rows when nothing is detected
            f = np.full((N, 7), -1, np.float32)
            f[:, 0] = np.arange(N)
            return e.const(f, "no_detection")

        if self.top_k == 0 or self.keep_top_k == 0 or Cp == 0:
            e.op("Reshape", [fallback(), e.ints([1, 1, N, 7])], out)
            return

        def col(x, i, axis):
            return e.op("Slice", [x, e.ints([i]), e.ints([i + 1]), e.ints([axis])])

        # priors [P, 4] and variances [P, 4], as columns [P, 1]
        pr = e.op("Reshape", [ins[2], e.ints([-1, 4])])
        pb = e.op("Slice", [pr, e.ints([0]), e.ints([P]), e.ints([0])])
        pv = e.op("Slice", [pr, e.ints([P]), e.ints([2 * P]), e.ints([0])])
        px0, py0, px1, py1 = (col(pb, i, 1) for i in range(4))
        v = [None] * 4 if self.var_in_target else [col(pv, i, 1) for i in range(4)]
        # loc [N, P, L, 4] -> columns [N, P, L]
        lc = e.op("Reshape", [ins[0], e.ints([N, P, L, 4])])
        l0, l1, l2, l3 = (e.op("Reshape", [col(lc, i, 3), e.ints([N, P, L])]) for i in range(4))

        def sc(vi, li):
            return li if vi is None else e.op("Mul", [vi, li])

        if self.code_type == CORNER:
            x0, y0 = e.op("Add", [px0, sc(v[0], l0)]), e.op("Add", [py0, sc(v[1], l1)])
            x1, y1 = e.op("Add", [px1, sc(v[2], l2)]), e.op("Add", [py1, sc(v[3], l3)])
        else:
            pw, ph = e.op("Sub", [px1, px0]), e.op("Sub", [py1, py0])
            if self.code_type == CENTER_SIZE:
                f2 = e.const(np.float32(2), "two")
                pcx = e.op("Div", [e.op("Add", [px0, px1]), f2])
                pcy = e.op("Div", [e.op("Add", [py0, py1]), f2])
                cx = e.op("Add", [e.op("Mul", [sc(v[0], l0), pw]), pcx])
                cy = e.op("Add", [e.op("Mul", [sc(v[1], l1), ph]), pcy])
                hw = e.op("Div", [e.op("Mul", [e.op("Exp", [sc(v[2], l2)]), pw]), f2])
                hh = e.op("Div", [e.op("Mul", [e.op("Exp", [sc(v[3], l3)]), ph]), f2])
                x0, y0, x1, y1 = (e.op("Sub", [cx, hw]), e.op("Sub", [cy, hh]),
                                  e.op("Add", [cx, hw]), e.op("Add", [cy, hh]))
            else:
                x0 = e.op("Add", [px0, e.op("Mul", [sc(v[0], l0), pw])])
                y0 = e.op("Add", [py0, e.op("Mul", [sc(v[1], l1), ph])])
                x1 = e.op("Add", [px1, e.op("Mul", [sc(v[2], l2), pw])])
                y1 = e.op("Add", [py1, e.op("Mul", [sc(v[3], l3), ph])])
        unsq = e.ints([3])
        boxes = e.op("Concat", [e.op("Unsqueeze", [t, unsq]) for t in (x0, y0, x1, y1)], axis=3)  # [N,P,L,4]
        if self.clip:
            boxes = e.op("Clip", [boxes, e.const(np.float32(0), "zero"), e.const(np.float32(1), "one")])
        lab = e.ints(labels, "labels")
        if self.share_location:
            boxes = e.op("Expand", [e.op("Reshape", [boxes, e.ints([N, 1, P, 4])]), e.ints([N, Cp, P, 4])])
        else:
            boxes = e.op("Gather", [e.op("Transpose", [boxes], perm=[0, 2, 1, 3]), lab], axis=1)
        boxes = e.op("Reshape", [boxes, e.ints([G, P, 4])])                   # [G, P, 4]
        scores = e.op("Transpose", [e.op("Reshape", [ins[1], e.ints([N, P, C])])], perm=[0, 2, 1])
        scores = e.op("Reshape", [e.op("Gather", [scores, lab], axis=1), e.ints([G, P])])   # [G, P]
        k = P
        if -1 < self.top_k < P:                 # GetMaxScoreIndex's top_k: candidates before NMS
            k = self.top_k
            scores, idx = e.node("TopK", [scores, e.ints([k])], 2, axis=1, largest=1, sorted=1)
            idx = e.op("Expand", [e.op("Unsqueeze", [idx, e.ints([2])]), e.ints([G, k, 4])])
            boxes = e.op("GatherElements", [boxes, idx], axis=1)               # [G, k, 4]
        thr = min(float(self.nms_threshold), 1.0)   # ORT wants [0, 1]; an overlap never exceeds 1
        # a box with xmax < xmin or ymax < ymin overlaps nothing in the fork (size 0); ONNX
        # Runtime would swap its corners, so NMS sees it as a point (overlapping nothing)
        x0, y0, x1, y1 = (col(boxes, i, 2) for i in range(4))
        bad = e.op("Or", [e.op("Less", [x1, x0]), e.op("Less", [y1, y0])])
        nms_boxes = e.op("Where", [bad, e.const(np.zeros(4, np.float32), "point"), boxes])
        sel = e.op("NonMaxSuppression", [nms_boxes, e.op("Reshape", [scores, e.ints([G, 1, k])]), e.ints([k]),
                                         e.const([thr], "iou"), e.const([float(self.conf_thresh)], "score")],
                   center_point_box=0)                                          # [M, 3]: group, 0, position
        gj = e.op("Gather", [sel, e.ints([0, 2])], axis=1)                     # [M, 2]
        g = e.op("Gather", [sel, e.ints([0])], axis=1)                          # [M, 1]
        img = e.op("Div", [g, e.ints([Cp])])
        label = e.op("Gather", [e.const(np.asarray(labels, np.float32).reshape(-1, 1), "label_values"),
                                e.op("Mod", [g, e.ints([Cp])])])                # [M, 1, 1]
        rows = e.op("Concat", [e.op("Cast", [img], to=1), e.op("Reshape", [label, e.ints([-1, 1])]),
                               e.op("Unsqueeze", [e.op("GatherND", [scores, gj]), e.ints([1])]),
                               e.op("GatherND", [boxes, gj])], axis=1)          # [M, 7]
        if self.keep_top_k > -1:
            parts = []
            for i in range(N):
                r = rows if N == 1 else \
                    e.op("Compress", [rows, e.op("Equal", [e.op("Reshape", [img, e.ints([-1])]),
                                                           e.ints([i])])], axis=0)
                s = e.op("Reshape", [col(r, 2, 1), e.ints([-1])])
                kk = e.op("Min", [e.op("Shape", [s]), e.ints([self.keep_top_k])])
                _, best = e.node("TopK", [s, kk], 2, axis=0, largest=1, sorted=1)
                back, _ = e.node("TopK", [best, kk], 2, axis=0, largest=0, sorted=1)   # positions ascending
                parts.append(e.op("Gather", [r, back], axis=0))
            rows = parts[0] if N == 1 else e.op("Concat", parts, axis=0)
        # nothing anywhere: one [i, -1, ...] row per image
        n = e.op("Slice", [e.op("Shape", [rows]), e.ints([0]), e.ints([1])])
        none = e.op("Cast", [e.op("Equal", [n, e.ints([0])])], to=7)
        end = e.op("Add", [n, e.op("Mul", [none, e.ints([N])])])
        rows = e.op("Slice", [e.op("Concat", [rows, fallback()], axis=0), e.ints([0]), end, e.ints([0])])
        e.op("Reshape", [rows, e.ints([1, 1, -1, 7])], out)
