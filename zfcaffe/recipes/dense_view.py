"""What `run`, `visualize` and `serve` show of a detector, a segmenter or a pose net:
one place that finds the net's dense head (zfcaffe.analyses.detections and its
segmentation and keypoint siblings), says its results in lines, maps boxes back to
the photo's pixels, and writes the report's "Detections" section.

Coordinates from the analyses are in the net's INPUT pixels; `photo_box` takes them
through the preprocessing's resize back to the image file's pixels."""
from __future__ import annotations

import dataclasses

import numpy as np

#: --threshold's defaults: a detection's score, a keypoint heatmap's peak
DETECTION_THRESHOLD = 0.5
PEAK_THRESHOLD = 0.1
#: classes of a class map listed one a line (the largest first)
SHOWN_CLASSES = 12
#: keypoint peaks listed one a line (the strongest first)
SHOWN_PEAKS = 40
#: boxes listed, drawn and tabled at most (the best first): a YOLO output at a low threshold has thousands
SHOWN_BOXES = 100


@dataclasses.dataclass
class Dense:
    kind: str                  # "detector" | "segmentation" | "keypoints"
    head: object               # the analyses' head (DetectorHead, SegmentationHead, KeypointHead)
    names: object              # zfcaffe.labels.Labels for its classes (or parts)


def find(net, labels: str | None = None, channels: int = 3) -> Dense | None:
    """The net's detection, segmentation or keypoint head (in that order), or None
    (a classifier, or a net none of them recognises)."""
    from ..analyses import detections as d
    from ..labels import resolve_labels
    head = d.detector_head(net)
    if head is not None:
        return Dense("detector", head, d.detection_labels(net, head, labels))
    head = d.segmentation_head(net)
    if head is not None:
        return Dense("segmentation", head, resolve_labels(labels, _classes(head), channels))
    head = d.keypoint_head(net)
    if head is not None:
        return Dense("keypoints", head, None)
    return None


def _classes(head) -> int:
    c = getattr(head, "classes", None)
    return int(c if isinstance(c, (int, np.integer)) else len(c))


def threshold_of(dense: Dense, threshold: float | None) -> float:
    if threshold is not None:
        return threshold
    return PEAK_THRESHOLD if dense.kind == "keypoints" else DETECTION_THRESHOLD


# -- boxes in the photo's pixels -------------------------------------------------------------------------
def photo_size(path: str | None) -> tuple[int, int] | None:
    """(width, height) of an image file; None for a .npy input (no photo)."""
    if not path or str(path).lower().endswith(".npy"):
        return None
    from ..preprocess import open_image
    with open_image(path) as im:
        return im.size


def photo_box(pre, size: tuple[int, int] | None, box) -> tuple[float, float, float, float] | None:
    """A box (x0, y0, x1, y1) in the net's input -> the same box in the photo's pixels
    (the inverse of Preprocess.map_box); None where the photo was not resized."""
    if size is None or pre is None or pre.keep_size:
        return None
    iw, ih = size
    h, w = pre.height, pre.width
    if (iw, ih) == (w, h):
        return None
    if pre.resize == "crop":
        s = max(h / ih, w / iw)
        sy = sx = s
        nh, nw = max(h, round(ih * s)), max(w, round(iw * s))
    else:                          # warp and pycaffe stretch the photo to the input
        sy, sx, nh, nw = h / ih, w / iw, h, w
    oy, ox = (nh - h) // 2, (nw - w) // 2
    x0, y0, x1, y1 = box
    return ((x0 + ox) / sx, (y0 + oy) / sy, (x1 + ox) / sx, (y1 + oy) / sy)


def _fmt_box(box) -> str:
    return "(" + ", ".join(f"{v:.1f}" for v in box) + ")"


