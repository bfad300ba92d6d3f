"""`zfcaffe visualize`: Zeiler & Fergus's pictures of a net for the given images.

For every image and chosen layer: the N strongest feature maps, each projected back
to pixels in one or more modes (deconvnet and guided backprop side by side by
default) above the image patch under it (the paper's Fig. 2, for these images), and
the layer's activations as tiles; the filters of the conv layers; the most probable
classes when the net has a class output, and a picture of every other output.
PNG files, their arrays (results.npz) and one self-contained index.html, written
atomically.

Declaring the verb imports nothing heavy: the recipe imports NumPy, the analyses and
the figures when it runs, so the command line starts at once.
"""
from __future__ import annotations

import datetime
import os
from typing import TYPE_CHECKING

from ..verbs import layer_list, positive_int, verb

if TYPE_CHECKING:
    import numpy as np

    from ..preprocess import Preprocess


def strongest(act: np.ndarray, n: int) -> list[tuple[tuple, float]]:
    """The n strongest units of one item's activation: ((0, c, y, x) or (0, c), value)."""
    import numpy as np

    from ..analyses.common import strongest_units
    if act.ndim == 3:
        return [((0, c, y, x), v) for c, y, x, v in strongest_units(act, n)]
    flat = act.reshape(-1)
    order = np.argsort(-flat, kind="stable")[:n]
    return [((0, int(i)), float(flat[i])) for i in order]


