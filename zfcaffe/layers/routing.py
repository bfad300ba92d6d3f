"""Layers that route data without arithmetic: Concat, Slice, Split, Silence, Tile,
Dropout (identity at test time), Flatten, Reshape, Crop."""
from __future__ import annotations

import numpy as np

from .base import WHOLE, Layer, canonical_axis, count, register


class _Routing(Layer):
    """A layer that moves the signal: its backward pass reads no forward value."""

    def backward_reads(self):
        return []


@register("Concat")
class Concat(_Routing):
    def setup(self, lp):
        p = lp.concat_param
        self.legacy_dim = p.concat_dim if p.HasField("concat_dim") else None
        self.axis_param = p.axis

    def n_bottoms(self):
        return (1, 1 << 30)

    def output_shapes(self, in_shapes):
        s0 = in_shapes[0]
        self.axis = self.legacy_dim if self.legacy_dim is not None else \
            canonical_axis(self.axis_param, len(s0), self)
        for s in in_shapes:
            if len(s) != len(s0) or any(a != b for i, (a, b) in enumerate(zip(s, s0)) if i != self.axis):
                raise self.error(f"bottoms {[list(x) for x in in_shapes]} differ outside axis {self.axis}")
        out = list(s0)
        out[self.axis] = sum(s[self.axis] for s in in_shapes)
        return [tuple(out)]

    def emit(self, e, ins, outs):
        e.op("Concat", ins, outs[0], axis=self.axis)

    def backward(self, ctx, top_diffs):
        bounds = np.cumsum([s[self.axis] for s in self.in_shapes])[:-1]
        return np.split(top_diffs[0], bounds, axis=self.axis)


