"""`zfcaffe.Net`: a Caffe net, shaped like pycaffe's, running on ONNX Runtime."""
from __future__ import annotations

import collections
import os

import numpy as np

from . import checks
from .errors import ZfcaffeError, ZfcaffeValueError
from .graph import load_graph
from .layers.base import count


class Blob:
    """pycaffe-style blob: `.data`, `.shape`, `.count`, and `.reshape()` for inputs."""

    def __init__(self, net: "Net", key: str):
        self._net, self.key = net, key

    @property
    def data(self) -> np.ndarray:
        net = self._net
        if self.key in net._input_data:
            return net._input_data[self.key]
        if self.key not in net.layer_outputs:
            net.layer_outputs[self.key] = np.zeros(net.graph.shapes[self.key], np.float32)
        return net.layer_outputs[self.key]

    @data.setter
    def data(self, value):
        self.data[...] = checks.blob_value(f"setting blobs[{self.key!r}].data (value", value, self.shape)

    @property
    def shape(self) -> tuple:
        return tuple(self._net.graph.shapes[self.key])

    @property
    def count(self) -> int:
        return count(self.shape)

    @property
    def num(self) -> int:
        return self.shape[0]

    def reshape(self, *shape: int) -> None:
        if self.key not in self._net.graph.inputs:
            raise ZfcaffeError(f"blob '{self.key}' is not an input; only inputs can be reshaped")
        self._net.reshape(**{self.key: checks.shape(f"blobs[{self.key!r}].reshape(shape", shape)})

    def __repr__(self):
        return f"<Blob {self.key} {list(self.shape)}>"


class RecordedValues(dict):
    """Every layer output of the last recorded forward pass, by key. The pass keeps what
    backward passes read (and the net's outputs); any other key is computed the first
    time it is asked for, by running its producing layer alone on the values it reads
    (which may in turn be computed). `key in values` is true for every layer output."""

    def __init__(self, net: "Net", values: dict):
        super().__init__(values)
        self._net = net

    def __contains__(self, key) -> bool:
        g = self._net.graph
        return dict.__contains__(self, key) or (key in g.shapes and key not in g.inputs)

    def __missing__(self, key):
        g = self._net.graph
        if key not in g.shapes or key in g.inputs:
            raise KeyError(key)
        return self._net._compute(key)

    def complete(self) -> dict[str, np.ndarray]:
        """Every layer output, computed where needed."""
        return {k: self[k] for l in self._net.graph.compute_layers for k in l.tops}


class Switches(dict):
    """Max-pool layer name -> its switches (Caffe's mask: int32 y * W + x of the first
    maximum of each window within its plane), computed from the recorded pooling input
    the first time a backward pass (or anyone) asks: the forward pass runs ONNX
    Runtime's plain MaxPool, without the slower indices output."""

    def __init__(self, net: "Net"):
        super().__init__()
        self._net = net

    def _pools(self) -> dict:
        return {l.name: l for l in self._net.graph.compute_layers if l.type == "Pooling" and l.method == 0}

    def __contains__(self, name) -> bool:
        return dict.__contains__(self, name) or (bool(self._net.layer_outputs) and name in self._pools())

    def __missing__(self, name):
        layer = self._pools().get(name)
        if layer is None or not self._net.layer_outputs:
            raise KeyError(name)
        from .kernels import max_pool_switches  # Numba loads with the first backward pass
        net, bottom = self._net, layer.bottoms[0]
        x = np.ascontiguousarray(net._input_data[bottom] if bottom in net.graph.inputs else net.layer_outputs[bottom],
                                 np.float32)
        n, c, h, w = x.shape
        out = np.empty(self._net.graph.shapes[layer.tops[0]], np.int32)
        if layer.global_pooling:
            kernel, stride, pad = (h, w), (1, 1), (0, 0)
        else:
            kernel, stride, pad = layer.kernel, layer.stride, layer.pad
        max_pool_switches(x.reshape(n * c, h, w), kernel[0], kernel[1], stride[0], stride[1], pad[0], pad[1],
                          out.reshape(n * c, *out.shape[2:]))
        self[name] = out
        return out

    def complete(self) -> dict[str, np.ndarray]:
        return {name: self[name] for name in self._pools()} if self._net.layer_outputs else {}


