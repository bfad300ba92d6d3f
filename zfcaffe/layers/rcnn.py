"""Two-stage detectors: Fast/Faster R-CNN's ROIPooling, R-FCN's PSROIPooling, and a
built-in stand-in for py-faster-rcnn's (and py-R-FCN's) Python proposal layer.

ROIPooling and PSROIPooling pool data-dependent windows (the ROIs are an input), so
they are emitted as an ONNX Loop over the ROIs that slices each ROI's part of the map:
ROIPooling gathers each bin's rows (then columns) and takes ReduceMax, PSROIPooling sums
each bin under a row/column mask. The bin bounds are computed outside the loop with the
forks' own float32 arithmetic (C round() halves away from zero, computed in double so it
is exact). 300 ROIs on a 38x63 VGG-16 map take about 0.1 s. ONNX's MaxRoiPool is not
used: the ONNX spec leaves its bin rounding open (OpenVINO computes the borders with
integer division, not Caffe's float32 floor/ceil) and ONNX Runtime's CPU kernel has
started bins at FLT_MIN, not -FLT_MAX (microsoft/onnxruntime@0ed0289b roi_pool.cc), which
pools a bin of negative values to 1.2e-38; ONNX Runtime 1.31 happens to agree with Caffe.
"""
from __future__ import annotations

import numpy as np
import yaml

# onnx's helper: imported when a net is emitted (base._Later)
from .base import BOOL, DOUBLE, FLOAT, INT64, WHOLE, Layer, count, helper, register, register_python


# -- emission helpers -------------------------------------------------------------
def _c_round(e, x):
    """C round() of a float32 tensor (halves away from zero), as a DOUBLE tensor; exact."""
    d = e.op("Cast", [x], to=DOUBLE)
    half = e.const(0.5, "half", np.float64)
    return e.op("Mul", [e.op("Sign", [d]), e.op("Floor", [e.op("Add", [e.op("Abs", [d]), half])])])


def _col(e, x, i):
    """Column i of a 2-D tensor, kept 2-D ([R, 1])."""
    return e.op("Slice", [x, e.ints([i]), e.ints([i + 1]), e.ints([1])])


def _clip(e, v, size):
    """min(max(v, 0), size) of an INT64 tensor; size an INT64 scalar."""
    return e.op("Min", [e.op("Max", [v, e.ints(0, "zero")]), size])


def _dim(e, x, axis):
    """Size of one axis of x as an INT64 scalar."""
    return e.op("Gather", [e.op("Shape", [x]), e.ints(axis, "axis")])


class _LoopBody:
    """A Loop body built node by node; names are kept unique through the Emitter."""

    def __init__(self, e, layer_name):
        self.e, self.nodes, self.layer = e, [], layer_name
        self.i = e._fresh("iter")
        self.cond_in = e._fresh("cond_in")

    def op(self, op, inputs, **attrs):
        out = self.e._fresh(op.lower())
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=self.e._fresh(op), **attrs))
        self.nodes[-1].doc_string = f"Caffe layer {self.layer} (loop over ROIs)"
        return out

    def graph(self, scan_out, elem_type):
        cond_out = self.op("Identity", [self.cond_in])
        return helper.make_graph(
            self.nodes, f"{self.layer}_per_roi",
            [helper.make_tensor_value_info(self.i, INT64, []),
             helper.make_tensor_value_info(self.cond_in, BOOL, [])],
            [helper.make_tensor_value_info(cond_out, BOOL, []),
             helper.make_tensor_value_info(scan_out, elem_type, None)])


def _emit_roi_loop(e, layer, x, rois, hs, he, ws, we, reduce, hw_axes=(2, 3)):
    """The per-ROI loop: reduce(body, crop, rows, cols) -> the ROI's [.., PH, PW] result,
    where crop = x cut to the ROI's batch item (kept as an axis of 1) and its windows'
    rows and columns (x's axes hw_axes: NCHW, or NHWC with (1, 2)), and rows = (first,
    last + 1, bin starts, bin ends, mask [PH, h']: which rows each bin covers) in map
    coordinates, cols likewise. hs/he [R, PH], ws/we [R, PW]: clipped bin bounds (INT64);
    returns the stacked results."""
    bidx = e.op("Cast", [e.op("Squeeze", [_col(e, rois, 0), e.ints([1])])], to=INT64)   # int(roi[0]): truncation
    x = e.op("Identity", [x])       # a fresh name for the body to read (graph keys may be renamed)
    h, w = _dim(e, x, hw_axes[0]), _dim(e, x, hw_axes[1])
    one = e.ints(1, "one")
    hmax, wmax = e.op("Sub", [h, one]), e.op("Sub", [w, one])
    body = _LoopBody(e, layer.name)
    b = body.op("Gather", [bidx, body.i])
    lims = []
    for lo, hi, top in ((hs, he, hmax), (ws, we, wmax)):
        lo_i, hi_i = body.op("Gather", [lo, body.i]), body.op("Gather", [hi, body.i])
        # the crop: rows [min start, max end), never empty (empty bins are zeroed after the loop)
        start = body.op("Min", [body.op("ReduceMin", [lo_i], keepdims=0), top])
        end = body.op("Max", [body.op("ReduceMax", [hi_i], keepdims=0), body.op("Add", [start, one])])
        idx = body.op("Range", [start, end, one])
        axis1 = e.ints([1], "axes")
        mask = body.op("And", [body.op("GreaterOrEqual", [idx, body.op("Unsqueeze", [lo_i, axis1])]),
                               body.op("Less", [idx, body.op("Unsqueeze", [hi_i, axis1])])])
        lims.append((start, end, lo_i, hi_i, mask))
    (r0, r1, _, _, _), (c0, c1, _, _, _) = lims
    unsq0 = e.ints([0], "axes")

    def vec(*scalars):
        return body.op("Concat", [body.op("Unsqueeze", [s, unsq0]) for s in scalars], axis=0)
    crop = body.op("Slice", [x, vec(b, r0, c0), vec(body.op("Add", [b, one]), r1, c1), e.ints([0, *hw_axes])])
    out, elem = reduce(body, crop, *lims)
    g = body.graph(out, elem)
    trips = _dim(e, rois, 0)
    return e.op("Loop", [trips, ""], body=g)