# -- what `run` prints --------------------------------------------------------------------------------------
def lines(net, dense: Dense, threshold: float | None = None, pre=None, photo: tuple[int, int] | None = None,
          item: int = 0) -> list[str]:
    """The dense head's results for the recorded forward pass, one line each."""
    from ..analyses import detections as d
    t = threshold_of(dense, threshold)
    if dense.kind == "detector":
        dets = [x for x in d.detections(net, threshold=t, labels=dense.names) if x.item == item]
        out = [f"detections ({dense.head.kind}, from '{dets[0].output if dets else _head_output(dense.head)}'; "
               f"score >= {t:g}; {dense.names.source}): {len(dets)}"]
        for x in dets[:SHOWN_BOXES]:
            where = f"box {_fmt_box(x.box)} in input pixels"
            pb = photo_box(pre, photo, x.box)
            if pb is not None:
                where += f", {_fmt_box(pb)} in the photo's"
            out.append(f"  #{x.index} {x.name} {x.score:.4f} {where}; unit {x.unit.what}")
        if len(dets) > SHOWN_BOXES:
            out.append(f"  ... {len(dets) - SHOWN_BOXES} weaker detections (--threshold P to show fewer)")
        return out
    if dense.kind == "segmentation":
        cmap = d.class_map(net, item)
        share = class_shares(cmap)
        out = [f"class map {cmap.shape[0]}x{cmap.shape[1]} (from '{_head_output(dense.head)}'; "
               f"{dense.names.source}): {len(share)} classes"]
        out += [f"  {c} {dense.names(c)}: {s * 100:.1f}% of the pixels" for c, s in share[:SHOWN_CLASSES]]
        if len(share) > SHOWN_CLASSES:
            rest = share[SHOWN_CLASSES:]
            out.append(f"  ... {len(rest)} more class{'es' if len(rest) > 1 else ''}: "
                       f"{sum(s for _, s in rest) * 100:.1f}% of the pixels")
        return out
    peaks = d.peaks(net, threshold=t, item=item)
    out = [f"keypoint peaks (from '{_head_output(dense.head)}'; heatmap >= {t:g}): {len(peaks)}"]
    for p in sorted(peaks, key=lambda p: -p.value)[:SHOWN_PEAKS]:
        pb = photo_box(pre, photo, (p.x, p.y, p.x, p.y))
        at = f" ({pb[0]:.1f}, {pb[1]:.1f}) in the photo's" if pb else ""
        out.append(f"  {p.name} ({p.x:.1f}, {p.y:.1f}) in input pixels{at}: {p.value:.4g}")
    if len(peaks) > SHOWN_PEAKS:
        out.append(f"  ... {len(peaks) - SHOWN_PEAKS} weaker peaks (--threshold P to show fewer)")
    return out


def _head_output(head) -> str:
    for attr in ("output", "blob", "key", "score_key", "heatmap_key"):
        v = getattr(head, attr, None)
        if isinstance(v, str):
            return v
    return "?"


def class_shares(cmap: np.ndarray) -> list[tuple[int, float]]:
    """(class, share of the pixels) of every class present, largest first."""
    counts = np.bincount(cmap.ravel().astype(np.int64))
    order = np.argsort(-counts, kind="stable")
    return [(int(c), float(counts[c] / cmap.size)) for c in order if counts[c]]


def largest_classes(cmap: np.ndarray, k: int, background: int | None = 0) -> list[int]:
    """The k classes covering most pixels, background last (only when nothing else is there)."""
    shares = [c for c, _ in class_shares(cmap)]
    fore = [c for c in shares if c != background]
    return (fore or shares)[:k]


#: matplotlib's tab10, as zfcaffe.viz.detection_figures colours a class's boxes
COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf"]


def colour(label: int) -> str:
    return COLOURS[label % len(COLOURS)]


