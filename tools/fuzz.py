"""Fuzz zfcaffe's readers and command line with mutated real inputs, each case in a
forked child with a memory cap and a timeout, and sort every outcome:

  ran            the command finished (exit 0)
  project error  one `zfcaffe: error: ...` line (exit 2)
  foreign        an exception that is not the project's own (a traceback)
  hang           still running at the timeout
  memory         MemoryError, or killed at the memory cap
  crash          the process died on a signal

    python tools/fuzz.py [--cases 10000] [--seed 0] [--timeout 20] [--memory-gb 4] [--keep DIR] [--jobs 2]

Inputs are mutated from real files (../shared/models, a generated caffemodel and
HDF5, mean files, matplotlib's sample photo): bytes flipped, inserted, cut; prototxt
tokens replaced with odd values; CLI options given odd numbers. The fork nets of
../shared/oracle_forks and oracle_ssd (fork layers, host layers, Python built-ins) are
mutated and run forward on their own inputs (missing weights filled). Every case that
is not "ran" or "project error" is written to --keep with the command that reproduces it.
The parent imports what the verbs use once (--no-preload: each child imports it), and
--jobs children run at once.
"""
from __future__ import annotations

import argparse
import collections
import io
import math
import os
import pathlib
import random
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"

ODD_NUMBERS = ["0", "-1", "1", "2", "nan", "inf", "-0", "1e9", "2000000000", "99999999999999999999", "3.5", "''",
               "\"x\"", "true", "-2147483648", "65536", "1e-30", "4096", "100000"]
ODD_ARGS = ["0", "-1", "1", "3", "99999", "-99999", "nan", "abc", "", "1e400", "--1", "1,2", "0x10"]


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    data = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.random()
        if not data:
            break
        i = rng.randrange(len(data))
        if op < 0.4:
            data[i] = rng.randrange(256)
        elif op < 0.6:
            del data[i:i + rng.randint(1, 64)]
        elif op < 0.8:
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        else:
            data = data[:i]                          # truncate
    return bytes(data)


def mutate_text(text: str, rng: random.Random) -> str:
    tokens = text.split(" ")
    for _ in range(rng.randint(1, 4)):
        if not tokens:
            break
        i = rng.randrange(len(tokens))
        op = rng.random()
        if op < 0.5:
            tokens[i] = rng.choice(ODD_NUMBERS) + ("\n" if tokens[i].endswith("\n") else "")
        elif op < 0.65:
            del tokens[i]
        elif op < 0.8:
            tokens.insert(i, rng.choice(["{", "}", "layer {", "top: \"x\"", "bottom: \"data\"", "#", "\"", ":"]))
        else:
            tokens[i] = tokens[rng.randrange(len(tokens))]
    return " ".join(tokens)


ODD_VALUES = ["0", "-1", "1", "2", "3", "7", "65536", "2000000000", "100000", "0.5", "-0.5", "1e-30", "1e30",
              "nan", "inf", "-inf"]


def mutate_values(text: str, rng: random.Random) -> str:
    """1-3 numeric field values replaced with odd numbers, the syntax kept: the fields
    themselves (a fork's parameters) meet the odd values, not the parser."""
    import re
    found = list(re.finditer(r"\b\w+\s*:\s*(-?[0-9][0-9.eE+-]*)", text))
    for m in sorted(rng.sample(found, min(len(found), rng.randint(1, 3))), key=lambda m: -m.start(1)):
        text = text[:m.start(1)] + rng.choice(ODD_VALUES) + text[m.end(1):]
    return text


