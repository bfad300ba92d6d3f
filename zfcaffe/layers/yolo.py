"""The YOLO ports of Caffe: nearest-neighbour `Upsample` (one bottom), Darknet's `Reorg`,
and the detection outputs `YoloDetectionOutput` (YOLOv2) and `Yolov3DetectionOutput`.

Sources: eric612/MobileNet-YOLO@69b4441cb3ec8d553fbdef788ad033e246f901bd (its
src/caffe/layers/*.cpp and caffe.proto) and, for Upsample, the layer ChenYingpeng's
caffe-yolov3@8db9e3882045 nets are run with (ChenYingpeng/darknet2caffe@f6d9ea33
caffe_layers/upsample_layer/upsample_layer.cpp, the same forward as eric612's).

The detection outputs are host layers: their row count depends on the data, and their
order of equal scores is that of libstdc++'s std::sort (not stable), transcribed here.
Their ONNX export is standard operators (`_emit_detection_rows`): the same decode, TopK,
the fork's greedy NMS as a Loop in its own float32 arithmetic (IoU >= threshold drops),
so the file gives the same rows to the bit except where confidences tie.
"""
from __future__ import annotations

import numpy as np

# onnx's helper: imported when a net is emitted (base._Later)
from ..stdsort import std_sort_order
from .base import DOUBLE, FLOAT, INT64, WHOLE, Layer, helper, register
from .rcnn import emit_greedy_nms

F32 = np.float32
#: the SegNet fields of the merged UpsampleParameter; the YOLO Upsample has only `scale`
_SEGNET_UPSAMPLE = ("scale_h", "scale_w", "pad_out_h", "pad_out_w", "upsample_h", "upsample_w")


# -- Upsample (YOLO) -------------------------------------------------------------------------