@register("ROIPooling")
class ROIPooling(Layer):
    """Fast R-CNN's max pooling of each ROI into pooled_h x pooled_w bins.

    rbgirshick/caffe-fast-rcnn@4115385deb3b907fcd428ac0ab53b694d741a3c4 (branch faster-rcnn)
    src/caffe/layers/roi_pooling_layer.cpp (Forward_cpu; the .cu kernel computes the same):
    x1' = round(x1 * spatial_scale) (float32 product, C round: halves away from zero), ...;
    roi_w = max(x2' - x1' + 1, 1); bin = roi_w / pooled_w (float32); bin pw covers columns
    [floor(pw * bin), ceil((pw + 1) * bin)) + x1', clipped to [0, W]; the maximum over the
    bin (first maximum wins); an empty bin (clipped away) gives 0."""

    def setup(self, lp):
        p = lp.roi_pooling_param
        self.pooled = (p.pooled_h, p.pooled_w)
        self.spatial_scale = p.spatial_scale
        if min(self.pooled) < 1:
            raise self.error(f"roi_pooling_param pooled_h {p.pooled_h} and pooled_w {p.pooled_w}: expected both > 0")

    def n_bottoms(self):
        return (2, 2)

    def output_shapes(self, in_shapes):
        x, r = in_shapes
        if len(x) != 4:
            raise self.error(f"input has shape {list(x)}; expected N x C x H x W")
        if len(r) < 2 or count(r[1:]) != 5:
            raise self.error(f"rois have shape {list(r)}; expected R x 5 (batch index, x1, y1, x2, y2)")
        return [(r[0], x[1], *self.pooled)]

    def geometry(self, in_geoms):
        return [WHOLE if in_geoms[0] is not None else None]

    def macs(self):
        _, _, h, w = self.in_shapes[0]
        return count(self.out_shapes[0][:2]) * h * w   # at most: every ROI may cover the whole map

    def summary(self):
        return f"MAX {self.pooled[0]}x{self.pooled[1]} scale {self.spatial_scale:g}"

    def backward_reads(self):
        return list(self.bottoms)   # the argmax is taken again from the recorded input

    def backward(self, ctx, top_diffs):
        """The fork's ROIPoolBackward through its own argmax, in every mode (roi_backward.py);
        the rows below belong to each ROI's image. The rois input gets no signal."""
        from .roi_backward import roi_pool_backward
        return [roi_pool_backward(self, ctx, np.asarray(top_diffs[0], np.float32)), None]

    def emit(self, e, ins, outs):
        x, rois = ins
        rois = e.op("Reshape", [rois, e.ints([-1, 5])])
        scaled = e.op("Mul", [e.op("Slice", [rois, e.ints([1]), e.ints([5]), e.ints([1])]),
                              e.const(self.spatial_scale, "spatial_scale")])   # float32, as in C
        corners = e.op("Cast", [_c_round(e, scaled)], to=INT64)                 # [R, 4]: x1 y1 x2 y2
        h, w = _dim(e, x, 2), _dim(e, x, 3)
        one = e.ints(1, "one")
        bounds = []
        for lo_col, hi_col, n, size in ((1, 3, self.pooled[0], h), (0, 2, self.pooled[1], w)):
            lo, hi = _col(e, corners, lo_col), _col(e, corners, hi_col)
            extent = e.op("Max", [e.op("Add", [e.op("Sub", [hi, lo]), one]), one])
            bin_size = e.op("Div", [e.op("Cast", [extent], to=FLOAT), e.const(float(n), "pooled")])
            p = np.arange(n, dtype=np.float32)
            start = e.op("Cast", [e.op("Floor", [e.op("Mul", [e.const(p, "bins"), bin_size])])], to=INT64)
            end = e.op("Cast", [e.op("Ceil", [e.op("Mul", [e.const(p + 1, "bins"), bin_size])])], to=INT64)
            bounds += [_clip(e, e.op("Add", [start, lo]), size), _clip(e, e.op("Add", [end, lo]), size)]
        hs, he, ws, we = bounds

        zero, one = e.ints(0, "zero"), e.ints(1, "one")

        def bin_rows(body, start, end, lo, hi):
            """[P, K] indices into the crop: the K = largest bin's cells of each bin, the
            last one repeated in shorter bins (a maximum is unchanged by repeats)."""
            lo, hi = body.op("Sub", [lo, start]), body.op("Sub", [hi, start])
            k = body.op("Max", [body.op("ReduceMax", [body.op("Sub", [hi, lo])], keepdims=0), one])
            idx = body.op("Add", [body.op("Unsqueeze", [lo, e.ints([1])]), body.op("Range", [zero, k, one])])
            idx = body.op("Min", [idx, body.op("Unsqueeze", [body.op("Sub", [hi, one]), e.ints([1])])])
            return body.op("Max", [body.op("Min", [idx, body.op("Sub", [body.op("Sub", [end, start]), one])]), zero])

        def reduce(body, crop, rows, cols):       # crop [1, h', w', C]: gathers copy rows of C
            t = body.op("Gather", [crop, bin_rows(body, *rows[:4])], axis=1)        # [1, PH, K, w', C]
            t = body.op("ReduceMax", [t, e.ints([2])], keepdims=0)                 # [1, PH, w', C]
            t = body.op("Gather", [t, bin_rows(body, *cols[:4])], axis=2)           # [1, PH, PW, K', C]
            return body.op("ReduceMax", [t, e.ints([3, 0])], keepdims=0), FLOAT   # [PH, PW, C]

        nhwc = e.op("Transpose", [x], perm=[0, 2, 3, 1])
        pooled = _emit_roi_loop(e, self, nhwc, rois, hs, he, ws, we, reduce, hw_axes=(1, 2))
        pooled = e.op("Transpose", [pooled], perm=[0, 3, 1, 2])                   # [R, C, PH, PW]
        empty = e.op("Or", [e.op("Unsqueeze", [e.op("LessOrEqual", [he, hs]), e.ints([1, 3])]),
                            e.op("Unsqueeze", [e.op("LessOrEqual", [we, ws]), e.ints([1, 2])])])   # [R,1,PH,PW]
        e.op("Where", [empty, e.const(0.0, "zero_f"), pooled], outs[0])


