"""Deconvnet projections of the top-9 units of conv5 in a CaffeNet-shaped net, batched:
zfcaffe's Numba engine against PyTorch on the CPU doing the same chain (unpooling
through the switches + conv_transpose2d + relu), in one run. Target: >= 2x PyTorch.
Numba's compile time is reported apart: it is paid once and cached across processes.

    python benchmarks/deconv.py [--min-time 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from common import make_caffenet, race, table, workdir

import zfcaffe


def photo_batch(n: int) -> np.ndarray:
    """n different crops of a real photo, as a CaffeNet input batch."""
    import matplotlib.cbook
    from PIL import Image
    img = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    arr = np.asarray(img, np.float32)
    out = []
    for i in range(n):
        y, x = (i * 23) % (arr.shape[0] - 227), (i * 41) % (arr.shape[1] - 227)
        crop = arr[y:y + 227, x:x + 227][:, :, ::-1]
        if i % 2:
            crop = crop[:, ::-1]
        out.append(crop.transpose(2, 0, 1) - np.array([104, 117, 123], np.float32).reshape(3, 1, 1))
    return np.ascontiguousarray(out, dtype=np.float32)


def top9_units(net) -> list[tuple]:
    """The strongest conv5 unit of the most active channel in each image."""
    act = net.layer_outputs["conv5"]
    c = int(act.max(axis=(0, 2, 3)).argmax())
    return [(n, c, *np.unravel_index(int(act[n, c].argmax()), act.shape[2:])) for n in range(act.shape[0])]


def torch_runner(net, x, units):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(os.cpu_count())
    W = {name: torch.from_numpy(net.params[name][0].data.copy()) for name in
         ("conv1", "conv2", "conv3", "conv4", "conv5")}
    B = {name: torch.from_numpy(net.params[name][1].data.copy()) for name in W}
    with torch.no_grad():  # the forward pass, for the switches (not timed)
        t = torch.from_numpy(x)
        c1 = F.relu(F.conv2d(t, W["conv1"], B["conv1"], stride=4))
        p1, i1 = F.max_pool2d(c1, 3, 2, ceil_mode=True, return_indices=True)
        n1 = F.local_response_norm(p1, 5, alpha=1e-4, beta=0.75)
        c2 = F.relu(F.conv2d(n1, W["conv2"], B["conv2"], padding=2, groups=2))
        p2, i2 = F.max_pool2d(c2, 3, 2, ceil_mode=True, return_indices=True)
        c5_shape = (x.shape[0], 256, 13, 13)
    seed = torch.zeros(c5_shape)
    act = torch.from_numpy(net.layer_outputs["conv5"])
    for r, (n, c, y, x_) in enumerate(units):
        seed[r, c, y, x_] = act[n, c, y, x_]
    rows = [u[0] for u in units]
    i1r, i2r = i1[rows], i2[rows]

    def unpool(s, idx, size):
        # max_unpool2d keeps one of two values routed to the same input (overlapping
        # 3x3/2 windows); Caffe adds them, so the peer scatter-adds through the indices.
        n, c = s.shape[:2]
        out = torch.zeros(n, c, size * size)
        return out.scatter_add_(2, idx.flatten(2), s.flatten(2)).view(n, c, size, size)

    def run():
        with torch.no_grad():
            s = F.relu(F.conv_transpose2d(seed, W["conv5"], padding=1, groups=2))
            s = F.relu(F.conv_transpose2d(s, W["conv4"], padding=1, groups=2))
            s = F.conv_transpose2d(s, W["conv3"], padding=1)                   # norm2: identity
            s = F.relu(unpool(s, i2r, 27))
            s = F.conv_transpose2d(s, W["conv2"], padding=2, groups=2)        # norm1: identity
            s = F.relu(unpool(s, i1r, 55))
            return F.conv_transpose2d(s, W["conv1"], stride=4).numpy()
    return run


COMPILE = r"""
import sys, time, json, numpy as np
sys.path.insert(0, {root!r}); sys.path.insert(0, {here!r})
from deconv import photo_batch, top9_units
import zfcaffe
net = zfcaffe.Net({proto!r}, {weights!r}, input_shapes={{"data": (9, 3, 227, 227)}})
net.forward(data=photo_batch(9))
units = top9_units(net)
t = time.perf_counter(); net.project_many("conv5", units); first = time.perf_counter() - t
t = time.perf_counter(); net.project_many("conv5", units); second = time.perf_counter() - t
print(json.dumps({{"first": first, "second": second}}))
"""


def compile_times(proto, weights) -> tuple[float, float]:
    """(first call with an empty Numba cache, first call with a warm cache) minus a
    steady call, each in a fresh process."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = COMPILE.format(root=os.path.dirname(here), here=here, proto=str(proto), weights=str(weights))
    out = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "ZFCAFFE_QUIET": "1"}
        for _ in range(2):
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
            t = json.loads(r.stdout.strip().splitlines()[-1])
            out.append(t["first"] - t["second"])
    return out[0], out[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--min-time", type=float, default=2.0)
    args = ap.parse_args()
    proto, weights = make_caffenet(workdir())
    net = zfcaffe.Net(str(proto), str(weights), input_shapes={"data": (9, 3, 227, 227)})
    x = photo_batch(9)
    net.forward(data=x)
    units = top9_units(net)
    runners = {"zfcaffe": lambda: net.project_many("conv5", units, mode="deconvnet")}
    try:
        import torch
        runners["PyTorch"] = torch_runner(net, x, units)
        peer = f"PyTorch {torch.__version__}"
    except ImportError:
        peer = None
    rates = race(runners, len(units), args.min_time)
    rows = [["zfcaffe (Numba)", f"{rates['zfcaffe']:.1f}", f"{1000 * len(units) / rates['zfcaffe']:.1f}", ""]]
    if peer:
        a, b = runners["zfcaffe"](), runners["PyTorch"]()
        agree = float(np.abs(a - b).max() / np.abs(b).max())
        rows.append([peer, f"{rates['PyTorch']:.1f}", f"{1000 * len(units) / rates['PyTorch']:.1f}",
                     f"{rates['zfcaffe'] / rates['PyTorch']:.2f}x (max rel. diff {agree:.1e})"])
    cold, warm = compile_times(proto, weights)
    print(f"deconvnet projections of 9 conv5 units (one per image), CaffeNet 227x227, {os.cpu_count()} CPU threads")
    print(table(["engine", "projections/s", "ms per batch of 9", "zfcaffe speed-up"], rows))
    print(f"Numba compile time: {cold:.2f} s on first use, {warm:.2f} s once cached (NUMBA cache, across processes)")
    if not peer:
        print("PyTorch not installed: pip install torch (benchmark-only) for the comparison")


if __name__ == "__main__":
    main()