class Corpus:
    """The real files the mutations start from, and a few made here."""

    KINDS = {"prototxt": 35, "caffemodel": 15, "h5": 10, "mean": 8, "npy": 6, "image": 10, "solver": 4, "cli": 12,
             "fork": 15}

    def __init__(self, work: pathlib.Path, kinds: list[str] | None = None):
        self.kinds = {k: w for k, w in self.KINDS.items() if not kinds or k in kinds}
        import matplotlib.cbook
        import numpy as np

        from zfcaffe.io.mean import read_mean
        self.work = work
        self.prototxts = sorted(p for p in (SHARED / "models").rglob("*.prototxt")) if SHARED.exists() else []
        m = SHARED / "models/cifar10_quick"
        self.net = m / "cifar10_quick.prototxt"
        self.weights = m / "cifar10_quick_iter_4000.caffemodel"
        self.h5 = m / "cifar10_quick_iter_5000.caffemodel.h5"
        self.mean = m / "mean.binaryproto"
        self.solver = m / "cifar10_quick_solver.prototxt"
        self.photo = pathlib.Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
        small = work / "small.png"
        from PIL import Image
        Image.open(self.photo).resize((40, 40)).save(small)
        self.small_png = small
        npy = work / "mean.npy"
        np.save(npy, read_mean(str(self.mean)))
        self.mean_npy = npy
        empty = work / "empty.caffemodel"
        from zfcaffe.io.weights import write_caffemodel
        write_caffemodel(str(empty), [("fuzz_unused", "ReLU", [])])      # no weights for any layer of a net
        # fork nets with an input of their own: (prototxt, weights or an empty file, input.npy)
        self.forks = []
        for folder in ("oracle_forks", "oracle_ssd"):
            for d in sorted((SHARED / folder).glob("*/")) if (SHARED / folder).exists() else []:
                if (d / "deploy.prototxt").exists() and (d / "input.npy").exists():
                    w = d / "weights.caffemodel"
                    self.forks.append((d / "deploy.prototxt", w if w.exists() else empty, d / "input.npy"))

    def case(self, rng: random.Random, folder: pathlib.Path) -> list[str]:
        """One mutated input and the zfcaffe command line that reads it."""
        kinds = {k: w for k, w in self.kinds.items() if k != "fork" or self.forks}
        kind = rng.choices(list(kinds), list(kinds.values()))[0]
        net, weights = str(self.net), str(self.weights)
        out = str(folder / "out")
        if kind == "prototxt":
            source = rng.choice(self.prototxts)
            path = folder / "net.prototxt"
            path.write_text(mutate_text(source.read_text(), rng))
            return rng.choice([["inspect", str(path)], ["inspect", str(path), "--json"],
                               ["convert", str(path), weights, "-o", out + ".onnx"]])
        if kind == "fork":                          # fork fields mutated; run forward with the host layers
            source, weights, x = rng.choice(self.forks)
            path = folder / "deploy.prototxt"
            text = source.read_text()
            path.write_text(mutate_values(text, rng) if rng.random() < 0.7 else mutate_text(text, rng))
            return rng.choice([["run", str(path), str(weights), "--allow-missing-weights", "--input", str(x),
                                "--quiet"],
                               ["run", str(path), str(weights), "--allow-missing-weights", "--input", str(x),
                                "--keep-size", "--quiet"],
                               ["visualize", str(path), str(weights), "--allow-missing-weights", "--image", str(x),
                                "--top", "1", "--mode", "deconvnet", "--detections", "1", "--threshold", "0",
                                "--quiet", "-o", out],       # detections, class maps and their traces
                               ["inspect", str(path)],
                               ["convert", str(path), str(weights), "--allow-missing-weights", "-o",
                                out + ".onnx"]])
        if kind in ("caffemodel", "h5"):
            source = self.weights if kind == "caffemodel" else self.h5
            path = folder / source.name
            path.write_bytes(mutate_bytes(source.read_bytes(), rng))
            return rng.choice([["inspect", net, str(path)], ["run", net, str(path), "--input", str(self.small_png)],
                               ["filters", net, str(path), "--layer", "conv1", "-o", out + ".png"]])
        if kind in ("mean", "npy"):
            source = self.mean if kind == "mean" else self.mean_npy
            path = folder / source.name
            path.write_bytes(mutate_bytes(source.read_bytes(), rng))
            return ["run", net, weights, "--input", str(self.small_png), "--mean", str(path)]
        if kind == "image":
            source = rng.choice([self.small_png, self.photo])
            path = folder / ("img" + rng.choice([".png", ".jpg", ".gif", ".bmp", ".tif", ".webp"]))
            path.write_bytes(mutate_bytes(source.read_bytes(), rng))
            return rng.choice([["run", net, weights, "--input", str(path)],
                               ["visualize", net, weights, "--image", str(path), "--layers", "conv1", "--top", "2",
                                "-o", out]])
        if kind == "solver":
            path = folder / "solver.prototxt"
            path.write_text(mutate_text(self.solver.read_text(), rng).replace("examples/cifar10/", ""))
            shutil.copy(m := self.net.parent / "cifar10_quick_train_test.prototxt", folder / m.name)
            return ["inspect", str(path), "--input-shape", "data=1,3,32,32"]
        verb = rng.choice(["occlusion", "top9", "invariance", "classviz", "gradcam", "fool", "visualize", "run"])
        odd = rng.choice(ODD_ARGS)
        options = {"occlusion": ["--image", str(self.small_png), rng.choice(["--size", "--stride", "--label",
                                                                             "--layer"]), odd],
                   "top9": ["--images", str(self.small_png.parent), rng.choice(["-k", "--maps", "--batch",
                                                                                "--workers", "--layers"]), odd],
                   "invariance": ["--image", str(self.small_png), rng.choice(["--label", "--layers"]), odd],
                   "classviz": [rng.choice(["--label", "--channel", "--steps", "--jitter"]), odd, "--steps", "3"],
                   "gradcam": ["--image", str(self.small_png), rng.choice(["--label", "--layer", "--smooth"]), odd],
                   "fool": ["--image", str(self.small_png), "--target", odd, "--steps", "2"],
                   "visualize": ["--image", str(self.small_png), rng.choice(["--top", "--mode", "--layers",
                                                                             "--labels", "--class-output"]), odd],
                   "run": ["--input", str(self.small_png), rng.choice(["--mean", "--input-shape", "--raw-scale",
                                                                       "--labels"]), odd]}[verb]
        return [verb, net, weights, *options, "-o", out] if verb != "run" else [verb, net, weights, *options]