@register("PSROIPooling")
class PSROIPooling(Layer):
    """R-FCN's position-sensitive average pooling: output channel (d, ph, pw) of each ROI
    averages input channel (d * group_size + ph) * group_size + pw over bin (ph, pw).

    Microsoft/caffe@1a2be8ecf9ba318d516d79187845e90ac6e73197 (the Caffe py-R-FCN names)
    src/caffe/layers/psroi_pooling_layer.cu (PSROIPoolingForward; the CPU forward is
    NOT_IMPLEMENTED): start = round(x1) * scale, end = (round(x2) + 1) * scale (float32),
    roi_w = max(end - start, 0.1), bin = roi_w / group_size; bin pw covers columns
    [floor(pw * bin + start), ceil((pw + 1) * bin + start)) clipped to [0, W] (the
    multiply-add rounded once, as nvcc's default FMA contraction computes it); the mean
    over the bin, 0 for an empty bin."""

    def setup(self, lp):
        p = lp.psroi_pooling_param
        self.spatial_scale, self.output_dim, self.group_size = p.spatial_scale, p.output_dim, p.group_size
        if self.output_dim < 1 or self.group_size < 1:
            raise self.error(f"psroi_pooling_param output_dim {self.output_dim} and group_size {self.group_size}: "
                             "expected both > 0")

    def n_bottoms(self):
        return (2, 2)

    def output_shapes(self, in_shapes):
        x, r = in_shapes
        g = self.group_size
        if len(x) != 4:
            raise self.error(f"input has shape {list(x)}; expected N x C x H x W")
        if x[1] != self.output_dim * g * g:
            raise self.error(f"input has {x[1]} channels; expected output_dim * group_size^2 = "
                             f"{self.output_dim * g * g}")
        if len(r) < 2 or count(r[1:]) != 5:
            raise self.error(f"rois have shape {list(r)}; expected R x 5 (batch index, x1, y1, x2, y2)")
        return [(r[0], self.output_dim, g, g)]

    def geometry(self, in_geoms):
        return [WHOLE if in_geoms[0] is not None else None]

    def macs(self):
        _, _, h, w = self.in_shapes[0]
        return self.out_shapes[0][0] * self.output_dim * h * w   # at most: every ROI may cover the whole map

    def summary(self):
        g = self.group_size
        return f"AVE {g}x{g} x {self.output_dim} scale {self.spatial_scale:g}"

    def backward_reads(self):
        return [self.bottoms[1]]    # the bins come from the rois alone

    def backward(self, ctx, top_diffs):
        """The average's adjoint (the fork's PSROIPoolingBackwardAtomic, every mode): each
        bin's diff / its area to its cells of its channel; the rois input gets no signal."""
        from .roi_backward import psroi_pool_backward
        return [psroi_pool_backward(self, ctx, np.asarray(top_diffs[0], np.float32)), None]

    def emit(self, e, ins, outs):
        x, rois = ins
        g, dim = self.group_size, self.output_dim
        rois = e.op("Reshape", [rois, e.ints([-1, 5])])
        rounded = _c_round(e, e.op("Slice", [rois, e.ints([1]), e.ints([5]), e.ints([1])]))   # [R, 4] double
        scale = e.const(self.spatial_scale, "spatial_scale")
        h, w = _dim(e, x, 2), _dim(e, x, 3)
        p = np.arange(g, dtype=np.float64)
        bounds = []
        for lo_col, hi_col, size in ((1, 3, h), (0, 2, w)):
            lo = e.op("Mul", [e.op("Cast", [_col(e, rounded, lo_col)], to=FLOAT), scale])
            hi = e.op("Mul", [e.op("Cast", [e.op("Add", [_col(e, rounded, hi_col), e.const(1.0, "one_d", np.float64)])],
                                       to=FLOAT), scale])
            extent = e.op("Max", [e.op("Sub", [hi, lo]), e.const(0.1, "min_extent")])
            bin_size = e.op("Cast", [e.op("Div", [extent, e.const(float(g), "group")])], to=DOUBLE)
            lo_d = e.op("Cast", [lo], to=DOUBLE)
            # p * bin + start with one rounding to float32 (a fused multiply-add; exact in double)
            start = e.op("Add", [e.op("Mul", [e.const(p, "bins", np.float64), bin_size]), lo_d])
            end = e.op("Add", [e.op("Mul", [e.const(p + 1, "bins", np.float64), bin_size]), lo_d])
            start = e.op("Cast", [e.op("Floor", [e.op("Cast", [start], to=FLOAT)])], to=INT64)
            end = e.op("Cast", [e.op("Ceil", [e.op("Cast", [end], to=FLOAT)])], to=INT64)
            bounds += [_clip(e, start, size), _clip(e, end, size)]
        hs, he, ws, we = bounds

        def reduce(body, crop, rows, cols):
            mh, mw = rows[4], cols[4]
            shape = body.op("Concat", [e.ints([dim, g, g]), body.op("Slice", [body.op("Shape", [crop]), e.ints([2]),
                                                                               e.ints([4])])], axis=0)
            x5 = body.op("Reshape", [crop, shape])                              # [D, G, G, h', w']
            mask = body.op("And", [body.op("Unsqueeze", [mh, e.ints([0, 2, 4])]),      # [1, G, 1, h', 1]
                                   body.op("Unsqueeze", [mw, e.ints([0, 1, 3])])])     # [1, 1, G, 1, w']
            t = body.op("Where", [mask, x5, e.const(0.0, "zero_f")])
            return body.op("ReduceSum", [t, e.ints([3, 4])], keepdims=0), FLOAT   # [D, G, G]

        sums = _emit_roi_loop(e, self, x, rois, hs, he, ws, we, reduce)
        rows = e.op("Unsqueeze", [e.op("Sub", [he, hs]), e.ints([1, 3])])          # [R, 1, G, 1]
        cols = e.op("Unsqueeze", [e.op("Sub", [we, ws]), e.ints([1, 2])])          # [R, 1, 1, G]
        area = e.op("Cast", [e.op("Mul", [rows, cols])], to=FLOAT)                  # [R, 1, G, G]
        empty = e.op("Or", [e.op("Unsqueeze", [e.op("LessOrEqual", [he, hs]), e.ints([1, 3])]),
                            e.op("Unsqueeze", [e.op("LessOrEqual", [we, ws]), e.ints([1, 2])])])
        e.op("Where", [empty, e.const(0.0, "zero_f"), e.op("Div", [sums, area])], outs[0])


