"""Recipes for the dataset-scale analyses: run one, then write its figures, numbers
(results.npz) and an HTML page into an output folder, atomically.

Declaring the verbs imports nothing heavy: each recipe imports the analyses, NumPy and
the figures when it runs, so the command line starts at once."""
from __future__ import annotations

import json
import os

from ..errors import ZfcaffeError
from ..verbs import layer_list, non_negative_int, positive_int, verb


def _title(net, what: str) -> str:
    return f"zfcaffe {what}: {net.graph.name or os.path.basename(net.graph.path)}"


def _stem(image: str) -> str:
    from ..analyses.common import safe_name
    return safe_name(os.path.splitext(os.path.basename(image))[0])


def _short(path: str) -> str:
    """An image's folder and file name: enough to tell dataset images apart."""
    return os.path.join(os.path.basename(os.path.dirname(path)), os.path.basename(path))


def _intro(net, pre) -> list[str]:
    return [f"net {net.graph.path}; weights {net.graph.weights_path}", f"preprocessing: {pre.describe()}"]


def run_top9(net, images: str, out: str, pre, layers=None, k: int = 9, maps: int = 16, batch: int = 16,
             engine=None, mode: str = "deconvnet", show_progress: bool = True) -> str:
    from .. import checks   # NumPy loads with the recipe, not with the verbs' declarations
    checks.recipe("run_top9", net, {"images": images, "out": out}, {"k": k, "maps": maps, "batch": batch},
                  layers=layers)
    import numpy as np

    from ..analyses import top9
    from ..analyses.common import default_layers, list_images, shown_key
    from ..analyses.projection import near_tie_note, parse_modes
    from ..viz import analysis_figures as figures
    from .output import write_output
    modes = parse_modes(mode)
    entries = list_images(images)
    paths = [p for p, _ in entries]
    k, batch = min(k, len(paths)), min(batch, len(paths))   # more than the dataset holds only costs memory
    layers = layers or default_layers(net)
    keys = [shown_key(net, name) for name in layers]
    created = not os.path.exists(out)
    os.makedirs(out, exist_ok=True)
    cache = os.path.join(out, ".top9-scan.npz")   # survives reruns: the scan resumes
    try:
        tops = top9.scan(net, paths, keys, pre, k=k, batch=batch, engine=engine, cache=cache,
                         show_progress=show_progress)
    except BaseException:
        if created and not os.listdir(out):       # nothing scanned yet: leave no empty folder behind
            os.rmdir(out)
        raise
    sections, arrays, ties = [], {}, {}
    for name, key in zip(layers, keys):
        t = tops[key]
        chosen = [int(m) for m in np.argsort(-t.values[:, 0], kind="stable")[:maps]]
        tiles = top9.project_top(net, paths, key, t, chosen, pre, modes)
        for layer, windows in tiles.near_ties.items():
            ties.setdefault(layer, set()).update(windows)
        g = net.graph.geometry[key]
        rf = "whole image" if g.whole else f"receptive field {g.rf[0]:g} px"
        sections.append((f"{name} ({rf})", [figures.top9_grid(name, tiles)],
                         [f"{len(chosen)} of {t.values.shape[0]} maps (the strongest)"]))
        arrays.update(t.arrays(f"{key}/"))
        arrays.update({f"{key}/shown_maps": np.array(chosen, np.int64), f"{key}/patch": tiles.patches,
                       f"{key}/valid": tiles.valid, f"{key}/boxes": tiles.boxes})
        arrays.update({f"{key}/projection/{m}": tiles.projections[m] for m in modes})
    arrays["images"] = np.array(paths)
    intro = _intro(net, pre) + [
        f"{len(paths)} images from {images}; top-{k} per feature map; {', '.join(modes)}; each tile is cut to "
        "where its projections have 95% of their energy, with its own contrast (grey is zero)"]
    note = near_tie_note(ties)
    return write_output(out, _title(net, "top-9"), [("Dataset", [], intro)] + sections +
                        ([("Notes", [], [note])] if note else []), arrays, keep=[".top9-scan.npz"])


