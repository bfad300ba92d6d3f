"""`zfcaffe compare`: the verb, declared next to its recipe (zfcaffe.compare)."""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from ..errors import ZfcaffeError
from ..verbs import verb

if TYPE_CHECKING:
    import numpy as np


def _arguments(p) -> None:
    p.add_argument("--against", required=True, metavar="SPEC",
                   help="opencv (OpenCV's dnn on the same files), FILE.onnx (another converter's model, run in "
                        "ONNX Runtime), DUMP.npz / DUMP.h5 (blobs saved from pycaffe, by blob or layer name), "
                        "or caffe (a real pycaffe, see --caffe-python)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--image", help="an image, preprocessed by the preprocessing options")
    src.add_argument("--input", metavar="X.npy", help="the net's input as it is: (N, C, H, W) or (C, H, W)")
    p.add_argument("--tol", type=float, default=1e-4,
                   help="largest max|diff|/max|ref| a layer may have (default 1e-4); exit status 1 beyond it")
    p.add_argument("--other-rgb", action="store_true",
                   help="feed the other side the array with its channels reversed (RGB)")
    p.add_argument("--caffe-python", metavar="PATH",
                   help="the Python that imports real pycaffe, for --against caffe (run in a subprocess)")


def _input(ctx, args, side) -> tuple[dict, np.ndarray | None]:
    import numpy as np

    net = ctx.net
    name = net.inputs[0]
    if args.input:
        from ..io.npy import load_npy
        x = load_npy(ctx.path(args.input), "the net's input (N, C, H, W)")
        x = x if x.ndim == 4 else x[None]
        if x.ndim != 4 or x.shape[0] == 0:
            raise ZfcaffeError(f"{args.input}: input array of shape {list(x.shape)}; expected (N, C, H, W) with N >= 1")
        return {name: np.ascontiguousarray(x, np.float32)}, None
    if args.image:
        pre = ctx.pre
        x = pre(ctx.path(args.image))[None]
        mean = None
        if pre.mean is not None and pre.channels == x.shape[1]:
            # what the preprocessing subtracted, in the input's units (for the other side's own-mean check)
            mean = -pre.transform(np.zeros((x.shape[2], x.shape[3], pre.channels), np.float32))
        return {name: x}, mean
    arrays = getattr(side, "arrays", None) or {}
    if name in arrays:
        return {name: np.ascontiguousarray(arrays[name], np.float32)}, None
    raise ZfcaffeError("compare: no input; expected --image IMG or --input X.npy"
                       + (" (the dump holds no array named after the net's input)" if arrays else ""))


@verb("compare", "per-layer comparison with another implementation of the net (OpenCV, an ONNX file, "
                 "a pycaffe dump, pycaffe): where it stops agreeing with Caffe, and why",
      ("net", "preprocess", "output"), _arguments)
def cmd_compare(ctx, args) -> int:
    import numpy as np

    from . import compare, side_for
    if args.tol < 0 or not np.isfinite(args.tol):
        raise ZfcaffeError(f"--tol {args.tol}: expected a finite number >= 0")
    if args.caffe_python and args.against.lower() != "caffe":
        raise ZfcaffeError("--caffe-python is an option of --against caffe")
    net = ctx.net
    spec = args.against if args.against.lower() in ("opencv", "caffe") else ctx.path(args.against)
    side = side_for(spec, net, args.caffe_python)
    inputs, mean = _input(ctx, args, side)
    report = compare(net, side, inputs, tol=args.tol, other_rgb=args.other_rgb, mean=mean)
    report.write(args.output)
    print(report.summary)
    for c in report.causes:
        if c["matches"]:
            print(f"  cause: {c['cause']}: {c['result']}")
    for c in report.checks:
        if "matches better" in c:
            print(f"  {c}")
    print(f"wrote {os.path.join(args.output, 'index.html')} and report.json")
    if not report.ok and not args.quiet:
        print(f"zfcaffe: compare: layers beyond --tol {args.tol:g} (exit status 1)", file=sys.stderr)
    return 0 if report.ok else 1