# -- greedy NMS as an ONNX Loop ------------------------------------------------------------
def emit_greedy_nms(e, layer, columns, suppress, limit=None):
    """Greedy non-maximum suppression over candidates already in priority order, given as
    FLOAT [M] columns (corners, areas), as an ONNX Loop with one iteration per kept
    candidate: the first one still alive is kept, and every later one that `suppress`
    says it suppresses dies; it stops when none is alive (or `limit`, an INT64 scalar,
    are kept): py-faster-rcnn's cpu_nms and the YOLO fork's ApplyNms. suppress(op, first,
    cols) -> BOOL [M]: op(kind, inputs, **attrs) adds a body node; first[j] is column j of
    the kept candidate (a scalar), cols[j] the whole column, for the forks' own
    arithmetic, exactly. (A loop carrying the shrinking columns was 5x slower in ONNX
    Runtime 1.31: its Compress and Gather cost more than the full-length arithmetic.)
    Returns the kept candidates' positions (INT64 [R])."""
    nodes = []

    def op(kind, inputs, **attrs):
        o = e._fresh(kind.lower())
        nodes.append(helper.make_node(kind, list(inputs), [o], name=e._fresh(kind), **attrs))
        nodes[-1].doc_string = f"Caffe layer {layer.name} ({layer.type}, NMS loop)"
        return o
    pos = e.op("Range", [e.ints(0, "zero"), _dim(e, columns[0], 0), e.ints(1, "one")])
    it, cond, alive = e._fresh("iter"), e._fresh("cond_in"), e._fresh("alive_in")
    zero = e.ints(0, "zero")
    # the first candidate still alive is the next kept one
    i = op("ArgMax", [op("Cast", [alive], to=INT64)], axis=0, keepdims=0, select_last_index=0)
    first = [op("Gather", [c, i]) for c in columns]
    later = op("Greater", [pos, i])
    drop = op("And", [suppress(op, first, columns), later])
    alive_out = op("And", [op("And", [alive, op("Not", [drop])]), later])   # i itself leaves the pool
    more = op("ReduceMax", [op("Cast", [alive_out], to=INT64)], keepdims=0)
    more = op("Greater", [more, zero])
    if limit is not None:
        more = op("And", [more, op("Less", [op("Add", [it, e.ints(1, "one")]), limit])])
    kept = op("Identity", [i])
    body = helper.make_graph(nodes, f"{layer.name}_nms", [
        helper.make_tensor_value_info(it, INT64, []), helper.make_tensor_value_info(cond, BOOL, []),
        helper.make_tensor_value_info(alive, BOOL, [None])],
        [helper.make_tensor_value_info(more, BOOL, []), helper.make_tensor_value_info(alive_out, BOOL, [None]),
         helper.make_tensor_value_info(kept, INT64, [])])
    n = _dim(e, columns[0], 0)
    go = e.op("Greater", [n, e.ints(0, "zero")])
    if limit is not None:
        go = e.op("And", [go, e.op("Greater", [limit, e.ints(0, "zero")])])
    start = e.op("ConstantOfShape", [e.op("Shape", [columns[0]])], value=helper.make_tensor("true", BOOL, [1], [True]))
    return e.node("Loop", [n, go, start], 2, body=body)[-1]