def _labels(net, labels: str | None, class_output: str | None, pre):
    from ..analyses.heads import require_class_head
    from ..labels import resolve_labels
    head = require_class_head(net, class_output)
    return head, resolve_labels(labels, head.classes, pre.channels)


def run_occlusion(net, image: str, out: str, pre, layer: str | None = None, label: int | None = None,
                  size: int = 0, stride: int = 0, labels: str | None = None, show_progress: bool = True,
                  class_output: str | None = None) -> str:
    from .. import checks   # NumPy loads with the recipe, not with the verbs' declarations
    checks.recipe("run_occlusion", net, {"image": image, "out": out}, sizes={"size": size, "stride": stride},
                  layer=layer, label=label)
    from ..analyses import occlusion
    from ..analyses.common import default_layers, shown_key
    from ..viz import analysis_figures as figures
    from .output import write_output
    layer = layer or default_layers(net)[-1]
    key = shown_key(net, layer)
    head, names = _labels(net, labels, class_output, pre)
    r = occlusion.run(net, image, pre, key, label, size, stride, show_progress=show_progress,
                      class_output=class_output)
    figs = figures.occlusion_figures(r, _stem(image), names)
    text = _intro(net, pre) + [head.describe(), f"class names: {names.source}", f"occluder {r.size}px, stride {r.positions_y[1] - r.positions_y[0] if len(r.positions_y) > 1 else 0}px; "
                               f"layer {layer} map {r.feature_map}; class {r.label} ({names(r.label)})"]
    return write_output(out, _title(net, "occlusion"), [(os.path.basename(image), figs, text)], r.arrays())


def run_occlusion_detection(net, image: str, out: str, pre, detection: int, size: int = 0, stride: int = 0,
                            labels: str | None = None, show_progress: bool = True) -> str:
    """occlusion --detection K: the occlusion map and curve of one detection's score."""
    from .. import checks   # NumPy loads with the recipe, not with the verbs' declarations
    checks.recipe("run_occlusion_detection", net, {"image": image, "out": out},
                  sizes={"size": size, "stride": stride, "detection": detection})
    from ..analyses import occlusion
    from .dense_view import occlusion_figure
    from .output import write_output
    r = occlusion.run_detection(net, image, pre, detection, size, stride, labels=labels,
                                show_progress=show_progress)
    d = r.detection
    text = _intro(net, pre) + [
        f"detection #{d.index}: {d.name} (class {d.label}) {d.score:.4f}, box ({', '.join(f'{v:.1f}' for v in d.box)}) "
        f"in input pixels, read from '{d.output}'; its score's unit: {d.unit.what}",
        f"occluder {r.size}px (grey: zero after the mean), {r.score.size} positions; the score is that of the same "
        f"prior / anchor / ROI and class; unoccluded {r.unoccluded_score:.4f}, lowest {float(r.score.min()):.4f}"]
    return write_output(out, _title(net, "occlusion"), [(os.path.basename(image), [occlusion_figure(r, _stem(image))],
                                                         text)], r.arrays())


def run_occlusion_scan(net, images: str, out: str, pre, layer: str | None = None, size: int = 0, stride: int = 0,
                       labels: str | None = None, class_output: str | None = None, engine=None, shown: int = 12,
                       show_progress: bool = True) -> str:
    """Occlusion of every image of a folder or list (a list's labels are the classes
    followed; otherwise each image's top-1): maps in results.npz, the first `shown`
    drawn, a table of every image."""
    from .. import checks   # NumPy loads with the recipe, not with the verbs' declarations
    checks.recipe("run_occlusion_scan", net, {"images": images, "out": out},
                  sizes={"size": size, "stride": stride, "shown": shown}, layer=layer)
    import numpy as np

    from ..analyses import occlusion
    from ..analyses.common import default_layers, list_images, shown_key
    from ..viz import analysis_figures as figures
    from .output import write_output
    layer = layer or default_layers(net)[-1]
    key = shown_key(net, layer)
    head, names = _labels(net, labels, class_output, pre)
    entries = list_images(images)
    r = occlusion.scan(net, entries, pre, key, size, stride, engine=engine, class_output=class_output,
                       show_progress=show_progress)
    s = r.summary()
    paths = [p for p, _ in entries]
    fig = figures.occlusion_scan_figure(r, [pre.prepare(p)[1] for p in paths[:shown]],
                                        [_short(p) for p in paths[:shown]], names)
    rows = [[_short(p), names(int(lab)), f"{p0:.3f}", f"{low:.3f}", f"{share:.0%}"]
            for p, lab, p0, low, share in zip(paths, r.values["label"], r.values["unoccluded_probability"],
                                               s["lowest_probability"], s["changed_share"])]
    table = (["image", "class", "p unoccluded", "lowest p occluded", "positions that change the top-1"], rows)
    step = int(r.positions_y[1] - r.positions_y[0]) if len(r.positions_y) > 1 else 0
    text = _intro(net, pre) + [head.describe(), f"class names: {names.source}",
                               f"{len(paths)} images from {images}; occluder {r.size}px, stride {step}px; layer "
                               f"{layer}; class: the list's label, else each image's top-1", table]
    return write_output(out, _title(net, "occlusion"), [("Occlusion over the dataset", [fig], text)],
                        {**r.arrays(), **s, "images": np.array(paths)})


