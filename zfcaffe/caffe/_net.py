"""pycaffe's Net, Blob and Layer over zfcaffe's engine: Caffe's blob names and in-place
semantics, forward/backward between named layers on the data already in the blobs,
writable parameters (net surgery), and saving a caffemodel that Caffe loads.

What the engine keeps by key (one value per layer output), a pycaffe blob shows by
Caffe's name: after forward, `blobs['conv1'].data` is the rectified value (the
in-place ReLU wrote last); after backward, `blobs['conv1'].diff` is the diff of the
convolution's output (the ReLU's bottom diff, written last).
"""
from __future__ import annotations

import collections
import itertools
import os
import sys

import numpy as np

from ..errors import ZfcaffeError

TRAIN, TEST = 0, 1           # caffe.TRAIN, caffe.TEST (Caffe's Phase enum)


class _Weights(np.ndarray):
    """A parameter array: writes through it or any view of it (`w[...] = x`, `w -= m`,
    `w.fill(0)`) tell the net, which rebuilds its sessions before the next pass."""

    def __array_finalize__(self, obj):
        self._on_write = getattr(obj, "_on_write", None)

    def _touch(self):
        if self._on_write is not None:
            self._on_write()

    def __setitem__(self, index, value):
        super().__setitem__(index, value)
        self._touch()

    def fill(self, value):
        super().fill(value)
        self._touch()

    def copy(self, order="C"):
        return np.array(self, order=order, subok=False)

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        plain = [x.view(np.ndarray) if isinstance(x, _Weights) else x for x in inputs]
        if out is not None:
            kwargs["out"] = tuple(o.view(np.ndarray) if isinstance(o, _Weights) else o for o in out)
        result = getattr(ufunc, method)(*plain, **kwargs)
        if out is None:
            return result
        for o in out:
            if isinstance(o, _Weights):
                o._touch()
        return out[0] if len(out) == 1 else out


class _BlobValues(dict):
    """Blob name -> its current array. After a forward pass a blob's value stays in the
    engine (`latest`: name -> engine key) until it is first read, so a pass costs what
    the engine's pass costs."""

    def __init__(self, engine):
        super().__init__()
        self.engine = engine
        self.latest: dict[str, str] = {}

    def __contains__(self, name) -> bool:
        return dict.__contains__(self, name) or name in self.latest

    def __missing__(self, name):
        if name not in self.latest:
            raise KeyError(name)
        value = self.engine.layer_outputs[self.latest.pop(name)]
        self[name] = value
        return value

    def __setitem__(self, name, value):
        self.latest.pop(name, None)
        super().__setitem__(name, value)

    def shape_of(self, name) -> tuple:
        if name in self.latest:
            return tuple(self.engine.graph.shapes[self.latest[name]])
        return self[name].shape


class Blob:
    """pycaffe's Blob: writable `.data` and `.diff`, `.shape`, `.count`, `.reshape()`."""

    def __init__(self, net: "Net", name: str):
        self._net, self._name = net, name

    @property
    def data(self) -> np.ndarray:
        return self._net._data[self._name]

    @data.setter
    def data(self, value):
        self.data[...] = value

    @property
    def diff(self) -> np.ndarray:
        diffs, shape = self._net._diff, self.shape
        if self._name not in diffs or diffs[self._name].shape != shape:
            diffs[self._name] = np.zeros(shape, np.float32)
        return diffs[self._name]

    @diff.setter
    def diff(self, value):
        self.diff[...] = value

    @property
    def shape(self) -> tuple:
        return tuple(self._net._data.shape_of(self._name))

    @property
    def count(self) -> int:
        return int(np.prod(self.shape))

    def _legacy(self, axis: int) -> int:
        return self.shape[axis] if axis < len(self.shape) else 1

    num = property(lambda self: self._legacy(0))
    channels = property(lambda self: self._legacy(1))
    height = property(lambda self: self._legacy(2))
    width = property(lambda self: self._legacy(3))

    def reshape(self, *shape) -> None:
        """Like Caffe's Blob::Reshape: new (undefined here: zero) contents; forward()
        reshapes the layers above an input blob, as Caffe's Layer::Forward does."""
        shape = tuple(int(d) for d in (shape[0] if len(shape) == 1 and not np.isscalar(shape[0]) else shape))
        if shape != self.shape:
            self._net._data[self._name] = np.zeros(shape, np.float32)

    def __repr__(self):
        return f"<Blob {self._name} {list(self.shape)}>"