class ParamBlob:
    """A parameter blob. `.data` is read-only (the sessions hold copies of it); assign
    a new array to change it (net surgery): `net.params["conv1"][0].data = w`."""

    def __init__(self, net: "Net", layer, index: int):
        self._net, self._layer, self._i = net, layer, index

    @property
    def data(self) -> np.ndarray:
        arr = self._layer.blobs[self._i]
        view = arr.view()
        view.flags.writeable = False
        return view

    @data.setter
    def data(self, value):
        arr = checks.array(f"setting params[{self._layer.name!r}][{self._i}].data (value", value)
        if arr.size != count(self.shape):
            raise ZfcaffeValueError(f"setting params[{self._layer.name!r}][{self._i}].data (value=...): an array "
                                    f"of shape {list(arr.shape)}; expected {list(self.shape)}")
        arr = arr.reshape(self.shape)
        self._layer.blobs[self._i] = arr
        self._net._sessions.clear()   # rebuilt with the new weights on the next forward

    @property
    def shape(self) -> tuple:
        return tuple(self._layer.blobs[self._i].shape)

    @property
    def count(self) -> int:
        return count(self.shape)

    def __repr__(self):
        return f"<ParamBlob {self._layer.name}[{self._i}] {list(self.shape)}>"


class Net:
    """A Caffe net loaded from a prototxt (V0/V1/V2) and optional weights.

    >>> net = Net("deploy.prototxt", "weights.caffemodel")
    >>> out = net.forward(data=x)            # the net's outputs, as pycaffe returns
    >>> net.blobs["conv1"].data               # after in-place layers, as pycaffe shows it
    >>> net.layer_outputs["conv1"]            # every layer's own output (pre-ReLU here)
    >>> net.switches["pool1"]                 # max-pool argmax positions, h * W + w per plane
    """

    def __init__(self, prototxt: str, weights: str | None = None, *,
                 input_shapes: dict | None = None, phase: str = "TEST", level: int = 0,
                 stages=(), stop_before: str | None = None, allow_missing_weights: bool = False,
                 seed: int = 0, rounding: str = "caffe", python_path=None):
        (prototxt, weights, input_shapes, phase, level, stages, stop_before, seed, rounding,
         python_path) = checks.net_arguments(prototxt, weights, input_shapes, phase, level, stages, stop_before,
                                             seed, rounding, python_path)
        if not os.path.exists(prototxt):
            raise ZfcaffeError(f"{prototxt}: no such file; expected a net prototxt")
        if weights is not None and not os.path.exists(weights):
            raise ZfcaffeError(f"{weights}: no such file; expected weights (.caffemodel or .caffemodel.h5)")
        #: what rebuilds this net elsewhere (a scan's worker process): Net(path, weights, **options)
        self.options = dict(input_shapes=input_shapes, phase=phase, level=level, stages=tuple(stages),
                            stop_before=stop_before, allow_missing_weights=allow_missing_weights, seed=seed,
                            rounding=rounding, python_path=python_path)
        try:
            self.graph = load_graph(prototxt, phase=phase, level=level, stages=stages,
                                    input_shapes=input_shapes, stop_before=stop_before, python_path=python_path)
        except ZfcaffeError as e:
            # a train/test net whose data layer reads a database: Caffe takes the image
            # size from the data, we take it from the weights (as zfcaffe.caffe.Net does)
            found = _shapes_from_weights(e, prototxt, weights, phase, level, stages, input_shapes, python_path)
            self.graph = load_graph(prototxt, phase=phase, level=level, stages=stages,
                                    input_shapes=found, stop_before=stop_before, python_path=python_path)
            shown = {k: v for k, v in found.items() if k not in (input_shapes or {})}
            self.graph.notes.append(f"input shapes {shown} taken from the weights (Caffe reads them from the data)")
            self.options["input_shapes"] = found
        self.graph.attach_weights(weights, allow_missing=allow_missing_weights, seed=seed)
        #: "caffe": the recording pass keeps BatchNorm and Scale in Caffe's order (- mean, / std, ...),
        #: whose rounding every oracle projection meets or flags; "fast": BatchNorm folded
        #: into the convolution, whose cancellation can move a decision beyond the flags
        self.rounding = rounding
        self.layer_outputs: dict[str, np.ndarray] = {}
        self.switches: dict[str, np.ndarray] = Switches(self)
        self._sessions: dict = {}  # (input shapes, record, outputs) -> runtime Session
        #: after project(): max-pool layer -> the (n, c, y, x) output windows the projection
        #: crossed whose maximum was a near-tie (decided by float rounding; see README)
        self.last_near_ties: dict[str, list[tuple[int, int, int, int]]] = {}
        #: after to_onnx(): the layers the file left out, with why (a Python layer, a host
        #: layer ONNX cannot express, and what reads their outputs)
        self.export_cut: list[tuple[str, str]] = []
        self._reset_inputs()

    # -- structure -------------------------------------------------------------------
    @property
    def notes(self) -> list[str]:
        return self.graph.notes

    @property
    def inputs(self) -> list[str]:
        return list(self.graph.inputs)

    @property
    def outputs(self) -> list[str]:
        """The net's outputs by Caffe blob name, as pycaffe's net.outputs, forward() and
        the exported ONNX file name them (an in-place ReLU's output is its blob's name)."""
        return [self.graph.name_of(k) for k in self.graph.outputs()]

    @property
    def layer_shapes(self) -> dict[str, tuple]:
        """Every layer output's shape by key (layer name, or name#i), inputs excluded."""
        return {k: self.graph.shapes[k] for l in self.graph.compute_layers for k in l.tops}

    @property
    def blobs(self) -> "collections.OrderedDict[str, Blob]":
        """Caffe blob name -> its final value (inputs first), as pycaffe's net.blobs."""
        return collections.OrderedDict((name, Blob(self, key)) for name, key in self.graph.blob_of.items())

    @property
    def params(self) -> "collections.OrderedDict[str, list[ParamBlob]]":
        return collections.OrderedDict(
            (l.name, [ParamBlob(self, l, i) for i in range(len(l.blobs))]) for l in self.graph.layers if l.blobs)

    @property
    def layers(self):
        return self.graph.compute_layers

    def layer(self, name: str):
        return self.graph.layer(name)

    # -- shapes --------------------------------------------------------------------------
    def _reset_inputs(self):
        self._input_data = {k: np.zeros(s, np.float32) for k, s in self.graph.inputs.items()}

    def reshape(self, **shapes) -> None:
        """Give inputs new shapes (batch size, image size); like pycaffe's
        net.blobs['data'].reshape(...) followed by net.reshape()."""
        current = dict(self.graph.inputs)
        current.update({k: checks.shape(f"reshape({k}", v) for k, v in shapes.items()})
        self.graph.infer(current)
        for layer in self.graph.layers:
            for i, (b, s) in enumerate(zip(layer.blobs, layer.param_shapes(layer.in_shapes))):
                if tuple(b.shape) != tuple(s):
                    raise layer.error(f"blob {i} has shape {list(b.shape)}, but the new input shapes "
                                      f"need {list(s)}")
        self.layer_outputs, self.switches = {}, Switches(self)
        self._reset_inputs()

    def set_batch(self, size: int) -> None:
        """Give the (first) input `size` images, keeping its other dimensions."""
        size = checks.integer("set_batch(size", size, lo=0)
        name = self.inputs[0]
        shape = tuple(self.graph.inputs[name])
        if shape[0] != size:
            self.reshape(**{name: (size,) + shape[1:]})

    # -- running ---------------------------------------------------------------------------
    def session(self, record: bool = True, outputs: tuple = (), span: tuple[int, int] | None = None):
        shapes = tuple(sorted(self.graph.inputs.items()))
        if span is not None:   # what a span reads may be a host layer's output, whose size varies
            shapes += tuple((b, self.graph.shapes[b]) for l in self.graph.layers[span[0]:span[1] + 1]
                            for b in l.bottoms)
        key = (shapes, record, tuple(outputs), span)
        if key not in self._sessions:
            from .runtime.onnx_export import build_onnx  # onnx too (reading a net needs neither)
            from .runtime.session import Session  # onnxruntime loads only when a net runs
            faithful = record and self.rounding == "caffe"
            self._sessions[key] = Session(build_onnx(self.graph, record=record, outputs=list(outputs) or None,
                                                     span=span, every_blob=False, faithful=faithful,
                                                     switches=False))
        return self._sessions[key]

    def segments(self, first: int = 0, last: int | None = None) -> list[tuple[int, int, bool]]:
        """Layers first..last as runs (lo, hi, host): ONNX Runtime spans, and each host
        layer (a Python layer, DetectionOutput) alone, in the net's order."""
        last = len(self.graph.layers) - 1 if last is None else last
        runs: list[list] = []
        for i in range(first, last + 1):
            layer = self.graph.layers[i]
            if layer.is_input:
                continue
            if layer.host or not runs or runs[-1][2]:
                runs.append([i, i, layer.host])
            else:
                runs[-1][1] = i
        return [tuple(r) for r in runs]

    def _run_host(self, layer, values: dict) -> dict[str, np.ndarray]:
        outs = layer.forward([np.asarray(values[b]) for b in layer.bottoms])
        if len(outs) != len(layer.tops):
            raise layer.error(f"its forward returned {len(outs)} arrays for {len(layer.tops)} tops")
        out = {k: np.ascontiguousarray(v, np.float32) for k, v in zip(layer.tops, outs)}
        changed = {k: v.shape for k, v in out.items() if v.shape != tuple(self.graph.shapes[k])}
        if changed:   # Caffe reshapes the layers after it on every forward pass; so do we
            self.graph.reshape_from(layer, changed)
        return out

    def _run_segments(self, known: dict, first: int, last: int, keys=None) -> dict[str, np.ndarray]:
        """Layers first..last, segment by segment, on the values `known` (added to as they
        run): host layers in NumPy, the rest in ONNX Runtime spans, recording every output,
        or with `keys` lean spans keeping only those and what later layers read. Returns the
        values computed."""
        out: dict[str, np.ndarray] = {}
        for lo, hi, host in self.segments(first, last):
            if host:
                part = self._run_host(self.graph.layers[lo], known)
            else:
                if keys is None:
                    sess = self.session(True, span=(lo, hi))
                else:
                    later = {b for l in self.graph.layers[hi + 1:] for b in l.bottoms}
                    sess = self.session(False, tuple(t for l in self.graph.layers[lo:hi + 1] for t in l.tops
                                                     if t in later or t in keys), span=(lo, hi))
                missing = [k for k in sess.input_names if k not in known]
                if missing:
                    raise ZfcaffeError(f"running layers {first}..{last} needs values of {', '.join(missing)}")
                part = sess.run({k: np.ascontiguousarray(known[k], np.float32) for k in sess.input_names})
            known.update(part)
            out.update(part)
        return out

    def forward_span(self, first: int, last: int, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run only the layers first..last (indices into net.graph.layers), recording,
        on `values` of the keys they read from outside the span (pycaffe's
        forward(start=, end=)). Updates layer_outputs of those layers (their switches
        follow); returns their new values by key."""
        out = self._run_segments(dict(values), first, last)
        if not isinstance(self.layer_outputs, RecordedValues):
            self.layer_outputs = RecordedValues(self, self.layer_outputs)
        self.layer_outputs.update(out)
        for layer in self.graph.layers[first:last + 1]:     # switches follow the new values
            self.switches.pop(layer.name, None)
        return out

    def backward(self, diffs: dict[str, np.ndarray], mode: str = "backprop", stop_at: str | None = None,
                 items=None, flag_rounding: bool = True) -> dict[str, np.ndarray]:
        """Backward from arbitrary diffs after a recorded forward pass.

        diffs: blob key (or Caffe blob name) -> diff, shaped like that value (one row per
        image of the forward batch, or per entry of `items`, the rows they belong to).
        mode: "backprop" (true gradients, Caffe's Backward), "guided" or "deconvnet".
        stop_at: a key (or blob name) at which to stop; the layers below it are not run.
        Returns the diff of every key the signal reached, by key. `project` and
        `project_many` are this with a one-unit seed. flag_rounding=False skips the
        rounding bounds behind `last_near_ties` (only exact ties are flagged): an
        optimisation's gradient steps, whose flags nobody reads."""
        from .backward import backward
        keyed, items = checks.backward_arguments(self, diffs, mode, stop_at, items)
        stop = None if stop_at is None else (stop_at if stop_at in self.graph.shapes
                                             else self.graph.blob_of.get(stop_at, stop_at))
        return backward(self, keyed, mode, items, stop_at=stop, flag_rounding=bool(flag_rounding))

    def _feeds(self, kwargs, call: str = "forward") -> dict[str, np.ndarray]:
        feeds = {}
        for name, value in kwargs.items():
            # an input's name feeds the input even when a layer later writes in place onto it
            key = name if name in self.graph.inputs else self.graph.blob_of.get(name, name)
            if key not in self.graph.inputs:
                raise ZfcaffeValueError(f"{call}({name}=...): '{name}' is not an input of the net (inputs: "
                                               f"{', '.join(self.inputs)})")
            arr = checks.array(f"{call}({name}", value, expected=f"shaped {list(self.graph.inputs[key])}")
            if arr.shape != tuple(self.graph.inputs[key]):
                if arr.ndim != len(self.graph.inputs[key]):
                    raise ZfcaffeValueError(f"{call}({name}=...): input '{name}' has shape {list(arr.shape)}; "
                                                   f"expected {list(self.graph.inputs[key])}")
                self.reshape(**{key: arr.shape})
            feeds[key] = arr
        for key in self.graph.inputs:
            feeds.setdefault(key, self._input_data[key])
        return feeds

    def forward(self, blobs: list[str] | None = None, record: bool = True, **inputs) -> dict[str, np.ndarray]:
        """Run the net. Inputs by blob name (`data=x`); a new shape reshapes the net.

        Returns the net's outputs (plus `blobs`, by blob name or key), as pycaffe does.
        With record=True (default) every layer output and max-pool switch is available
        in `layer_outputs` / `switches` (what backward passes read is kept, the rest
        computed when first asked for); record=False runs a leaner graph that keeps only
        the returned outputs.
        """
        feeds = self._feeds(inputs)
        blobs = checks.strings("forward(blobs", blobs or ())
        wanted = self.graph.outputs() + [self.graph.blob_of.get(b, b) for b in blobs]
        unknown = [b for b in wanted if b not in self.graph.shapes]
        if unknown:
            raise ZfcaffeError(f"forward(blobs=...): {', '.join(map(repr, unknown))} not a blob of the net "
                               f"(blobs: {', '.join(list(self.graph.blob_of)[:12])}{' ...' if len(self.graph.blob_of) > 12 else ''})")
        if record and self.has_host_layers:   # ONNX Runtime spans with the host layers between them
            self._input_data = dict(feeds)
            self.layer_outputs, self.switches = RecordedValues(self, {}), Switches(self)
            self.forward_span(0, len(self.graph.layers) - 1, feeds)
            values = self.layer_outputs
        elif record:
            sess = self.session(True)
            values = sess.run({k: v for k, v in feeds.items() if k in sess.input_names})
            self._input_data = dict(feeds)
            self.layer_outputs = RecordedValues(self, values)
            self.switches = Switches(self)
            values = self.layer_outputs
        else:
            values = self._run_lean(wanted, feeds)
        return {self.graph.name_of(k): values[k] for k in wanted}

    def _compute(self, key: str) -> np.ndarray:
        """A layer output the recording pass did not keep: its producing layer run alone."""
        g = self.graph
        index = next(i for i, l in enumerate(g.layers) if key in l.tops)
        layer = g.layers[index]
        values = {b: self._input_data[b] if b in g.inputs else self.layer_outputs[b] for b in layer.bottoms}
        return self.forward_span(index, index, values)[key]

    def evaluate(self, keys: list[str], **inputs) -> dict[str, np.ndarray]:
        """Only the given blob keys (and nothing recorded), through a lean graph with
        exactly those outputs: the fast path for scanning a dataset."""
        return self._run_lean(list(checks.strings("evaluate(keys", keys)), self._feeds(inputs, "evaluate"))

    @property
    def has_host_layers(self) -> bool:
        return any(l.host for l in self.graph.layers)

    def _run_lean(self, keys: list[str], feeds: dict) -> dict[str, np.ndarray]:
        if self.has_host_layers:
            known = dict(feeds)
            self._run_segments(known, 0, len(self.graph.layers) - 1, set(keys))
            return {k: known[k] for k in keys}
        sess = self.session(False, tuple(keys))
        return sess.run({k: v for k, v in feeds.items() if k in sess.input_names})

    # -- backward passes -----------------------------------------------------------------
    def project(self, layer: str, unit, mode: str = "deconvnet", value: float | None = None) -> np.ndarray:
        """Project one unit (n, c, y, x) or (n, c) of a layer's output back to the input.

        The unit holds its own activation (or `value`), every other unit zero; the
        result is shaped like the input blob, zero outside the unit's image: image n, or,
        where the layer's rows are ROIs (after an ROIPooling / PSROIPooling: Fast R-CNN's
        fc7, cls_score), the image of ROI n, the batch index in column 0 of the rois blob
        that ROI layer reads. Modes:
        "deconvnet" (Zeiler & Fergus), "backprop" (gradient), "guided" (guided backprop).
        Needs a recorded forward pass (net.forward(...)) first.
        """
        from .backward import image_of, project_units, resolve_key
        layer, units, mode, values = checks.project_arguments("project", layer, unit, mode, value, many=False)
        proj = project_units(self, layer, units, mode, values)
        target = self.inputs[0]
        out = np.zeros(self.graph.inputs[target], np.float32)
        out[image_of(self, resolve_key(self, layer), units[0][0])] = proj[0]
        return out

    def project_many(self, layer: str, units, mode: str = "deconvnet", values=None) -> np.ndarray:
        """Project many units in one batched pass; returns (len(units), C, H, W), row i
        being unit i's projection into its own image."""
        from .backward import project_units
        layer, units, mode, values = checks.project_arguments("project_many", layer, units, mode, values, many=True)
        return project_units(self, layer, units, mode, values)

    # -- export ------------------------------------------------------------------------------
    def to_onnx(self, path: str, all_blobs: bool = False, dynamic: bool = False) -> tuple[str, ...]:
        """Write the net as one self-contained .onnx file (written atomically). The net's
        outputs carry their Caffe blob names; all_blobs adds every layer output by key
        and each max-pool's switches (`POOL/switches`, int32 y * W + x within each plane,
        as net.switches). dynamic: leave open the axes that really are free (measured:
        the batch, and the image size where the net allows); returns them."""
        if dynamic:
            from .runtime.dynamic import write_dynamic_onnx
            return write_dynamic_onnx(self, path, all_blobs=all_blobs)
        from .runtime.onnx_file import write_onnx
        self.export_cut = write_onnx(self.graph, path, all_blobs=all_blobs)
        return ()


def _shapes_from_weights(error: ZfcaffeError, prototxt, weights, phase, level, stages, given, python_path) -> dict:
    """The input shapes the weights pin, where `error` came from inputs whose shape
    the file leaves to the data; otherwise `error` is raised again."""
    if weights is None:
        raise error
    from .graph.weights_shapes import shapes_from_weights
    found = shapes_from_weights(prototxt, weights, phase=phase, level=level, stages=stages, given=given,
                                python_path=python_path)
    if found is None:
        raise error
    return found

