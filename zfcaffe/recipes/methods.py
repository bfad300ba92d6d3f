"""The survey's methods as verbs: each runs its method (zfcaffe.methods), draws its
figure and writes PNGs, results.npz and index.html into its folder, atomically.

Declaring the verbs imports nothing heavy: each verb imports its method, NumPy and the
figures when it runs, so the command line starts at once."""
from __future__ import annotations

import os

from ..errors import ZfcaffeError
from ..verbs import int_between, non_negative_int, positive_int, verb


def _title(net, what: str) -> str:
    return f"zfcaffe {what}: {net.graph.name or os.path.basename(net.graph.path)}"


def _stem(path: str) -> str:
    from ..analyses.common import safe_name
    return safe_name(os.path.splitext(os.path.basename(path))[0])


def _intro(net, pre, head=None, names=None) -> list[str]:
    lines = [f"net {net.graph.path}; weights {net.graph.weights_path}", f"preprocessing: {pre.describe()}"]
    if head is not None:
        lines.append(head.describe())
    if names is not None:
        lines.append(f"class names: {names.source}")
    return lines


def _image(ctx, path: str):
    import numpy as np
    x, shown = ctx.pre.prepare(path)
    return x, shown if shown.shape[2] == 3 else np.repeat(shown, 3, axis=2)


def _head(ctx, args, required: bool = True):
    from ..analyses.heads import class_head, require_class_head
    from ..labels import resolve_labels
    head = (require_class_head if required else class_head)(ctx.net, args.class_output)
    names = resolve_labels(args.labels, head.classes, ctx.pre.channels) if head else None
    return head, names


# -- attribution ----------------------------------------------------------------------------------------------
def _gradcam_arguments(p) -> None:
    p.add_argument("--image", required=True)
    p.add_argument("--label", type=int, help="the class (default: the top class)")
    p.add_argument("--layer", help="a spatial layer (default: the last one below the class scores)")
    p.add_argument("--method", default="auto", choices=["auto", "gradcam", "cam"],
                   help="CAM where the net ends in global average pooling + a classifier (auto), or Grad-CAM")
    p.add_argument("--no-guided", action="store_true", help="skip guided Grad-CAM")
    p.add_argument("--smooth", type=int_between(0, 1000), default=0, metavar="N",
                   help="SmoothGrad: average over N noisy copies (at most 1000)")


@verb("gradcam", "Grad-CAM, CAM and guided Grad-CAM of one image, overlaid on it",
      ("net", "preprocess", "head", "output:gradcam"), _gradcam_arguments)
def gradcam_verb(ctx, args) -> str:
    from ..methods import gradcam
    from ..viz import method_figures as figures
    from .output import write_output
    head, names = _head(ctx, args)
    x, shown = _image(ctx, args.image)
    r = gradcam.gradcam(ctx.net, x[None], head, args.label, args.layer, args.method, not args.no_guided,
                        args.smooth)
    fig = figures.gradcam_figure(r, shown, _stem(args.image), names(r.label))
    return write_output(args.output, _title(ctx.net, "Grad-CAM"),
                        [(os.path.basename(args.image), [fig], _intro(ctx.net, ctx.pre, head, names)
                          + [f"{r.method} at {r.layer} for class {r.label} ({names(r.label)})"])], r.arrays())


def _saliency_arguments(p) -> None:
    p.add_argument("--image", required=True)
    p.add_argument("--label", type=int, help="the class (default: the top class)")
    p.add_argument("--smooth", type=int_between(0, 1000), default=0, metavar="N",
                   help="SmoothGrad: average over N noisy copies (at most 1000)")


@verb("saliency", "the class score's gradient at the input: backprop, guided backprop, deconvnet (+ SmoothGrad)",
      ("net", "preprocess", "head", "mode:backprop,guided", "output:saliency"), _saliency_arguments)
def saliency_verb(ctx, args) -> str:
    from ..analyses.projection import parse_modes
    from ..methods import saliency
    from ..viz import method_figures as figures
    from .output import write_output
    head, names = _head(ctx, args)
    x, shown = _image(ctx, args.image)
    results = [saliency.saliency(ctx.net, x[None], head, args.label, m, args.smooth) for m in parse_modes(args.mode)]
    arrays = {f"{r.mode}/{k}": v for r in results for k, v in r.arrays().items()}
    fig = figures.saliency_figure(results, shown, _stem(args.image), names(results[0].label), args.smooth)
    return write_output(args.output, _title(ctx.net, "saliency"),
                        [(os.path.basename(args.image), [fig], _intro(ctx.net, ctx.pre, head, names))], arrays)


