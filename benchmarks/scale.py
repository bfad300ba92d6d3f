"""The scan engines side by side: images/s of the local engine and of the Ray engine
(a private one-node Ray on this machine), over the same photos, in one run with
alternating rounds. Target: Ray's overhead on one node <= 15% (steady state).

Each round runs the top-9 scan (the verb's job: decode, forward, per-map top-k) over
all images. "total" counts from the call to the last result (for Ray it includes
starting the actors and building their nets, paid once per scan); "steady" counts
from the first result to the last, the rate that a long scan runs at. The per-image
cost (core-seconds) is what the README extrapolates to ImageNet on N nodes.

    python benchmarks/scale.py [--images 320] [--batch 16] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import time

from common import make_caffenet, nsfw_files, photo_files, table, workdir

import zfcaffe
from zfcaffe.analyses.common import default_layers, shown_key
from zfcaffe.analyses.top9 import ScanJob
from zfcaffe.preprocess import for_net
from zfcaffe.scan import Engine


def timed_scan(engine: Engine, job: ScanJob, paths: list[str]) -> tuple[float, float]:
    """(total s, steady images/s) of one scan."""
    t0 = time.perf_counter()
    first = None
    for start, real, _ in engine.map(job, paths):
        if first is None:
            first, first_real = time.perf_counter(), real
    end = time.perf_counter()
    return end - t0, (len(paths) - first_real) / max(end - first, 1e-9)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--images", type=int, default=320)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    import ray
    from zfcaffe.scan.engines import connect
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    t = time.perf_counter()
    connect(ray, None)
    ray_start = time.perf_counter() - t
    cores = os.cpu_count()
    paths = photo_files(args.images)
    nets = [("CaffeNet 227 (generated weights)", *make_caffenet(workdir()))]
    if nsfw_files():
        nets.append(("nsfw ResNet-50 224", *nsfw_files()))
    engines = {"local": Engine("local"),
               f"ray, 1 actor x {cores} cores": Engine("ray", actors=1, cpus_per_actor=cores),
               f"ray, {cores} actors x 1 core": Engine("ray", actors=cores, cpus_per_actor=1)}
    print(f"{len(paths)} photos, batch {args.batch}, {cores} cores, {args.rounds} alternating rounds; "
          f"starting the private Ray took {ray_start:.1f} s (once)")
    for title, proto, weights in nets:
        net = zfcaffe.Net(str(proto), str(weights))
        pre = for_net(net, mean="104,117,123")
        keys = [shown_key(net, n) for n in default_layers(net)]
        job = ScanJob(net, pre, args.batch, keys, 9)
        timed_scan(engines["local"], job, paths[:args.batch * 2])         # warm-up: sessions, caches
        best = {name: (float("inf"), 0.0) for name in engines}
        for _ in range(args.rounds):
            for name, engine in engines.items():
                total, steady = timed_scan(engine, job, paths)
                best[name] = (min(best[name][0], total), max(best[name][1], steady))
        local_total, local_steady = best["local"]
        rows = []
        for name, (total, steady) in best.items():
            rows.append([name, f"{len(paths) / total:.1f}", f"{steady:.1f}",
                         f"{local_steady / steady - 1:+.1%}" if name != "local" else "",
                         f"{cores / steady * 1000:.1f}"])
        print(f"\n{title}: top-9 scan of {', '.join(keys)}")
        print(table(["engine", "total img/s", "steady img/s", "overhead vs local (steady)", "core-ms/img"], rows))
        per_image = cores / local_steady
        print(f"extrapolated: ImageNet train (1.28 M images) at {per_image * 1000:.0f} core-ms/image = "
              f"{1.28e6 * per_image / 3600:.0f} core-hours; on N nodes of {cores} cores: "
              f"{1.28e6 * per_image / cores / 3600:.1f} h / N")
    ray.shutdown()


if __name__ == "__main__":
    main()