def run_evolution(prototxt: str, snapshots: list[str], images: str, out: str, pre_for, layer: str | None = None,
                  maps: int = 8, show_progress: bool = True, **net_kw) -> str:
    from .. import checks   # NumPy loads with the recipe, not with the verbs' declarations
    checks.recipe("run_evolution", paths={"prototxt": prototxt, "images": images, "out": out}, counts={"maps": maps},
                  layer=layer)
    for i, snapshot in enumerate(checks.strings("run_evolution(snapshots", snapshots)):
        checks.path(f"run_evolution(snapshots[{i}]", snapshot)
    from ..analyses import evolution
    from ..analyses.common import default_layers, list_images
    from ..net import Net
    from ..viz import analysis_figures as figures
    from .output import write_output
    files = evolution.snapshot_list(snapshots)
    paths = [p for p, _ in list_images(images)]
    if layer is None:
        layer = default_layers(Net(prototxt, files[-1], **net_kw))[-1]
    r = evolution.run(prototxt, files, paths, pre_for, layer, None, n_maps=maps, show_progress=show_progress,
                      **net_kw)
    text = [f"net {prototxt}", f"{len(files)} snapshots: " + ", ".join(os.path.basename(f) for f in files),
            f"{len(paths)} images from {images}"]
    return write_output(out, f"zfcaffe evolution: {os.path.basename(prototxt)}",
                        [(layer, figures.evolution_figures(r), text)],
                        r.arrays())


def invariance_layers(net, class_output: str | None = None) -> list[str]:
    """The first convolution and the input of the classifier's last layer."""
    from ..analyses.common import default_layers, shown_key
    from ..analyses.heads import require_class_head
    first = shown_key(net, default_layers(net)[0])
    head = net.graph.producer(require_class_head(net, class_output).key)
    while head.type == "Softmax" and head.bottoms:
        head = net.graph.producer(head.bottoms[0])
    return [first, head.bottoms[0]] if head.bottoms and head.bottoms[0] != first else [first]


def run_invariance(net, image: str, out: str, pre, layers=None, label: int | None = None,
                   labels: str | None = None, class_output: str | None = None) -> str:
    from .. import checks   # NumPy loads with the recipe, not with the verbs' declarations
    checks.recipe("run_invariance", net, {"image": image, "out": out}, layers=layers, label=label)
    from ..analyses import invariance
    from ..analyses.common import shown_key
    from ..viz import analysis_figures as figures
    from .output import write_output
    keys = [shown_key(net, n) for n in layers] if layers else invariance_layers(net, class_output)
    head, names = _labels(net, labels, class_output, pre)
    r = invariance.run(net, image, pre, keys, label, class_output=class_output)
    text = _intro(net, pre) + [head.describe(), f"class names: {names.source}",
                               f"layers {', '.join(r.layers)}; class {r.label} ({names(r.label)})"]
    return write_output(out, _title(net, "invariance"),
                        [(os.path.basename(image), figures.invariance_figures(r, _stem(image), names), text)],
                        r.arrays())