@register("Upsample", fork="yolo", when=lambda lp, hints: len(lp.bottom) == 1)
class YoloUpsample(Layer):
    """Nearest-neighbour upsampling by an integer factor: top[n, c, y, x] =
    bottom[n, c, y // scale, x // scale]; the last two axes grow by `scale` (default 1).

    eric612/MobileNet-YOLO@69b4441c src/caffe/layers/upsample_layer.cpp (identical forward in
    ChenYingpeng/darknet2caffe@f6d9ea33 caffe_layers/upsample_layer/upsample_layer.cpp)."""

    def setup(self, lp):
        p = lp.upsample_param
        given = [f for f in _SEGNET_UPSAMPLE if p.HasField(f)]
        if given:
            raise self.error(f"upsample_param.{given[0]} belongs to SegNet's two-bottom Upsample; "
                             f"expected only `scale` for the one-bottom (YOLO) Upsample")
        # the YOLO forks' default is 1 (SegNet's, in the merged schema, is 2)
        self.scale = int(p.scale) if p.HasField("scale") else 1
        if self.scale < 1:
            raise self.error(f"upsample_param.scale is {self.scale}; expected a positive integer")

    def output_shapes(self, in_shapes):
        s = in_shapes[0]
        if len(s) != 4:
            raise self.error(f"input has shape {list(s)}; expected N x C x H x W")
        return [(s[0], s[1], s[2] * self.scale, s[3] * self.scale)]

    def geometry(self, in_geoms):
        g = in_geoms[0]
        if g is None:
            return [None]
        k = (self.scale, self.scale)
        return [g.upsample(k, k, (0, 0))]

    def summary(self):
        return f"nearest x{self.scale}"

    def emit(self, e, ins, outs):
        if self.scale == 1:
            e.op("Identity", ins, outs[0])
            return
        s = float(self.scale)
        e.op("Resize", [ins[0], "", e.const([1.0, 1.0, s, s], "scales")], outs[0], mode="nearest",
             coordinate_transformation_mode="asymmetric", nearest_mode="floor")

    def backward_reads(self):
        return []

    def backward(self, ctx, top_diffs):
        """The adjoint of nearest upsampling (the fork's Backward_cpu): each input unit
        sums the signal of its scale x scale copies. The same in every mode."""
        t, s = top_diffs[0], self.scale
        r, c, h, w = t.shape
        return [t.reshape(r, c, h // s, s, w // s, s).sum(axis=(3, 5), dtype=np.float32)]


# -- Reorg -----------------------------------------------------------------------------------

def reorg_reference(x: np.ndarray, stride: int, reverse: bool) -> np.ndarray:
    """The fork's reorg_cpu as NumPy index arithmetic (for tests): a literal loop nest."""
    n, c, h, w = x.shape
    t_c = c // (stride * stride)
    src = x.reshape(-1)
    out = np.empty_like(src)
    nn, cc, hh, ww = np.meshgrid(np.arange(n), np.arange(c), np.arange(h), np.arange(w), indexing="ij")
    bottom_index = ww + w * (hh + h * (cc + c * nn))
    c2, offset = cc % t_c, cc // t_c
    w2, h2 = ww * stride + offset % stride, hh * stride + offset // stride
    top_index = w2 + w * stride * (h2 + h * stride * (c2 + t_c * nn))
    if reverse:   # forward = true: out[top_index] = in[bottom_index]
        out[top_index.ravel()] = src[bottom_index.ravel()]
    else:         # forward = false: out[bottom_index] = in[top_index]
        out[bottom_index.ravel()] = src[top_index.ravel()]
    return out


@register("Reorg")
class Reorg(Layer):
    """Darknet's reorg, exactly as the fork's reorg_cpu (not a plain space-to-depth).

    With reverse false (the default) the bottom's buffer is read as if it were shaped
    (N, C/s², H·s, W·s): with X that view and C' = C/s²,
    top_flat[n, c, h, w] (indexed with the bottom's C, H, W) = X[n, c % C', h·s + (c // C') // s,
    w·s + (c // C') % s], and the buffer is then shaped (N, C·s², H/s, W/s).
    With reverse true it is the inverse map, shaped (N, C/s², H·s, W·s).

    eric612/MobileNet-YOLO@69b4441c src/caffe/layers/reorg_layer.cpp, include/caffe/layers/reorg_layer.hpp
    (reorg_cpu; the forward passes `reverse_` as reorg_cpu's `forward` flag)."""

    def setup(self, lp):
        p = lp.reorg_param
        if not lp.HasField("reorg_param") or not p.HasField("stride"):
            raise self.error("reorg_param.stride is required")
        self.stride = int(p.stride)
        self.reverse = bool(p.reverse)
        if self.stride < 1:
            raise self.error(f"reorg_param.stride is {self.stride}; expected a positive integer")

    def output_shapes(self, in_shapes):
        s = in_shapes[0]
        if len(s) != 4:
            raise self.error(f"input has shape {list(s)}; expected N x C x H x W")
        n, c, h, w = s
        st = self.stride
        if c % (st * st):
            raise self.error(f"{c} channels are not a multiple of stride² = {st * st}")
        if self.reverse:
            return [(n, c // (st * st), h * st, w * st)]
        if h % st or w % st:
            raise self.error(f"input {h}x{w} is not a multiple of stride {st}")
        return [(n, c * st * st, h // st, w // st)]

    def geometry(self, in_geoms):
        # the top's (y, x) reads bottom positions scattered over rows and columns
        return [WHOLE if in_geoms[0] is not None else None]

    def summary(self):
        return f"stride {self.stride}" + (" reverse" if self.reverse else "")

    def forward_numpy(self, x: np.ndarray) -> np.ndarray:
        """The same map by reshapes (what `emit` writes in ONNX)."""
        n, c, h, w = x.shape
        s, cp = self.stride, c // (self.stride ** 2)
        if self.reverse:
            t = x.reshape(n, s, s, cp, h, w).transpose(0, 3, 4, 1, 5, 2)
            return np.ascontiguousarray(t).reshape(n, cp, h * s, w * s)
        t = x.reshape(n, cp, h, s, w, s).transpose(0, 3, 5, 1, 2, 4)
        return np.ascontiguousarray(t).reshape(n, c * s * s, h // s, w // s)

    def emit(self, e, ins, outs):
        _, c, h, w = self.in_shapes[0]
        s, cp = self.stride, c // (self.stride ** 2)
        x = ins[0]
        if e.dynamic:   # N, H, W from the tensor itself
            shape = e.op("Shape", [x])
            hh = e.op("Gather", [shape, e.ints([2])], axis=0)
            ww = e.op("Gather", [shape, e.ints([3])], axis=0)
            if self.reverse:
                first = e.op("Concat", [e.ints([0, s, s, cp]), hh, ww], axis=0)
                last = e.op("Concat", [e.ints([0, cp]), e.op("Mul", [hh, e.ints([s])]),
                                       e.op("Mul", [ww, e.ints([s])])], axis=0)
            else:
                first = e.op("Concat", [e.ints([0, cp]), hh, e.ints([s]), ww, e.ints([s])], axis=0)
                last = e.op("Concat", [e.ints([0, c * s * s]), e.op("Div", [hh, e.ints([s])]),
                                       e.op("Div", [ww, e.ints([s])])], axis=0)
        elif self.reverse:
            first, last = e.ints([0, s, s, cp, h, w]), e.ints([0, cp, h * s, w * s])
        else:
            first, last = e.ints([0, cp, h, s, w, s]), e.ints([0, c * s * s, h // s, w // s])
        perm = [0, 3, 4, 1, 5, 2] if self.reverse else [0, 3, 5, 1, 2, 4]
        t = e.op("Transpose", [e.op("Reshape", [x, first])], perm=perm)
        e.op("Reshape", [t, last], outs[0])

    def backward_reads(self):
        return []

    def backward(self, ctx, top_diffs):
        """The inverse permutation (forward_numpy's reshapes and transpose undone), in
        every mode. (The fork's Backward_cpu reads an internal blob's diff instead of the
        top's, so it passes no signal; zfcaffe passes the adjoint.)"""
        t = top_diffs[0]
        r = t.shape[0]
        _, c, h, w = self.in_shapes[0]
        s, cp = self.stride, c // (self.stride ** 2)
        if self.reverse:   # forward: (r, s, s, cp, h, w) -> axes (0, 3, 4, 1, 5, 2)
            u = t.reshape(r, cp, h, s, w, s).transpose(0, 3, 5, 1, 2, 4)
        else:              # forward: (r, cp, h, s, w, s) -> axes (0, 3, 5, 1, 2, 4)
            u = t.reshape(r, s, s, cp, h, w).transpose(0, 3, 4, 1, 5, 2)
        return [np.ascontiguousarray(u).reshape(r, c, h, w)]


# -- the fork's sort and NMS -----------------------------------------------------------------

def fork_nms(boxes: np.ndarray, threshold: float) -> np.ndarray:
    """The fork's ApplyNms on score-sorted (x, y, w, h) float32 boxes: class-agnostic
    greedy suppression, a box j > i is dropped when IoU(i, j) >= threshold, computed in
    float32 on centre-form boxes as box_iou does. Returns the kept indices, in order."""
    b = boxes.astype(F32, copy=False)
    n = len(b)
    thr = F32(threshold)
    half = F32(2)
    x, y, w, h = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    l, r = x - w / half, x + w / half
    t, bo = y - h / half, y + h / half
    area = w * h
    alive = np.ones(n, bool)
    for i in range(n - 1):
        if not alive[i]:
            continue
        j = np.nonzero(alive[i + 1:])[0] + i + 1
        if not len(j):
            break
        ow = np.minimum(r[i], r[j]) - np.maximum(l[i], l[j])
        oh = np.minimum(bo[i], bo[j]) - np.maximum(t[i], t[j])
        inter = np.where((ow < 0) | (oh < 0), F32(0), ow * oh)
        union = (area[i] + area[j]) - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = inter / union
        alive[j[iou >= thr]] = False
    return np.nonzero(alive)[0]


def _exp(x: np.ndarray) -> np.ndarray:
    """`exp` of a float: the float overload (as with CUDA's or <math.h>'s declarations in
    scope), here the correctly rounded float of the exponential."""
    return np.exp(x.astype(np.float64)).astype(F32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """The fork's `1. / (1. + exp(-x))` for a float x: a float exp, then double
    arithmetic, stored as float."""
    return (1.0 / (1.0 + _exp(-x).astype(np.float64))).astype(F32)


def kept_candidates(x, y, w, h, conf, nms_threshold) -> np.ndarray:
    """The candidates detection_rows keeps, in its row order: std::sort by confidence,
    then the fork's NMS."""
    order = std_sort_order(conf)
    boxes = np.stack([x, y, w, h], axis=1)[order]
    return order[fork_nms(boxes, nms_threshold)]


def detection_rows(x, y, w, h, label, conf, nms_threshold, batch: int) -> np.ndarray:
    """Sort, NMS and the fork's top blob (1, 1, kept, 7): [0, label + 1, confidence,
    x - w/2, y - h/2, x + w/2, y + h/2]; with nothing kept (1, 1, batch, 7) of -1 with
    the item index in column 0."""
    if len(conf) == 0:
        out = np.full((1, 1, batch, 7), -1, F32)
        out[0, 0, :, 0] = np.arange(batch)
        return out
    keep = kept_candidates(x, y, w, h, conf, nms_threshold)
    x64, y64 = x[keep].astype(np.float64), y[keep].astype(np.float64)
    w2, h2 = w[keep].astype(np.float64) / 2.0, h[keep].astype(np.float64) / 2.0
    out = np.stack([np.zeros(len(keep)), label[keep] + 1.0, conf[keep].astype(np.float64),
                    x64 - w2, y64 - h2, x64 + w2, y64 + h2], axis=1)
    return out.astype(F32)[None, None]


# -- ONNX emission of the detection outputs --------------------------------------------------

def _e_exp(e, x):
    """_exp: the float exponential, correctly rounded (Exp in double, then Cast)."""
    return e.op("Cast", [e.op("Exp", [e.op("Cast", [x], to=DOUBLE)])], to=FLOAT)


def _e_sigmoid(e, x):
    """_sigmoid: 1. / (1. + float exp(-x)) in double, stored as float."""
    t = e.op("Cast", [_e_exp(e, e.op("Neg", [x]))], to=DOUBLE)
    one = e.const(1.0, "one_d", np.float64)
    return e.op("Cast", [e.op("Div", [one, e.op("Add", [one, t])])], to=FLOAT)


def _e_channel(e, v, c, axis):
    """Channel c of axis `axis`, the axis removed."""
    return e.op("Squeeze", [e.op("Slice", [v, e.ints([c]), e.ints([c + 1]), e.ints([axis])]), e.ints([axis])])


def _e_cells(e, x):
    """The cell index s of a [N, C, H, W] map as float32 columns (s % W, s // W) over H * W
    cells, and (H, W) as INT64 [1] tensors, from the tensor's own shape."""
    shape = e.op("Shape", [x])
    hh = e.op("Slice", [shape, e.ints([2]), e.ints([3])])
    ww = e.op("Slice", [shape, e.ints([3]), e.ints([4])])
    s = e.op("Range", [e.ints(0, "zero"), e.op("Squeeze", [e.op("Mul", [hh, ww])]), e.ints(1, "one")])
    col = e.op("Cast", [e.op("Mod", [s, ww])], to=FLOAT)
    row = e.op("Cast", [e.op("Div", [s, ww])], to=FLOAT)
    return col, row, hh, ww


def _flat(e, x):
    return e.op("Reshape", [x, e.ints([-1])])


def _emit_detection_rows(e, layer, cands, nms_threshold, batch: str, out):
    """detection_rows in ONNX: candidates (x, y, w, h, label, conf) as float32 [M] in the
    fork's order -> TopK by confidence (descending; equal confidences keep their order,
    where std::sort may not), the fork's greedy NMS as a Loop (emit_greedy_nms) with its
    float32 centre-form arithmetic (a box goes when IoU >= threshold, exactly as
    fork_nms), rows [0, label + 1, conf, x -+ w/2, y -+ h/2] in double, then float; with
    nothing kept, one [item, -1, ...] row per item of `batch` (the first input)."""
    x, y, w, h, label, conf = cands
    m = e.op("Shape", [conf])
    conf, order = e.node("TopK", [conf, m], 2, axis=0, largest=1, sorted=1)
    x, y, w, h, label = (e.op("Gather", [t, order], axis=0) for t in (x, y, w, h, label))
    two = e.const(np.float32(2), "two")
    hw, hh = e.op("Div", [w, two]), e.op("Div", [h, two])
    lo_x, hi_x = e.op("Sub", [x, hw]), e.op("Add", [x, hw])
    lo_y, hi_y = e.op("Sub", [y, hh]), e.op("Add", [y, hh])
    area = e.op("Mul", [w, h])
    zero_f = e.const(np.float32(0), "zero_f")
    thr = e.const(np.float32(nms_threshold), "nms_threshold")

    def suppress(op, first, cols):   # box_iou in float32 (areas w * h), dropped at >= threshold
        ow = op("Sub", [op("Min", [first[1], cols[1]]), op("Max", [first[0], cols[0]])])
        oh = op("Sub", [op("Min", [first[3], cols[3]]), op("Max", [first[2], cols[2]])])
        apart = op("Or", [op("Less", [ow, zero_f]), op("Less", [oh, zero_f])])
        inter = op("Where", [apart, zero_f, op("Mul", [ow, oh])])
        iou = op("Div", [inter, op("Sub", [op("Add", [first[4], cols[4]]), inter])])
        return op("GreaterOrEqual", [iou, thr])
    keep = emit_greedy_nms(e, layer, [lo_x, hi_x, lo_y, hi_y, area], suppress)
    x, y, w, h, label, conf = (e.op("Gather", [t, keep], axis=0) for t in (x, y, w, h, label, conf))

    def d(t):
        return e.op("Cast", [t], to=DOUBLE)
    two_d = e.const(2.0, "two_d", np.float64)
    w2, h2 = e.op("Div", [d(w), two_d]), e.op("Div", [d(h), two_d])
    cols = [e.op("Sub", [d(x), w2]), e.op("Sub", [d(y), h2]), e.op("Add", [d(x), w2]), e.op("Add", [d(y), h2])]
    cols = [e.op("Add", [label, e.const(np.float32(1), "one_f")]), conf] + \
        [e.op("Cast", [c], to=FLOAT) for c in cols]
    n = e.op("Shape", [conf])
    zeros = e.op("ConstantOfShape", [n], value=helper.make_tensor("zero", FLOAT, [1], [0.0]))
    rows = e.op("Concat", [e.op("Unsqueeze", [c, e.ints([1])]) for c in [zeros] + cols], axis=1)   # [K, 7]
    # the batch from the input itself (an export with an open batch): [item, -1 x 6] per item
    items = e.op("Slice", [e.op("Shape", [batch]), e.ints([0]), e.ints([1])])
    item = e.op("Cast", [e.op("Range", [e.ints(0, "zero"), e.op("Squeeze", [items]), e.ints(1, "one")])], to=FLOAT)
    minus = e.op("Expand", [e.const(np.full((1, 6), -1, F32), "minus_one"),
                            e.op("Concat", [items, e.ints([6])], axis=0)])
    fallback = e.op("Concat", [e.op("Unsqueeze", [item, e.ints([1])]), minus], axis=1)
    none = e.op("Cast", [e.op("Equal", [n, e.ints([0])])], to=INT64)
    end = e.op("Add", [n, e.op("Mul", [none, items])])
    rows = e.op("Slice", [e.op("Concat", [rows, fallback], axis=0), e.ints([0]), end, e.ints([0])])
    e.op("Reshape", [rows, e.ints([1, 1, -1, 7])], out)


class _Detection(Layer):
    host = True
    #: the row count (axis 2) is decided by each forward pass
    open_axes = ((2,),)

    def geometry(self, in_geoms):
        return [WHOLE if any(g is not None for g in in_geoms) else None]

    def output_shapes(self, in_shapes):
        self.check(in_shapes)
        return [(1, 1, 1, 7)]   # Caffe's Reshape: one (fake) row until a forward pass

    def emit(self, e, ins, outs):
        """Standard operators (see _emit_detection_rows): equal to `forward` except where
        confidences tie (TopK keeps equal ones in candidate order, std::sort its own way)."""
        cands = self.emit_candidates(e, ins)
        cands = [e.op("Concat", list(c), axis=0) if len(c) > 1 else c[0] for c in zip(*cands)]
        _emit_detection_rows(e, self, cands, self.nms_threshold, ins[0], outs[0])


@register("Yolov3DetectionOutput")
class Yolov3DetectionOutput(_Detection):
    """YOLOv3 decoding, class-agnostic NMS and a (1, 1, N, 7) detection list.

    Per bottom t (N, num_box·(5 + K), H, W), anchor n, cell (y, x), the channels
    n·(5 + K) + c hold tx, ty, tw, th, objectness, K class logits (Darknet's layout):
    x = (x + σ(tx)) / W, y = (y + σ(ty)) / H, w = exp(tw)·biases[2m] / (W·anchors_scale[t]),
    h = exp(th)·biases[2m+1] / (H·anchors_scale[t]), m = mask[n + t·(len(mask)/mask_group_num)];
    every class k with σ(obj)·σ(logit_k) > confidence_threshold is a detection of its own.
    All bottoms and batch items go into one list (image id written as 0), sorted by
    confidence (std::sort), then greedy NMS across classes.

    eric612/MobileNet-YOLO@69b4441c src/caffe/layers/yolov3_detection_output_layer.cpp
    (Forward_cpu, ApplyNms, box_iou), src/caffe/util/bbox_util.cpp (get_region_box)."""

    def setup(self, lp):
        p = lp.yolov3_detection_output_param
        if not p.HasField("num_classes"):
            raise self.error("yolov3_detection_output_param.num_classes is required")
        self.num_classes = int(p.num_classes)
        self.num_box = int(p.num_box)
        self.confidence_threshold = F32(p.confidence_threshold)
        self.nms_threshold = F32(p.nms_threshold)
        self.biases = np.asarray(p.biases, F32)
        self.mask = [int(m) for m in p.mask]
        self.anchors_scale = [int(a) for a in p.anchors_scale]
        self.mask_group_num = int(p.mask_group_num)
        if p.gaussian_box:
            raise self.error("gaussian_box: true is not supported: the fork's CPU forward reads the objectness "
                             "from memory it never writes (and the GPU one differs); expected gaussian_box: false")
        if self.mask_group_num < 1:
            raise self.error("mask_group_num must be at least 1")
        self.groups_num = len(self.mask) // self.mask_group_num

    def n_bottoms(self):
        return (1, 1 << 30)

    def check(self, in_shapes):
        if len(in_shapes) != self.mask_group_num:
            raise self.error(f"{len(in_shapes)} bottoms; expected mask_group_num = {self.mask_group_num}")
        if len(self.anchors_scale) < len(in_shapes):
            raise self.error(f"{len(self.anchors_scale)} anchors_scale values; expected one per bottom "
                             f"({len(in_shapes)})")
        length = 5 + self.num_classes
        for t, s in enumerate(in_shapes):
            if len(s) != 4:
                raise self.error(f"bottom {t} has shape {list(s)}; expected N x C x H x W")
            if s[1] < self.num_box * length:
                raise self.error(f"bottom {t} has {s[1]} channels; expected num_box * (5 + num_classes) = "
                                 f"{self.num_box * length}")
            if s[0] != in_shapes[0][0]:
                raise self.error(f"bottom {t} has batch {s[0]}; expected {in_shapes[0][0]} as bottom 0")
            for n in range(self.num_box):
                i = n + t * self.groups_num
                if i >= len(self.mask):
                    raise self.error(f"bottom {t}, box {n} needs mask[{i}]; expected at least {i + 1} mask values")
                if 2 * self.mask[i] + 1 >= len(self.biases):
                    raise self.error(f"mask value {self.mask[i]} needs biases[{2 * self.mask[i] + 1}]; expected "
                                     f"at least {2 * self.mask[i] + 2} biases")

    def summary(self):
        return (f"{self.num_classes} classes, {self.num_box} boxes/cell, conf > {float(self.confidence_threshold):g}, "
                f"nms {float(self.nms_threshold):g}")

    def decode(self, inputs):
        """All candidate detections in the fork's order: (x, y, w, h, class, confidence)."""
        return self._candidates(inputs)[0]

    def row_sources(self, inputs) -> np.ndarray:
        """For each row forward gives on these inputs, in its order: (item, bottom, box,
        cell, class) as int64 [K, 5]: the bottom's channels box * (5 + K) + 4 (objectness)
        and + 5 + class at cell (y, x) = divmod(cell, W) of that item made the row."""
        with np.errstate(over="ignore", invalid="ignore"):
            (x, y, w, h, _, conf), src = self._candidates(inputs)
            return src[kept_candidates(x, y, w, h, conf, self.nms_threshold)] if len(conf) else src[:0]

    def _candidates(self, inputs):
        """decode's candidates and, for each, (item, bottom, box, cell, class)."""
        length = 5 + self.num_classes
        parts, sources = [], []
        for t, blob in enumerate(inputs):
            blob = np.asarray(blob, F32)
            nb, _, hh, ww = blob.shape
            v = blob[:, :self.num_box * length].reshape(nb, self.num_box, length, hh * ww)
            sig = _sigmoid(v)
            obj = sig[:, :, 4]                                      # (b, n, s)
            score = sig[:, :, 5:] * obj[:, :, None]                 # float32 product
            m = np.asarray([self.mask[n + t * self.groups_num] for n in range(self.num_box)])
            nw, nh = ww * self.anchors_scale[t], hh * self.anchors_scale[t]
            s = np.arange(hh * ww)
            cx = ((s % ww).astype(F32) + sig[:, :, 0]) / F32(ww)
            cy = ((s // ww).astype(F32) + sig[:, :, 1]) / F32(hh)
            bw = (_exp(v[:, :, 2]) * self.biases[2 * m][None, :, None]) / F32(nw)
            bh = (_exp(v[:, :, 3]) * self.biases[2 * m + 1][None, :, None]) / F32(nh)
            # the fork's loop order: item b, cell s, box n, class k
            score = score.transpose(0, 3, 1, 2)                     # (b, s, n, k)
            hit = score > self.confidence_threshold
            b_i, s_i, n_i, k_i = np.nonzero(hit)
            parts.append((cx[b_i, n_i, s_i], cy[b_i, n_i, s_i], bw[b_i, n_i, s_i], bh[b_i, n_i, s_i],
                          k_i, score[hit]))
            sources.append(np.stack([b_i, np.full_like(b_i, t), n_i, s_i, k_i], axis=1))
        return [np.concatenate(c) for c in zip(*parts)], np.concatenate(sources).astype(np.int64)

    def emit_candidates(self, e, ins):
        """decode in ONNX, per bottom: (x, y, w, h, class, confidence) [M_t] in the fork's order."""
        length, nb_box, k = 5 + self.num_classes, self.num_box, self.num_classes
        parts = []
        for t, blob in enumerate(ins):
            col, row, hh, ww = _e_cells(e, blob)
            v = e.op("Slice", [blob, e.ints([0]), e.ints([nb_box * length]), e.ints([1])])
            v = e.op("Reshape", [v, e.ints([0, nb_box, length, -1])])                  # [b, n, length, s]
            sig = _e_sigmoid(e, v)
            obj = e.op("Slice", [sig, e.ints([4]), e.ints([5]), e.ints([2])])         # [b, n, 1, s]
            score = e.op("Mul", [e.op("Slice", [sig, e.ints([5]), e.ints([length]), e.ints([2])]), obj])
            score = e.op("Transpose", [score], perm=[0, 3, 1, 2])                      # [b, s, n, k]
            m = [self.mask[n + t * self.groups_num] for n in range(nb_box)]
            scale = self.anchors_scale[t]
            nw = e.op("Cast", [e.op("Mul", [ww, e.ints([scale])])], to=FLOAT)
            nh = e.op("Cast", [e.op("Mul", [hh, e.ints([scale])])], to=FLOAT)
            bias_w = e.const(self.biases[[2 * i for i in m]].reshape(1, nb_box, 1), "biases_w")
            bias_h = e.const(self.biases[[2 * i + 1 for i in m]].reshape(1, nb_box, 1), "biases_h")
            cx = e.op("Div", [e.op("Add", [col, _e_channel(e, sig, 0, 2)]), e.op("Cast", [ww], to=FLOAT)])
            cy = e.op("Div", [e.op("Add", [row, _e_channel(e, sig, 1, 2)]), e.op("Cast", [hh], to=FLOAT)])
            bw = e.op("Div", [e.op("Mul", [_e_exp(e, _e_channel(e, v, 2, 2)), bias_w]), nw])
            bh = e.op("Div", [e.op("Mul", [_e_exp(e, _e_channel(e, v, 3, 2)), bias_h]), nh])
            full = e.op("Shape", [score])

            def per_class(c):        # [b, n, s] -> [b, s, n, k]
                c = e.op("Unsqueeze", [e.op("Transpose", [c], perm=[0, 2, 1]), e.ints([3])])
                return _flat(e, e.op("Expand", [c, full]))
            label = _flat(e, e.op("Expand", [e.const(np.arange(k, dtype=F32), "classes"), full]))
            score = _flat(e, score)
            hit = e.op("Greater", [score, e.const(self.confidence_threshold, "confidence_threshold")])
            parts.append([e.op("Compress", [c, hit], axis=0)
                          for c in (per_class(cx), per_class(cy), per_class(bw), per_class(bh), label, score)])
        return parts

    def forward(self, inputs):
        with np.errstate(over="ignore", invalid="ignore"):   # inf/NaN logits go through, as in the fork
            x, y, w, h, label, conf = self.decode(inputs)
            return [detection_rows(x, y, w, h, label, conf, self.nms_threshold, np.shape(inputs[0])[0])]


@register("YoloDetectionOutput")
class YoloDetectionOutput(_Detection):
    """YOLOv2 (region) decoding, class-agnostic NMS and a (1, 1, N, 7) detection list.

    Per bottom (N, num_box·D, S, S) — square; at most two bottoms are read — anchor n and
    cell (j, i): channels n·D + 0..3 are tx, ty, tw, th, n·D + 4 the objectness, n·D + 5..
    the class logits. x = (i + σ(tx)) / S, y = (j + σ(ty)) / S, w = exp(tw)·biases[2n] / S,
    h = exp(th)·biases[2n+1] / S; the class is the argmax of a float32 softmax, the
    confidence σ(obj)·max softmax, kept when >= confidence_threshold. One detection per box.
    Then as Yolov3DetectionOutput: std::sort by confidence, class-agnostic greedy NMS.

    eric612/MobileNet-YOLO@69b4441c src/caffe/layers/yolo_detection_output_layer.cpp
    (Forward_cpu, get_region_box, class_index_and_score, ApplyNms)."""

    def setup(self, lp):
        p = lp.yolo_detection_output_param
        if not p.HasField("num_classes"):
            raise self.error("yolo_detection_output_param.num_classes is required")
        self.num_classes = int(p.num_classes)
        self.num_box = int(p.num_box)
        self.confidence_threshold = F32(p.confidence_threshold)
        self.nms_threshold = F32(p.nms_threshold)
        self.biases = np.asarray(p.biases, F32)
        if self.num_box < 1:
            raise self.error("num_box must be at least 1")
        if len(self.biases) < 2 * self.num_box:
            raise self.error(f"{len(self.biases)} biases; expected 2 * num_box = {2 * self.num_box}")

    def n_bottoms(self):
        return (1, 1 << 30)

    def check(self, in_shapes):
        for t, s in enumerate(in_shapes[:2]):
            if len(s) != 4:
                raise self.error(f"bottom {t} has shape {list(s)}; expected N x C x H x W")
            if s[2] != s[3]:
                raise self.error(f"bottom {t} is {s[2]}x{s[3]}; expected a square map (the fork reads width x width)")
            if s[1] % self.num_box or s[1] // self.num_box < 5 + self.num_classes:
                raise self.error(f"bottom {t} has {s[1]} channels; expected num_box * D with D >= 5 + num_classes "
                                 f"= {5 + self.num_classes}")

    def summary(self):
        return (f"{self.num_classes} classes, {self.num_box} boxes/cell, conf >= {float(self.confidence_threshold):g}, "
                f"nms {float(self.nms_threshold):g}")

    def decode(self, inputs):
        return self._candidates(inputs)[0]

    def row_sources(self, inputs) -> np.ndarray:
        """For each row forward gives on these inputs, in its order: (item, bottom, box,
        cell, class) as int64 [K, 5]: the bottom's channels box * D + 4 (objectness) and
        + 5 + class at cell (y, x) = divmod(cell, side) of that item made the row."""
        with np.errstate(over="ignore", invalid="ignore"):
            (x, y, w, h, _, conf), src = self._candidates(inputs)
            return src[kept_candidates(x, y, w, h, conf, self.nms_threshold)] if len(conf) else src[:0]

    def _candidates(self, inputs):
        """decode's candidates and, for each, (item, bottom, box, cell, class)."""
        parts, sources = [], []
        for t, blob in enumerate(inputs[:2]):
            blob = np.asarray(blob, F32)
            nb, c, side, _ = blob.shape
            d = c // self.num_box
            v = blob.reshape(nb, self.num_box, d, side * side).transpose(0, 3, 1, 2)   # (b, cell, n, d)
            s = np.arange(side * side)[None, :, None]
            cx = ((s % side).astype(F32) + _sigmoid(v[..., 0])) / F32(side)
            cy = ((s // side).astype(F32) + _sigmoid(v[..., 1])) / F32(side)
            bw = (_exp(v[..., 2]) * self.biases[0:2 * self.num_box:2]) / F32(side)
            bh = (_exp(v[..., 3]) * self.biases[1:2 * self.num_box:2]) / F32(side)
            obj = _sigmoid(v[..., 4])
            logits = v[..., 5:5 + self.num_classes]
            e = _exp(logits - logits.max(axis=-1, keepdims=True))
            total = np.cumsum(e, axis=-1, dtype=F32)[..., -1:]          # the fork's running float sum
            prob = e / total
            label = prob.argmax(axis=-1)                                 # the first maximum
            conf = obj * prob.max(axis=-1)
            hit = conf >= self.confidence_threshold
            parts.append((cx[hit], cy[hit], bw[hit], bh[hit], label[hit], conf[hit]))
            b_i, s_i, n_i = np.nonzero(hit)                              # the order of conf[hit]
            sources.append(np.stack([b_i, np.full_like(b_i, t), n_i, s_i, label[hit]], axis=1))
        return [np.concatenate(c) for c in zip(*parts)], np.concatenate(sources).astype(np.int64)

    def emit_candidates(self, e, ins):
        """decode in ONNX, per bottom (the first two): (x, y, w, h, class, confidence) [M_t]."""
        nb_box, k = self.num_box, self.num_classes
        parts = []
        for t, blob in enumerate(ins[:2]):
            d = self.in_shapes[t][1] // nb_box
            col, row, side, _ = _e_cells(e, blob)
            v = e.op("Transpose", [e.op("Reshape", [blob, e.ints([0, nb_box, d, -1])])], perm=[0, 3, 1, 2])  # b,s,n,d
            col, row = (e.op("Unsqueeze", [c, e.ints([1])]) for c in (col, row))     # [s, 1]
            fside = e.op("Cast", [side], to=FLOAT)
            cx = e.op("Div", [e.op("Add", [col, _e_sigmoid(e, _e_channel(e, v, 0, 3))]), fside])
            cy = e.op("Div", [e.op("Add", [row, _e_sigmoid(e, _e_channel(e, v, 1, 3))]), fside])
            bw = e.op("Div", [e.op("Mul", [_e_exp(e, _e_channel(e, v, 2, 3)),
                                           e.const(self.biases[0:2 * nb_box:2], "biases_w")]), fside])
            bh = e.op("Div", [e.op("Mul", [_e_exp(e, _e_channel(e, v, 3, 3)),
                                           e.const(self.biases[1:2 * nb_box:2], "biases_h")]), fside])
            obj = _e_sigmoid(e, _e_channel(e, v, 4, 3))
            logits = e.op("Slice", [v, e.ints([5]), e.ints([5 + k]), e.ints([3])])   # [b, s, n, k]
            ex = _e_exp(e, e.op("Sub", [logits, e.op("ReduceMax", [logits, e.ints([3])], keepdims=1)]))
            total = _e_channel(e, ex, 0, 3)
            for c in range(1, k):          # the fork's running float sum, class by class
                total = e.op("Add", [total, _e_channel(e, ex, c, 3)])
            prob = e.op("Div", [ex, e.op("Unsqueeze", [total, e.ints([3])])])
            label = e.op("Cast", [e.op("ArgMax", [prob], axis=3, keepdims=0, select_last_index=0)], to=FLOAT)
            conf = e.op("Mul", [obj, e.op("ReduceMax", [prob, e.ints([3])], keepdims=0)])
            conf = _flat(e, conf)
            hit = e.op("GreaterOrEqual", [conf, e.const(self.confidence_threshold, "confidence_threshold")])
            parts.append([e.op("Compress", [_flat(e, c), hit], axis=0) for c in (cx, cy, bw, bh, label)]
                         + [e.op("Compress", [conf, hit], axis=0)])
        return parts

    def forward(self, inputs):
        with np.errstate(over="ignore", invalid="ignore"):   # inf/NaN logits go through, as in the fork
            x, y, w, h, label, conf = self.decode(inputs)
            return [detection_rows(x, y, w, h, label, conf, self.nms_threshold, np.shape(inputs[0])[0])]


__all__ = ["YoloUpsample", "Reorg", "Yolov3DetectionOutput", "YoloDetectionOutput", "fork_nms",
           "reorg_reference"]