class ParamBlob:
    """A parameter blob: `.data` is the layer's own array, writable in place (the change
    takes effect at the next pass); `.diff` is refused: zfcaffe computes no parameter
    gradients."""

    def __init__(self, net: "Net", layer, index: int):
        self._net, self._layer, self._i = net, layer, index

    @property
    def data(self) -> np.ndarray:
        view = self._layer.blobs[self._i].view(_Weights)
        view._on_write = self._net._params_changed
        return view

    @data.setter
    def data(self, value):
        self.data[...] = value

    @property
    def diff(self):
        raise ZfcaffeError(f"params['{self._layer.name}'][{self._i}].diff: zfcaffe computes no parameter "
                           "gradients (it runs and analyses nets; it does not train them); blob diffs "
                           "(net.blobs[name].diff) are computed by backward()")

    shape = property(lambda self: tuple(self._layer.blobs[self._i].shape))
    count = property(lambda self: int(self._layer.blobs[self._i].size))
    num = property(lambda self: Blob._legacy(self, 0))
    channels = property(lambda self: Blob._legacy(self, 1))
    height = property(lambda self: Blob._legacy(self, 2))
    width = property(lambda self: Blob._legacy(self, 3))

    def reshape(self, *shape):
        raise ZfcaffeError(f"params['{self._layer.name}'][{self._i}].reshape: parameter shapes follow the "
                           "prototxt; change num_output there, or assign data of the same shape")

    def __repr__(self):
        return f"<Blob {self._layer.name}[{self._i}] {list(self.shape)}>"


class Layer:
    """pycaffe's Layer: `.type` and `.blobs` (its parameters) of a net's layer; and, as in
    pycaffe, the base class of Python layers (`class ProposalLayer(caffe.Layer)`), whose
    setup/reshape/forward zfcaffe calls with `self.param_str` set (zfcaffe/layers/python.py)."""

    def __init__(self, net: "Net", layer):
        self._net, self._layer = net, layer
        self.type = layer.type

    @property
    def blobs(self) -> list:
        if "_net" not in self.__dict__:      # a Python layer's own learnable blobs
            return self.__dict__.setdefault("_own_blobs", [])
        return [ParamBlob(self._net, self._layer, i) for i in range(len(self._layer.blobs))]

    def reshape(self, bottom, top):
        raise ZfcaffeError(f"layer '{self._layer.name}'.reshape: zfcaffe's layers are not Python layers; "
                           "reshape inputs with net.blobs[name].reshape(...) and net.reshape()")

    def __repr__(self):
        return f"<Layer {self._layer.name} ({self.type})>"


def _phase_name(phase) -> str:
    if phase in (TRAIN, "TRAIN", "train"):
        return "TRAIN"
    if phase in (TEST, "TEST", "test"):
        return "TEST"
    raise ZfcaffeError(f"phase {phase!r}: expected caffe.TEST or caffe.TRAIN")


def _net_arguments(args, phase, weights) -> tuple[str | None, str]:
    """pycaffe's signatures: Net(file, phase[, level, stages], weights=...) and the
    older Net(file, weights, phase)."""
    args = list(args)
    if len(args) == 2 and isinstance(args[0], (str, os.PathLike)):
        weights, phase = args
    elif len(args) >= 1:
        phase = args[0]
        if len(args) > 1:
            raise ZfcaffeError("caffe.Net(model, phase, level, stages): pass level= and stages= by name")
    if phase is None:
        raise ZfcaffeError("caffe.Net(model, [weights,] phase): the phase is missing; expected caffe.TEST")
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise ZfcaffeError(f"caffe.Net: weights {weights!r} is not a file path")
    return (None if weights is None else os.fspath(weights)), _phase_name(phase)