# -- optimisation ---------------------------------------------------------------------------------------------
def _unit(text: str | None):
    if not text:
        return None
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ZfcaffeError(f"--unit '{text}': expected Y,X") from None


def _classviz_arguments(p) -> None:
    p.add_argument("--label", type=int, help="the class whose score (before the softmax) is maximised")
    p.add_argument("--layer", help="maximise a channel or unit of this layer instead")
    p.add_argument("--channel", type=int, help="the layer's channel (default 0)")
    p.add_argument("--unit", help="Y,X: one unit of the channel (default: the channel's mean)")
    p.add_argument("--param", default="auto", choices=["auto", "fourier", "pixels"],
                   help="fourier: Lucid's recipe (a decorrelated Fourier image, shift/zoom/rotate, Adam 0.05, "
                        "256 steps); pixels: Simonyan's class model with DVT's regularisers (from the mean image, "
                        "decay, blur, jitter 2, 200 steps); auto (default): fourier on inputs of 64 pixels a side "
                        "or more, pixels on smaller ones")
    p.add_argument("--steps", type=positive_int, help="default: 256 (fourier), 200 (pixels)")
    p.add_argument("--lr", type=float, help="Adam's step (default: 0.05 on the spectrum (fourier), 2%% of the "
                                            "input's range (pixels))")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--decay", type=float, help="L2 decay weight (Simonyan et al.; default 1e-4 (pixels), 0 (fourier))")
    p.add_argument("--blur-every", type=non_negative_int, default=4,
                   help="pixels: blur the image every N steps (DVT; 0: never)")
    p.add_argument("--blur-sigma", type=float, default=0.5)
    p.add_argument("--jitter", type=non_negative_int,
                   help="only a random shift of up to N pixels at each step (0: no transforms) instead of the "
                        "recipe's (fourier: Lucid's shift 8, zoom, rotate, shift 4; pixels: jitter 2)")
    p.add_argument("--clip-percentile", type=float, default=0.0,
                   help="pixels: set pixels whose norm is below this percentile to the mean (DVT)")


@verb("classviz", "feature visualisation by optimisation (Lucid's recipe) and class models (a class, channel or unit)",
      ("net", "preprocess", "head", "output:classviz"), _classviz_arguments)
