"""Build the analysis graph from a prototxt: select the phase, instantiate layers,
name every blob value uniquely, infer shapes and geometry, attach weights.

Blob keys. Caffe blobs are overwritten by in-place layers (ReLU on conv1), so a
blob name does not name a value. Every value gets a key instead: the name of the
layer that wrote it, or `name#i` for the i-th top of a multi-top layer; inputs keep
their blob names. `blob_of` maps each Caffe blob name to its latest key, which is
what pycaffe's `net.blobs[name]` shows after a forward pass.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from .. import caffe_pb2
from ..errors import UnsupportedLayerError, ZfcaffeError
from ..io.prototxt import fork_layer_error, parse_net_text
from ..io.upgrade import net_format, upgrade_net
from ..io.weights import LayerWeights, read_weights
from ..layers import PYTHON_BUILTINS, TRAINING_ONLY, Geometry, Layer, layer_class
from ..layers.base import count
from ..layers.data import PythonData
from ..layers.python import PythonLayer
from .fillers import fill, fill_limit, memory_available

def did_you_mean(name: str, candidates: list[str]) -> str:
    """'; did you mean 'conv5'?' for the closest names, or the list when short."""
    import difflib
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    if close:
        return "; did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    return f"; layers: {', '.join(candidates)}" if len(candidates) <= 12 else ""


#: Caffe's own limit on one blob (its count is an int).
MAX_BLOB_ELEMENTS = 2**31 - 1


@dataclasses.dataclass
class Graph:
    path: str
    name: str
    format: str                                   # V0 / V1 / V2 as read
    layers: list[Layer]
    inputs: dict[str, tuple]                      # input key -> shape
    blob_of: dict[str, str]                       # Caffe blob name -> latest key
    shapes: dict[str, tuple] = dataclasses.field(default_factory=dict)
    geometry: dict[str, Geometry | None] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)
    weights_path: str | None = None
    #: key -> type of the training-only loss layer that read it (dropped): the
    #: input of a SoftmaxWithLoss is the net's class scores
    loss_inputs: dict[str, str] = dataclasses.field(default_factory=dict)
    force_backward: bool = False                  # the prototxt's force_backward

    @property
    def compute_layers(self) -> list[Layer]:
        return [l for l in self.layers if not l.is_input]

    def layer(self, name: str) -> Layer:
        for l in self.layers:
            if l.name == name:
                return l
        raise ZfcaffeError(f"{self.path}: no layer named '{name}'"
                           + did_you_mean(name, [l.name for l in self.layers]))

    def producer(self, key: str) -> Layer:
        for l in self.layers:
            if key in l.tops:
                return l
        raise ZfcaffeError(f"{self.path}: no blob value '{key}'")

    def name_of(self, key: str) -> str:
        """The Caffe blob name of a key that holds a blob's final value (what pycaffe
        calls it); any other key as it is."""
        return next((name for name, k in self.blob_of.items() if k == key), key)

    def resolve(self, name: str, what: str = "a layer or blob", shown: bool = False) -> str:
        """The key a user's name stands for, whichever they give: a key (`conv1`, `pool4#0`)
        as it is; a layer with one output, that output; a Caffe blob name, its final
        value (the last layer writing it, as pycaffe's net.blobs[name]): `pool5` of a
        Faster R-CNN (layer `roi_pool5`), `pool4` of a pooling with a mask top (layer
        `pool4`, keys `pool4#0`, `pool4#1`). shown=True: a layer's output after its
        in-place layers, as pycaffe shows it (`conv1` -> relu1's key), and a blob name
        before a key of the same name. `what` names the argument in the one-line error,
        which lists the valid names."""
        by_name = {l.name: l for l in self.layers}
        layer = by_name.get(name)
        if shown:
            if layer is not None and len(layer.tops) == 1:
                return layer.tops[0] if layer.is_input else self.blob_of.get(layer.lp.top[0], layer.tops[0])
            if name in self.blob_of:
                return self.blob_of[name]
            if name in self.shapes:
                return name
        else:
            if name in self.shapes:
                return name
            if layer is not None and len(layer.tops) == 1:
                return layer.tops[0]
            if name in self.blob_of:
                return self.blob_of[name]
        raise ZfcaffeError(self.unknown_name(name, what))

    def unknown_name(self, name: str, what: str = "a layer or blob") -> str:
        """One line: `name` is no layer or blob of the net, and the names that are."""
        import difflib
        layer = next((l for l in self.layers if l.name == name), None)
        if layer is not None:        # a layer of several outputs, none of them called as the layer
            return (f"{self.path}: layer '{name}' has {len(layer.tops)} outputs; expected one of its blobs "
                    f"{', '.join(repr(t) for t in layer.lp.top)} (or keys {', '.join(layer.tops)}) as {what}")
        close = difflib.get_close_matches(name, self.names(), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        return (f"{self.path}: no layer named '{name}'{hint} (nor a blob; expected {what}: a layer or Caffe blob "
                f"name, or a key such as 'pool4#0'; names: {self.names(shown=40)})")

    def names(self, shown: int = 0):
        """The layer (one output) and Caffe blob names a user may give, in the net's order;
        shown > 0: the first `shown` of them as one string."""
        names = list(dict.fromkeys([l.name for l in self.layers if len(l.tops) == 1] + list(self.blob_of)))
        if not shown:
            return names
        return ", ".join(names[:shown]) + (f" ... ({len(names)} in all)" if len(names) > shown else "")

    def outputs(self) -> list[str]:
        """Keys nobody reads: the net's outputs, as pycaffe's net.outputs."""
        read = {b for l in self.layers for b in l.bottoms}
        return [k for l in self.compute_layers for k in l.tops if k not in read]

    # -- shapes ----------------------------------------------------------------
    def infer(self, overrides: dict[str, tuple] | None = None) -> None:
        """Caffe's shape inference; `overrides` maps input blob (or input layer) names
        to shapes. Refuses any blob larger than Caffe allows before allocating."""
        overrides = dict(overrides or {})
        shapes: dict[str, tuple] = {}
        geoms: dict[str, Geometry | None] = {}
        for layer in self.layers:
            if layer.is_input:
                declared = layer.declared_shapes()
                declared = [declared[i] for i in layer.top_index] if declared else declared
                resolved = []
                for i, (top, shape) in enumerate(zip(layer.tops, declared)):
                    given = overrides.pop(top, None)
                    if given is None and i == 0:  # the input layer's name also names its first top
                        given = overrides.pop(layer.name, None)
                    shape = given or shape
                    if shape is None:
                        raise layer.error(
                            f"the shape of input '{top}' is not in the file (Caffe reads it from the data); "
                            f"pass input_shapes={{'{top}': (N, C, H, W)}} (CLI: --input-shape {top}=N,C,H,W)")
                    resolved.append(tuple(int(d) for d in shape))
                layer.resolved = resolved
            in_shapes = [shapes[b] for b in layer.bottoms]
            lo, hi = layer.n_bottoms()
            if not lo <= len(in_shapes) <= hi:
                raise layer.error(f"has {len(in_shapes)} bottoms; expected {lo}" +
                                  (f" to {hi}" if hi != lo and hi < 1 << 30 else "" if hi == lo else " or more"))
            layer.in_shapes = in_shapes
            out = [tuple(int(d) for d in s) for s in layer.output_shapes(in_shapes)]
            if len(out) != len(layer.tops):
                raise layer.error(f"produces {len(out)} outputs but declares {len(layer.tops)} tops")
            for top, s in zip(layer.tops, out):
                if any(d < 0 for d in s):
                    raise layer.error(f"output '{top}' would have negative shape {list(s)}")
                if count(s) > MAX_BLOB_ELEMENTS:
                    raise layer.error(
                        f"output '{top}' would have shape {list(s)} = {count(s):.3g} elements, "
                        f"over Caffe's limit of 2^31-1; expected a smaller input shape")
                shapes[top] = s
            layer.out_shapes = out
            for top, g in zip(layer.tops, layer.geometry([geoms.get(b) for b in layer.bottoms])):
                geoms[top] = g
        if overrides:
            raise ZfcaffeError(f"{self.path}: input_shapes names {sorted(overrides)}, which are not "
                               f"inputs of the net (inputs: {sorted(self.inputs)})")
        self.shapes, self.geometry = shapes, geoms
        self.inputs = {t: shapes[t] for l in self.layers if l.is_input for t in l.tops}

    def reshape_from(self, layer: Layer, changed: dict[str, tuple]) -> None:
        """A host layer's outputs took other shapes this forward pass (a detection count):
        Caffe's Reshape of every layer after it, as each forward pass does."""
        self.shapes.update(changed)
        layer.out_shapes = [self.shapes[t] for t in layer.tops]
        for later in self.layers[self.layers.index(layer) + 1:]:
            if later.is_input:
                continue
            in_shapes = [self.shapes[b] for b in later.bottoms]
            if in_shapes == later.in_shapes:
                continue
            later.in_shapes = in_shapes
            later.out_shapes = [tuple(int(d) for d in s) for s in later.output_shapes(in_shapes)]
            self.shapes.update(zip(later.tops, later.out_shapes))

    # -- weights -----------------------------------------------------------------
    def attach_weights(self, path: str | None, allow_missing: bool = False, seed: int = 0) -> None:
        """Match weight blobs to layers by name, checking every shape."""
        stored: dict[str, LayerWeights] = {}
        if path is not None:
            for lw in read_weights(path):
                stored.setdefault(lw.name, lw)
            self.weights_path = path
        rng = np.random.default_rng(seed)
        used = set()
        missing = []
        to_fill = []                                  # (layer, shapes) that fillers make
        for layer in self.layers:
            expected = layer.param_shapes(layer.in_shapes)
            if not expected:
                continue
            for i, shape in enumerate(expected):      # Caffe's limit, before anything is allocated
                if count(shape) > MAX_BLOB_ELEMENTS:
                    raise layer.error(f"parameter blob {i} would have shape {list(shape)} = {count(shape):.3g} "
                                      "elements, over Caffe's limit of 2^31-1")
            lw = stored.get(layer.name)
            if lw is None or not lw.blobs:
                if path is not None and not allow_missing:
                    missing.append(layer.name)
                    continue
                to_fill.append((layer, expected))
                continue
            used.add(layer.name)
            layer.blobs = _checked(layer, lw, expected, path)
        if not missing:
            _check_fill_cost(to_fill)                 # the limits, before any filler allocates
            for layer, expected in to_fill:
                layer.blobs = _filled(layer, expected, rng)
        if missing:
            raise ZfcaffeError(
                f"{path}: no weights for layer(s) {', '.join(missing[:8])}"
                f"{' ...' if len(missing) > 8 else ''} of {self.path}; "
                "expected the caffemodel of this net (allow_missing_weights=True fills them as Caffe would)")
        extra = [n for n, lw in stored.items() if n not in used and lw.blobs]
        if extra:
            self.notes.append(f"weights file has layers not in the net (ignored): {', '.join(extra[:10])}"
                              + (" ..." if len(extra) > 10 else ""))


def _pad_legacy(shape: tuple) -> tuple:
    return (1,) * (4 - len(shape)) + tuple(shape) if len(shape) <= 4 else tuple(shape)


def _squeezed(shape: tuple) -> tuple:
    return tuple(d for d in shape if d != 1)


def _checked(layer: Layer, lw: LayerWeights, expected: list[tuple], path: str) -> list[np.ndarray]:
    if len(lw.blobs) != len(expected):
        raise ZfcaffeError(
            f"{path}: layer '{layer.name}' ({layer.type}) has {len(lw.blobs)} blobs in the weights "
            f"but the net expects {len(expected)}")
    out = []
    for i, (blob, shape) in enumerate(zip(lw.blobs, expected)):
        got = tuple(blob.data.shape)
        # Caffe accepts a legacy 4-D blob whose shape is the expected one padded with
        # leading 1s (InnerProduct weights stored as 1x1xOxI); unit axes aside, shapes must agree.
        ok = got == tuple(shape) or (count(got) == count(shape) and (
            _pad_legacy(shape) == _pad_legacy(got) or _squeezed(got) == _squeezed(shape)))
        if not ok:
            raise ZfcaffeError(
                f"{path}: layer '{layer.name}' blob {i}: weights have shape {list(got)}, "
                f"the net expects {list(shape)}")
        out.append(blob.data.reshape(shape))
    return out


def _check_fill_cost(to_fill: list[tuple[Layer, list[tuple]]]) -> None:
    """Refuse, before allocating anything, parameters that fillers would take too long or
    too much memory to make (a mutated num_output asks for billions of values)."""
    if not to_fill:
        return
    sizes = [(sum(count(s) for s in shapes), layer, shapes) for layer, shapes in to_fill]
    total = sum(n for n, _, _ in sizes)
    n, layer, shapes = max(sizes, key=lambda t: t[0])
    biggest = max(shapes, key=count)
    what = (f"Caffe's fillers would make {total:,} parameter values ({_gib(4 * total)}) for the {len(sizes)} "
            f"layer(s) without weights, {n:,} of them here (a blob of shape {list(biggest)})")
    fix = f"expected a smaller {_size_field(layer)}, or weights for these layers"
    limit = fill_limit()
    if total > limit:
        raise layer.error(f"{what}, over the limit of {limit:,} filled values (ZFCAFFE_MAX_FILL raises it); {fix}")
    avail = memory_available()
    if avail is not None and 4 * total > avail:
        raise layer.error(f"{what}, more than the {_gib(avail)} of memory available; {fix}")


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _size_field(layer: Layer) -> str:
    for field in ("convolution_param", "inner_product_param", "embed_param"):
        if layer.lp.HasField(field):
            return f"num_output (now {getattr(layer.lp, field).num_output}) or input shape"
    return "input shape"


def _filled(layer: Layer, shapes: list[tuple], rng) -> list[np.ndarray]:
    lp = layer.lp
    default = caffe_pb2.FillerParameter()
    fillers = [default] * len(shapes)
    for field in ("convolution_param", "inner_product_param", "embed_param"):
        if lp.HasField(field):
            p = getattr(lp, field)
            fillers = [p.weight_filler, p.bias_filler][:len(shapes)]
    if layer.type == "Scale":
        one = caffe_pb2.FillerParameter(type="constant", value=1.0)
        p = lp.scale_param
        fillers = ([p.filler if p.HasField("filler") else one] if len(layer.bottoms) == 1 else []) + [p.bias_filler]
    if layer.type == "PReLU":
        p = lp.prelu_param
        fillers = [p.filler if p.HasField("filler") else caffe_pb2.FillerParameter(type="constant", value=0.25)]
    if layer.type == "Bias":
        fillers = [lp.bias_param.filler]
    own = layer.fillers()
    if own is not None:
        fillers = own
    try:
        return [fill(f, s, rng) for f, s in zip(fillers, shapes)]
    except ValueError as e:
        raise layer.error(f"cannot fill its parameters as Caffe would: {e}") from None


def _state_meets_rule(state: caffe_pb2.NetState, rule: caffe_pb2.NetStateRule) -> bool:
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    if any(s not in state.stage for s in rule.stage):
        return False
    if any(s in state.stage for s in rule.not_stage):
        return False
    return True


def _included(lp: caffe_pb2.LayerParameter, state: caffe_pb2.NetState) -> bool:
    """Caffe's Net::FilterNet rule for one layer."""
    if len(lp.include) and len(lp.exclude):
        raise ZfcaffeError(f"layer '{lp.name}' has both include and exclude rules")
    if len(lp.include):
        return any(_state_meets_rule(state, r) for r in lp.include)
    return not any(_state_meets_rule(state, r) for r in lp.exclude)


def load_graph(path: str, phase: str = "TEST", level: int = 0, stages=(),
               input_shapes: dict | None = None, stop_before: str | None = None,
               text: str | None = None, infer: bool = True, python_path=None) -> Graph:
    """Read a prototxt (any version) into a shape-inferred Graph (no weights yet;
    infer=False: not even shapes). python_path: folders holding the modules of the net's
    Python layers (only then does their code run)."""
    parsed = parse_net_text(path, text)
    net, lines = parsed.param, parsed.layer_lines
    fmt = net_format(net)
    _, notes = upgrade_net(net, lines, where=path)
    state = caffe_pb2.NetState()
    state.CopyFrom(net.state)
    if str(phase).upper() not in ("TRAIN", "TEST"):
        raise ZfcaffeError(f"{path}: phase '{phase}'; expected TEST or TRAIN")
    state.phase = caffe_pb2.Phase.Value(phase.upper())
    state.level = level
    state.stage.extend(stages)

    if stop_before is not None and stop_before not in [lp.name for lp in net.layer]:
        raise ZfcaffeError(f"{path}: stop_before='{stop_before}' names no layer of the net"
                           + did_you_mean(stop_before, [lp.name for lp in net.layer]))
    layers: list[Layer] = []
    current: dict[str, str] = {}     # Caffe blob name -> latest key
    keys: set[str] = set()
    dropped = []
    loss_inputs: dict[str, str] = {}
    unsupported: list[UnsupportedLayerError] = []   # every layer that cannot be built, in order
    for lp, line in zip(net.layer, lines):
        if stop_before is not None and lp.name == stop_before:
            notes.append(f"loaded up to the layer before '{stop_before}'")
            break
        if line in parsed.rejected:
            typ, reason = parsed.rejected[line]
            unsupported.append(fork_layer_error(path, lp.name, typ, line, reason))
            continue
        if not _included(lp, state):
            continue
        if lp.type in TRAINING_ONLY:
            dropped.append(lp.name)
            if len(lp.bottom) and lp.bottom[0] in current:
                loss_inputs.setdefault(current[lp.bottom[0]], lp.type)
            continue
        cls = layer_class(lp)
        if lp.type == "Python":
            cls, why = _python_layer_class(lp, python_path, notes)
            if cls is None:
                unsupported.append(UnsupportedLayerError(
                    f"{path}:{line}: layer '{lp.name}' is a Python layer ({why}); zfcaffe runs a model's own "
                    f"Python code only from a folder you name: python_path=[DIR] (CLI: --python-path DIR, the "
                    f"folder holding {lp.python_param.module.replace('.', '/')}.py), or load the net up to the "
                    f"layer before it with stop_before='{lp.name}' (CLI: --stop-before {lp.name})",
                    lp.name, lp.type))
                continue
        if cls is None:
            unsupported.append(UnsupportedLayerError(
                f"{path}:{line}: layer '{lp.name}' has type '{lp.type}': no BVLC Caffe or known fork layer has "
                f"this type; load the net up to the layer before it with stop_before='{lp.name}' (CLI: "
                f"--stop-before {lp.name})", lp.name, lp.type))
            continue
        if unsupported:
            continue    # layers after an unsupported one are only checked for support
        layer = cls(lp, line, path)
        layer.phase = phase.upper()
        if isinstance(layer, PythonLayer):
            layer.python_path = list(python_path or ())
        for b in lp.bottom:
            if b not in current:
                raise layer.error(f"bottom '{b}' is not produced by any earlier layer")
            layer.bottoms.append(current[b])
        if layer.is_input:
            tops = list(lp.top)
            for k in tops:
                if k in keys:
                    raise layer.error(f"its top '{k}' is already an input or a layer's output key")
        else:
            # Caffe accepts a repeated layer name: the name stays as written, the key gets a suffix
            base, n = lp.name, 1
            while any(k in keys for k in _top_keys(base, len(lp.top))):
                n += 1
                base = f"{lp.name}~{n}"
            if n > 1:
                notes.append(f"layer name '{lp.name}' repeats (line {line}); its outputs are keyed '{base}'")
            tops = _top_keys(base, len(lp.top))
        keys.update(tops)
        layer.tops = tops
        for b, k in zip(lp.top, tops):
            current[b] = k
        layers.append(layer)
    if unsupported:
        first = unsupported[0]
        if len(unsupported) > 1:
            others = ", ".join(f"'{e.layer_name}' ({e.layer_type}, line {str(e).split(': ', 1)[0].rsplit(':', 1)[-1]})"
                               for e in unsupported[1:])
            first = UnsupportedLayerError(f"{first} [{len(unsupported)} unsupported layers in all; the others: "
                                          f"{others}]", first.layer_name, first.layer_type)
        raise first
    if dropped:
        notes.append(f"dropped training-only layers: {', '.join(dropped)}")
    if not layers:
        raise ZfcaffeError(f"{path}: no layers for phase {phase}; expected a Caffe net")
    if all(l.is_input for l in layers):      # nothing to run: ONNX Runtime would refuse the empty graph
        cut = f" (stop_before='{stop_before}' leaves only them)" if stop_before is not None else ""
        raise ZfcaffeError(f"{path}: no layer computes anything for phase {phase}, only the input(s) "
                           f"{', '.join(t for l in layers for t in l.tops)}{cut}; expected at least one layer "
                           "after the inputs")

    _drop_unread_inputs(layers, notes)
    graph = Graph(path, net.name, fmt, layers, {}, current, notes=notes, loss_inputs=loss_inputs,
                  force_backward=net.force_backward)
    if infer:
        graph.infer(input_shapes)
    return graph


def _top_keys(base: str, n: int) -> list[str]:
    return [base] if n == 1 else [f"{base}#{i}" for i in range(n)]


def _python_layer_class(lp, python_path, notes: list[str]):
    """(class, why not) for a Python layer: the user's module when they named where it
    lives, else a built-in for a well-known one, else (None, why)."""
    p = lp.python_param
    if not len(lp.bottom):
        notes.append(f"Python data layer '{lp.name}' stands for net inputs {', '.join(lp.top)}")
        return PythonData, ""
    if python_path:
        return PythonLayer, ""
    builtin = PYTHON_BUILTINS.get((p.module, p.layer))
    if builtin is not None:
        notes.append(f"Python layer '{lp.name}' ({p.module}.{p.layer}) runs as zfcaffe's built-in "
                     f"{builtin.__name__} (give --python-path to run the model's own code)")
        return builtin, ""
    return None, f"{p.module}.{p.layer}, not one zfcaffe has built in"


def _drop_unread_inputs(layers: list[Layer], notes: list[str]) -> None:
    """Labels of data layers (read only by the dropped loss layers) are not inputs."""
    read = {b for l in layers for b in l.bottoms}
    for layer in layers:
        if not layer.is_input:
            continue
        keep = [i for i, t in enumerate(layer.tops) if t in read or i == 0]
        if len(keep) != len(layer.tops):
            gone = [t for i, t in enumerate(layer.tops) if i not in keep]
            if layer.type != "Input":
                notes.append(f"input(s) {', '.join(gone)} of '{layer.name}' are not read; left out")
            layer.tops = [layer.tops[i] for i in keep]
            layer.top_index = keep