def load_parts(parts_path: str | None, paths: list[str], pre) -> dict[str, list]:
    """part -> one input-space box per image; without a file, a centred box (half the
    input's size) stands for the object in every image."""
    if not parts_path:
        h, w = pre.height, pre.width
        box = (w // 4, h // 4, w // 4 + w // 2, h // 4 + h // 2)
        return {"centre (no --parts given)": [box] * len(paths)}
    try:
        with open(parts_path, encoding="utf-8") as f:
            spec = json.load(f)
    except (OSError, ValueError) as e:
        raise ZfcaffeError(f"{parts_path}: cannot read parts JSON: {e}") from None
    expected = "expected {image: {part: [x0, y0, x1, y1]}}"
    if not isinstance(spec, dict) or not all(isinstance(v, dict) for v in spec.values()):
        raise ZfcaffeError(f"{parts_path}: {expected}")
    for image, entry in spec.items():
        for part, box in entry.items():
            # pixel coordinates: finite and within 2^31 (JSON's 1e400 and Infinity would overflow the mapping)
            if not (isinstance(box, list) and len(box) == 4
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= 2**31 for v in box)
                    and box[0] < box[2] and box[1] < box[3]):
                raise ZfcaffeError(f"{parts_path}: {image} / {part}: box {box!r}; {expected} with x0 < x1, y0 < y1, "
                                   "each a pixel coordinate within +-2^31")
    by_name = {os.path.basename(k): v for k, v in spec.items()}
    names = sorted({part for v in spec.values() for part in v})
    parts = {}
    for part in names:
        boxes = []
        for p in paths:
            entry = spec.get(p) or by_name.get(os.path.basename(p))
            if not entry or part not in entry:
                raise ZfcaffeError(f"{parts_path}: no box for part '{part}' of image {os.path.basename(p)}; "
                                   "expected {image: {part: [x0, y0, x1, y1]}} for every image")
            boxes.append(pre.map_box(p, entry[part]))
        parts[part] = boxes
    return parts


def run_correspondence(net, images: str, out: str, pre, parts_path: str | None = None, layers=None) -> str:
    from .. import checks   # NumPy loads with the recipe, not with the verbs' declarations
    checks.recipe("run_correspondence", net, {"images": images, "out": out}, layers=layers)
    from ..analyses import correspondence
    from ..analyses.common import default_layers, list_images, shown_key
    from ..viz import analysis_figures as figures
    from .output import write_output
    paths = [p for p, _ in list_images(images)]
    if len(paths) < 2:
        raise ZfcaffeError(f"{images}: correspondence needs at least 2 images")
    keys = [shown_key(net, n) for n in (layers or default_layers(net)[-2:])]
    parts = load_parts(parts_path, paths, pre)
    r = correspondence.run(net, paths, pre, keys, parts)
    text = _intro(net, pre) + [
        f"{len(paths)} images; Delta = mean pairwise Hamming distance of the signs of feature changes "
        "(fraction of the vector; lower = more consistent)"]
    table = (["mask"] + [f"Delta {k}" for k in r.layers], r.rows())
    return write_output(out, _title(net, "correspondence"),
                        [("Consistency", figures.correspondence_figures(r), text + [table])],
                        r.arrays())




# -- the verbs ------------------------------------------------------------------------------------------------
def _top9_arguments(p) -> None:
    p.add_argument("--images", required=True, help="image folder, or a list file ('path [label]' per line)")
    p.add_argument("--layers", help="comma-separated layers (default: four convolutions across the depth)")
    p.add_argument("--maps", type=positive_int, default=16, help="feature maps shown per layer (default 16, the strongest)")
    p.add_argument("-k", type=positive_int, default=9, help="activations kept per map (default 9)")
    p.add_argument("--batch", type=positive_int, default=16, help="images per forward pass (default 16)")


@verb("top9", "the 9 strongest activations of each feature map over a dataset (Fig. 2)",
      ("net", "preprocess", "engine", "mode:deconvnet,guided", "output:top9"), _top9_arguments)
def top9_verb(ctx, args) -> str:
    return run_top9(ctx.net, args.images, args.output, ctx.pre, layer_list(args), k=args.k, maps=args.maps,
                    batch=args.batch, engine=ctx.engine, mode=args.mode, show_progress=ctx.progress)