# -- py-faster-rcnn's proposal layer ------------------------------------------------------
def generate_anchors(base_size=16, ratios=(0.5, 1, 2), scales=2 ** np.arange(3, 6)) -> np.ndarray:
    """rbgirshick/py-faster-rcnn@781a917b lib/rpn/generate_anchors.py: the A = 9 reference
    boxes (x1, y1, x2, y2) around the (0, 0, 15, 15) window, ratio-major (float64)."""
    def whctrs(a):
        w, h = a[2] - a[0] + 1, a[3] - a[1] + 1
        return w, h, a[0] + 0.5 * (w - 1), a[1] + 0.5 * (h - 1)

    def mkanchors(ws, hs, x, y):
        ws, hs = ws[:, None], hs[:, None]
        return np.hstack((x - 0.5 * (ws - 1), y - 0.5 * (hs - 1), x + 0.5 * (ws - 1), y + 0.5 * (hs - 1)))

    base = np.array([1, 1, base_size, base_size]) - 1
    w, h, x, y = whctrs(base)
    ratios = np.asarray(ratios, dtype=np.float64)
    ws = np.round(np.sqrt(w * h / ratios))
    ratio_anchors = mkanchors(ws, np.round(ws * ratios), x, y)
    out = []
    for a in ratio_anchors:
        w, h, x, y = whctrs(a)
        out.append(mkanchors(w * np.asarray(scales), h * np.asarray(scales), x, y))
    return np.vstack(out)


def _exp(x: np.ndarray) -> np.ndarray:
    """np.exp of a float32 array as the correctly rounded float32 (through float64).
    NumPy's own float32 exp depends on the build and CPU (its AVX-512/AVX2 loops differ
    from the correctly rounded value by up to 2 ulp in about 40% of inputs, NumPy 2.4);
    py-faster-rcnn's NumPy of its day called libm's expf (within half an ulp). Rounded
    this way the exported file (Exp in double, then Cast) gives the same bits."""
    if x.dtype != np.float32:
        return np.exp(x)
    return np.exp(x.astype(np.float64)).astype(np.float32)


