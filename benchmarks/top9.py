"""The top-9 scan against plain forward passes over the same images, in one run.
Target: the scan costs at most 10% more than the forward passes alone.

Both read the same decoded batches (decoding is measured apart, it is the same
for both); "forward" asks the net for its outputs only, the scan for the chosen
layers and keeps the top-9 per feature map.

    python benchmarks/top9.py [--images 96] [--batch 16]
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

from common import make_caffenet, photo_files, race, table, workdir

import zfcaffe
from zfcaffe.analyses.top9 import scan
from zfcaffe.scan import Engine
from zfcaffe.preprocess import for_net
from zfcaffe.analyses.common import default_layers, shown_key


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=96)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    proto, weights = make_caffenet(workdir())
    net = zfcaffe.Net(str(proto), str(weights))
    pre = for_net(net, mean="104,117,123")
    paths = photo_files(args.images)
    t = time.perf_counter()
    decoded = {p: pre(p) for p in paths}
    decode_rate = len(paths) / (time.perf_counter() - t)
    keys = [shown_key(net, n) for n in default_layers(net)]
    cached = decoded.__getitem__          # the "preprocessing" of both runs: already decoded
    net.set_batch(args.batch)

    def forward_only():
        for s in range(0, len(paths), args.batch):
            x = np.stack([cached(p) for p in paths[s:s + args.batch]])
            if x.shape[0] < args.batch:
                x = np.concatenate([x, np.zeros((args.batch - x.shape[0],) + x.shape[1:], np.float32)])
            net.forward(data=x, record=False)

    def top9_scan():
        scan(net, paths, keys, cached, k=9, batch=args.batch, engine=Engine(workers=1), show_progress=False)

    rates = race({"forward": forward_only, "scan": top9_scan}, len(paths), min_time=0, min_rounds=args.rounds)
    rf, rs = rates["forward"], rates["scan"]
    print(f"CaffeNet (generated weights), {len(paths)} photo crops, batch {args.batch}, {os.cpu_count()} CPU threads; "
          f"layers {', '.join(keys)}")
    print(table(["run", "images/s", "cost vs forward"],
                [["forward passes alone", f"{rf:.1f}", "1.00x"], ["top-9 scan", f"{rs:.1f}", f"{rf / rs:.2f}x"],
                 ["(decoding + preprocessing, both)", f"{decode_rate:.1f}", ""]]))


if __name__ == "__main__":
    main()
