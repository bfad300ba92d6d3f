"""How fast the command starts: `zfcaffe --help` (target 0.3 s) and `zfcaffe inspect
deploy.prototxt` (target 0.6 s), the median of several runs each, against the
interpreter's own start (`python3 -c pass`) measured in the same run, interleaved.

    python3 benchmarks/cli_start.py [--runs 9] [--prototxt deploy.prototxt] [--no-bytecode]

By default the runs use compiled bytecode, as an installed package does (kept in a
private cache folder, warmed by one untimed run; the checkout is not written);
--no-bytecode compiles every module on every run (PYTHONDONTWRITEBYTECODE=1, as some
development shells set). `python3 -X importtime -m zfcaffe --help` shows what loads.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DEPLOY = ROOT.parent / "shared/models/bvlc_reference_caffenet/deploy.prototxt"
#: used when ../shared is absent: CaffeNet's layers (the inspect table's work is the same kind)
DEPLOY = """name: "CaffeNet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 10 dim: 3 dim: 227 dim: 227 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 96 kernel_size: 11 stride: 4 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" convolution_param { num_output: 256 pad: 2 kernel_size: 5 group: 2 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc6" type: "InnerProduct" bottom: "pool2" top: "fc6" inner_product_param { num_output: 4096 } }
layer { name: "prob" type: "Softmax" bottom: "fc6" top: "prob" }
"""
TARGETS = {"zfcaffe --help": 0.3, "zfcaffe inspect": 0.6}


def timed(cmd: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds user + system) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=9, help="timed runs of each command (default 9)")
    ap.add_argument("--prototxt", help="the net inspect reads (default: ../shared's CaffeNet deploy)")
    ap.add_argument("--no-bytecode", action="store_true", help="compile every module on every run")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proto = args.prototxt or (str(SHARED_DEPLOY) if SHARED_DEPLOY.exists() else None)
        if proto is None:
            proto = os.path.join(tmp, "deploy.prototxt")
            pathlib.Path(proto).write_text(DEPLOY)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        if args.no_bytecode:
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        else:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = os.path.join(tmp, "pycache")
        py = sys.executable
        commands = {"python3 -c pass (peer)": [py, "-c", "pass"],
                    "zfcaffe --help": [py, "-m", "zfcaffe", "--help"],
                    "zfcaffe inspect": [py, "-m", "zfcaffe", "inspect", proto]}
        for cmd in commands.values():       # warm-up: the bytecode cache and the file cache
            timed(cmd, env)
        load = os.getloadavg()[0]
        times: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):           # interleaved, so that a busy moment hits all alike
            for name, cmd in commands.items():
                wall, used = timed(cmd, env)
                times[name].append(wall)
                cpu[name].append(used)
        load = max(load, os.getloadavg()[0])
    peer = statistics.median(times["python3 -c pass (peer)"])
    peer_cpu = statistics.median(cpu["python3 -c pass (peer)"])
    print(f"{args.runs} runs each, median wall time; {'no bytecode' if args.no_bytecode else 'bytecode cached'}; "
          f"{os.cpu_count()} CPUs, load average up to {load:.1f}; inspect reads {proto}")
    print(f"{'command':<24} {'median s':>9} {'min s':>7} {'x peer':>7} {'CPU s':>7} {'x peer':>7} {'target s':>9}  "
          "verdict")
    for name, ts in times.items():
        med = statistics.median(ts)
        target = TARGETS.get(name)
        # the target is for this machine unloaded; beyond it, the start minus the interpreter's own
        # start (what zfcaffe adds) is the figure that loads the least
        verdict = "" if target is None else ("meets the target" if med <= target else
                                            f"over the target (zfcaffe adds {med - peer:.3f} s to the peer)")
        used = statistics.median(cpu[name])
        print(f"{name:<24} {med:>9.3f} {min(ts):>7.3f} {med / peer:>7.1f} {used:>7.3f} {used / peer_cpu:>7.1f} "
              f"{'' if target is None else f'{target:.1f}':>9}  {verdict}")
    if load > (os.cpu_count() or 1):
        print(f"note: the machine was busy (load {load:.1f} on {os.cpu_count()} CPUs): the wall times are "
              "inflated; the ratios to the peer and the CPU seconds are the figures to read")
    return 0


if __name__ == "__main__":
    sys.exit(main())
