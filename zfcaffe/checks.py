"""Argument checks at the API's edge (zfcaffe.Net, the backward passes, the tiling):
a wrong type is a ZfcaffeTypeError, an impossible value a ZfcaffeValueError, each one
line naming the call, the argument and what it takes, before NumPy or ONNX Runtime
would meet the value and answer in their own words. `what` is the call and the
argument, unclosed ("Net(seed", "project(unit[1]"): a message reads "Net(seed='x'):
expected an integer, not str"."""
from __future__ import annotations

import math
import os

import numpy as np

from .errors import ZfcaffeTypeError, ZfcaffeValueError


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type(value) -> str:
    return type(value).__name__


def integer(what: str, value, lo: int | None = None, hi: int | None = None) -> int:
    """An int (or NumPy integer; not a bool, not a float: NumPy refuses float indices too)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ZfcaffeTypeError(f"{what}={_shown(value)}): expected an integer, not {_type(value)}")
    value = int(value)
    if lo is not None and value < lo or hi is not None and value > hi:
        span = (f"from {lo} to {hi}" if lo is not None and hi is not None else
                f">= {lo}" if lo is not None else f"<= {hi}")
        raise ZfcaffeValueError(f"{what}={value}): expected an integer {span}")
    return value


def number(what: str, value) -> float:
    """A finite real number."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ZfcaffeTypeError(f"{what}={_shown(value)}): expected a number, not {_type(value)}")
    try:
        finite = math.isfinite(float(value))
    except OverflowError:                    # an int beyond any float
        finite = False
    if not finite:
        raise ZfcaffeValueError(f"{what}={_shown(value)}): expected a finite number")
    return float(value)


def string(what: str, value, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise ZfcaffeTypeError(f"{what}={_shown(value)}): expected a string (a name), not {_type(value)}")
    return value


def strings(what: str, value) -> tuple[str, ...]:
    """A list of names (a bare string is one name, not its letters)."""
    if isinstance(value, str):
        return (value,)
    try:
        items = tuple(value)
    except TypeError:
        raise ZfcaffeTypeError(f"{what}={_shown(value)}): expected a list of names, not {_type(value)}") from None
    for i, v in enumerate(items):
        string(f"{what}[{i}]", v)
    return items


def path(what: str, value, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise ZfcaffeTypeError(f"{what}={_shown(value)}): expected a file path, not {_type(value)}")
    return os.fspath(value)


def paths(what: str, value) -> list[str] | None:
    """None, one folder, or a list of folders."""
    if value is None:
        return None
    if isinstance(value, (str, os.PathLike)):
        return [os.fspath(value)]
    try:
        items = list(value)
    except TypeError:
        raise ZfcaffeTypeError(f"{what}={_shown(value)}): expected a folder or a list of folders, "
                               f"not {_type(value)}") from None
    return [path(f"{what}[{i}]", v) for i, v in enumerate(items)]


def shape(what: str, value) -> tuple[int, ...]:
    """A blob shape: a sequence of integers >= 0."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ZfcaffeTypeError(f"{what}={_shown(value)}): expected a shape (N, C, H, W) of integers, "
                               f"not {_type(value)}")
    dims = tuple(value)
    for i, d in enumerate(dims):
        integer(f"{what}[{i}]", d, lo=0)
    return tuple(int(d) for d in dims)


def shapes(what: str, value) -> dict | None:
    """None, or {input name: shape}."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ZfcaffeTypeError(f"{what}={_shown(value)}): expected a dict {{input name: (N, C, H, W)}}, "
                               f"not {_type(value)}")
    return {string(f"{what} key", k): shape(f"{what}[{k!r}]", v) for k, v in value.items()}


def array(what: str, value, ndim: int | None = None, expected: str = "") -> np.ndarray:
    """Real numbers as a contiguous float32 array (of `ndim` axes where given)."""
    if value is None or isinstance(value, (str, bytes, dict, set)):
        raise ZfcaffeTypeError(f"{what}={_shown(value)}): expected an array of numbers"
                               f"{' ' + expected if expected else ''}, not {_type(value)}")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as e:     # ragged nested lists
        raise ZfcaffeValueError(f"{what}=...): cannot be read as an array of numbers ({e})") from None
    if arr.dtype.kind not in "biuf":
        if arr.dtype.kind == "O":
            try:
                arr = arr.astype(np.float64)
            except (ValueError, TypeError):
                arr = None
        if arr is None or arr.dtype.kind not in "biuf":
            kind = "complex numbers" if arr is not None and arr.dtype.kind == "c" else \
                f"{np.asarray(value).dtype} values"
            raise ZfcaffeTypeError(f"{what}=...): an array of {kind}; expected real numbers"
                                   f"{' ' + expected if expected else ''}")
    if ndim is not None and arr.ndim != ndim:
        raise ZfcaffeValueError(f"{what}=...): an array of shape {list(arr.shape)}; expected {ndim} axes"
                                f"{' ' + expected if expected else ''}")
    return np.ascontiguousarray(arr, np.float32)