def classviz_verb(ctx, args) -> str:
    from ..methods import classviz
    from ..viz import method_figures as figures
    from .output import write_output
    head, names = _head(ctx, args, required=args.layer is None)
    steps = args.steps or (256 if classviz.recipe_for(ctx.pre, args.param) == "fourier" else 200)
    thresholds = tuple(sorted({max(1, steps // 4), max(1, steps // 2)}))
    r = classviz.class_model(ctx.net, ctx.pre, head, args.label, args.layer, args.channel, _unit(args.unit),
                             steps, args.lr, args.seed, args.decay, args.blur_every, args.blur_sigma,
                             args.jitter, args.clip_percentile, args.param, thresholds, ctx.progress)
    what = r.target + (f" ({names(args.label)})" if args.layer is None else "")
    r.target = what
    snaps = [(ctx.pre.to_image(img), f"step {s}") for s, img in sorted(r.snapshots.items())]
    fig = figures.classviz_figure(r, ctx.pre.to_image(r.image), snaps)
    return write_output(args.output, _title(ctx.net, "optimised image"),
                        [(what, [fig], _intro(ctx.net, ctx.pre, head, names) +
                          [f"{r.recipe}; forward and backward run only up to the target; "
                           f"{r.start_score:.4g} at the start, {r.score:.4g} at the end"])], r.arrays())


def _dream_arguments(p) -> None:
    p.add_argument("--image", required=True)
    p.add_argument("--layer", help="the layer to amplify (default: the third of four default layers)")
    p.add_argument("--octaves", type=positive_int, default=3)
    p.add_argument("--octave-scale", type=float, default=1.4)
    p.add_argument("--steps", type=positive_int, default=10, help="steps per octave")
    p.add_argument("--step-size", type=float, default=1.5)
    p.add_argument("--jitter", type=non_negative_int, default=4)
    p.add_argument("--seed", type=int, default=0)


@verb("dream", "DeepDream on a photo: a layer's L2, octaves, jitter, normalised steps",
      ("net", "preprocess", "output:dream"), _dream_arguments)
def dream_verb(ctx, args) -> str:
    from ..methods import dream
    from ..viz import method_figures as figures
    from .output import write_output
    from ..analyses.common import default_layers
    layer = args.layer or default_layers(ctx.net)[-2 if len(default_layers(ctx.net)) > 1 else -1]
    x, shown = _image(ctx, args.image)
    low, high = ctx.pre.input_range()
    r = dream.deepdream(ctx.net, x, layer, low, high, args.octaves, args.octave_scale, args.steps, args.step_size,
                        args.jitter, args.seed)
    fig = figures.dream_figure(r, shown, ctx.pre.to_image(r.image), _stem(args.image))
    return write_output(args.output, _title(ctx.net, "DeepDream"),
                        [(os.path.basename(args.image), [fig], _intro(ctx.net, ctx.pre) +
                          [f"layer {layer}; {args.octaves} octaves x {args.steps} steps; objective "
                           f"{r.values[0]:.4g} -> {r.values[-1]:.4g}"])], r.arrays())


def _invert_arguments(p) -> None:
    p.add_argument("--image", required=True)
    p.add_argument("--layer", help="the layer whose code is inverted (default: the last default layer)")
    p.add_argument("--steps", type=positive_int, default=300)
    p.add_argument("--tv", type=float, default=0.2, help="total-variation prior weight (normalised)")
    p.add_argument("--alpha", type=float, default=6.0, help="the alpha-norm prior's exponent")
    p.add_argument("--alpha-weight", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)


@verb("invert", "feature inversion: reconstruct an image from its code at a layer (Mahendran & Vedaldi)",
      ("net", "preprocess", "output:invert"), _invert_arguments)
def invert_verb(ctx, args) -> str:
    from ..methods import invert
    from ..viz import method_figures as figures
    from .output import write_output
    from ..analyses.common import default_layers
    layer = args.layer or default_layers(ctx.net)[-1]
    x, shown = _image(ctx, args.image)
    low, high = ctx.pre.input_range()
    r = invert.invert(ctx.net, x, layer, low, high, args.steps, args.tv, args.alpha, args.alpha_weight,
                      seed=args.seed, progress=ctx.progress)
    fig = figures.invert_figure(r, shown, ctx.pre.to_image(r.image), _stem(args.image))
    return write_output(args.output, _title(ctx.net, "inversion"),
                        [(os.path.basename(args.image), [fig], _intro(ctx.net, ctx.pre) +
                          [f"layer {layer}: relative feature distance {r.distance:.4f} after {args.steps} steps"])],
                        r.arrays())


def _fool_arguments(p) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--image", help="perturb this photo")
    source.add_argument("--from-noise", action="store_true", help="start from uniform noise")
    p.add_argument("--target", type=int, required=True, help="the class the net should say")
    p.add_argument("--confidence", type=float, default=0.99)
    p.add_argument("--steps", type=positive_int, default=60, help="ascent steps per budget")
    p.add_argument("--seed", type=int, default=0)


@verb("fool", "fooling images: the smallest perturbation found that makes the net say --target, or from noise",
      ("net", "preprocess", "head", "output:fool"), _fool_arguments)
def fool_verb(ctx, args) -> str:
    from ..methods import fool
    from ..viz import method_figures as figures
    from .output import write_output
    head, names = _head(ctx, args)
    x, shown = _image(ctx, args.image) if args.image else (None, None)
    r = fool.fool(ctx.net, ctx.pre, head, x, args.target, args.confidence, args.steps, args.seed)
    start = shown if shown is not None else ctx.pre.to_image(r.start)
    fig = figures.fool_figure(r, start, ctx.pre.to_image(r.image), r.image - r.start,
                              _stem(args.image) if args.image else "noise", names(args.target), x is None)
    text = f"p({names(args.target)}) {r.start_probability:.4g} -> {r.probability:.4f}"
    if x is not None:
        text += f"; perturbation L-inf {r.linf:.3f}, L2 {r.l2:.2f} in 0-255 pixel units"
    return write_output(args.output, _title(ctx.net, "fooling image"),
                        [(args.image or "from noise", [fig], _intro(ctx.net, ctx.pre, head, names) + [text])],
                        r.arrays())