class Net:
    """pycaffe's caffe.Net, run by zfcaffe (ONNX Runtime forward, Numba backward)."""

    def __init__(self, network_file, *args, phase=None, weights=None, level: int = 0, stages=None):
        from ..net import Net as Engine
        weights, phase_name = _net_arguments(args, phase, weights)
        network_file = os.fspath(network_file)
        # a train/test net whose data layer reads a database: zfcaffe.Net takes the input
        # shapes from the weights (and says so in its notes), as Caffe takes them from the data
        self._engine = Engine(network_file, weights, phase=phase_name, level=level, stages=tuple(stages or ()),
                              allow_missing_weights=weights is None)
        g = self._engine.graph
        for layer in g.layers:     # writable parameters (a memory-mapped caffemodel is read-only)
            layer.blobs = [b if b.flags.writeable and b.flags.c_contiguous else np.array(b, np.float32)
                           for b in layer.blobs]
        # Caffe's blob names: each layer's kept tops, in order of first appearance
        self._top_names = collections.OrderedDict()
        self._name_of: dict[str, str] = {}          # engine key -> Caffe blob name
        for layer in g.layers:
            names = [layer.lp.top[i] for i in getattr(layer, "top_index", range(len(layer.lp.top)))]
            self._top_names[layer.name] = names
            self._name_of.update(zip(layer.tops, names))
        self._blob_names = list(dict.fromkeys(n for names in self._top_names.values() for n in names))
        self._data = _BlobValues(self._engine)
        self._diff: dict[str, np.ndarray] = {}
        self._stale_params = False
        self._sharing = [self]          # the nets that share these parameter arrays (share_with)
        self._warned_force_backward = False
        self._allocate()

    # -- structure ---------------------------------------------------------------------
    @property
    def blobs(self) -> "collections.OrderedDict[str, Blob]":
        return collections.OrderedDict((n, Blob(self, n)) for n in self._blob_names)

    @property
    def params(self) -> "collections.OrderedDict[str, list[ParamBlob]]":
        return collections.OrderedDict((l.name, Layer(self, l).blobs) for l in self._engine.graph.layers
                                       if l.blobs)

    @property
    def layers(self) -> list[Layer]:
        return [Layer(self, l) for l in self._engine.graph.layers]

    @property
    def layer_dict(self) -> "collections.OrderedDict[str, Layer]":
        return collections.OrderedDict((l.name, Layer(self, l)) for l in self._engine.graph.layers)

    @property
    def _layer_names(self) -> list[str]:
        return [l.name for l in self._engine.graph.layers]

    @property
    def top_names(self) -> "collections.OrderedDict[str, list[str]]":
        return collections.OrderedDict((k, list(v)) for k, v in self._top_names.items())

    @property
    def bottom_names(self) -> "collections.OrderedDict[str, list[str]]":
        return collections.OrderedDict((l.name, list(l.lp.bottom)) for l in self._engine.graph.layers)

    @property
    def inputs(self) -> list[str]:
        """The tops of Input layers (Caffe's net inputs; a Data layer's are not)."""
        return [n for l in self._engine.graph.layers if l.is_input and l.type == "Input"
                for n in self._top_names[l.name]]

    @property
    def outputs(self) -> list[str]:
        return [self._name_of[k] for k in self._engine.graph.outputs()]

    @property
    def blob_loss_weights(self) -> "collections.OrderedDict[str, float]":
        # loss layers are dropped from analysis graphs: no blob carries a loss weight
        return collections.OrderedDict((n, 0.0) for n in self._blob_names)

    # -- shapes ------------------------------------------------------------------------
    def _allocate(self) -> None:
        g = self._engine.graph
        for layer in g.layers:
            for key, name in zip(layer.tops, self._top_names[layer.name]):
                shape = tuple(g.shapes[key])
                if name not in self._data or self._data.shape_of(name) != shape:
                    self._data[name] = np.zeros(shape, np.float32)

    def reshape(self) -> None:
        """Propagate the input blobs' shapes through the net (pycaffe's net.reshape())."""
        g = self._engine.graph
        want = {k: self._data[self._name_of[k]].shape for k in g.inputs}
        if any(tuple(s) != tuple(g.inputs[k]) for k, s in want.items()):
            self._engine.reshape(**want)
        self._allocate()

    # -- running -----------------------------------------------------------------------
    def _params_changed(self) -> None:
        for net in self._sharing:
            net._stale_params = True

    def _refresh_params(self) -> None:
        if self._stale_params:
            self._engine._sessions.clear()
            for layer in self._engine.graph.layers:
                layer.__dict__.pop("_wt", None)        # the backward engine's cached W^T
            self._stale_params = False

    def _index(self, layer_name: str) -> int:
        try:
            return self._layer_names.index(layer_name)
        except ValueError:
            from ..graph.graph import did_you_mean
            raise ZfcaffeError(f"{self._engine.graph.path}: no layer named '{layer_name}'"
                               + did_you_mean(layer_name, self._layer_names)) from None

    def _set_inputs(self, kwargs: dict) -> None:
        if set(kwargs) != set(self.inputs):
            raise ZfcaffeError(f"Input blob arguments do not match net inputs: got {sorted(kwargs)}, "
                               f"the net's inputs are {self.inputs}")
        for name, value in kwargs.items():
            if np.shape(value)[0] != self._data[name].shape[0]:
                raise ZfcaffeError(f"Input is not batch sized: '{name}' has {np.shape(value)[0]} items, the blob "
                                   f"{self._data[name].shape[0]} (reshape it first)")
            self._data[name][...] = value

    def forward(self, blobs=None, start=None, end=None, **kwargs) -> dict[str, np.ndarray]:
        """Run layers start..end (by name; default all) on the data in the blobs (inputs
        given as keyword arguments are copied in first). Returns end's tops (or the
        net's outputs) and `blobs`, by name."""
        blobs = list(blobs or [])
        first = self._index(start) if start is not None else 0
        last = self._index(end) if end is not None else len(self._layer_names) - 1
        outputs = set((self._top_names[end] if end is not None else self.outputs) + blobs)
        if kwargs:
            self._set_inputs(kwargs)
        self._forward(first, last)
        return {out: self._data[out] for out in outputs}

    def _forward(self, first: int, last: int) -> None:
        self._refresh_params()
        self.reshape()
        g, engine = self._engine.graph, self._engine
        values = {k: self._data[self._name_of[k]] for k in g.inputs}
        if first == 0 and last == len(g.layers) - 1:
            engine.forward(**values)
            produced = [k for l in g.layers for k in l.tops if not l.is_input]
        else:
            span = g.layers[first:last + 1]
            produced = [k for l in span if not l.is_input for k in l.tops]
            if not produced:
                return
            inside = set(produced)
            for l in span:
                for b in l.bottoms:
                    if b not in inside:
                        values[b] = self._data[self._name_of[b]]
            engine.forward_span(first, last, values)
        for key in produced:                 # in order: an in-place layer's value is written last
            name = self._name_of[key]
            dict.pop(self._data, name, None)
            self._data.latest[name] = key

    def backward(self, diffs=None, start=None, end=None, **kwargs) -> dict[str, np.ndarray]:
        """Caffe's Backward from layer start down to layer end (by name; default all),
        from the diffs already in the blobs (outputs' diffs given as keyword arguments are
        copied in first): true gradients (the engine's backprop mode). Returns end's
        bottoms' diffs (or the inputs'), and `diffs`, by name."""
        diffs = list(diffs or [])
        first = self._index(end) if end is not None else 0
        last = self._index(start) if start is not None else len(self._layer_names) - 1
        outputs = set((self.bottom_names[end] if end is not None else self.inputs) + diffs)
        if kwargs:
            if set(kwargs) != set(self.outputs):
                raise ZfcaffeError(f"Top diff arguments do not match net outputs: got {sorted(kwargs)}, the net's "
                                   f"outputs are {self.outputs}")
            for name, value in kwargs.items():
                if np.shape(value)[0] != self._data[name].shape[0]:
                    raise ZfcaffeError(f"Diff is not batch sized: '{name}' has {np.shape(value)[0]} items")
                self.blobs[name].diff[...] = value
        self._backward(first, last)
        return {out: self.blobs[out].diff for out in outputs}

    def _backward(self, first: int, last: int) -> None:
        g = self._engine.graph
        if not self._engine.layer_outputs:
            raise ZfcaffeError("backward() before any forward(): run net.forward() first")
        self._refresh_params()
        if not g.force_backward and not self._warned_force_backward and os.environ.get("ZFCAFFE_QUIET") != "1":
            print("zfcaffe.caffe: this prototxt does not set force_backward: true, where real Caffe would leave "
                  "the input's diff at zero; zfcaffe computes every diff", file=sys.stderr)
            self._warned_force_backward = True
        span = g.layers[first:last + 1]
        read_inside = {b for l in span for b in l.bottoms}
        seeds = {}
        for layer in span:
            for key in layer.tops:
                name = self._name_of[key]
                if key not in read_inside and name in self._diff and not layer.is_input:
                    seeds[key] = self._diff[name]
        if not seeds:
            return
        reached = self._engine.backward(seeds, "backprop") if (first, last) == (0, len(g.layers) - 1) else \
            _span_backward(self._engine, seeds, first, last)
        order = {k: i for i, l in enumerate(g.layers) for k in l.tops}
        for key in sorted(reached, key=lambda k: -order.get(k, -1)):   # the lowest key of a name is written last
            if key in seeds:
                continue
            name = self._name_of[key]
            target = self.blobs[name].diff
            np.copyto(target, reached[key].reshape(target.shape))

    def forward_all(self, blobs=None, **kwargs) -> dict[str, np.ndarray]:
        """Forward every item of the inputs in batches of the net's batch size (the
        last one padded with zeros); returns the outputs (and `blobs`) of all items."""
        all_outs = {out: [] for out in set(self.outputs + list(blobs or []))}
        for batch in self._batch(kwargs):
            for out, value in self.forward(blobs=blobs, **batch).items():
                all_outs[out].extend(value.copy())
        all_outs = {k: np.asarray(v) for k, v in all_outs.items()}
        return _unpad(all_outs, kwargs)

    def forward_backward_all(self, blobs=None, diffs=None, **kwargs):
        """forward_all and backward in batches; kwargs hold inputs and output diffs."""
        all_outs = {out: [] for out in set(self.outputs + list(blobs or []))}
        all_diffs = {d: [] for d in set(self.inputs + list(diffs or []))}
        forward_batches = self._batch({k: kwargs[k] for k in self.inputs if k in kwargs})
        backward_batches = self._batch({k: kwargs[k] for k in self.outputs if k in kwargs})
        for fb, bb in itertools.zip_longest(forward_batches, backward_batches, fillvalue={}):
            for out, value in self.forward(blobs=blobs, **fb).items():
                all_outs[out].extend(value.copy())
            for d, value in self.backward(diffs=diffs, **bb).items():
                all_diffs[d].extend(value.copy())
        all_outs = {k: np.asarray(v) for k, v in all_outs.items()}
        all_diffs = {k: np.asarray(v) for k, v in all_diffs.items()}
        return _unpad(all_outs, kwargs), _unpad(all_diffs, kwargs)

    def _batch(self, blobs: dict):
        if not blobs:
            return
        num = len(next(iter(blobs.values())))
        batch_size = next(iter(self._data.values())).shape[0]
        for i in range(0, num - num % batch_size, batch_size):
            yield {name: blobs[name][i:i + batch_size] for name in blobs}
        rest = num % batch_size
        if rest:
            yield {name: np.concatenate([blobs[name][-rest:],
                                         np.zeros((batch_size - rest,) + np.shape(blobs[name])[1:])])
                   for name in blobs}

    # -- weights -------------------------------------------------------------------------
    def copy_from(self, weights_file: str) -> None:
        """Copy the weights of the layers named in a caffemodel (Caffe's
        CopyTrainedLayersFrom): same names, same shapes; other layers keep theirs."""
        from ..io.weights import read_weights
        by_name = {l.name: l for l in self._engine.graph.layers if l.blobs}
        for lw in read_weights(os.fspath(weights_file)):
            layer = by_name.get(lw.name)
            if layer is None or not lw.blobs:
                continue
            if len(lw.blobs) != len(layer.blobs):
                raise ZfcaffeError(f"{weights_file}: layer '{lw.name}' has {len(lw.blobs)} blobs, the net "
                                   f"{len(layer.blobs)}")
            for i, (mine, stored) in enumerate(zip(layer.blobs, lw.blobs)):
                if stored.data.size != mine.size:
                    raise ZfcaffeError(f"{weights_file}: layer '{lw.name}' blob {i} has shape "
                                       f"{list(stored.data.shape)}, the net {list(mine.shape)}")
                mine[...] = stored.data.reshape(mine.shape)
        self._params_changed()

    def share_with(self, other: "Net") -> None:
        """Use the other net's parameter arrays (Caffe's ShareTrainedLayersWith)."""
        theirs = {l.name: l for l in other._engine.graph.layers if l.blobs}
        for layer in self._engine.graph.layers:
            if layer.blobs and layer.name in theirs:
                source = theirs[layer.name].blobs
                if [b.shape for b in source] != [b.shape for b in layer.blobs]:
                    raise ZfcaffeError(f"share_with: layer '{layer.name}' has other parameter shapes")
                layer.blobs = source
        self._sharing = other._sharing
        self._sharing.append(self)
        self._params_changed()

    def save(self, filename: str) -> None:
        """Write the parameters as a caffemodel Caffe loads: binary NetParameter (V2
        `layer`, blobs shaped by BlobShape), or HDF5 when the name ends in .h5."""
        from ..io.weights import write_caffemodel, write_hdf5_weights
        layers = [(l.name, l.type, l.blobs, l.lp) for l in self._engine.graph.layers]
        filename = os.fspath(filename)
        if filename.endswith(".h5"):
            write_hdf5_weights(filename, [(n, b) for n, _, b, _ in layers])
        else:
            write_caffemodel(filename, layers, net_name=self._engine.graph.name)

    def save_hdf5(self, filename: str) -> None:
        from ..io.weights import write_hdf5_weights
        write_hdf5_weights(os.fspath(filename), [(l.name, l.blobs) for l in self._engine.graph.layers])

    def set_input_arrays(self, data, labels):
        raise ZfcaffeError("Net.set_input_arrays feeds a MemoryData layer; zfcaffe treats data layers as inputs: "
                           "write net.blobs[name].data[...] = data, or pass forward(**{name: data})")

    def __repr__(self):
        return f"<caffe.Net {self._engine.graph.name or self._engine.graph.path}: {len(self._blob_names)} blobs>"


def _span_backward(engine, seeds, first: int, last: int):
    from ..backward import backward
    return backward(engine, seeds, "backprop", layers=(first, last))


def _unpad(outs: dict, kwargs: dict) -> dict:
    if not outs or not kwargs:
        return outs
    pad = len(next(iter(outs.values()))) - len(next(iter(kwargs.values())))
    return {k: v[:-pad] for k, v in outs.items()} if pad else outs