@register("Slice")
class Slice(_Routing):
    def setup(self, lp):
        p = lp.slice_param
        self.legacy_dim = p.slice_dim if p.HasField("slice_dim") else None
        self.axis_param = p.axis
        self.points = list(p.slice_point)

    def output_shapes(self, in_shapes):
        s = in_shapes[0]
        self.axis = self.legacy_dim if self.legacy_dim is not None else \
            canonical_axis(self.axis_param, len(s), self)
        n_tops, dim = len(self.lp.top), s[self.axis]
        if self.points:
            if len(self.points) != n_tops - 1:
                raise self.error(f"{len(self.points)} slice points for {n_tops} tops; expected {n_tops - 1}")
            bounds = [0, *self.points, dim]
            if any(b <= a for a, b in zip(bounds, bounds[1:])):
                raise self.error(f"slice points {self.points} are not increasing inside 0..{dim}")
            self.sizes = [b - a for a, b in zip(bounds, bounds[1:])]
        else:
            if dim % n_tops:
                raise self.error(f"axis {self.axis} of size {dim} cannot be split into {n_tops} equal parts")
            self.sizes = [dim // n_tops] * n_tops
        return [tuple(s[:self.axis]) + (n,) + tuple(s[self.axis + 1:]) for n in self.sizes]

    def emit(self, e, ins, outs):
        e.node("Split", [ins[0], e.ints(self.sizes, "split")], outs, axis=self.axis)

    def backward(self, ctx, top_diffs):
        rows = next(d.shape[0] for d in top_diffs if d is not None)
        parts = [d if d is not None else np.zeros((rows,) + s[1:], np.float32)
                 for d, s in zip(top_diffs, self.out_shapes)]
        return [np.concatenate(parts, axis=self.axis)]


@register("Split")
class Split(_Routing):
    def output_shapes(self, in_shapes):
        return [tuple(in_shapes[0])] * len(self.lp.top)

    def emit(self, e, ins, outs):
        for o in outs:
            e.op("Identity", ins, o)

    def backward(self, ctx, top_diffs):
        present = [d for d in top_diffs if d is not None]
        return [sum(present[1:], present[0].copy())]


@register("Silence")
class Silence(_Routing):
    def n_bottoms(self):
        return (1, 1 << 30)

    def output_shapes(self, in_shapes):
        return []

    def emit(self, e, ins, outs):
        pass

    def backward(self, ctx, top_diffs):
        return [None] * len(self.bottoms)


@register("Dropout")
class Dropout(_Routing):
    """Identity at test time: Caffe scales by 1/(1-ratio) while training instead.

    `scale_train: false` (DropoutParameter field 2 of rbgirshick/caffe-fast-rcnn@4115385d
    src/caffe/layers/dropout_layer.cpp, also in Microsoft/caffe): training keeps units
    unscaled and the test phase multiplies by 1/scale, scale = 1/(1 - ratio), each float32."""

    def setup(self, lp):
        p = lp.dropout_param
        self.ratio = p.dropout_ratio
        self.scale_train = getattr(p, "scale_train", True)
        if not 0 <= self.ratio < 1:                     # scale = 1 / (1 - ratio) below
            raise self.error(f"dropout_ratio {self.ratio:g}; expected 0 <= dropout_ratio < 1")
        scale = np.float32(1.0 / (1.0 - float(np.float32(self.ratio))))
        self.factor = 1.0 if self.scale_train else float(np.float32(1.0 / float(scale)))

    def summary(self):
        if self.factor != 1.0:
            return f"ratio {self.ratio:g}, scale_train false (x {self.factor:g} at test)"
        return f"ratio {self.ratio:g} (identity at test)"

    def emit(self, e, ins, outs):
        if self.factor != 1.0:
            e.op("Mul", [ins[0], e.const(self.factor, "dropout_factor")], outs[0])
        else:
            e.op("Identity", ins, outs[0])

    def backward(self, ctx, top_diffs):
        return [top_diffs[0] * np.float32(self.factor) if self.factor != 1.0 else top_diffs[0]]


@register("Tile")
class Tile(_Routing):
    def setup(self, lp):
        self.axis_param, self.tiles = lp.tile_param.axis, lp.tile_param.tiles
        if self.tiles < 1:
            raise self.error("tile_param.tiles must be at least 1")

    def output_shapes(self, in_shapes):
        s = list(in_shapes[0])
        self.axis = canonical_axis(self.axis_param, len(s), self)
        s[self.axis] *= self.tiles
        return [tuple(s)]

    def geometry(self, in_geoms):
        return [in_geoms[0] if self.axis < 2 else None]

    def emit(self, e, ins, outs):
        reps = [1] * len(self.in_shapes[0])
        reps[self.axis] = self.tiles
        e.op("Tile", [ins[0], e.ints(reps)], outs[0])

    def backward(self, ctx, top_diffs):
        t = top_diffs[0]
        shape = t.shape[:self.axis] + (self.tiles, t.shape[self.axis] // self.tiles) + t.shape[self.axis + 1:]
        return [t.reshape(shape).sum(axis=self.axis)]


class _Reshaping(_Routing):
    """Static reshapes; spatial geometry survives only if H and W are untouched."""

    def geometry(self, in_geoms):
        g = in_geoms[0]
        s_in, s_out = self.in_shapes[0], self.out_shapes[0]
        if g is None or (len(s_out) == len(s_in) and s_out[2:] == s_in[2:]):
            return [g]
        return [WHOLE]

    def keeps_first_axis(self) -> bool:
        """Whether Caffe's rule gives the top the bottom's first axis at any size of it."""
        return False

    def emit(self, e, ins, outs):
        shape = list(self.out_shapes[0])
        if self.keeps_first_axis():   # ONNX's 0 copies it: rows a proposal layer decides stay open
            shape[0] = 0
        e.op("Reshape", [ins[0], e.ints(shape)], outs[0])

    def backward(self, ctx, top_diffs):
        if self.in_shapes[0][0] != self.out_shapes[0][0]:
            raise self.error("backward passes cannot follow a reshape of the batch axis")
        t = top_diffs[0]
        return [t.reshape((t.shape[0],) + tuple(self.in_shapes[0][1:]))]


@register("Flatten")
class Flatten(_Reshaping):
    def setup(self, lp):
        self.axis_param, self.end_param = lp.flatten_param.axis, lp.flatten_param.end_axis

    def output_shapes(self, in_shapes):
        s = in_shapes[0]
        a = canonical_axis(self.axis_param, len(s), self)
        b = canonical_axis(self.end_param, len(s), self)
        if b < a:
            raise self.error(f"end_axis {self.end_param} comes before axis {self.axis_param} of a {len(s)}-D input")
        return [(*s[:a], count(s[a:b + 1]), *s[b + 1:])]

    def keeps_first_axis(self):
        return canonical_axis(self.axis_param, len(self.in_shapes[0]), self) > 0


@register("Reshape")
class Reshape(_Reshaping):
    """Caffe's rules: 0 copies the input dimension, one -1 is inferred;
    axis/num_axes select the part of the input shape that is replaced."""

    def setup(self, lp):
        p = lp.reshape_param
        self.dims = list(p.shape.dim)
        self.axis_param, self.num_axes = p.axis, p.num_axes
        if self.dims.count(-1) > 1:
            raise self.error("more than one -1 in reshape_param.shape")

    def summary(self):
        return f"shape {self.dims}"

    def output_shapes(self, in_shapes):
        s = list(in_shapes[0])
        rank = len(s)
        start = self.axis_param if self.axis_param >= 0 else rank + self.axis_param + 1
        if not 0 <= start <= rank:
            raise self.error(f"axis {self.axis_param} out of range for a {rank}-D input")
        end = rank if self.num_axes == -1 else start + self.num_axes
        if end > rank or self.num_axes < -1:
            raise self.error(f"num_axes {self.num_axes} out of range for a {rank}-D input")
        new = []
        for i, d in enumerate(self.dims):
            if d == 0:
                if start + i >= rank:
                    raise self.error(f"dim {i} is 0 but the input has no axis {start + i}")
                new.append(s[start + i])
            else:
                new.append(d)
        out = s[:start] + new + s[end:]
        if -1 in out:
            known = count([d for d in out if d != -1])
            if known == 0 or count(s) % known:
                raise self.error(f"cannot infer -1 for input {s} and shape {self.dims}")
            out[out.index(-1)] = count(s) // known
        if count(out) != count(s):
            raise self.error(f"shape {out} has {count(out)} elements; the input {s} has {count(s)}")
        return [tuple(out)]

    def keeps_first_axis(self):
        s, out = self.in_shapes[0], self.out_shapes[0]
        start = self.axis_param if self.axis_param >= 0 else len(s) + self.axis_param + 1
        if start > 0:
            return True
        # 0 copies it; a -1 there is inferred as it whenever the other axes hold the rest
        return bool(self.dims) and (self.dims[0] == 0 or (self.dims[0] == -1 and count(s[1:]) == count(out[1:])))


@register("Crop")
class Crop(_Routing):
    """Cut bottom[0] to bottom[1]'s shape from `axis` on, at the given offsets."""

    def setup(self, lp):
        self.axis_param, self.offsets = lp.crop_param.axis, list(lp.crop_param.offset)

    def n_bottoms(self):
        return (2, 2)

    def output_shapes(self, in_shapes):
        s, ref = in_shapes
        self.axis = canonical_axis(self.axis_param, len(s), self)
        n = len(s) - self.axis
        if len(self.offsets) not in (0, 1, n):
            raise self.error(f"{len(self.offsets)} offsets; expected 0, 1 or {n}")
        self.offs = [0] * n if not self.offsets else (self.offsets * n if len(self.offsets) == 1 else self.offsets)
        out = list(s[:self.axis]) + list(ref[self.axis:])
        for i, o in enumerate(self.offs):
            a = self.axis + i
            if s[a] < ref[a] + o:
                raise self.error(f"axis {a}: size {s[a]} is too small for crop {ref[a]} at offset {o}")
        return [tuple(out)]

    def n_spatial_offsets(self):
        return [self.offs[i - self.axis] if i >= self.axis else 0 for i in (2, 3)]

    def geometry(self, in_geoms):
        g = in_geoms[0]
        return [g.shift(self.n_spatial_offsets()) if g is not None else None]

    def emit(self, e, ins, outs):
        axes = list(range(self.axis, len(self.in_shapes[0])))
        ends = [o + self.out_shapes[0][a] for o, a in zip(self.offs, axes)]
        e.op("Slice", [ins[0], e.ints(self.offs), e.ints(ends), e.ints(axes)], outs[0])

    def backward(self, ctx, top_diffs):
        t = top_diffs[0]
        out = np.zeros((t.shape[0],) + tuple(self.in_shapes[0][1:]), np.float32)
        index = [slice(None)] * self.axis + [slice(o, o + n) for o, n in zip(self.offs, t.shape[self.axis:])]
        out[tuple(index)] = t
        return [out, None]
