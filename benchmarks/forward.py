"""Forward throughput: zfcaffe (ONNX Runtime) against OpenCV's dnn Caffe importer, same
caffemodels, same inputs, one run. Target on CPU: >= 1.2x OpenCV.

    python benchmarks/forward.py [--batches 1 16] [--min-time 2]

"zfcaffe" is the lean forward (record=False: only the outputs); "all-blobs" is the
default forward that keeps every layer output and the max-pool switches.
"""
from __future__ import annotations

import argparse
import os

import numpy as np

from common import make_caffenet, nsfw_files, race, table, workdir

import zfcaffe


def opencv_runner(proto, weights, x):
    import cv2
    net = cv2.dnn.readNetFromCaffe(str(proto), str(weights))
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

    def run():
        net.setInput(x)
        return net.forward()
    return run


def zfcaffe_runner(proto, weights, x, record=False):
    net = zfcaffe.Net(str(proto), str(weights), input_shapes={"data": x.shape})

    def run():
        return net.forward(data=x, record=record)
    return run, net


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--min-time", type=float, default=2.0)
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
            rates = race({"zf": zf, "rec": rec, "cv": ocv}, batch, args.min_time)
            r_zf, r_rec, r_cv = rates["zf"], rates["rec"], rates["cv"]
            rows.append([name, batch, f"{r_zf:.1f}", f"{r_rec:.1f}", f"{r_cv:.1f}", f"{r_zf / r_cv:.2f}x",
                         f"{agree:.1e}"])
    print(f"CPU threads: {os.cpu_count()}, OpenCV {cv2.__version__}, {zfcaffe.runtime.session.device_line()}")
    print(table(["model", "batch", "zfcaffe img/s", "zfcaffe all-blobs img/s", "OpenCV img/s",
                 "ratio", "max|diff| out"], rows))


if __name__ == "__main__":
    main()
