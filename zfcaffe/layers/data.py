"""Net inputs: the Input layer and the data layers of train/test nets, which become
graph inputs with shapes read from their parameters; and Parameter (a learned blob
as output)."""
from __future__ import annotations

from .base import Geometry, Layer, register


class _InputLayer(Layer):
    """A layer whose tops the caller feeds. `declared_shapes` may hold None for
    shapes Caffe would only learn from the database (the caller must give them)."""
    is_input = True

    def backward_reads(self):
        return []

    def setup(self, lp):
        # which declared tops the graph keeps (unread labels are left out)
        self.top_index = list(range(len(lp.top)))

    def n_bottoms(self):
        return (0, 0)

    def declared_shapes(self) -> list[tuple | None]:
        raise NotImplementedError

    def output_shapes(self, in_shapes):
        return self.resolved  # set by the graph from declared shapes and overrides

    def geometry(self, in_geoms):
        return [Geometry.identity() if len(s) == 4 else None for s in self.out_shapes]

    def emit(self, e, ins, outs):
        pass


def _image_shapes(layer: Layer, batch: int, channels: int, h: int | None, w: int | None, n_tops: int):
    crop = layer.lp.transform_param.crop_size
    if crop:
        h = w = crop
    data = (batch, channels, h, w) if h and w and batch else None
    return [data] + [(batch,) if batch else None] * (n_tops - 1)


@register("Input")
class Input(_InputLayer):
    def declared_shapes(self):
        shapes = [tuple(s.dim) for s in self.lp.input_param.shape]
        n = len(self.lp.top)
        if len(shapes) == 1:
            return shapes * n
        if len(shapes) not in (0, n):
            raise self.error(f"{len(shapes)} shapes for {n} tops; expected 1 or {n}")
        return shapes or [None] * n


@register("Data")
class Data(_InputLayer):
    def declared_shapes(self):
        channels = 1 if self.lp.transform_param.force_gray else 3
        return _image_shapes(self, self.lp.data_param.batch_size, channels, None, None, len(self.lp.top))


@register("ImageData")
class ImageData(_InputLayer):
    def declared_shapes(self):
        p = self.lp.image_data_param
        return _image_shapes(self, p.batch_size, 3 if p.is_color else 1,
                             p.new_height or None, p.new_width or None, len(self.lp.top))


@register("WindowData")
class WindowData(_InputLayer):
    def declared_shapes(self):
        return _image_shapes(self, self.lp.window_data_param.batch_size, 3, None, None, len(self.lp.top))


@register("MemoryData")
class MemoryData(_InputLayer):
    def declared_shapes(self):
        p = self.lp.memory_data_param
        return [(p.batch_size, p.channels, p.height, p.width), (p.batch_size,)][:len(self.lp.top)]


@register("HDF5Data")
class HDF5Data(_InputLayer):
    def declared_shapes(self):
        return [None] * len(self.lp.top)  # known only from the HDF5 files


@register("DummyData")
class DummyData(_InputLayer):
    def declared_shapes(self):
        p = self.lp.dummy_data_param
        n = len(self.lp.top)
        if len(p.shape):
            shapes = [tuple(s.dim) for s in p.shape]
        else:
            shapes = [tuple(x) for x in zip(p.num, p.channels, p.height, p.width)]
        return shapes * n if len(shapes) == 1 else shapes


class PythonData(_InputLayer):
    """A Python layer without bottoms is a data layer: its tops become net inputs
    whose shapes the caller gives (the Python code itself is never run)."""

    def declared_shapes(self):
        return [None] * len(self.lp.top)


@register("Parameter")
class Parameter(Layer):
    """Outputs its one learned blob."""

    def n_bottoms(self):
        return (0, 0)

    def output_shapes(self, in_shapes):
        return [tuple(self.lp.parameter_param.shape.dim)]

    def param_shapes(self, in_shapes):
        return [tuple(self.lp.parameter_param.shape.dim)]

    def geometry(self, in_geoms):
        return [None]

    def emit(self, e, ins, outs):
        e.op("Identity", [e.weight(self, 0)], outs[0])
