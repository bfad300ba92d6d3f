"""The survey's methods on a CaffeNet-shaped net, batch 1, in one run, the competitors
alternating: one optimisation step (recording forward + full backward to the input,
as every class-model / DeepDream / inversion step does) against PyTorch CPU autograd
on the same weights (target >= 1.0x), and Grad-CAM of one image against one
recording forward + one backward (target <= 1.5x).

    python benchmarks/methods.py [--min-time 2]
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from common import make_caffenet, race, table, workdir
from deconv import photo_batch
from pycaffe import torch_caffenet

import zfcaffe
from zfcaffe.analyses.heads import class_head
from zfcaffe.methods.gradcam import gradcam
from zfcaffe.optvis import objectives
from zfcaffe.optvis.render import gradient


def torch_step(net, x: np.ndarray, label: int):
    """PyTorch's forward + backward of the class score to the input, the graph built
    anew each step as an optimisation must (weights converted once)."""
    import torch
    fc8 = torch_caffenet(net)

    def run():
        xt = torch.from_numpy(x).requires_grad_(True)
        fc8(xt)[0, label].backward()
        return xt.grad.numpy()
    return run


def best_time(fn, min_time: float) -> float:
    fn()
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < min_time:
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--min-time", type=float, default=2.0)
    args = ap.parse_args()
    os.environ.setdefault("ZFCAFFE_QUIET", "1")
    proto, weights = make_caffenet(workdir())
    net = zfcaffe.Net(str(proto), str(weights), input_shapes={"data": (1, 3, 227, 227)})
    x = photo_batch(1)
    net.forward(data=x)
    label = int(net.layer_outputs["prob"][0].argmax())
    score = objectives.class_logit("fc8", label)
    runners = {"zfcaffe": lambda: gradient(net, score, x[0])}
    try:
        import torch
        runners["PyTorch"] = torch_step(net, x, label)
        peer = f"PyTorch {torch.__version__} autograd"
    except ImportError:
        peer = None
    steps = race(runners, 1, args.min_time)

    head = class_head(net)
    cam = best_time(lambda: gradcam(net, x, head, guided=False), args.min_time)
    guided = best_time(lambda: gradcam(net, x, head, guided=True), args.min_time)
    fwd_bwd = best_time(lambda: (net.forward(data=x), net.backward({"fc8": np.eye(1, 1000, label, dtype=np.float32)})),
                        args.min_time)

    print(f"CaffeNet 227x227, batch 1, {os.cpu_count()} CPU threads")
    rows = [["optimisation step (forward + backward to the input)", f"{1000 / steps['zfcaffe']:.1f} ms",
             f"{1000 / steps['PyTorch']:.1f} ms" if peer else "-",
             f"{steps['zfcaffe'] / steps['PyTorch']:.2f}x" if peer else "-"]]
    print(table(["work", "zfcaffe", peer or "PyTorch", "zfcaffe speed-up"], rows))
    print(table(["work", "time", "vs one recording forward + one backward"],
                [["recording forward + backward to the input", f"{1000 * fwd_bwd:.1f} ms", "1.00x"],
                 ["Grad-CAM", f"{1000 * cam:.1f} ms", f"{cam / fwd_bwd:.2f}x"],
                 ["Grad-CAM + guided Grad-CAM", f"{1000 * guided:.1f} ms", f"{guided / fwd_bwd:.2f}x"]]))
    if not peer:
        print("PyTorch not installed: pip install torch (benchmark-only) for the comparison")


if __name__ == "__main__":
    main()