# -- the report's section (zfcaffe visualize) ------------------------------------------------------------------
def report_section(report, figure, net, x: np.ndarray, shown: np.ndarray, stem: str, dense: Dense,
                   arrays: dict, threshold: float | None = None, top: int = 3,
                   modes: tuple = ("deconvnet", "guided"), pre=None, photo=None) -> None:
    """Detections (boxes over the image, each a link to its trace: unit, projections,
    Grad-CAM beside the box), a segmentation's class map, legend and per-class Grad-CAM,
    or a pose net's heatmaps and peaks; their arrays into `arrays` under
    detections/STEM/... (the indices followed with them). The net holds the forward
    pass of x; it holds it again on return."""
    from ..analyses import detections as d
    from ..viz.figures import png_bytes_of_array
    t = threshold_of(dense, threshold)
    prefix = f"detections/{stem}"
    title = {"detector": "Detections", "segmentation": "Segmentation", "keypoints": "Keypoints"}[dense.kind]
    report.heading(title, 4)
    said = lines(net, dense, t, pre, photo)
    if dense.kind == "detector":
        report.text(said[0])                     # the boxes follow as a table
    else:
        report.pre("\n".join(said))
    h, w = shown.shape[:2]
    if dense.kind == "detector":
        found = [x_ for x_ in d.detections(net, threshold=t, labels=dense.names) if x_.item == 0]
        dets = found[:SHOWN_BOXES]
        png = png_bytes_of_array(shown if shown.shape[2] == 3 else shown[:, :, 0], min_side=0)
        picture = None
        if dets:                 # the same boxes as a PNG file (not embedded: the page has them as links)
            from ..viz.detection_figures import boxes_figure
            picture = f"{stem}_detections.png"
            figure(picture, boxes_figure(shown, dets, f"{stem}: {len(dets)} detections"),
                   "", embed=False)
        report.boxes(png, (w, h), [dict(zip(("x0", "y0", "x1", "y1"), d.clip_box(b.box, w, h)), colour=colour(b.label),
                                        label=f"#{b.index} {b.name} {b.score:.2f}", href=f"#{stem}-det-{b.index}")
                                   for b in dets],
                     f"{len(found)} detections with score >= {t:g} over the input"
                     + (f" (the best {len(dets)} shown)" if len(found) > len(dets) else "")
                     + " (click a box for its trace)", picture)
        arrays[f"{prefix}/boxes"] = np.array([b.box for b in dets], np.float32).reshape(-1, 4)
        arrays[f"{prefix}/scores"] = np.array([b.score for b in dets], np.float32)
        arrays[f"{prefix}/labels"] = np.array([b.label for b in dets], np.int64)
        arrays[f"{prefix}/index"] = np.array([b.index for b in dets], np.int64)
        report.table(["#", "class", "score", "box (input px)", "box (photo px)", "unit"],
                     [[b.index, b.name, f"{b.score:.4f}", _fmt_box(b.box),
                       _fmt_box(photo_box(pre, photo, b.box)) if photo_box(pre, photo, b.box) else "",
                       b.unit.what] for b in dets])
        for b in dets[:top]:
            from ..viz.detection_figures import trace_figure
            trace = d.explain_detection(net, x[None], b, modes=tuple(modes))
            report.anchor(f"{stem}-det-{b.index}")
            report.heading(f"#{b.index} {b.name} {b.score:.3f}: why here?", 5)
            report.text(f"unit: {b.unit.what} ({b.unit.key}, index {tuple(b.unit.index)}, value {b.unit.value:.4g}); "
                        f"Grad-CAM at '{trace.cam_layer}' holds {trace.mass_in_box * 100:.0f}% of its mass in the "
                        f"box; neighbourhood {trace.neighbourhood} of the input")
            figure(f"{stem}_detection_{b.index}.png",
                   trace_figure(shown, trace),
                   f"detection #{b.index} ({b.name} {b.score:.3f}): its box, its unit's projections "
                   f"({', '.join(modes)}) and the Grad-CAM of its score, cut to the box's neighbourhood")
            arrays.update({f"{prefix}/{b.index}/{k}": np.asarray(v) for k, v in trace.arrays().items()})
    elif dense.kind == "segmentation":
        from ..viz.dense_figures import class_map_figure, class_trace_figure
        from ..viz.palettes import palette_for
        cmap = d.class_map(net, 0)
        names = dense.names
        classes = _classes(dense.head)
        palette = palette_for(classes, names.names or None)
        figure(f"{stem}_class_map.png", class_map_figure(shown, cmap, names, palette),
               f"class map over the input ({names.source}), with its legend")
        arrays[f"{prefix}/class_map"] = cmap.astype(np.int32)
        chosen = largest_classes(cmap, top)
        arrays[f"{prefix}/classes"] = np.array(chosen, np.int64)
        for c in chosen:
            trace = d.explain_class(net, x[None], c, modes=tuple(modes), labels=names)
            report.heading(f"class {c} {names(c)}: where does it come from?", 5)
            report.text(trace.describe())
            figure(f"{stem}_class_{c}.png", class_trace_figure(shown, trace),
                   f"class {c} ({names(c)}): Grad-CAM of its summed score over where it wins, and projections")
            arrays.update({f"{prefix}/class_{c}/{k}": np.asarray(v) for k, v in trace.arrays().items()})
    else:
        from ..analyses.keypoints import heatmaps
        from ..viz.dense_figures import keypoint_trace_figure, keypoints_figure
        peaks = d.peaks(net, threshold=t, item=0)
        figure(f"{stem}_keypoints.png", keypoints_figure(shown, heatmaps(net), peaks, parts=dense.head.parts),
               f"the heatmaps of every part over the input, with their peaks (>= {t:g})")
        arrays[f"{prefix}/peaks"] = np.array([[p.part, p.x, p.y, p.value] for p in peaks],
                                             np.float32).reshape(-1, 4)
        for p in sorted(peaks, key=lambda p: -p.value)[:top]:
            trace = d.explain_keypoint(net, x[None], p, modes=tuple(modes))
            figure(f"{stem}_keypoint_{p.part}.png", keypoint_trace_figure(shown, trace),
                   f"keypoint {p.name} at ({p.x:.0f}, {p.y:.0f}): Grad-CAM of its heatmap peak, and projections")
            arrays.update({f"{prefix}/part_{p.part}/{k}": np.asarray(v) for k, v in trace.arrays().items()})
    net.set_batch(1)
    net.forward(**{net.inputs[0]: x[None]})       # the traces ran their own passes