def visualize(net, images: list[str], out_dir: str, layers: list[str] | None = None, top: int = 8,
              mode: str | list = "deconvnet,guided", preprocess: Preprocess | None = None,
              labels: str | None = None, class_output: str | None = None, progress: bool = True,
              threshold: float | None = None, detections: int = 3) -> str:
    """Write the figures, results.npz and index.html into out_dir; returns the index path.
    `labels`: a file, a built-in set ('imagenet', 'voc', 'coco', ...), 'a,b,c' or None
    (automatic, see zfcaffe.labels). A detector, segmenter or pose net gets a section of
    its boxes, class map or keypoints (`threshold`: the lowest score shown), each of the
    top `detections` traced to its unit, projections and Grad-CAM (dense_view)."""
    import numpy as np

    from ..analyses.common import default_layers, progress as progress_bar, safe_name, shown_key
    from ..analyses.heads import class_head, top_classes
    from ..analyses.projection import near_tie_note, parse_modes, project_tiles
    from ..atomic import atomic_dir
    from ..inspect import summarize
    from ..labels import resolve_labels
    from ..preprocess import for_net
    from ..runtime.session import device_line
    from ..viz import activation_tiles, filter_tiles
    from ..viz.figures import image_grid, png_bytes_of_array, predictions_figure, vector_figure
    from ..viz.report import Report

    from .. import checks
    checks.recipe("visualize", net, {"out_dir": out_dir}, {"top": top, "detections": detections}, layers=layers)
    if threshold is not None and not (isinstance(threshold, (int, float)) and 0 <= threshold <= 1):
        from ..errors import ZfcaffeValueError
        raise ZfcaffeValueError(f"visualize(threshold={threshold!r}): expected a number between 0 and 1")
    images = checks.paths("visualize(images", images) or []
    modes = parse_modes(mode)
    layers = list(checks.strings("visualize(layers", layers)) if layers else default_layers(net)
    keys = [shown_key(net, name) for name in layers]   # validates early, before any work
    pre = preprocess or for_net(net)
    from . import dense_view
    dense = dense_view.find(net, labels, pre.channels)
    head = class_head(net, class_output) if dense is None or class_output else None
    names = resolve_labels(labels, head.classes, pre.channels) if head else None
    input_name = net.inputs[0]
    if images:
        net.set_batch(1)
    # read every image first: a bad file fails before anything is written
    prepared = [(path, *pre.prepare(path)) for path in images]

    report = Report(f"zfcaffe: {net.graph.name or os.path.basename(net.graph.path)}")
    report.text(f"net {net.graph.path}; weights {net.graph.weights_path or '(none: fillers)'}; "
                f"{device_line().removeprefix('zfcaffe: ')}; made {datetime.datetime.now():%Y-%m-%d %H:%M}")
    report.heading("Preprocessing and outputs")
    report.pre(pre.describe())
    report.text(head.describe() if head else
                f"no class output (outputs: {', '.join(net.outputs)}): no class ranking is shown")
    if dense is not None:
        what = {"detector": "boxes", "segmentation": "class map", "keypoints": "keypoints"}[dense.kind]
        report.text(f"a {dense.kind} net: its {what} over each image, the top {detections} traced"
                    + (f"; class names: {dense.names.source}" if dense.names else ""))
    if names:
        report.text(f"class names: {names.source}")
    report.text(f"projections: {', '.join(modes)}; each tile is cut to where the projections of its unit "
                "have 95% of their energy, with its own contrast (the 99th percentile of |value| is "
                "black/white, grey is zero)")
    arrays: dict[str, np.ndarray] = {}
    ties: dict[str, set] = {}
    with atomic_dir(out_dir) as tmp:
        def figure(name: str, png: bytes, caption: str, embed: bool = True) -> None:
            """A PNG file in the folder, and the same picture embedded in the page (unless
            the page shows it otherwise, e.g. a detector's boxes as links)."""
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(png)
            if embed:
                report.image(png, caption, name)

        report.heading("Images")
        if not prepared:
            report.text("No images given: add some with --image photo.jpg (repeatable) to see, for each "
                        "chosen layer, its strongest feature maps projected back to pixels.")
        steps = progress_bar(len(prepared) * (1 + len(layers)), "visualize", progress)
        for path, x, shown in prepared:
            stem = safe_name(os.path.splitext(os.path.basename(path))[0])
            net.forward(**{input_name: x[None]})
            steps.update()
            report.heading(os.path.basename(path), 3)
            preds = top_classes(head, net.layer_outputs[head.key], names) if head else []
            figure(f"{stem}_input.png",
                   predictions_figure(shown, preds, os.path.basename(path), head and f"top-{len(preds)} of "
                                      f"'{head.blob}'" + (" (softmaxed here)" if head.softmaxed else "")),
                   "the input as the net sees it" + (f", and its {len(preds)} most probable classes" if preds else ""))
            _outputs_section(report, figure, net, head, names, stem)
            if dense is not None:
                dense_view.report_section(report, figure, net, x, shown, stem, dense, arrays, threshold, detections,
                                          modes, pre, dense_view.photo_size(path))
            for name, key in zip(layers, keys):
                act = net.layer_outputs[key][0]
                units = strongest(act, top)
                t = project_tiles(net, key, [u for u, _ in units], modes, shown)
                for layer, windows in t.near_ties.items():
                    ties.setdefault(layer, set()).update(windows)
                labels_ = [f"map {u[1]}: {v:.3g}" if len(u) == 4 else f"unit {u[1]}: {v:.3g}" for u, v in units]
                cells = [list(t.projections[m]) for m in modes] + [list(t.patches)]
                title = f"{name}: the {len(units)} strongest {'feature maps' if act.ndim == 3 else 'units'}"
                report.heading(f"{name} ({key})", 4)
                figure(f"{stem}_{safe_name(name)}_projections.png",
                       image_grid(cells, modes + ["image patch"], labels_, title),
                       f"{title}, projected to pixels ({', '.join(modes)}) above the image under them")
                if act.ndim == 3:
                    figure(f"{stem}_{safe_name(name)}_activations.png", png_bytes_of_array(activation_tiles(act)),
                           f"{name}: all {act.shape[0]} feature maps, each normalised")
                else:
                    figure(f"{stem}_{safe_name(name)}_activations.png", vector_figure(name, act),
                           f"{name}: all {act.size} units")
                prefix = f"{stem}/{name}"
                arrays[f"{prefix}/units"] = np.array([list(u) + [0] * (4 - len(u)) for u, _ in units], np.int64)
                arrays[f"{prefix}/values"] = np.array([v for _, v in units], np.float32)
                arrays[f"{prefix}/boxes"] = np.array(t.boxes, np.int64)
                arrays[f"{prefix}/patch"] = t.patches
                arrays.update({f"{prefix}/projection/{m}": t.projections[m] for m in modes})
                steps.update()
        steps.close()
        note = near_tie_note(ties)
        if note:
            report.heading("Notes")
            report.text(note)

        report.heading("Filters")
        conv_layers = [l for l in net.layers if l.type == "Convolution" and l.blobs]
        shown_layers = [l for l in conv_layers if l.name in layers or l is conv_layers[0]] if conv_layers else []
        for layer in shown_layers:
            w = layer.blobs[0]
            mode_f = "color" if w.shape[1] == 3 else "sum"
            what = "in colour" if mode_f == "color" else "summed over input channels"
            figure(f"filters_{safe_name(layer.name)}.png", png_bytes_of_array(filter_tiles(w, mode_f)),
                   f"{layer.name}: {w.shape[0]} filters {w.shape[2]}x{w.shape[3]}, {what}")

        report.heading("Model")
        summary = summarize(net.graph)
        report.table(["layer", "type", "output", "shape", "params", "mult-adds", "RF", "jump"],
                     [[r["layer"], r["type"], r["key"] or "", "x".join(map(str, r["shape"] or [])), r["params"] or "",
                       r["macs"] or "", _fmt_pair(r["receptive_field"]), _fmt_pair(r["jump"])]
                      for r in summary["layers"]])
        report.text(f"total {summary['total_params']:,} parameters, {summary['total_macs']:,} multiply-adds")
        for note in summary["notes"]:
            report.text(f"note: {note}")
        if arrays:
            np.savez(os.path.join(tmp, "results.npz"), **arrays)
        with open(os.path.join(tmp, "index.html"), "w", encoding="utf-8") as f:
            f.write(report.render())
    return os.path.join(out_dir, "index.html")