def _occlusion_arguments(p) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--image", help="one image: the paper's Fig. 7 with projections")
    which.add_argument("--images", help="a folder or list file ('path [label]' lines: the label is the class "
                                        "followed): every image's maps, on --engine")
    p.add_argument("--label", type=int, help="the correct class (default: top-1 of the unoccluded image)")
    p.add_argument("--layer", help="layer whose strongest feature map is followed (default: the last conv)")
    p.add_argument("--size", type=non_negative_int, default=0, help="occluder side in input pixels (default: input/5)")
    p.add_argument("--stride", type=non_negative_int, default=0, help="occluder step (default: size/2)")
    p.add_argument("--detection", type=non_negative_int, metavar="K",
                   help="a detector's detection K (as `zfcaffe run` numbers them, best first): its score "
                        "(same prior / anchor / ROI and class) under the occluder, instead of a class's")


@verb("occlusion", "occlusion sensitivity of one image or of every image of a dataset (Fig. 7)",
      ("net", "preprocess", "head", "engine", "output:occlusion"), _occlusion_arguments)
def occlusion_verb(ctx, args) -> str:
    if args.detection is not None:
        if args.images or args.label is not None or args.layer:
            raise ZfcaffeError("--detection K goes with --image, without --images, --label or --layer")
        return run_occlusion_detection(ctx.net, args.image, args.output, ctx.pre, args.detection, args.size,
                                       args.stride, args.labels, show_progress=ctx.progress)
    if args.images:
        if args.label is not None:
            raise ZfcaffeError("--label goes with --image; with --images each image's class comes from the list")
        return run_occlusion_scan(ctx.net, args.images, args.output, ctx.pre, args.layer, args.size, args.stride,
                                  args.labels, args.class_output, ctx.engine, show_progress=ctx.progress)
    return run_occlusion(ctx.net, args.image, args.output, ctx.pre, args.layer, args.label, args.size, args.stride,
                         args.labels, show_progress=ctx.progress, class_output=args.class_output)


def _invariance_arguments(p) -> None:
    p.add_argument("--image", required=True)
    p.add_argument("--label", type=int, help="the true class (default: top-1 of the original)")
    p.add_argument("--layers", help="two comma-separated layers (default: first conv and the classifier's input)")


@verb("invariance", "translation, scale and rotation sweeps of one image (Fig. 5)",
      ("net", "preprocess", "head", "output:invariance"), _invariance_arguments)
def invariance_verb(ctx, args) -> str:
    return run_invariance(ctx.net, args.image, args.output, ctx.pre, layer_list(args), args.label, args.labels,
                          args.class_output)


def _correspondence_arguments(p) -> None:
    p.add_argument("--images", required=True, help="image folder, or a list file")
    p.add_argument("--parts", help="JSON: image -> part -> [x0, y0, x1, y1] (default: a centred box)")
    p.add_argument("--layers", help="comma-separated layers (default: the last two default layers)")


@verb("correspondence", "consistency of masking the same part across images (Table 7)",
      ("net", "preprocess", "output:correspondence"), _correspondence_arguments)
def correspondence_verb(ctx, args) -> str:
    return run_correspondence(ctx.net, args.images, args.output, ctx.pre, args.parts, layer_list(args))


def _evolution_arguments(p) -> None:
    p.add_argument("snapshots", nargs="+", help="snapshot files, a glob, or a solver.prototxt")
    p.add_argument("--images", required=True, help="image folder, or a list file")
    p.add_argument("--layer", help="layer (default: the last conv)")
    p.add_argument("--maps", type=positive_int, default=8, help="feature maps followed (default 8)")


@verb("evolution", "strongest activations across training snapshots (Fig. 4)",
      ("net:none", "preprocess", "output:evolution"), _evolution_arguments)
def evolution_verb(ctx, args) -> str:
    snapshots = [ctx.path(s) for s in args.snapshots]
    return run_evolution(ctx.path(args.prototxt), snapshots, args.images, args.output, ctx.pre_for, args.layer,
                         args.maps, show_progress=ctx.progress, **ctx.net_options)
