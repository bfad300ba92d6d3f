"""What the net's outputs are: which one holds class scores (the head that a
"top-5" may be read from) and, for every other output, statistics and the kind of
picture that fits it (an image, feature maps, a segmentation, a vector).

The class output is, in order: the blob named by the user; the last Softmax over
the channel axis whose output is one vector per item; the input of a
SoftmaxWithLoss left in a deploy file (softmaxed here, as that layer would); the
last 1-D output of the net (softmaxed here, and said so). A net with none of them
has no class output, and nothing pretends it has.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import ZfcaffeError


@dataclasses.dataclass
class ClassHead:
    key: str              # the graph key whose values are read
    blob: str             # its Caffe blob name, as pycaffe's net.outputs say it
    classes: int
    softmaxed: bool       # zfcaffe applies the softmax (the blob holds scores)
    reason: str           # why this output, for the report

    def probabilities(self, values: np.ndarray) -> np.ndarray:
        v = values.reshape(values.shape[0], -1).astype(np.float64)
        if not self.softmaxed:
            return v
        e = np.exp(v - v.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def check_label(self, label: int) -> None:
        if not 0 <= label < self.classes:
            raise ZfcaffeError(f"--label {label}: the class output '{self.blob}' has classes 0 to {self.classes - 1}")

    def describe(self) -> str:
        return f"class output '{self.blob}' ({self.classes} classes): {self.reason}"


def _per_item_vector(shape: tuple) -> bool:
    """(N, K) or (N, K, 1, 1): one score vector per item."""
    return len(shape) >= 2 and shape[1] >= 2 and all(d == 1 for d in shape[2:])


def class_head(net, override: str | None = None) -> ClassHead | None:
    """The net's class output, or None when it has none (override 'none' forces that)."""
    g = net.graph
    if override == "none":
        return None
    if override:
        key = g.blob_of.get(override, override)
        if key not in g.shapes:
            raise ZfcaffeError(f"{g.path}: --class-output '{override}' is not a blob of the net "
                               f"(outputs: {', '.join(net.outputs)})")
        if not _per_item_vector(g.shapes[key]):
            raise ZfcaffeError(f"{g.path}: --class-output '{override}' has shape {list(g.shapes[key])}; "
                               "expected one score vector per item (N x K)")
        is_softmax = g.producer(key).type == "Softmax"
        return ClassHead(key, override, g.shapes[key][1], not is_softmax,
                         "chosen with --class-output" + ("" if is_softmax else ", softmaxed here"))
    final = set(g.blob_of.values())
    softmaxes = [l for l in g.compute_layers if l.type == "Softmax" and l.axis == 1
                 and _per_item_vector(l.out_shapes[0]) and l.tops[0] in final]
    if softmaxes:
        l = softmaxes[-1]
        key = g.blob_of.get(l.lp.top[0], l.tops[0])
        return ClassHead(key, g.name_of(key), l.out_shapes[0][1], False, f"the Softmax layer '{l.name}'")
    for key, typ in g.loss_inputs.items():
        if typ == "SoftmaxWithLoss" and _per_item_vector(g.shapes[key]):
            return ClassHead(key, g.name_of(key), g.shapes[key][1], True,
                             "the input of the SoftmaxWithLoss layer (softmaxed here, as that layer would)")
    vectors = [k for k in g.outputs() if _per_item_vector(g.shapes[k])]
    if vectors:
        key = vectors[-1]
        return ClassHead(key, g.name_of(key), g.shapes[key][1], True,
                         "the last 1-D output (no Softmax in the net: softmaxed here; "
                         "--class-output BLOB or none to change)")
    return None


def require_class_head(net, override: str | None = None) -> ClassHead:
    head = class_head(net, override)
    if head is None:
        raise ZfcaffeError(f"{net.graph.path}: the net has no class output (no Softmax and no 1-D output; "
                           f"outputs: {', '.join(net.outputs)}); expected a classifier, or name one with "
                           "--class-output BLOB")
    return head


def top_classes(head: ClassHead, values: np.ndarray, labels, k: int = 5) -> list[tuple[str, float]]:
    """The k most probable classes of item 0: (name, probability); none without items."""
    if not len(values):
        return []
    p = head.probabilities(values[:1])[0]
    order = np.argsort(-p, kind="stable")[:k]
    return [(labels(int(i)), float(p[i])) for i in order]


@dataclasses.dataclass
class OutputSummary:
    blob: str
    key: str
    shape: tuple
    stats: dict           # min, max, mean, std of item 0
    kind: str             # "class scores" | "image" | "maps" | "segmentation" | "vector" | "values" | "empty"


def summarize_outputs(net, values: dict[str, np.ndarray], head: ClassHead | None) -> list[OutputSummary]:
    """Every output of the net (item 0): its statistics and what kind of picture fits.
    An output without rows (a Fast R-CNN fed no ROIs: cls_prob of shape 0 x 21) is
    "empty": its shape, no statistics, no picture and no top-5."""
    out = []
    for key in net.graph.outputs():
        full = np.asarray(values[key])
        shape = tuple(full.shape)
        if full.ndim and not len(full):
            out.append(OutputSummary(net.graph.name_of(key), key, shape, {}, "empty"))
            continue
        stats = _stats(full[0] if full.ndim else full)
        out.append(OutputSummary(net.graph.name_of(key), key, shape, stats, _kind(net, key, shape, head)))
    return out


def _stats(value, chunk: int = 1 << 20) -> dict:
    """min, max, mean and std of an array in float64, a chunk at a time: an output of
    hundreds of MB is summarised without float64 copies of it."""
    flat = np.asarray(value).reshape(-1)
    if not flat.size:
        return {}
    starts = range(0, flat.size, chunk)
    with np.errstate(invalid="ignore", over="ignore"):      # inf and NaN outputs give inf / NaN statistics
        return _moments(flat, starts, chunk)


def _moments(flat, starts, chunk) -> dict:
    mean = sum(float(flat[i:i + chunk].sum(dtype=np.float64)) for i in starts) / flat.size
    var = sum(float(np.square(flat[i:i + chunk].astype(np.float64) - mean).sum()) for i in starts) / flat.size
    return {"min": float(flat.min()), "max": float(flat.max()), "mean": mean, "std": var ** 0.5}


def _kind(net, key: str, shape: tuple, head: ClassHead | None) -> str:
    if head is not None and key == head.key:
        return "class scores"
    if len(shape) == 4 and min(shape[2:]) >= 2:
        if net.graph.producer(key).type == "Softmax" and shape[1] >= 2:
            return "segmentation"         # a class distribution per position
        if shape[1] in (1, 3) and min(shape[2:]) >= 16:
            return "image"
        return "maps"
    if int(np.prod(shape[1:])) <= 64:
        return "vector"
    return "values"
