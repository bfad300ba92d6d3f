"""SSD detectors end to end (image blob in, detection rows out) and DetectionOutput alone:
zfcaffe against OpenCV's dnn Caffe importer, batch 1, same prototxt and caffemodel, same input.
Targets on CPU: end to end >= 1.5x OpenCV; DetectionOutput <= 2 ms over MobileNet-SSD's
1,917 priors x 21 classes.

    python benchmarks/ssd.py [--min-time 2]

Models: the WeChat QR-code detector (census/wechat_qrcode, real weights, the oracle's
461x346 two-code image) and MobileNet-SSD (census/mobilenet_ssd, Caffe's fillers written once
to a caffemodel, the oracle's 300x300 photo). zfcaffe runs forward(record=False), and the
same net cut before its DetectionOutput (stop_before; a lean graph keeping only the layer's
three bottoms) followed by the layer's forward; OpenCV the OpenCV backend on the CPU.
DetectionOutput alone: the layer's NumPy/Numba forward on the oracle's own bottoms
(mobilenet_ssd_slim: confidence > 0.05, 100 rows kept), against OpenCV's DetectionOutput in a
three-input net. PriorBox is a constant of the graph: it costs
nothing per image.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import time

import zfcaffe  # before NumPy, as the command line imports it (its BLAS threads then sleep)

import numpy as np  # noqa: E402

from common import race, table, workdir  # noqa: E402
from zfcaffe.io.weights import write_caffemodel  # noqa: E402

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared"


def filler_caffemodel(proto: pathlib.Path) -> pathlib.Path:
    """The net's Caffe fillers (msra etc., as zfcaffe fills a net without weights),
    written once to a caffemodel OpenCV can read."""
    path = workdir() / f"{proto.stem}_fillers.caffemodel"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        net = zfcaffe.Net(str(proto))
        write_caffemodel(str(path), [(l.name, l.type, [np.asarray(b, np.float32) for b in l.blobs])
                                     for l in net.layers if l.blobs])
    return path


def opencv_net(proto, weights=None):
    import cv2
    net = cv2.dnn.readNetFromCaffe(str(proto), str(weights)) if weights else cv2.dnn.readNetFromCaffe(str(proto))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    return net


def same_rows(ours: np.ndarray, theirs: np.ndarray) -> str:
    """OpenCV pads to keep_top_k rows with zeros and orders by score across labels: compare
    the real rows as sets."""
    a = ours.reshape(-1, 7)
    b = theirs.reshape(-1, 7)
    a, b = a[a[:, 1] >= 0], b[b[:, 2] > 0]
    if a.shape != b.shape:
        return f"{len(a)} vs {len(b)} rows"
    key = lambda r: r[np.lexsort((r[:, 3], r[:, 2], r[:, 1]))]   # noqa: E731
    return f"{len(a)} rows, max|diff| {np.abs(key(a) - key(b)).max() if len(a) else 0:.1e}"


def detection_alone(case: str, min_time: float):
    """DetectionOutput on an oracle case's own bottoms: zfcaffe's layer vs OpenCV's."""
    import cv2
    d = SHARED / "oracle_ssd" / case
    net = zfcaffe.Net(str(d / "deploy.prototxt"), str(d / "weights.caffemodel"))
    layer = next(l for l in net.graph.layers if l.type == "DetectionOutput")
    outs = np.load(d / "outputs.npz")
    ins = [outs[b] for b in layer.bottoms]
    text = "".join(f'layer {{ name: "{b}" type: "Input" top: "{b}" input_param {{ shape {{ '
                   + " ".join(f"dim: {n}" for n in x.shape) + " } } }\n" for b, x in zip(layer.bottoms, ins))
    body = str(layer.lp).replace("\n", " ")
    proto = workdir() / f"{case}_detection.prototxt"
    proto.parent.mkdir(parents=True, exist_ok=True)
    proto.write_text(text + f"layer {{ {body} }}\n")
    cv = opencv_net(proto)

    def ocv():
        for b, x in zip(layer.bottoms, ins):
            cv.setInput(x, b)
        return cv.forward()

    def zf():
        return layer.forward(ins)[0]

    agree = same_rows(zf(), ocv())
    r = race({"zf": zf, "cv": ocv}, 1, min_time, min_rounds=50)
    P = layer.num_priors
    return [f"{case} ({P} priors x {layer.num_classes} classes)", f"{1e3 / r['cv']:.2f}",
            f"{1e3 / r['zf']:.2f} ({r['zf'] / r['cv']:.2f}x)", agree]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--min-time", type=float, default=2.0)
    args = ap.parse_args()
    import cv2

    wechat = SHARED / "census/wechat_qrcode"
    mobilenet = SHARED / "census/mobilenet_ssd/MobileNetSSD_deploy.prototxt"
    models = [("WeChat QR detector (real weights)", wechat / "detect.prototxt", wechat / "detect.caffemodel",
               np.load(SHARED / "oracle_ssd/wechat_detector/input.npy")),
              ("MobileNet-SSD (filler weights)", mobilenet, filler_caffemodel(mobilenet),
               np.load(SHARED / "oracle_ssd/mobilenet_ssd_slim/input.npy"))]
    rows = []
    for name, proto, weights, x in models:
        x = np.ascontiguousarray(x, np.float32)
        net = zfcaffe.Net(str(proto), str(weights), input_shapes={"data": x.shape})
        out = net.outputs[-1]
        det = next(l for l in net.graph.layers if l.type == "DetectionOutput")
        prior_nodes = sum(1 for l in net.graph.layers if l.type == "PriorBox")
        cv = opencv_net(proto, weights)

        # the same net cut before its DetectionOutput, whose lean forward keeps only the
        # three bottoms, then the layer on them: what record=False can cost with a host layer
        trunk = zfcaffe.Net(str(proto), str(weights), input_shapes={"data": x.shape}, stop_before=det.name)

        def zf():
            return net.forward(data=x, record=False)[out]

        def zf_split():
            o = trunk.forward(data=x, record=False)
            return det.forward([o[trunk.graph.name_of(b)] for b in det.bottoms])[0]

        def ocv():
            cv.setInput(x)
            return cv.forward()

        agree = same_rows(zf(), ocv())
        a, b = zf_split(), zf()   # the recording graph rounds in Caffe's order, the lean one fused
        assert a.shape == b.shape and np.allclose(a, b, atol=1e-4), (a.shape, b.shape)
        r = race({"zf": zf, "split": zf_split, "cv": ocv}, 1, args.min_time)
        net.forward(data=x)                       # a recording pass keeps the detection's bottoms
        bottoms = [net.layer_outputs[b] for b in det.bottoms]
        t = []
        for _ in range(30):
            t0 = time.perf_counter()
            det.forward(bottoms)
            t.append(time.perf_counter() - t0)
        rows.append([name, "x".join(map(str, x.shape)), f"{1e3 / r['cv']:.1f}",
                     f"{1e3 / r['zf']:.1f} ({r['zf'] / r['cv']:.2f}x)",
                     f"{1e3 / r['split']:.1f} ({r['split'] / r['cv']:.2f}x)", f"{1e3 * min(t):.2f}",
                     f"{prior_nodes} (constants)", agree])
    print(f"CPU threads: {os.cpu_count()}, OpenCV {cv2.__version__}, {zfcaffe.runtime.session.device_line()}")
    print("End to end, batch 1: ms per image (zfcaffe's speed-up over OpenCV), best of alternating rounds")
    print(table(["model", "input", "OpenCV ms", "zfcaffe forward(record=False)", "lean trunk + DetectionOutput",
                 "DetectionOutput ms", "PriorBox layers", "rows vs OpenCV"], rows))
    row = detection_alone("mobilenet_ssd_slim", args.min_time)
    print("\nDetectionOutput alone, on the fork's own bottoms: ms per call (speed-up over OpenCV's)")
    print(table(["case", "OpenCV ms", "zfcaffe ms", "rows vs OpenCV"], [row]))


if __name__ == "__main__":
    main()
