"""`zfcaffe visualize`: Zeiler & Fergus's pictures of a net for the given images.

For every image and chosen layer: the N strongest feature maps, each projected back
to pixels (deconvnet by default) beside the image patch of its receptive field
(the paper's Fig. 2, for these images), and the layer's activations as tiles; the
filters of the conv layers; the top-5 classes when the net ends in a classifier.
PNG files plus one self-contained index.html, written atomically.
"""
from __future__ import annotations

import datetime
import os

import numpy as np

from ..analyses.classifier import class_score_outputs
from ..analyses.common import default_layers, progress as progress_bar, safe_name, shown_key, strongest_units
from ..atomic import atomic_dir
from ..errors import ZfcaffeError
from ..imaging import cut, effective_box, signed_to_rgb
from ..inspect import summarize
from ..preprocess import Preprocess, for_net
from ..viz import activation_tiles, filter_tiles
from ..viz.figures import png_bytes_of_array, predictions_figure, projection_grid
from ..viz.report import Report


def top5(net, labels: list[str] | None) -> list[tuple[str, float]]:
    outs = class_score_outputs(net)
    if not outs:
        return []
    scores = net.layer_outputs[outs[0]][0]
    order = np.argsort(-scores)[:5]
    name = lambda i: labels[i] if labels and i < len(labels) else f"class {i}"  # noqa: E731
    return [(name(int(i)), float(scores[i])) for i in order]


def visualize(net, images: list[str], out_dir: str, layers: list[str] | None = None, top: int = 8,
              mode: str = "deconvnet", preprocess: Preprocess | None = None, labels_path: str | None = None,
              progress: bool = True) -> str:
    """Write the figures and index.html into out_dir; returns the index path."""
    from ..runtime.session import device_line

    layers = layers or default_layers(net)
    for name in layers:
        shown_key(net, name)  # validates early, before any work
    pre = preprocess or for_net(net)
    labels = read_labels(labels_path)
    input_name = net.inputs[0]
    shape = net.graph.inputs[input_name]
    if images:
        net.set_batch(1)
    # read every image first: a bad file fails before anything is written
    prepared = [(path, *pre.prepare(path)) for path in images]

    report = Report(f"zfcaffe: {net.graph.name or os.path.basename(net.graph.path)}")
    report.text(f"net {net.graph.path}; weights {net.graph.weights_path or '(none: fillers)'}; "
                f"{device_line().removeprefix('zfcaffe: ')}; made {datetime.datetime.now():%Y-%m-%d %H:%M}")
    report.heading("Preprocessing")
    report.pre(pre.describe())
    with atomic_dir(out_dir) as tmp:
        def figure(name: str, png: bytes, caption: str) -> None:
            """A PNG file in the folder, and the same picture embedded in the page."""
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(png)
            report.image(png, caption, name)

        report.heading("Images")
        if not prepared:
            report.text("No images given: add some with --image photo.jpg (repeatable) to see, for each "
                        "chosen layer, its strongest feature maps projected back to pixels.")
        steps = progress_bar(len(prepared) * (1 + len(layers)), "visualize", progress)
        for path, x, rgb in prepared:
            stem = safe_name(os.path.splitext(os.path.basename(path))[0])
            shown = rgb if rgb.shape[2] == 3 else np.repeat(rgb, 3, axis=2)  # grey inputs shown grey
            net.forward(**{input_name: x[None]})
            steps.update()
            report.heading(os.path.basename(path), 3)
            preds = top5(net, labels)
            figure(f"{stem}_input.png", predictions_figure(rgb, preds, os.path.basename(path)),
                   "the input as the net sees it" + (", and its top-5 classes" if preds else ""))
            for name in layers:
                key = shown_key(net, name)
                act = net.layer_outputs[key][0]
                units = strongest_units(act, min(top, act.shape[0]))
                proj = net.project_many(key, [(0, c, y, x_) for c, y, x_, _ in units], mode=mode)
                ties = sum(map(len, net.last_near_ties.values()))
                geom = net.graph.geometry[key]
                items = []
                for (c, y, x_, v), p in zip(units, proj):
                    box = effective_box(p, geom.box(y, x_, *shape[2:]))
                    rgb_p = signed_to_rgb(p)
                    items.append({"projection": cut(rgb_p, box, 0.5), "patch": cut(shown, box, 1.0),
                                  "label": f"map {c}\n{v:.3g}"})
                rf = "whole image" if geom.whole else f"receptive field {geom.rf[0]:g} px, stride {geom.jump[0]:g}"
                title = f"{name}: {len(units)} strongest feature maps, {mode} ({rf})"
                if ties:
                    title += f"; crosses {ties} max-pool near-tie window(s), routed by float rounding"
                report.heading(f"{name} ({key})", 4)
                figure(f"{stem}_{safe_name(name)}_projections.png", projection_grid(items, title), title)
                figure(f"{stem}_{safe_name(name)}_activations.png", png_bytes_of_array(activation_tiles(act)),
                       f"{name}: all {act.shape[0]} feature maps, each normalised")
                steps.update()
        steps.close()

        report.heading("Filters")
        conv_layers = [l for l in net.layers if l.type == "Convolution" and l.blobs]
        shown = [l for l in conv_layers if l.name in layers or l is conv_layers[0]] if conv_layers else []
        for layer in shown:
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
        with open(os.path.join(tmp, "index.html"), "w", encoding="utf-8") as f:
            f.write(report.render())
    return os.path.join(out_dir, "index.html")


def _fmt_pair(v) -> str:
    if v is None:
        return ""
    if v == "all":
        return "all"
    return f"{v[0]:g}" if v[0] == v[1] else f"{v[0]:g}x{v[1]:g}"


def read_labels(path: str | None) -> list[str] | None:
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise ZfcaffeError(f"{path}: cannot read labels: {e.strerror}") from None
