"""Converting a 233 MB AlexNet-sized caffemodel to ONNX: time and peak memory.

Each method runs in a fresh process (so peak RSS is its own). The peer is the
obvious path: onnx.numpy_helper initializers and onnx.save. Targets: <= 3 s and
peak memory <= 2.5x the caffemodel's size.

    python benchmarks/convert.py
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from common import make_caffenet, table, workdir

CHILD = r"""
import json, os, resource, sys, time
sys.path.insert(0, {root!r})
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
import zfcaffe, onnx
from zfcaffe.runtime.onnx_export import build_onnx
imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
net = zfcaffe.Net({proto!r}, {weights!r})
if {method!r} == "zfcaffe":
    net.to_onnx({out!r})
else:
    onnx.save(build_onnx(net.graph, record=False, embed_weights=True).model, {out!r})
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"seconds": dt, "peak_mb": peak / 1024, "imports_mb": imported / 1024}}))
"""


def run(method, proto, weights, out):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = CHILD.format(root=root, proto=str(proto), weights=str(weights), out=str(out), method=method)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "ZFCAFFE_QUIET": "1"})
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    proto, weights = make_caffenet(workdir())
    size_mb = os.path.getsize(weights) / 2**20
    rows = []
    for method in ("zfcaffe", "onnx.save (peer)"):
        out = workdir() / f"convert-{method.split()[0]}.onnx"
        os.sync()
        r = run(method.split()[0] if method == "zfcaffe" else "peer", proto, weights, out)
        rows.append([method, f"{r['seconds']:.2f}", f"{r['peak_mb']:.0f}", f"{r['imports_mb']:.0f}",
                     f"{r['peak_mb'] / size_mb:.2f}x", f"{os.path.getsize(out) / 2**20:.0f}"])
    print(f"caffemodel: {weights} ({size_mb:.0f} MiB)")
    print(table(["method", "seconds", "peak RSS MiB", "of which imports", "peak / file", "onnx MiB"], rows))


if __name__ == "__main__":
    main()
