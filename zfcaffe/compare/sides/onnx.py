"""A model another converter wrote (caffe2onnx, MMdnn, a PyTorch export), run in ONNX
Runtime with every intermediate value exposed, and its values mapped to Caffe's keys:
by name where a value (or the node writing it) is named as the Caffe layer, else by
graph position, shape and correlation with zfcaffe's value. Each mapping says how."""
from __future__ import annotations

import os

import numpy as np

from ...errors import ZfcaffeError
from . import Match, Side

FLOATS = (1, 10, 11, 16)   # float, float16, double, bfloat16
#: what this ONNX Runtime runs: files from newer exporters are lowered to these (said in the notes)
MAX_IR, MAX_OPSET = 10, 21


def _expose_all(model, notes: list[str]):
    """The model with every floating-point node output as a graph output, initializers
    out of the inputs, and IR/opset versions this ONNX Runtime runs."""
    from onnx import helper, shape_inference
    if model.ir_version > MAX_IR:
        notes.append(f"the file's IR version {model.ir_version} lowered to {MAX_IR} for ONNX Runtime")
        model.ir_version = MAX_IR
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx") and op.version > MAX_OPSET:
            notes.append(f"the file's opset {op.version} lowered to {MAX_OPSET} for ONNX Runtime")
            op.version = MAX_OPSET
    g = model.graph
    inits = {i.name for i in g.initializer}
    keep = [i for i in g.input if i.name not in inits]
    del g.input[:]
    g.input.extend(keep)
    try:
        inferred = shape_inference.infer_shapes(model).graph
        types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.value_info) + list(inferred.output)
                 + list(inferred.input)}
    except Exception:  # noqa: BLE001 - a model shape inference cannot follow still runs
        types = {}
    declared = {o.name for o in g.output}
    order = []
    for node in g.node:
        for name in node.output:
            if name and name not in inits:
                order.append(name)
                t = types.get(name, 0)
                if name not in declared and t in FLOATS:
                    g.output.append(helper.make_tensor_value_info(name, t, None))
                    declared.add(name)
    return model, [n for n in order if n in declared]


class OnnxSide(Side):
    def __init__(self, path: str):
        import onnx
        import onnxruntime as ort
        if not os.path.exists(path):
            raise ZfcaffeError(f"{path}: no such file; expected an ONNX model")
        try:
            model = onnx.load(path)
        except Exception as e:  # noqa: BLE001 - onnx raises DecodeError and others
            raise ZfcaffeError(f"{path}: not a readable ONNX model ({type(e).__name__})") from None
        self.path = path
        self.description = f"{os.path.basename(path)} in ONNX Runtime {ort.__version__}"
        self._notes: list[str] = []
        self.node_of = {}           # value name -> (node name, output index)
        for node in model.graph.node:
            for i, o in enumerate(node.output):
                self.node_of[o] = (node.name, i)
        model, self.order = _expose_all(model, self._notes)
        self.position = {n: i for i, n in enumerate(self.order)}
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.session = None
        lowered = any("opset" in n for n in self._notes)
        for opset in ((MAX_OPSET, 13, 11, 9) if lowered else (None,)):
            if opset is not None:
                for op in model.opset_import:
                    if op.domain in ("", "ai.onnx"):
                        op.version = opset
            try:
                self.session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
                break
            except Exception as e:  # noqa: BLE001
                error = e
        if self.session is None:
            raise ZfcaffeError(f"{path}: ONNX Runtime refuses the model: {str(error).strip().splitlines()[0][:300]}")
        if lowered and opset != MAX_OPSET:
            # an exporter stamping its onnx package's newest opset on older operators (Dropout's ratio attribute)
            self._notes[-1] = self._notes[-1].replace(f"to {MAX_OPSET}", f"to {opset}, the newest its operators are valid in")
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.mapping: list[tuple[str, str, str]] = []

    def notes(self):
        return self._notes

    def feeds(self, inputs: dict) -> dict:
        if len(self.input_names) == 1 and len(inputs) == 1:
            return {self.input_names[0]: next(iter(inputs.values()))}
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise ZfcaffeError(f"{self.path}: inputs {', '.join(missing)} are not inputs of the Caffe net "
                               f"({', '.join(inputs)}); expected the same input names")
        return {n: inputs[n] for n in self.input_names}

    def run(self, inputs: dict) -> dict[str, np.ndarray]:
        try:
            outs = self.session.run(self.output_names, self.feeds(inputs))
        except Exception as e:  # noqa: BLE001
            raise ZfcaffeError(f"{self.path}: ONNX Runtime fails on the input: {str(e).strip().splitlines()[0][:300]}") from None
        return dict(zip(self.output_names, outs))

    def values(self, net, inputs, ours):
        got = {k: v for k, v in self.run(inputs).items() if v.dtype.kind == "f"}
        return map_values(net, got, ours, self.position, self.node_of)


def _by_name(net, layer, key: str, got: dict, node_of: dict) -> tuple[str, str] | None:
    if key in got:
        return key, "by name"
    index = layer.tops.index(key)
    for value, (node, i) in node_of.items():
        if node == layer.name and i == index and value in got:
            return value, "by name (the node is named as the layer)"
    blob = net.graph.name_of(key)
    layer_keys = {k for l in net.graph.compute_layers for k in l.tops}
    if blob != key and blob in got and blob not in layer_keys:
        # a blob written in place: its name holds the last writer's value
        return blob, "by name (the blob's final value)"
    return None


def map_values(net, got: dict, ours: dict, position: dict, node_of: dict) -> dict[str, Match]:
    """Caffe key -> the other side's value: by name, else the value of the same size, after
    the last matched one in graph order, with the highest cosine similarity to ours."""
    from ..core import comparable
    out: dict[str, Match] = {}
    used: set[str] = set()
    last = -1
    by_size: dict[int, list[str]] = {}
    for name in sorted(got, key=lambda n: position.get(n, 1 << 30)):
        by_size.setdefault(got[name].size, []).append(name)
    for layer in net.graph.compute_layers:
        for key in layer.tops:
            named = _by_name(net, layer, key, got, node_of)
            if named is not None:
                value, how = named
            else:
                a = np.ascontiguousarray(ours[key], np.float32).ravel()
                na = float(np.sqrt(np.dot(a, a)))
                best = None
                for name in by_size.get(a.size, ()):
                    if comparable(ours[key], got[name]) is None:
                        continue
                    b = np.ascontiguousarray(got[name], np.float32).ravel()
                    nb = float(np.sqrt(np.dot(b, b)))
                    cos = float(np.dot(a, b)) / (na * nb) if na > 0 and nb > 0 else float(na == nb)
                    pos = position.get(name, 1 << 30)
                    rank = (-round(cos, 6), name in used, pos <= last, pos)
                    if best is None or rank < best[0]:
                        best = (rank, name, cos, pos)
                if best is None:
                    continue
                _, value, cos, pos = best
                how = f"by position, shape and correlation (cosine {cos:.6f}, value #{pos} of the graph)"
            used.add(value)
            last = max(last, position.get(value, last))
            out[key] = Match(got[value], value, how)
    return out
