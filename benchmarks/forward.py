"""Forward throughput: zfcaffe (ONNX Runtime) against OpenCV's dnn Caffe importer, same
caffemodels, same inputs, one run. Target on CPU: >= 1.2x OpenCV.

    python benchmarks/forward.py [--batches 1 16] [--min-time 2]

"lean" is the forward that keeps only the outputs (record=False); "recording" is the
default forward (net.forward()): every layer output and max-pool switch available for
the backward passes, with Caffe's order of operations (rounding="caffe", the default)
or ONNX Runtime's fused kernels (rounding="fast"). The ratios are against OpenCV.
--layers adds a per-layer table for CaffeNet at batch 1 (ONNX Runtime's profiler against
OpenCV's getPerfProfile), with the multiply-add rate of each convolution and the weight
streaming rate of each InnerProduct: where the time goes, and how close each is to the machine.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile

import zfcaffe  # before NumPy, as the command line imports it (its BLAS threads then sleep: see Runtime)

import numpy as np  # noqa: E402

from common import make_caffenet, nsfw_files, race, table, workdir  # noqa: E402


def opencv_runner(proto, weights, x):
    import cv2
    net = cv2.dnn.readNetFromCaffe(str(proto), str(weights))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

    def run():
        net.setInput(x)
        return net.forward()
    return run


def zfcaffe_runner(proto, weights, x, record=False, rounding="caffe"):
    net = zfcaffe.Net(str(proto), str(weights), input_shapes={"data": x.shape}, rounding=rounding)

    def run():
        return net.forward(data=x, record=record)
    return run, net


def layer_table(proto, weights, x, rounds=30) -> str:
    """Per-layer milliseconds (median over rounds) of both engines on one input. An
    in-place layer (ReLU, Dropout) counts with the layer whose blob it rewrites, as
    both engines fuse it there."""
    import cv2
    import onnxruntime as ort
    from zfcaffe.runtime.onnx_export import build_onnx

    net = zfcaffe.Net(str(proto), str(weights), input_shapes={"data": x.shape})
    producer = {t: layer.name for layer in net.layers for t in layer.tops}
    owner = {layer.name: producer[layer.bottoms[0]] if layer.type in ("ReLU", "Dropout") else layer.name
             for layer in net.layers}
    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as zfcaffe's sessions
    model = build_onnx(net.graph, record=False, embed_weights=True).model.SerializeToString()
    with tempfile.TemporaryDirectory() as d:  # the profiler's JSON never lands in the working folder
        opts.profile_file_prefix = os.path.join(d, "ort")
        sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        for _ in range(rounds):
            sess.run(None, {"data": x})
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    times = collections.defaultdict(lambda: collections.defaultdict(float))  # layer -> run -> us
    runs = collections.Counter()
    for ev in events:
        if ev.get("cat") != "Node" or not ev["name"].endswith("_kernel_time"):
            continue
        node = ev["name"][:-len("_kernel_time")].removeprefix("fused ")
        stem = node.split("/")[0].removesuffix("_nchwc")
        layer = owner.get(stem, "(layout reorders and glue)")
        runs[node] += 1
        times[layer][runs[node]] += ev["dur"]
    zf_ms = {k: float(np.median(list(v.values()))) / 1e3 for k, v in times.items()}

    cv = cv2.dnn.readNetFromCaffe(str(proto), str(weights))
    per_run = []
    for _ in range(rounds):
        cv.setInput(x)
        cv.forward()
        per_run.append(cv.getPerfProfile()[1].ravel() / (cv2.getTickFrequency() / 1e3))
    cv_ms = collections.defaultdict(float)
    for name, ms in zip(cv.getLayerNames(), np.median(per_run, axis=0)):
        cv_ms[owner.get(name, name)] += float(ms)

    rows = []
    for layer in net.layers:
        if layer.is_input or owner[layer.name] != layer.name:
            continue
        zf, ocv = zf_ms.get(layer.name, 0.0), cv_ms.get(layer.name, 0.0)
        rate = ""
        if layer.type == "Convolution":
            rate = f"{2 * layer.macs() / zf / 1e6:.0f} GFLOP/s"
        elif layer.type == "InnerProduct":
            rate = f"{layer.blobs[0].nbytes / zf / 1e6:.1f} GB/s"
        rows.append([layer.name, f"{zf:.2f}", f"{ocv:.2f}", rate])
    glue = zf_ms.get("(layout reorders and glue)", 0.0)
    rows.append(["(layout reorders and glue)", f"{glue:.2f}", "", ""])
    rows.append(["total", f"{sum(zf_ms.values()):.2f}", f"{sum(cv_ms.values()):.2f}", ""])
    return table(["layer", "zfcaffe ms", "OpenCV ms", "zfcaffe rate"], rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--min-time", type=float, default=2.0)
    ap.add_argument("--layers", action="store_true", help="per-layer times, CaffeNet at batch 1")
    args = ap.parse_args()
    import cv2
    models = [("CaffeNet (generated weights)", *make_caffenet(workdir()), 227)]
    nsfw = nsfw_files()
    if nsfw:
        models.append(("nsfw ResNet-50", *nsfw, 224))
    rows = []
    rng = np.random.default_rng(0)
    for name, proto, weights, size in models:
        for batch in args.batches:
            x = (rng.standard_normal((batch, 3, size, size)) * 50).astype(np.float32)
            zf, net = zfcaffe_runner(proto, weights, x)
            out_name = net.outputs[0]
            ocv = opencv_runner(proto, weights, x)
            agree = float(np.abs(zf()[out_name].reshape(batch, -1) - ocv().reshape(batch, -1)).max())
            rec, _ = zfcaffe_runner(proto, weights, x, record=True)
            fast, _ = zfcaffe_runner(proto, weights, x, record=True, rounding="fast")
            r = race({"lean": zf, "rec": rec, "fast": fast, "cv": ocv}, batch, args.min_time)
            rows.append([name, batch, f"{r['cv']:.1f}", f"{r['lean']:.1f} ({r['lean'] / r['cv']:.2f}x)",
                         f"{r['rec']:.1f} ({r['rec'] / r['cv']:.2f}x)", f"{r['fast']:.1f} ({r['fast'] / r['cv']:.2f}x)",
                         f"{agree:.1e}"])
    print(f"CPU threads: {os.cpu_count()}, OpenCV {cv2.__version__}, {zfcaffe.runtime.session.device_line()}")
    print("images/s (ratio to OpenCV), best of alternating rounds")
    print(table(["model", "batch", "OpenCV", "lean", "recording, caffe rounding", "recording, fast rounding",
                 "max|diff| out"], rows))
    if args.layers:
        _, proto, weights, size = models[0]
        x = (rng.standard_normal((1, 3, size, size)) * 50).astype(np.float32)
        print("\nCaffeNet, batch 1, per layer (median of 30 runs):")
        print(layer_table(proto, weights, x))


if __name__ == "__main__":
    main()