def unit(what: str, value) -> tuple[int, ...]:
    """One unit's index (n, c[, y, x])."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__") or isinstance(value, dict):
        raise ZfcaffeTypeError(f"{what}={_shown(value)}): expected a unit index (n, c[, y, x]) of integers, "
                               f"not {_type(value)}")
    index = tuple(value)
    for i, v in enumerate(index):
        integer(f"{what}[{i}]", v)
    return tuple(int(v) for v in index)


def units(what: str, value) -> list[tuple[int, ...]]:
    """A list of unit indices (an (N, 2..4) integer array will do)."""
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise ZfcaffeTypeError(f"{what}={_shown(value)}): expected a list of unit indices (n, c[, y, x]), "
                               f"not {_type(value)}")
    return [unit(f"{what}[{i}]", u) for i, u in enumerate(value)]


def numbers(what: str, value, n: int) -> list[float | None]:
    """n values (None: the unit's own activation), or None for all."""
    if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
        raise ZfcaffeTypeError(f"{what}={_shown(value)}): expected a list of {n} numbers, not {_type(value)}")
    items = list(value)
    if len(items) != n:
        raise ZfcaffeValueError(f"{what}=...): {len(items)} values for {n} units; expected one per unit")
    return [None if v is None else number(f"{what}[{i}]", v) for i, v in enumerate(items)]


def net_arguments(prototxt, weights, input_shapes, phase, level, stages, stop_before, seed, rounding,
                  python_path) -> tuple:
    """zfcaffe.Net's arguments, checked and normalised (paths as str, stages as a tuple)."""
    prototxt = path("Net(prototxt", prototxt)
    if isinstance(weights, int) and not isinstance(weights, bool):     # Net(prototxt, caffe.TEST)
        raise ZfcaffeTypeError(f"Net(weights={weights!r}): expected a file path, not int; pycaffe's phase "
                               "goes in phase=")
    weights = path("Net(weights", weights, optional=True)
    input_shapes = shapes("Net(input_shapes", input_shapes)
    string("Net(phase", phase)
    if phase.upper() not in ("TEST", "TRAIN"):
        raise ZfcaffeValueError(f"Net(phase={phase!r}): phase '{phase}'; expected TEST or TRAIN")
    level = integer("Net(level", level)
    stages = strings("Net(stages", stages)
    stop_before = string("Net(stop_before", stop_before, optional=True)
    seed = integer("Net(seed", seed, lo=0)
    string("Net(rounding", rounding)
    if rounding not in ("caffe", "fast"):
        raise ZfcaffeValueError(f"Net(rounding={rounding!r}): rounding '{rounding}'; expected caffe or fast")
    return (prototxt, weights, input_shapes, phase, level, stages, stop_before, seed, rounding,
            paths("Net(python_path", python_path))


def blob_value(what: str, value, shape: tuple) -> np.ndarray:
    """A value for a blob of `shape` (numbers that broadcast to it)."""
    arr = array(what, value)
    try:
        np.broadcast_shapes(arr.shape, tuple(shape))
    except ValueError:
        raise ZfcaffeValueError(f"{what}=...): an array of shape {list(arr.shape)}; expected {list(shape)} "
                                "(or a shape that broadcasts to it)") from None
    return arr


def backward_arguments(net, diffs, mode, stop_at, items) -> tuple:
    """Net.backward's arguments: {blob: diff} with one row per projected item, each
    diff shaped like its blob's rows, and `items` the forward-batch rows they belong to."""
    if not isinstance(diffs, dict):
        raise ZfcaffeTypeError(f"backward(diffs={_shown(diffs)}): expected a dict {{blob name: diff array}}, "
                               f"not {_type(diffs)}")
    string("backward(mode", mode)
    string("backward(stop_at", stop_at, optional=True)
    g = net.graph
    checked, rows = {}, None
    for name, d in diffs.items():
        string("backward(diffs key", name)
        key = name if name in g.shapes else g.blob_of.get(name, name)
        if key not in g.shapes:      # a layer's name (a repeated one's key is name~2) serves too
            key = next((l.tops[0] for l in g.layers if l.name == name and len(l.tops) == 1), None)
        if key is None:
            raise ZfcaffeValueError(f"backward(diffs[{name!r}]=...): '{name}' is not a blob of the net; expected a "
                                    f"layer or Caffe blob name: {g.names(shown=40)}")
        want = tuple(g.shapes[key][1:])
        arr = array(f"backward(diffs[{name!r}]", d, ndim=1 + len(want),
                    expected=f"(items, {', '.join(map(str, want))})" if want else "(items,)")
        if tuple(arr.shape[1:]) != want:
            raise ZfcaffeValueError(f"backward(diffs[{name!r}]=...): an array of shape {list(arr.shape)}; "
                                    f"expected [items, {', '.join(map(str, want))}] like '{name}'")
        if rows is not None and len(arr) != rows:
            raise ZfcaffeValueError(f"backward(diffs[{name!r}]=...): {len(arr)} rows, the other diffs have "
                                    f"{rows}; expected one row per item for every diff")
        rows = len(arr)
        checked[key] = arr
    # the recorded rows of each seeded value: images, or ROIs after an ROI pooling
    batch = min((g.shapes[k][0] for k in checked if g.shapes[k]), default=0)
    if items is None:
        for key, arr in checked.items():
            if g.shapes[key] and len(arr) != g.shapes[key][0]:
                raise ZfcaffeValueError(f"backward(diffs=...): {len(arr)} rows for '{key}', whose forward value has "
                                        f"{g.shapes[key][0]}; expected one row per row, or items= naming the row "
                                        "of each")
        return checked, None
    if isinstance(items, (str, bytes, dict)) or not hasattr(items, "__iter__"):
        raise ZfcaffeTypeError(f"backward(items={_shown(items)}): expected a list of batch rows, "
                               f"not {_type(items)}")
    items = [integer(f"backward(items[{i}]", v, lo=0, hi=max(batch - 1, 0)) for i, v in enumerate(items)]
    if rows is not None and len(items) != rows:
        raise ZfcaffeValueError(f"backward(items=...): {len(items)} items for diffs of {rows} rows; expected "
                                "one item per row")
    return checked, np.asarray(items, np.int64)


def project_arguments(call: str, layer, unit_list, mode, values, many: bool) -> tuple:
    """project / project_many's arguments: the layer's name, the units as integer tuples,
    the mode's name and the seed values (None: each unit's own activation)."""
    string(f"{call}(layer", layer)
    string(f"{call}(mode", mode)
    if many:
        unit_list = units(f"{call}(units", unit_list)
        values = None if values is None else numbers(f"{call}(values", values, len(unit_list))
    else:
        unit_list = [unit(f"{call}(unit", unit_list)]
        values = None if values is None else [number(f"{call}(value", values)]
    return layer, unit_list, mode, values


_NO_NET = object()


def recipe(call: str, net=_NO_NET, paths: dict | None = None, counts: dict | None = None, sizes: dict | None = None,
           layers=None, layer=None, label=None) -> None:
    """A recipe's arguments from Python (the CLI has checked its own): the net (where
    the recipe takes one) a zfcaffe.Net, paths file paths, counts integers >= 1, sizes integers >= 0, layers
    None or names, layer None or a name, label None or an integer >= 0."""
    if net is not _NO_NET and not (hasattr(net, "graph") and hasattr(net, "forward")):
        raise ZfcaffeTypeError(f"{call}(net={_shown(net)}): expected a zfcaffe.Net, not {_type(net)}")
    for name, value in (paths or {}).items():
        path(f"{call}({name}", value)
    for name, value in (counts or {}).items():
        integer(f"{call}({name}", value, lo=1)
    for name, value in (sizes or {}).items():
        integer(f"{call}({name}", value, lo=0)
    if layers is not None:
        strings(f"{call}(layers", layers)
    string(f"{call}(layer", layer, optional=True)
    if label is not None:
        integer(f"{call}(label", label, lo=0)