def _outputs_section(report, figure, net, head, names, stem: str) -> None:
    """Every output of the net: its statistics, and a picture of those that are not
    the class scores (an image, maps, a segmentation, a vector)."""
    from ..analyses.common import safe_name
    from ..analyses.heads import summarize_outputs
    from ..viz.figures import output_figure
    summaries = summarize_outputs(net, net.layer_outputs, head)
    report.table(["output", "shape", "what", "min", "max", "mean", "std"],
                 [[o.blob, "x".join(map(str, o.shape)), o.kind] + [f"{o.stats.get(s, 0):.4g}" for s in
                                                                  ("min", "max", "mean", "std")]
                  for o in summaries])
    for o in summaries:
        if o.kind in ("class scores", "empty"):
            continue
        seg_names = names if names and o.shape[1] == len(names.names) else None
        png = output_figure(o.blob, o.kind, net.layer_outputs[o.key][0], seg_names)
        figure(f"{stem}_output_{safe_name(o.blob)}.png", png, f"output {o.blob} ({o.kind})")


def _fmt_pair(v) -> str:
    if v is None:
        return ""
    if v == "all":
        return "all"
    return f"{v[0]:g}" if v[0] == v[1] else f"{v[0]:g}x{v[1]:g}"


def _arguments(p) -> None:
    p.add_argument("--image", action="append", default=[], help="an image, or a .npy input (repeatable)")
    p.add_argument("--layers", help="comma-separated layer names (default: four convolutions across the depth)")
    p.add_argument("--top", type=positive_int, default=8, help="strongest feature maps per layer (default 8)")


@verb("visualize", "Zeiler & Fergus figures and an HTML report (index.html)",
      ("net", "preprocess", "keep_size", "head", "detect", "mode:deconvnet,guided", "output:zfcaffe-report"),
      _arguments)
def visualize_verb(ctx, args) -> str:
    return visualize(ctx.net, args.image, args.output, layers=layer_list(args), top=args.top, mode=args.mode,
                     preprocess=ctx.pre, labels=args.labels, class_output=args.class_output, progress=ctx.progress,
                     threshold=args.threshold, detections=args.detections)
