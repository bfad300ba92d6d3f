"""Turn a shape-inferred Graph into an ONNX model.

Value names are the graph's blob keys, so the file reads like the prototxt in
Netron, except the net's outputs, which carry their Caffe blob names (onnx_names);
each node's doc_string names its Caffe layer, and the model's metadata maps every
key to its layer. Static shapes (a new input shape is a new model) unless asked
for symbolic axes (convert --dynamic).
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ZfcaffeError
from ..graph import Graph
from ..layers import Emitter

OPSET = 18
# onnx >= 1.23 writes IR 14 by default; onnxruntime 1.31 reads at most 13.
IR_VERSION = 10


@dataclasses.dataclass
class OnnxNet:
    model: onnx.ModelProto                 # without the weights when external
    weights: dict[str, np.ndarray]         # parameter initializers kept outside the model
    outputs: list[str]                     # the model's output names
    keys: list[str]                        # the graph key of each output (switches: their own name)
    #: host layers the file leaves out (a Python layer, a type ONNX cannot express) with
    #: why, and every layer after them that reads their outputs
    cut: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def onnx_names(graph: Graph, keys: list[str] | None = None) -> dict[str, str]:
    """Graph key -> value name in the ONNX file, where they differ. The net's outputs
    (and `keys`: the inputs of a layer the export cuts, which become outputs) carry their
    Caffe blob names where the key holds the blob's final value (as pycaffe's net.outputs
    and forward() say them: `conv6_3` after an in-place ReLU); a value that already had
    that name (the convolution's own output) becomes `conv6_3/before_relu6_3`."""
    rename = {}
    for key in dict.fromkeys(graph.outputs() + list(keys or ())):
        name = graph.name_of(key)
        if name != key and name not in graph.inputs and key not in rename:
            rename[key] = name
            if name in graph.shapes:
                rename[name] = f"{name}/before_{key}"
    return rename


def _symbolic(info: onnx.ValueInfoProto, axes: dict[int, str]) -> None:
    for i, dim in enumerate(info.type.tensor_type.shape.dim):
        if i in axes:
            dim.dim_param = axes[i]


def build_onnx(graph: Graph, record: bool = True, outputs: list[str] | None = None,
               embed_weights: bool = False, dynamic: tuple[str, ...] = (),
               span: tuple[int, int] | None = None, every_blob: bool = True,
               faithful: bool | None = None, switches: bool | None = None) -> OnnxNet:
    """record: every layer output (every_blob=False: only those a backward pass reads,
    and the net's outputs) and every max-pool's switches become outputs; faithful
    (default: record) emits BatchNorm and its Scale in Caffe's order rather than folded;
    switches (default: record) adds each max-pool's switches as an output.
    Without embed_weights the model names the weights but holds none of them: they
    come back in OnnxNet.weights for the caller to supply (streamed to a file, or
    handed to ONNX Runtime from memory). dynamic: "batch" and/or "spatial" axes are
    left symbolic (see runtime.dynamic for the check that they really are free).
    span: only the layers lo..hi (indices into graph.layers, inclusive), taking the
    keys they read from outside as inputs (pycaffe's forward(start=, end=)); its
    values keep their keys as names."""
    e = Emitter(record, dynamic="spatial" in dynamic, faithful=faithful, switches=switches)
    layers = graph.compute_layers if span is None else \
        [l for l in graph.layers[span[0]:span[1] + 1] if not l.is_input]
    cut: list[tuple[str, str]] = []
    cut_keys: set[str] = set()
    read_by_cut: list[str] = []
    kept = []
    for layer in layers:
        e.layer = layer
        if cut_keys.intersection(layer.bottoms):
            cut.append((layer.name, "reads the output of a layer left out"))
            cut_keys.update(layer.tops)
            continue
        marks = len(e.nodes), len(e.initializers), len(e.weights), len(e.extra_outputs)
        try:
            layer.emit(e, layer.bottoms, layer.tops)
        except ZfcaffeError as err:
            if not layer.host:
                raise
            # a host layer without an ONNX form: the file stops before it (its inputs become outputs)
            del e.nodes[marks[0]:], e.initializers[marks[1]:], e.extra_outputs[marks[3]:]
            for name in list(e.weights)[marks[2]:]:
                del e.weights[name]
            cut.append((layer.name, str(err)))
            cut_keys.update(layer.tops)
            continue
        kept.append(layer)
    e.layer = None
    if cut:
        read_by_cut = [b for l in layers if l.name in {c[0] for c in cut} for b in l.bottoms if b not in cut_keys]
        layers = kept
        outputs = list(dict.fromkeys([k for k in (list(outputs) if outputs else graph.outputs())
                                      if k not in cut_keys] + read_by_cut))

    produced = {k for l in layers for k in l.tops}
    if record and (every_blob or span is not None):
        outs = [k for l in layers for k in l.tops]
    elif record:   # what the backward passes read, and the net's outputs; the rest is computed on demand
        read = {k for l in layers for k in l.backward_reads()}
        # a rectifier's output is read by its consumers but costs nothing to recompute from
        # its recorded input (the rectifier run alone, when a backward pass first asks)
        read -= {t for l in layers if l.type == "ReLU" and set(l.bottoms) <= read for t in l.tops}
        outs = [k for l in layers for k in l.tops if k in read] + graph.outputs()
    else:
        outs = list(outputs) if outputs else graph.outputs()
    if cut and record:
        outs = [k for k in outs if k not in cut_keys] + [k for k in outputs if k not in outs]
    # Keys that are also inputs or re-exported would be duplicate outputs: keep the first.
    seen, final = set(), []
    for k in outs:
        if k not in seen and k not in graph.inputs and (span is None or k in produced):
            seen.add(k)
            final.append(k)
    if not final and not e.extra_outputs:   # ONNX Runtime refuses a graph without outputs
        why = f"; every layer reads only the net's inputs or what the export leaves out: {cut[0][1]}" if cut else ""
        raise ZfcaffeError(f"{graph.path or graph.name}: nothing to export to ONNX{why}")

    read = list(dict.fromkeys(b for l in layers for b in l.bottoms if b not in produced))
    inputs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(graph.shapes[k])) for k in read]
    value_outs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(graph.shapes[k])) for k in final]
    value_outs += [helper.make_tensor_value_info(n, t, list(s)) for n, t, s in e.extra_outputs]
    inits = list(e.initializers)
    if embed_weights:
        inits += [numpy_helper.from_array(a, n) for n, a in e.weights.items()]
    rename = onnx_names(graph, [k for k in read_by_cut if k in final]) if span is None else {}
    for node in e.nodes:
        node.input[:] = [rename.get(n, n) for n in node.input]
        node.output[:] = [rename.get(n, n) for n in node.output]
    # a host layer's data-dependent axes (a detection output's row count, the proposals) are
    # left open, and so is every axis of that size in what is computed from them (the ROIs'
    # features, scores, deltas: a fixed axis of the same size is merely left open too)
    open_axes = {t: axes for l in layers for t, axes in zip(l.tops, getattr(l, "open_axes", ()))}
    sizes: dict[str, set[int]] = {t: {graph.shapes[t][a] for a in axes} for t, axes in open_axes.items()}
    for l in layers:
        inherited = set().union(*(sizes.get(b, set()) for b in l.bottoms))
        for t in l.tops:
            if inherited and t not in open_axes:
                sizes[t] = sizes.get(t, set()) | inherited
                open_axes[t] = tuple(i for i, d in enumerate(graph.shapes[t]) if d in sizes[t])
    for info in value_outs:
        if open_axes.get(info.name):
            _symbolic(info, {a: f"{rename.get(info.name, info.name)}_{a}" for a in open_axes[info.name]})
    for info in inputs + value_outs:
        info.name = rename.get(info.name, info.name)
        if dynamic:
            rank = len(info.type.tensor_type.shape.dim)
            axes = {0: "batch"} if "batch" in dynamic else {}
            if "spatial" in dynamic and rank == 4:
                axes.update({2: f"height_{info.name}", 3: f"width_{info.name}"})
            _symbolic(info, axes)
    g = helper.make_graph(e.nodes, graph.name or "caffe_net", inputs, value_outs, initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="zfcaffe", ir_version=IR_VERSION)
    layer_of = {rename.get(k, k): l.name for l in graph.layers for k in l.tops}
    helper.set_model_props(model, {
        "caffe_source": graph.path,
        "caffe_layers": json.dumps(layer_of),
    })
    keys = final + [n for n, _, _ in e.extra_outputs]
    return OnnxNet(model, {} if embed_weights else e.weights, [rename.get(k, k) for k in keys], keys, cut)