def bbox_transform_inv(boxes: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """py-faster-rcnn lib/fast_rcnn/bbox_transform.py, in the deltas' dtype (float32); the
    exponential correctly rounded (see _exp)."""
    if boxes.shape[0] == 0:
        return np.zeros((0, deltas.shape[1]), dtype=deltas.dtype)
    boxes = boxes.astype(deltas.dtype, copy=False)
    widths = boxes[:, 2] - boxes[:, 0] + 1.0
    heights = boxes[:, 3] - boxes[:, 1] + 1.0
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    dx, dy, dw, dh = deltas[:, 0::4], deltas[:, 1::4], deltas[:, 2::4], deltas[:, 3::4]
    pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
    pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
    with np.errstate(over="ignore"):
        pred_w = _exp(dw) * widths[:, None]
        pred_h = _exp(dh) * heights[:, None]
    out = np.zeros(deltas.shape, dtype=deltas.dtype)
    out[:, 0::4] = pred_ctr_x - 0.5 * pred_w
    out[:, 1::4] = pred_ctr_y - 0.5 * pred_h
    out[:, 2::4] = pred_ctr_x + 0.5 * pred_w
    out[:, 3::4] = pred_ctr_y + 0.5 * pred_h
    return out


def clip_boxes(boxes: np.ndarray, im_shape) -> np.ndarray:
    """py-faster-rcnn lib/fast_rcnn/bbox_transform.py: into [0, W - 1] x [0, H - 1], in place."""
    for k, lim in ((0, im_shape[1] - 1), (1, im_shape[0] - 1), (2, im_shape[1] - 1), (3, im_shape[0] - 1)):
        boxes[:, k::4] = np.maximum(np.minimum(boxes[:, k::4], lim), 0)
    return boxes


def nms(dets: np.ndarray, thresh: float, limit: int = 0) -> list[int]:
    """py-faster-rcnn lib/nms/cpu_nms.pyx (float32 boxes, areas with the +1, a box goes when
    its overlap with a kept one is >= thresh, compared in double), vectorised per kept box.
    limit > 0: stop after that many kept (the first `limit` of the full answer).
    (The GPU kernel, nms_kernel.cu, drops a box only when the overlap is > thresh.)"""
    if dets.shape[0] == 0:
        return []
    x1, y1, x2, y2, scores = (dets[:, k] for k in range(5))
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    one, zero = np.float32(1), np.float32(0)
    while order.size > 0:
        i = order[0]
        keep.append(int(i))
        if limit and len(keep) >= limit:
            break
        rest = order[1:]
        w = np.maximum(zero, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + one)
        h = np.maximum(zero, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + one)
        inter = w * h
        ovr = inter / (areas[i] + areas[rest] - inter)
        order = rest[~(ovr.astype(np.float64) >= thresh)]
    return keep


@register_python("rpn.proposal_layer", "ProposalLayer")
class ProposalLayer(Layer):
    """py-faster-rcnn's RPN proposal layer (rbgirshick/py-faster-rcnn@781a917b378dbfdedb45b6a56189a31982da1b43
    lib/rpn/proposal_layer.py, with lib/rpn/generate_anchors.py, lib/fast_rcnn/bbox_transform.py,
    lib/nms/cpu_nms.pyx and lib/fast_rcnn/config.py's defaults); py-R-FCN's (YuwenXiong/py-R-FCN@290dba7f,
    same module and class) differs only in training-time target normalisation.

    Bottoms: rpn_cls_prob_reshape [1, 2A, H, W] (foreground: the second A channels),
    rpn_bbox_pred [1, 4A, H, W], im_info [1, 3] (height, width, scale). Top: rois [R, 5]
    (batch index 0, x1, y1, x2, y2), optionally scores [R, 1]. Caffe shapes them [1, 5]
    (and [1, 1, 1, 1]) at reshape time; the forward pass gives the real R."""
    host = True
    #: the row count of rois (and scores) is decided by each forward pass
    open_axes = ((0,), (0,))
    #: lib/fast_rcnn/config.py: (RPN_PRE_NMS_TOP_N, RPN_POST_NMS_TOP_N, RPN_NMS_THRESH, RPN_MIN_SIZE)
    CONFIG = {"TEST": (6000, 300, 0.7, 16), "TRAIN": (12000, 2000, 0.7, 16)}

    def setup(self, lp):
        self.param_str = lp.python_param.param_str
        try:
            params = yaml.safe_load(self.param_str) if self.param_str.strip() else None
        except yaml.YAMLError as err:
            raise self.error(f"param_str {self.param_str!r} is not YAML ({err}); expected e.g. \"'feat_stride': 16\"")
        if not isinstance(params, dict) or "feat_stride" not in params:
            raise self.error(f"param_str {self.param_str!r}: expected a YAML mapping with 'feat_stride'")
        self.feat_stride = params["feat_stride"]
        self.anchors = generate_anchors(scales=np.array(params.get("scales", (8, 16, 32))))
        self.phase = "TEST"

    def n_bottoms(self):
        return (3, 3)

    def output_shapes(self, in_shapes):
        if len(self.lp.top) not in (1, 2):
            raise self.error(f"has {len(self.lp.top)} tops; expected rois and optionally scores")
        a = self.anchors.shape[0]
        cls, bbox, _ = in_shapes
        if len(cls) != 4 or cls[1] != 2 * a or len(bbox) != 4 or bbox[1] != 4 * a or tuple(bbox[2:]) != tuple(cls[2:]):
            raise self.error(f"bottoms have shapes {list(cls)} and {list(bbox)}; expected 1 x {2 * a} x H x W scores "
                             f"and 1 x {4 * a} x H x W deltas")
        return [(1, 5), (1, 1, 1, 1)][:len(self.lp.top)]

    def geometry(self, in_geoms):
        return [None] * len(self.out_shapes)

    def summary(self):
        pre, post, thresh, _ = self.CONFIG[self.phase]
        return f"feat_stride {self.feat_stride}, {self.anchors.shape[0]} anchors, NMS {thresh:g} {pre} -> {post}"

    def emit(self, e, ins, outs):
        """Standard operators, step by step as `forward`: anchors shifted over the map
        (from its shape), bbox_transform_inv in float32 (the exponential in double, then
        rounded: `_exp`), clip to im_info, the min-size filter (Compress), TopK for the
        pre-NMS cut, cpu_nms as a Loop over the kept boxes (emit_greedy_nms) in its own
        arithmetic (float32 overlap with the +1 areas, `>= thresh` in double), Gather.
        Equal to `forward` to the bit except where scores tie: TopK puts equal scores in
        index order, NumPy's argsort (introsort) its own way. (ONNX NonMaxSuppression is
        not used: it rounds (x2 + 1) - x1 where cpu_nms rounds (x2 - x1) + 1, and drops
        at `> threshold`.)"""
        if self.in_shapes[0][0] != 1:
            raise self.error(f"input batch is {self.in_shapes[0][0]}; py-faster-rcnn supports only single "
                             "item batches (cannot be exported)")
        pre_nms_top_n, post_nms_top_n, nms_thresh, min_size = self.CONFIG[self.phase]
        a = self.anchors.shape[0]
        cls, bbox, info = ins
        one_f = e.const(np.float32(1), "one_f")
        half = e.const(np.float32(0.5), "half_f")

        def col(x, i):
            return _col(e, x, i)

        # anchors [K * A, 4] for the map's H x W, row (y, x, anchor) as forward's; integers, exact in float32
        h, w = _dim(e, cls, 2), _dim(e, cls, 3)
        stride = e.const(np.float32(self.feat_stride), "feat_stride")
        zero_i, one_i = e.ints(0, "zero"), e.ints(1, "one")
        sx = e.op("Mul", [e.op("Cast", [e.op("Range", [zero_i, w, one_i])], to=FLOAT), stride])   # [W]
        sy = e.op("Mul", [e.op("Cast", [e.op("Range", [zero_i, h, one_i])], to=FLOAT), stride])   # [H]
        sx = e.op("Unsqueeze", [sx, e.ints([0, 2, 3])])                                  # [1, W, 1, 1]
        sy = e.op("Unsqueeze", [sy, e.ints([1, 2, 3])])                                  # [H, 1, 1, 1]
        xs = e.op("Mul", [sx, e.const(np.array([1, 0, 1, 0], np.float32), "x_cols")])
        ys = e.op("Mul", [sy, e.const(np.array([0, 1, 0, 1], np.float32), "y_cols")])
        base = e.const(self.anchors.reshape(1, 1, a, 4).astype(np.float32), "anchors")
        anchors = e.op("Reshape", [e.op("Add", [e.op("Add", [base, xs]), ys]), e.ints([-1, 4])])
        widths = e.op("Add", [e.op("Sub", [col(anchors, 2), col(anchors, 0)]), one_f])           # [M, 1]
        heights = e.op("Add", [e.op("Sub", [col(anchors, 3), col(anchors, 1)]), one_f])
        ctr_x = e.op("Add", [col(anchors, 0), e.op("Mul", [half, widths])])
        ctr_y = e.op("Add", [col(anchors, 1), e.op("Mul", [half, heights])])
        # deltas [1, 4A, H, W] -> [M, 4]; foreground scores (the second A channels) -> [M]
        d = e.op("Reshape", [e.op("Transpose", [bbox], perm=[0, 2, 3, 1]), e.ints([-1, 4])])
        fg = e.op("Slice", [cls, e.ints([a]), e.ints([2 * a]), e.ints([1])])
        scores = e.op("Reshape", [e.op("Transpose", [fg], perm=[0, 2, 3, 1]), e.ints([-1])])

        def exp(x):   # the correctly rounded float32 exponential, as _exp
            return e.op("Cast", [e.op("Exp", [e.op("Cast", [x], to=DOUBLE)])], to=FLOAT)
        pcx = e.op("Add", [e.op("Mul", [col(d, 0), widths]), ctr_x])
        pcy = e.op("Add", [e.op("Mul", [col(d, 1), heights]), ctr_y])
        pw = e.op("Mul", [exp(col(d, 2)), widths])
        ph = e.op("Mul", [exp(col(d, 3)), heights])
        hw, hh = e.op("Mul", [half, pw]), e.op("Mul", [half, ph])
        # clip_boxes: min(max(v, 0) ...) as np.maximum(np.minimum(v, lim), 0), lim = size - 1 in float32
        im = e.op("Slice", [e.op("Reshape", [info, e.ints([-1])]), e.ints([0]), e.ints([3]), e.ints([0])])
        lim_y = e.op("Sub", [e.op("Gather", [im, e.ints(0, "im_h")]), one_f])
        lim_x = e.op("Sub", [e.op("Gather", [im, e.ints(1, "im_w")]), one_f])
        zero_f = e.const(np.float32(0), "zero_f")

        def clip(v, lim):
            return e.op("Max", [e.op("Min", [v, lim]), zero_f])
        x1, y1 = clip(e.op("Sub", [pcx, hw]), lim_x), clip(e.op("Sub", [pcy, hh]), lim_y)
        x2, y2 = clip(e.op("Add", [pcx, hw]), lim_x), clip(e.op("Add", [pcy, hh]), lim_y)
        # min-size filter: width and height (with the +1) >= RPN_MIN_SIZE * im_info[2]
        floor = e.op("Mul", [e.const(np.float32(min_size), "min_size"), e.op("Gather", [im, e.ints(2, "im_scale")])])
        ws = e.op("Add", [e.op("Sub", [x2, x1]), one_f])
        hs = e.op("Add", [e.op("Sub", [y2, y1]), one_f])
        keep = e.op("Reshape", [e.op("And", [e.op("GreaterOrEqual", [ws, floor]),
                                             e.op("GreaterOrEqual", [hs, floor])]), e.ints([-1])])
        boxes = e.op("Compress", [e.op("Concat", [x1, y1, x2, y2], axis=1), keep], axis=0)       # [M', 4]
        scores = e.op("Compress", [scores, keep], axis=0)                                          # [M']
        k = e.op("Shape", [scores])
        if pre_nms_top_n > 0:
            k = e.op("Min", [k, e.ints([pre_nms_top_n], "pre_nms_top_n")])
        scores, order = e.node("TopK", [scores, k], 2, axis=0, largest=1, sorted=1)
        boxes = e.op("Gather", [boxes, order], axis=0)
        cols = [e.op("Reshape", [col(boxes, i), e.ints([-1])]) for i in range(4)]
        areas = e.op("Mul", [e.op("Add", [e.op("Sub", [cols[2], cols[0]]), one_f]),
                             e.op("Add", [e.op("Sub", [cols[3], cols[1]]), one_f])])
        thresh = e.const(float(nms_thresh), "nms_thresh", np.float64)

        def suppress(op, first, rest):   # nms(): float32 overlap with the +1 areas, compared in double
            def side(lo, hi):
                d = op("Sub", [op("Min", [first[hi], rest[hi]]), op("Max", [first[lo], rest[lo]])])
                return op("Max", [zero_f, op("Add", [d, one_f])])
            inter = op("Mul", [side(0, 2), side(1, 3)])
            ovr = op("Div", [inter, op("Sub", [op("Add", [first[4], rest[4]]), inter])])
            return op("GreaterOrEqual", [op("Cast", [ovr], to=DOUBLE), thresh])
        limit = e.ints(post_nms_top_n, "post_nms_top_n") if post_nms_top_n > 0 else None
        idx = emit_greedy_nms(e, self, cols + [areas], suppress, limit)
        kept = e.op("Gather", [boxes, idx], axis=0)
        batch = e.op("ConstantOfShape", [e.op("Concat", [e.op("Shape", [idx]), e.ints([1])], axis=0)],
                     value=helper.make_tensor("zero", FLOAT, [1], [0.0]))
        e.op("Concat", [batch, kept], outs[0], axis=1)                                            # [R, 5]
        if len(outs) > 1:
            rank = len(self.out_shapes[1]) if self.out_shapes else 2
            e.op("Reshape", [e.op("Gather", [scores, idx], axis=0), e.ints([-1] + [1] * (rank - 1))], outs[1])

    def forward(self, inputs):
        cls_prob, deltas, im_info = (np.asarray(x, np.float32) for x in inputs)
        if cls_prob.shape[0] != 1:
            raise self.error(f"input batch is {cls_prob.shape[0]}; py-faster-rcnn supports only single item batches")
        pre_nms_top_n, post_nms_top_n, nms_thresh, min_size = self.CONFIG[self.phase]
        a = self.anchors.shape[0]
        scores = cls_prob[:, a:, :, :]
        im_info = im_info.reshape(im_info.shape[0], -1)[0, :]
        height, width = scores.shape[-2:]
        shift_x, shift_y = np.meshgrid(np.arange(0, width) * self.feat_stride, np.arange(0, height) * self.feat_stride)
        shifts = np.vstack((shift_x.ravel(), shift_y.ravel(), shift_x.ravel(), shift_y.ravel())).transpose()
        k = shifts.shape[0]
        anchors = (self.anchors.reshape((1, a, 4)) + shifts.reshape((1, k, 4)).transpose((1, 0, 2))).reshape((k * a, 4))
        deltas = deltas.transpose((0, 2, 3, 1)).reshape((-1, 4))
        scores = scores.transpose((0, 2, 3, 1)).reshape((-1, 1))
        proposals = clip_boxes(bbox_transform_inv(anchors, deltas), im_info[:2])
        ws = proposals[:, 2] - proposals[:, 0] + 1
        hs = proposals[:, 3] - proposals[:, 1] + 1
        floor = min_size * im_info[2]
        keep = np.where((ws >= floor) & (hs >= floor))[0]
        proposals, scores = proposals[keep, :], scores[keep]
        order = scores.ravel().argsort()[::-1]
        if pre_nms_top_n > 0:
            order = order[:pre_nms_top_n]
        proposals, scores = proposals[order, :], scores[order]
        keep = nms(np.hstack((proposals, scores)), nms_thresh, post_nms_top_n)
        if post_nms_top_n > 0:
            keep = keep[:post_nms_top_n]
        proposals, scores = proposals[keep, :], scores[keep]
        blob = np.hstack((np.zeros((proposals.shape[0], 1), np.float32), proposals.astype(np.float32, copy=False)))
        return [blob, scores.astype(np.float32)][:len(self.lp.top)]
