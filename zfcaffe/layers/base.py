"""The contract every Caffe layer family fulfils, and the registry of types.

A family file (conv.py, pooling.py, ...) defines one `Layer` subclass per Caffe
type and registers it with `@register("TypeName")`. The class holds everything
about that type: its parameters, output shapes, parameter-blob shapes,
receptive-field geometry, multiply-adds and its ONNX emission.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Sequence

import numpy as np

from ..errors import ZfcaffeError


class _Later:
    """A module (or a name in one) imported when first used: reading a net's structure
    (`zfcaffe inspect`, shapes, weights) emits no ONNX, and importing onnx costs about
    half a second."""

    def __init__(self, module: str, name: str | None = None):
        self._module, self._name = module, name

    def __getattr__(self, attr: str):
        import importlib
        target = importlib.import_module(self._module)
        return getattr(getattr(target, self._name) if self._name else target, attr)


onnx = _Later("onnx")
helper = _Later("onnx.helper")
numpy_helper = _Later("onnx.numpy_helper")
TensorProto = _Later("onnx", "TensorProto")

Shape = tuple
REGISTRY: dict[str, type["Layer"]] = {}
#: type -> [(fork, predicate, class)]: a type name two forks define differently (BN, Upsample)
VARIANTS: dict[str, list[tuple[str, Callable, type]]] = {}
#: (module, class) of a well-known pycaffe Python layer -> the built-in layer that runs it
PYTHON_BUILTINS: dict[tuple[str, str], type["Layer"]] = {}


def register(*type_names: str, fork: str | None = None, when: Callable | None = None) -> Callable[[type], type]:
    """Register a Layer class for Caffe type names; a second class for a name is refused.

    A type name that several forks define differently is registered once per fork with
    `fork=` and `when=`, a predicate on the LayerParameter (and the graph's fork hints)
    saying whether a layer is that fork's; the first variant whose predicate holds is
    used, and one registered with `when=None` is the fallback."""
    def deco(cls):
        for t in type_names:
            if fork is None:
                if t in REGISTRY or t in VARIANTS:
                    raise ValueError(f"layer type '{t}' is registered twice ({REGISTRY.get(t, cls).__module__}."
                                     f"{REGISTRY.get(t, cls).__name__} and {cls.__module__}.{cls.__name__})")
                REGISTRY[t] = cls
            else:
                if t in REGISTRY:
                    raise ValueError(f"layer type '{t}' is registered twice ({REGISTRY[t].__name__} and "
                                     f"{cls.__name__} for fork {fork})")
                variants = VARIANTS.setdefault(t, [])
                if any(f == fork for f, _, _ in variants):
                    raise ValueError(f"layer type '{t}' of fork '{fork}' is registered twice")
                variants.append((fork, when, cls))
                variants.sort(key=lambda v: v[1] is None)   # the fallback last
        cls.TYPES = type_names
        cls.FORK = fork
        return cls
    return deco


def register_python(module: str, layer: str) -> Callable[[type], type]:
    """A built-in layer standing in for a well-known pycaffe Python layer
    (`python_param { module: ... layer: ... }`) when the user's module is not given."""
    def deco(cls):
        if (module, layer) in PYTHON_BUILTINS:
            raise ValueError(f"Python layer {module}.{layer} is registered twice")
        PYTHON_BUILTINS[(module, layer)] = cls
        return cls
    return deco


def layer_class(lp, hints: set[str] = frozenset()) -> type["Layer"] | None:
    """The class for a LayerParameter: its type's class, or the fork variant that fits.
    `hints`: the forks other layers of the net point to (a predicate may use them)."""
    if lp.type in REGISTRY:
        return REGISTRY[lp.type]
    for _, when, cls in VARIANTS.get(lp.type, ()):
        if when is None or when(lp, hints):
            return cls
    return None


def count(shape: Sequence[int]) -> int:
    return int(math.prod(shape))


def canonical_axis(axis: int, rank: int, who: "Layer") -> int:
    if not -rank <= axis < rank:
        raise who.error(f"axis {axis} is out of range for a {rank}-D input")
    return axis % rank


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Where a spatial blob's units look in the input image, per spatial axis (h, w).

    rf: receptive field size in input pixels; jump: distance in input pixels
    between neighbouring units; start: input coordinate of the centre of unit 0.
    A non-spatial blob (after InnerProduct) has `whole=True`: it sees everything.
    """
    rf: tuple[float, float]
    jump: tuple[float, float]
    start: tuple[float, float]
    whole: bool = False

    @staticmethod
    def identity() -> "Geometry":
        return Geometry((1, 1), (1, 1), (0.0, 0.0))

    def window(self, kernel, stride, pad) -> "Geometry":
        """After a sliding window (convolution, pooling) with effective kernel size."""
        if self.whole:
            return self
        rf = tuple(r + (k - 1) * j for r, k, j in zip(self.rf, kernel, self.jump))
        start = tuple(s + ((k - 1) / 2 - p) * j for s, k, p, j in zip(self.start, kernel, pad, self.jump))
        jump = tuple(j * s for j, s in zip(self.jump, stride))
        return Geometry(rf, jump, start)

    def upsample(self, kernel, stride, pad) -> "Geometry":
        """After a transposed convolution (Deconvolution)."""
        if self.whole:
            return self
        rf = tuple(r + (math.ceil(k / s) - 1) * j for r, k, s, j in zip(self.rf, kernel, stride, self.jump))
        start = tuple(st + (p - (k - 1) / 2) / s * j
                      for st, k, s, p, j in zip(self.start, kernel, stride, pad, self.jump))
        jump = tuple(j / s for j, s in zip(self.jump, stride))
        return Geometry(rf, jump, start)

    def box(self, y: int, x: int, height: int, width: int) -> tuple[int, int, int, int]:
        """Input-pixel box (y0, y1, x0, x1) seen by unit (y, x); may extend past the
        image (callers pad), and is the whole image for a non-spatial blob."""
        if self.whole:
            return 0, height, 0, width
        out = []
        for pos, r, j, s in ((y, self.rf[0], self.jump[0], self.start[0]),
                             (x, self.rf[1], self.jump[1], self.start[1])):
            lo = int(math.floor(s + pos * j - (r - 1) / 2 + 1e-9))
            out += [lo, lo + int(round(r))]
        return tuple(out)

    def shift(self, offsets) -> "Geometry":
        if self.whole:
            return self
        start = tuple(s + o * j for s, o, j in zip(self.start, offsets, self.jump))
        return Geometry(self.rf, self.jump, start)


WHOLE = Geometry((math.inf, math.inf), (0, 0), (0.0, 0.0), whole=True)


class Emitter:
    """Collects ONNX nodes and initializers while layers emit themselves."""

    def __init__(self, record: bool, dynamic: bool = False, faithful: bool | None = None,
                 switches: bool | None = None):
        self.record = record            # a recording graph (what backward passes read is kept)
        self.dynamic = dynamic          # no constant that holds only for one input size
        # BatchNorm and its Scale in Caffe's order (- mean, / std, * gamma, + beta), not folded
        self.faithful = record if faithful is None else faithful
        # max-pool switches as outputs (an --all-blobs file); a Net computes them itself
        self.switches = record if switches is None else switches
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.weights: dict[str, np.ndarray] = {}   # name -> array, kept outside the graph
        self.extra_outputs: list[tuple[str, int, Shape]] = []  # (name, elem type, shape)
        self.producer: dict[str, onnx.NodeProto] = {}   # value name -> the node that makes it
        self._n = 0
        self.layer: "Layer | None" = None

    def _fresh(self, hint: str) -> str:
        self._n += 1
        prefix = self.layer.name if self.layer is not None else "zf"
        return f"{prefix}/{hint}_{self._n}"

    def node(self, op: str, inputs: Sequence[str], outputs: Sequence[str] | int = 1,
             **attrs) -> list[str]:
        if isinstance(outputs, int):
            outputs = [self._fresh(op.lower()) for _ in range(outputs)]
        n = helper.make_node(op, list(inputs), list(outputs), name=self._fresh(op), **attrs)
        if self.layer is not None:
            n.doc_string = f"Caffe layer {self.layer.name} ({self.layer.type})"
        self.nodes.append(n)
        self.producer.update((o, n) for o in outputs)
        return list(outputs)

    def op(self, op: str, inputs: Sequence[str], out: str | None = None, **attrs) -> str:
        """A single-output node; returns its output name."""
        return self.node(op, inputs, [out] if out else 1, **attrs)[0]

    def const(self, value, hint: str = "const", dtype=np.float32) -> str:
        arr = np.asarray(value, dtype=dtype)
        name = self._fresh(hint)
        self.initializers.append(numpy_helper.from_array(arr, name))
        return name

    def ints(self, values: Sequence[int], hint: str = "shape") -> str:
        return self.const(np.asarray(values, dtype=np.int64), hint, np.int64)

    def weight(self, layer: "Layer", index: int, array: np.ndarray | None = None) -> str:
        """A parameter blob of the layer (or a derived array) as a graph initializer."""
        arr = layer.blobs[index] if array is None else array
        name = f"{layer.name}/blob{index}" if array is None else self._fresh(f"blob{index}")
        self.weights[name] = np.ascontiguousarray(arr, dtype=np.float32)
        return name

    def output(self, name: str, elem_type: int, shape: Shape) -> None:
        self.extra_outputs.append((name, elem_type, shape))


# ONNX's TensorProto.DataType values (fixed by the standard; named here without importing onnx)
FLOAT, INT32, INT64, BOOL, DOUBLE = 1, 6, 7, 9, 11


class Layer:
    """One layer of a Caffe net. Subclasses read their parameters in `setup`."""

    TYPES: tuple[str, ...] = ()
    FORK: str | None = None
    #: Layers the runtime treats as net inputs (Input and data layers).
    is_input = False
    #: Layers that run in NumPy between ONNX Runtime segments (`forward`), not in the
    #: graph: a Python layer, or an output whose exact order of ties or data-dependent
    #: size ONNX cannot give (DetectionOutput). Their `emit` serves the ONNX export only,
    #: and may refuse (`self.error`): the export then cuts the net before them.
    host = False
    #: the net's phase ("TEST" or "TRAIN"), set by the graph
    phase = "TEST"

    def __init__(self, lp, line: int = 0, path: str = ""):
        self.lp = lp
        self.name: str = lp.name
        self.type: str = lp.type
        self.line = line
        self.path = path
        self.bottoms: list[str] = []   # SSA keys of the inputs (see graph.py)
        self.tops: list[str] = []      # SSA keys of the outputs
        self.blobs: list[np.ndarray] = []
        self.in_shapes: list[Shape] = []
        self.out_shapes: list[Shape] = []
        self.setup(lp)

    # -- reading -------------------------------------------------------------
    def setup(self, lp) -> None:
        """Read the layer's own parameter message."""

    def error(self, message: str) -> ZfcaffeError:
        where = f"{self.path}:{self.line}: " if self.path and self.line else ""
        return ZfcaffeError(f"{where}layer '{self.name}' ({self.type}): {message}")

    # -- shapes ----------------------------------------------------------------
    def output_shapes(self, in_shapes: list[Shape]) -> list[Shape]:
        """Caffe's Reshape(): the top shapes for the given bottom shapes."""
        return [tuple(in_shapes[0])]

    def param_shapes(self, in_shapes: list[Shape]) -> list[Shape]:
        """Shapes the layer's parameter blobs must have (empty: none)."""
        return []

    def fillers(self) -> list | None:
        """The FillerParameter of each parameter blob, for a layer missing from the weights
        file (Caffe keeps the blobs its fillers made); None: the graph's rules for BVLC types."""
        return None

    def n_bottoms(self) -> tuple[int, int]:
        """Allowed (min, max) number of bottoms."""
        return (1, 1)

    # -- geometry and cost -------------------------------------------------------
    def geometry(self, in_geoms: list[Geometry | None]) -> list[Geometry | None]:
        """Receptive-field geometry of each top; pointwise layers pass it through."""
        g = next((x for x in in_geoms if x is not None), None)
        spatial = [x for x in in_geoms if x is not None and not x.whole]
        if len(spatial) > 1:  # merging branches: the union of their fields
            rf = tuple(max(x.rf[i] for x in spatial) for i in range(2))
            g = Geometry(rf, spatial[0].jump, spatial[0].start)
        return [g for _ in self.out_shapes]

    def macs(self) -> int:
        """Multiply-accumulates of one forward pass (elementwise ops count one each)."""
        return 0

    # -- ONNX ---------------------------------------------------------------------
    def emit(self, e: Emitter, ins: list[str], outs: list[str]) -> None:
        raise self.error("has no ONNX emission")

    def summary(self) -> str:
        """Short parameter description for `zfcaffe inspect`."""
        return ""

    def forward(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """A host layer's forward pass in NumPy (float32 in, float32 out), one array per top.
        Its outputs may differ in size from `out_shapes` where Caffe's do (a detection
        output's row count)."""
        raise self.error("has no NumPy forward")

    # -- backward -----------------------------------------------------------------
    def backward_reads(self) -> list[str]:
        """The keys whose forward values `backward` reads: the recording forward pass
        keeps these (and computes any other on demand). Every input and output unless a
        family says less."""
        return self.bottoms + self.tops

    def backward(self, ctx, top_diffs: list) -> list:
        """Diffs of the bottoms from the diffs of the tops (None: no signal).

        `ctx` gives the mode ("deconvnet", "backprop", "guided"), `ctx.data(key)`:
        forward values of a blob for the rows being projected, and
        `ctx.switches(layer_name)`: the recorded max-pool switches for those rows.
        """
        raise self.error(f"has no {ctx.mode} rule yet; project units of a layer that comes before it")


def spatial_pairs(values: Sequence[int], n: int, default: int, who: Layer, what: str) -> tuple:
    """Caffe's 'one value for all spatial axes, or one per axis' convention."""
    values = list(values)
    if not values:
        return (default,) * n
    if len(values) == 1:
        return (values[0],) * n
    if len(values) != n:
        raise who.error(f"{what} has {len(values)} values; expected 1 or {n}")
    return tuple(values)