def start_case(argv: list[str], memory: int, cpu: float = 0) -> tuple[int, int]:
    """Fork a child running `zfcaffe ARGV` under a memory cap and (cpu > 0) a cap on its
    CPU seconds, SIGXCPU past it; (pid, read end of its report pipe)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                                          # the child
        os.close(read)
        code, detail = 3, ""
        try:
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
            if cpu > 0:
                resource.setrlimit(resource.RLIMIT_CPU, (math.ceil(cpu), math.ceil(cpu) + 5))
            sys.stdout = sys.stderr = buf = io.StringIO()
            from zfcaffe.cli import main
            code = main(argv)
            detail = buf.getvalue()[-2000:]
            code = {0: 0, 2: 2}.get(code, 3)
        except MemoryError:
            code, detail = 4, "MemoryError"
        except SystemExit as e:                           # argparse's own usage error
            code, detail = (2, "usage") if e.code == 2 else (3, f"SystemExit {e.code}")
        except BaseException:                             # noqa: BLE001 - that is the point
            code, detail = 3, traceback.format_exc()[-3000:]
        os.write(write, detail.encode(errors="replace")[:60000])
        os._exit(code)
    os.close(write)
    return pid, read


def finish_case(pid: int, read: int, status: int | None) -> tuple[str, str]:
    """(outcome, detail) of a child that ended with `status` (None: killed at the timeout)."""
    with os.fdopen(read, "rb") as f:
        detail = f.read().decode(errors="replace") if status is not None else ""
    if status is None:
        return "hang", "over the timeout"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU:
            return "hang", "over the CPU time limit"
        return ("memory" if sig == signal.SIGKILL else "crash"), f"signal {sig}"
    return {0: "ran", 2: "project error", 3: "foreign", 4: "memory"}.get(os.WEXITSTATUS(status), "crash"), detail


def run_case(argv: list[str], timeout: float, memory: int) -> tuple[str, str]:
    """(outcome, detail) of `zfcaffe ARGV` in a forked child."""
    pid, read = start_case(argv, memory)
    start = time.monotonic()
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return finish_case(pid, read, status)
        if time.monotonic() - start > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return finish_case(pid, read, None)
        time.sleep(0.01)


def preload() -> None:
    """Import what the verbs use, once, in the parent: each forked child starts with it."""
    import importlib
    os.environ.setdefault("MPLBACKEND", "Agg")
    for name in ("numpy", "PIL.Image", "h5py", "onnx", "onnxruntime", "matplotlib.pyplot", "zfcaffe.cli",
                 "zfcaffe.net", "zfcaffe.runtime.session", "zfcaffe.runtime.onnx_export", "zfcaffe.inspect",
                 "zfcaffe.recipes.visualize", "zfcaffe.recipes.analyses", "zfcaffe.recipes.methods",
                 "zfcaffe.viz.figures", "zfcaffe.viz.analysis_figures", "zfcaffe.viz.method_figures"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=20.0,
                    help="seconds of CPU time a case may take (a busy machine's wall clock is no measure); "
                         "it is also killed after 4x this on the wall clock")
    ap.add_argument("--memory-gb", type=float, default=4.0)
    ap.add_argument("--keep", default="fuzz-findings", help="folder for the cases that were not ran/project error")
    ap.add_argument("--jobs", type=int, default=2, help="children at once")
    ap.add_argument("--kinds", help=f"comma-separated input kinds to mutate (default all: {', '.join(Corpus.KINDS)})")
    ap.add_argument("--no-preload", action="store_true", help="each child imports the verbs' modules itself")
    args = ap.parse_args()
    os.environ["ZFCAFFE_QUIET"] = "1"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if not args.no_preload:
        preload()
    rng = random.Random(args.seed)
    counts = collections.Counter()
    findings = pathlib.Path(args.keep)
    memory = int(args.memory_gb * 2**30)
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Corpus(pathlib.Path(tmp), args.kinds.split(",") if args.kinds else None)
        running: dict[int, tuple] = {}                    # pid -> (case, argv, folder, read end, started)

        def settle(pid: int, status: int | None) -> None:
            i, argv, folder, read, _ = running.pop(pid)
            outcome, detail = finish_case(pid, read, status)
            if outcome == "hang":
                detail = f"over {args.timeout} s of CPU time, or {4 * args.timeout} s on the wall clock"
            counts[outcome] += 1
            if outcome not in ("ran", "project error"):
                keep = findings / f"{i:05d}-{outcome.replace(' ', '-')}"
                shutil.copytree(folder, keep, dirs_exist_ok=True)
                (keep / "README").write_text(f"zfcaffe {' '.join(argv)}\n\n{detail}\n")
            shutil.rmtree(folder, ignore_errors=True)
            done = sum(counts.values())
            if done % 500 == 0:
                print(f"{done} cases, {time.monotonic() - start:.0f} s: {dict(counts)}", file=sys.stderr, flush=True)

        def reap():
            """Settle every finished case; kill one past 4x its timeout on the wall clock."""
            for pid, (*_, began) in list(running.items()):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    settle(pid, status)
                elif time.monotonic() - began > 4 * args.timeout:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    settle(pid, None)
            time.sleep(0.01)

        for i in range(args.cases):
            while len(running) >= max(args.jobs, 1):      # wait for a free slot
                reap()
            folder = pathlib.Path(tmp) / f"case{i}"
            folder.mkdir()
            argv = corpus.case(rng, folder)
            pid, read = start_case(argv, memory, args.timeout)
            running[pid] = (i, argv, folder, read, time.monotonic())
        while running:
            reap()
    print(f"{args.cases} cases (seed {args.seed}) in {time.monotonic() - start:.0f} s")
    print(f"{'outcome':<14} cases")
    for outcome in ("ran", "project error", "foreign", "hang", "memory", "crash"):
        print(f"{outcome:<14} {counts[outcome]}")
    if any(counts[o] for o in ("foreign", "hang", "memory", "crash")):
        print(f"findings kept in {findings}/")
        sys.exit(1)


if __name__ == "__main__":
    main()