def occlusion_figure(r, stem: str):
    """occlusion --detection K: (a) the image, the box and one occluder, (b) the
    detection's score at every occluder position, (c) the score against the share of
    the box the occluder hides."""
    import matplotlib.pyplot as plt

    from ..viz.figures import Figure, figure_png
    d = r.detection
    fig, ax = plt.subplots(1, 3, figsize=(14, 4), gridspec_kw={"wspace": 0.45})
    ax[0].imshow(r.image if r.image.shape[2] == 3 else r.image[:, :, 0], cmap="gray")
    x0, y0, x1, y1 = d.box
    ax[0].add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color=colour(d.label), lw=2))
    worst = np.unravel_index(int(np.argmin(r.score)), r.score.shape)
    wy, wx = int(r.positions_y[worst[0]]), int(r.positions_x[worst[1]])
    ax[0].add_patch(plt.Rectangle((wx, wy), r.size, r.size, color=(0.5, 0.5, 0.5), alpha=0.8))
    ax[0].set_title(f"(a) #{d.index} {d.name} {d.score:.3f}; the occluder where it drops most", fontsize=9)
    h, w = r.image.shape[:2]
    extent = (r.positions_x[0] + r.size / 2 - 0.5, r.positions_x[-1] + r.size / 2 + 0.5,
              r.positions_y[-1] + r.size / 2 + 0.5, r.positions_y[0] + r.size / 2 - 0.5)
    ax[1].imshow(np.ones((h, w)), cmap="gray", vmin=0, vmax=1, extent=(0, w, h, 0))
    im = ax[1].imshow(r.score, extent=extent, cmap="viridis")
    ax[1].add_patch(plt.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, color="w", lw=1.5))
    ax[1].set_xlim(0, w)
    ax[1].set_ylim(h, 0)
    ax[1].set_title(f"(b) its score with the occluder centred here ({r.size}px;\n"
                    f"colours span {float(r.score.min()):.4g} to {float(r.score.max()):.4g})", fontsize=9)
    plt.colorbar(im, ax=ax[1], fraction=0.046)
    for a in ax[:2]:
        a.set_xticks([])
        a.set_yticks([])
    ax[2].scatter(r.hidden.ravel(), r.score.ravel(), s=10)
    ax[2].axhline(r.unoccluded_score, color="k", lw=0.8, ls="--")
    ax[2].set_xlabel("share of the box hidden by the occluder", fontsize=8)
    ax[2].set_ylabel("score", fontsize=8)
    ax[2].set_title("(c) score against the hidden share (dashed: unoccluded)", fontsize=9)
    return Figure(f"{stem}_occlusion_detection_{d.index}.png", figure_png(fig),
                  f"detection #{d.index} ({d.name}, unit {d.unit.what}): unoccluded score {r.unoccluded_score:.4f}, "
                  f"lowest {float(r.score.min()):.4f}")
