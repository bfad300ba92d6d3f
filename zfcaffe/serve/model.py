"""What `zfcaffe serve` shows, without the web: a served model answers for an image
id and a layer or unit with PNGs and numbers, and caches them.

Every call that touches the net runs on one thread (the app's worker): the net holds
the recorded forward pass of one image at a time. Top-9 scans and optimised images
take seconds to minutes; they run as jobs on a second thread with a net of their own,
and report their progress."""
from __future__ import annotations

import base64
import collections
import io
import os
import re
import tempfile
import threading
import types

import numpy as np

from ..analyses.common import shown_key, strongest_units
from ..analyses.heads import class_head, top_classes
from ..analyses.projection import TILE, project_tiles
from ..errors import ZfcaffeError
from ..imaging import filter_tiles, grid_columns, tile_blocks, to_uint8, vis_square
from ..labels import resolve_labels

#: the page's order: the paper's deconvnet first (shown at once), then guided and backprop
MODES = ("deconvnet", "guided", "backprop")
#: uploads kept at once (the oldest goes first), and their caps
MAX_UPLOADS = 64
MAX_UPLOAD_BYTES = 20 << 20
MAX_UPLOAD_PIXELS = 40_000_000


class NotFound(ZfcaffeError):
    """An id, layer or unit the server does not have (HTTP 404)."""


def png(img: np.ndarray) -> bytes:
    """(H, W) or (H, W, 3) uint8 or [0, 1] float as PNG bytes (Pillow: fast, no figure)."""
    from PIL import Image
    arr = img if img.dtype == np.uint8 else to_uint8(np.clip(img, 0, 1))
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def data_url(img: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png(img)).decode()


class LRU(collections.OrderedDict):
    """A bounded cache: memory stays flat however many different requests come."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get_or(self, key, make):
        if key in self:
            self.move_to_end(key)
            return self[key]
        return self.put(key, make())

    def put(self, key, value):
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)
        return value


def served_layers(net) -> list[dict]:
    """Each layer whose output can be shown (N x C x H x W maps or N x C vectors), by the
    value pycaffe shows (after its in-place layers), in net order."""
    out, seen = [], set()
    for layer in net.layers:
        if len(layer.tops) != 1 or layer.type in ("Input", "Split", "Silence"):
            continue
        key = shown_key(net, layer.name)
        shape = net.graph.shapes[key]
        if key in seen or len(shape) not in (2, 4) or (len(shape) == 4 and shape[1] * shape[2] * shape[3] == 0):
            continue
        seen.add(key)
        g = net.graph.geometry.get(key)
        rf = None if g is None or g.whole else float(g.rf[0])
        out.append({"name": layer.name, "key": key, "type": layer.type, "shape": list(shape[1:]),
                    "filters": layer.type in ("Convolution", "Deconvolution") and bool(layer.blobs),
                    "receptive_field": rf})
    return out


class ServedModel:
    def __init__(self, net, pre, images: list[str], labels: str | None = None, class_output: str | None = None,
                 top9_dir: str | None = None, threshold: float | None = None, detections: int = 3):
        from ..recipes import dense_view
        self.net, self.pre = net, pre
        # a detector, segmenter or pose net: its boxes, class map or peaks over the input, clickable
        self.dense = dense_view.find(net, labels, pre.channels)
        self.threshold = None if self.dense is None else dense_view.threshold_of(self.dense, threshold)
        self.shown_detections = detections
        self.images = list(images)
        self.uploads: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._upload_dir = tempfile.TemporaryDirectory(prefix="zfcaffe-serve-")
        self._uploaded = 0
        self.head = class_head(net, class_output) if self.dense is None or class_output else None
        self.names = resolve_labels(labels, self.head.classes, pre.channels) if self.head else None
        self.layers = served_layers(net)
        self.layer_by_name = {l["name"]: l for l in self.layers}
        self._current = None
        self._rgb = None
        self.cache = LRU(256)
        self.top9 = _Top9Results(top9_dir) if top9_dir else None
        self.jobs = LRU(256)                # (kind, layer, map) -> state; the oldest finished ones go
        self._jobs_lock = threading.Lock()
        self._job_net = None
        self._scans: dict = {}              # layer key -> its top-k over the served images (the jobs' thread)

    # -- what the browser may name -------------------------------------------------------
    def image_path(self, image_id: str) -> str:
        if re.fullmatch(r"\d{1,9}", image_id) and int(image_id) < len(self.images):
            return self.images[int(image_id)]
        if image_id in self.uploads:
            return self.uploads[image_id]
        raise NotFound(f"no image '{image_id[:40]}'; expected an id from /api/model")

    def layer(self, name: str) -> dict:
        if name not in self.layer_by_name:
            raise NotFound(f"no layer '{name[:60]}'; expected one of /api/model's layers")
        return self.layer_by_name[name]

    def unit_of(self, layer: dict, c: int, y: int | None, x: int | None) -> tuple:
        shape = layer["shape"]
        if not 0 <= c < shape[0]:
            raise NotFound(f"layer '{layer['name']}' has maps 0 to {shape[0] - 1}, not {c}")
        if len(shape) == 1:
            return (0, c)
        if y is None or x is None:
            return (0, c) + self._argmax(layer, c)
        if not (0 <= y < shape[1] and 0 <= x < shape[2]):
            raise NotFound(f"layer '{layer['name']}' maps are {shape[1]}x{shape[2]}; ({y}, {x}) is outside")
        return (0, c, y, x)

    def _argmax(self, layer: dict, c: int) -> tuple[int, int]:
        m = self.net.layer_outputs[layer["key"]][0, c]
        return tuple(int(v) for v in np.unravel_index(int(m.argmax()), m.shape))

    # -- uploads ------------------------------------------------------------------------
    def add_upload(self, data: bytes) -> str:
        """Check an uploaded image as the CLI checks files (size, pixels, decodable) and
        keep it under a new id; the oldest upload goes when there are too many."""
        if len(data) > MAX_UPLOAD_BYTES:
            raise ZfcaffeError(f"upload of {len(data):,} bytes; the limit is {MAX_UPLOAD_BYTES:,}")
        self._uploaded += 1
        image_id = f"u{self._uploaded}"
        path = os.path.join(self._upload_dir.name, f"{image_id}.img")
        with open(path, "wb") as f:
            f.write(data)
        try:
            from ..preprocess import open_image
            with open_image(path) as im:
                if im.width * im.height > MAX_UPLOAD_PIXELS:
                    raise ZfcaffeError(f"the upload is {im.width}x{im.height} pixels, over the limit of "
                                       f"{MAX_UPLOAD_PIXELS:,}")
            self.pre.prepare(path)          # decodes: a broken image is refused now, not later
        except ZfcaffeError as e:
            os.unlink(path)
            raise ZfcaffeError(str(e).replace(path, "the upload")) from None
        self.uploads[image_id] = path
        while len(self.uploads) > MAX_UPLOADS:
            old_id, old = self.uploads.popitem(last=False)
            os.unlink(old)
            if self._current == old_id:
                self._current = None
        return image_id

    def close(self) -> None:
        self._upload_dir.cleanup()

    # -- the views ------------------------------------------------------------------------
    def info(self) -> dict:
        g = self.net.graph
        return {"name": g.name or os.path.basename(g.path), "prototxt": os.path.basename(g.path),
                "weights": os.path.basename(g.weights_path or ""), "preprocessing": self.pre.describe(),
                "input": list(g.inputs[self.net.inputs[0]][1:]),
                "head": self.head.describe() if self.head else (f"a {self.dense.kind} net" if self.dense
                                                                else "no class output"),
                "dense": None if self.dense is None else {
                    "kind": self.dense.kind, "threshold": self.threshold, "shown": self.shown_detections,
                    "names": self.dense.names.source if self.dense.names else "part names"},
                "layers": self.layers, "modes": list(MODES),
                "images": [{"id": str(i), "name": os.path.basename(p)} for i, p in enumerate(self.images)]
                + [{"id": k, "name": f"upload {k}"} for k in self.uploads],
                "top9": self.top9.describe() if self.top9 else ("on demand over the served images" if self.images
                                                                else "none (serve with --images or --top9)")}

    def _forward(self, image_id: str) -> None:
        if self._current != image_id:
            path = self.image_path(image_id)
            try:
                x, rgb = self.pre.prepare(path)
            except ZfcaffeError as e:     # the page names the image, never the server's path
                raise ZfcaffeError(str(e).replace(path, f"image {image_id} ({os.path.basename(path)})")) from None
            self.net.set_batch(1)
            self.net.forward(**{self.net.inputs[0]: x[None]})
            self._current, self._rgb = image_id, rgb

    def input_png(self, image_id: str) -> bytes:
        def make():
            self._forward(image_id)
            return png(self._rgb if self._rgb.shape[2] == 3 else self._rgb[:, :, 0])
        return self.cache.get_or(("input", image_id), make)

    def scores(self, image_id: str) -> dict:
        def make():
            self._forward(image_id)
            if self.head is None:
                return {"kind": "outputs", "outputs": [
                    {"name": self.net.graph.name_of(k), "shape": list(self.net.layer_outputs[k].shape[1:]),
                     "mean": float(np.mean(self.net.layer_outputs[k][0]))} for k in self.net.graph.outputs()]}
            top = top_classes(self.head, self.net.layer_outputs[self.head.key], self.names, k=5)
            return {"kind": "classes", "source": self.names.source,
                    "top": [{"name": n, "p": p} for n, p in top]}
        return self.cache.get_or(("scores", image_id), make)

    def maps(self, image_id: str, layer_name: str) -> tuple[bytes, dict]:
        layer = self.layer(layer_name)

        def make():
            self._forward(image_id)
            act = self.net.layer_outputs[layer["key"]][0]
            act = act.reshape(act.shape[0], 1, 1) if act.ndim == 1 else act
            c, h, w = act.shape
            atlas = vis_square(act, pad=1, background=1.0, per_item=True)
            meta = {"channels": c, "height": h, "width": w, "pad": 1, "cols": grid_columns(c),
                    "max": [float(v) for v in act.reshape(c, -1).max(axis=1)],
                    "strongest": [unit[0] for unit in strongest_units(act, 8)]}
            return png(atlas), meta
        return self.cache.get_or(("maps", image_id, layer_name), make)

    def unit(self, image_id: str, layer_name: str, c: int, y: int | None, x: int | None, modes: list[str]) -> dict:
        """A unit's projections in `modes` and the image patch under them. The first
        request fixes the unit's box (where its projections have their energy); later
        requests for more modes cut their tiles to the same box, so the page can show
        the first mode at once and the others as they come."""
        layer = self.layer(layer_name)
        self._forward(image_id)
        unit = self.unit_of(layer, c, y, x)
        where = (image_id, layer_name, unit)
        first = self.cache.get(("box",) + where)
        tiles = {} if first is None else {m: self.cache.get(("tile",) + where + (m,)) for m in modes}
        missing = [m for m in modes if tiles.get(m) is None]
        if missing:
            t = project_tiles(self.net, layer["key"], [unit], missing, self._rgb,
                              boxes=None if first is None else [first["box"]])
            if first is None:
                first = {"box": [int(v) for v in t.boxes[0]], "patch": data_url(t.patches[0]), "near_ties": {}}
            for k, v in t.near_ties.items():
                first["near_ties"][k] = first["near_ties"].get(k, 0) + len(v)
            tiles.update({m: data_url(t.projections[m][0]) for m in missing})
        self.cache.put(("box",) + where, first)
        for m in modes:
            self.cache.put(("tile",) + where + (m,), tiles[m])
        return {"unit": list(unit[1:]), "value": float(self.net.layer_outputs[layer["key"]][unit]),
                "box": first["box"], "patch": first["patch"], "near_ties": first["near_ties"],
                "projections": {m: tiles[m] for m in modes}}

    # -- detections, class maps, keypoints ------------------------------------------------------
    def _require_dense(self, kind: str | None = None):
        if self.dense is None or (kind and self.dense.kind != kind):
            raise NotFound(f"this net has no {kind or 'detection, segmentation or keypoint'} output")
        return self.dense

    def dense_results(self, image_id: str) -> dict:
        """The boxes (detector), classes present and a class-map overlay (segmenter) or
        peaks and a heatmap overlay (pose net) of an image, in input pixels."""
        from ..analyses import detections as d
        from ..recipes import dense_view
        dense = self._require_dense()

        def make():
            self._forward(image_id)
            h, w = self._rgb.shape[:2]
            out = {"kind": dense.kind, "width": w, "height": h, "threshold": self.threshold}
            if dense.kind == "detector":
                found = [x for x in d.detections(self.net, threshold=self.threshold, labels=dense.names) if x.item == 0]
                dets = found[:dense_view.SHOWN_BOXES]
                out["found"] = len(found)
                out["detections"] = [{"index": x.index, "label": x.label, "name": x.name, "score": float(x.score),
                                      "box": list(d.clip_box(x.box, w, h)),
                                      "unit": x.unit.what,
                                      "colour": dense_view.colour(x.label)} for x in dets]
            elif dense.kind == "segmentation":
                from ..viz.palettes import palette_for
                cmap = d.class_map(self.net, 0)
                palette = palette_for(dense_view._classes(dense.head), dense.names.names or None)
                out["classes"] = [{"label": c, "name": dense.names(c), "share": share,
                                   "colour": "#%02x%02x%02x" % tuple(int(v) for v in palette[c % len(palette)])}
                                  for c, share in dense_view.class_shares(cmap)]
                out["overlay"] = data_url(palette[cmap % len(palette)].astype(np.uint8))
                self.cache.put(("classmap", image_id), cmap)
            else:
                peaks = d.peaks(self.net, threshold=self.threshold, item=0)
                out["peaks"] = [{"part": p.part, "name": p.name, "x": float(p.x), "y": float(p.y),
                                 "value": float(p.value)} for p in peaks]
                from ..analyses.keypoints import heatmaps
                heat = np.clip(heatmaps(self.net)[:len(dense.head.parts)].max(axis=0), 0, 1)
                out["overlay"] = data_url(heat)
            return out
        return self.cache.get_or(("dense", image_id), make)

    def detection(self, image_id: str, k: int, modes: list[str]) -> dict:
        """Detection k's trace: its unit, projections and Grad-CAM cut to the box's
        neighbourhood (the report's figure, and its numbers)."""
        from ..analyses import detections as d
        from ..viz.detection_figures import trace_figure
        dense = self._require_dense("detector")

        def make():
            self._forward(image_id)
            dets = d.detections(self.net, threshold=self.threshold, labels=dense.names)
            match = [x for x in dets if x.index == k and x.item == 0]
            if not match:
                raise NotFound(f"no detection {k} at score >= {self.threshold:g}; expected one of "
                               f"{[x.index for x in dets][:20]}")
            det = match[0]
            x, _ = self.pre.prepare(self.image_path(image_id))
            trace = d.explain_detection(self.net, x[None], det, modes=tuple(modes))
            self._current = None          # the trace ran passes of its own: forward again when next asked
            rgb = self._rgb_of(image_id)
            return {"index": det.index, "name": det.name, "score": float(det.score),
                    "box": [_finite(v) for v in det.box], "unit": {"what": det.unit.what, "key": det.unit.key,
                                                                 "layer": det.unit.layer,
                                                                 "index": [int(v) for v in det.unit.index],
                                                                 "value": _finite(det.unit.value)},
                    "extra": {k_: int(v) for k_, v in det.extra.items()},
                    "cam_layer": trace.cam_layer, "mass_in_box": float(trace.mass_in_box),
                    "neighbourhood": [int(v) for v in trace.neighbourhood],
                    "figure": "data:image/png;base64," + base64.b64encode(trace_figure(rgb, trace)).decode()}
        return self.cache.get_or(("detection", image_id, k, tuple(modes)), make)

    def segment(self, image_id: str, x: int, y: int, modes: list[str]) -> dict:
        """The class of the input pixel (x, y): where it wins, its Grad-CAM and projections."""
        from ..analyses import detections as d
        from ..viz.dense_figures import class_trace_figure
        dense = self._require_dense("segmentation")
        self.dense_results(image_id)
        cmap = self.cache.get(("classmap", image_id))
        if cmap is None:
            self._forward(image_id)
            cmap = d.class_map(self.net, 0)
        h, w = cmap.shape
        if not (0 <= x < w and 0 <= y < h):
            raise NotFound(f"the input is {w}x{h}; pixel ({x}, {y}) is outside")
        label = int(cmap[y, x])

        def make():
            self._forward(image_id)
            xin, _ = self.pre.prepare(self.image_path(image_id))
            trace = d.explain_class(self.net, xin[None], label, modes=tuple(modes), labels=dense.names)
            self._current = None
            return {"label": label, "name": dense.names(label), "share": float((cmap == label).mean()),
                    "what": trace.describe(), "cam_layer": trace.trace.cam_layer,
                    "mass_in_region": float(trace.mass_in_region),
                    "figure": "data:image/png;base64," + base64.b64encode(class_trace_figure(
                        self._rgb_of(image_id), trace)).decode()}
        return {**self.cache.get_or(("segment", image_id, label, tuple(modes)), make), "x": x, "y": y}

    def keypoint(self, image_id: str, k: int, modes: list[str]) -> dict:
        """Peak k's trace (its index in /api/detections' peaks): Grad-CAM of its heatmap
        value and the projections of its unit."""
        from ..analyses import detections as d
        from ..viz.dense_figures import keypoint_trace_figure
        self._require_dense("keypoints")

        def make():
            self._forward(image_id)
            peaks = d.peaks(self.net, threshold=self.threshold, item=0)
            if not 0 <= k < len(peaks):
                raise NotFound(f"no peak {k}; the image has peaks 0 to {len(peaks) - 1} at heatmap >= {self.threshold:g}")
            p = peaks[k]
            xin, _ = self.pre.prepare(self.image_path(image_id))
            trace = d.explain_keypoint(self.net, xin[None], p, modes=tuple(modes))
            self._current = None
            return {"index": k, "name": p.name, "x": float(p.x), "y": float(p.y), "value": _finite(p.value),
                    "what": trace.describe(),
                    "figure": "data:image/png;base64," + base64.b64encode(keypoint_trace_figure(
                        self._rgb_of(image_id), trace)).decode()}
        return self.cache.get_or(("keypoint", image_id, k, tuple(modes)), make)

    def _rgb_of(self, image_id: str) -> np.ndarray:
        return self.pre.prepare(self.image_path(image_id))[1]

    def warm(self) -> None:
        """Build the sessions and compile the kernels before the first visitor comes."""
        shape = self.net.graph.inputs[self.net.inputs[0]]
        self.net.set_batch(1)
        self.net.forward(**{self.net.inputs[0]: np.zeros((1,) + tuple(shape[1:]), np.float32)})
        warmed = 0
        for layer in (self.layers[0], *reversed(self.layers[1:])):   # the first and the last that projects
            try:
                for mode in MODES:
                    self.net.project(layer["key"], (0, 0) if len(layer["shape"]) == 1 else (0, 0, 0, 0), mode)
            except ZfcaffeError:        # e.g. a detector's output layer: no backward rule; the page says so
                continue
            warmed += 1
            if warmed == 2:
                break
        self._current = None

    def filters(self, layer_name: str) -> bytes:
        layer = self.layer(layer_name)
        if not layer["filters"]:
            raise NotFound(f"layer '{layer_name}' ({layer['type']}) has no filters to show")

        def make():
            w = self.net.graph.layer(layer_name).blobs[0]
            return png(filter_tiles(np.asarray(w, np.float32), "auto"))
        return self.cache.get_or(("filters", layer_name), make)

    # -- jobs: top-9 and optimised images, on their own thread and net ---------------------
    def job(self, kind: str, layer_name: str, c: int, start) -> dict:
        """The job's state: {"state": "running", "done", "total"} or {"state": "done", ...}
        or {"state": "error", "error"}; a new job is handed to start(fn)."""
        layer = self.layer(layer_name)
        self.unit_of(layer, c, 0, 0)
        key = (kind, layer_name, c)
        with self._jobs_lock:
            state = self.jobs.get(key)
            if state is None:
                if kind == "top9" and not (self.top9 and self.top9.has(layer["key"])) and not self.images:
                    raise NotFound("no top-9 for this layer: serve with --images (computed on demand) or --top9 OUT")
                state = {"state": "running", "done": 0, "total": 0}
                run = self._top9_job if kind == "top9" else self._classviz_job
                start(lambda: self._run_job(state, run, layer, c))   # refused (Busy): nothing is recorded
                self.jobs.put(key, state)
            return dict(state)

    def _run_job(self, state: dict, run, layer: dict, c: int) -> None:
        try:
            state.update(run(state, layer, c), state="done")
        except Exception as e:  # noqa: BLE001 - a job's failure is reported, the server goes on
            state.update(state="error", error=str(e) if isinstance(e, ZfcaffeError) else f"{type(e).__name__}: {e}")

    def _jobnet(self):
        if self._job_net is None:
            from ..net import Net
            g = self.net.graph
            self._job_net = Net(g.path, g.weights_path, **self.net.options)
        return self._job_net

    def _top9_job(self, state: dict, layer: dict, c: int) -> dict:
        from ..analyses import top9
        from ..scan import Engine
        key, net = layer["key"], self._jobnet()
        if self.top9 and self.top9.has(key):
            tiles = self.top9.tiles(key, c)
            if tiles is not None:
                return tiles
            tops, paths = self.top9.topk(key), self.top9.paths
        else:
            if key not in self._scans:       # one scan per layer, over the served images
                class Counting(Engine):
                    def map(self, job, paths, first=0):
                        state["total"] = len(paths)
                        for item in super().map(job, paths, first):
                            state["done"] = item[0] + item[1]
                            yield item
                self._scans[key] = top9.scan(net, self.images, [key], self.pre, k=min(9, len(self.images)),
                                             batch=min(16, len(self.images)), engine=Counting(),
                                             show_progress=False)[key]
            tops, paths = self._scans[key], self.images
        t = top9.project_top(net, paths, key, tops, [c], self.pre, list(MODES))
        return _top9_payload(t, 0)

    def _classviz_job(self, state: dict, layer: dict, c: int) -> dict:
        from ..methods.classviz import class_model
        steps = 120
        state["total"] = steps
        r = class_model(self._jobnet(), self.pre, layer=layer["name"], channel=c, steps=steps, param="fourier")
        state["done"] = steps
        return {"image": data_url(self.pre.to_image(r.image)), "target": r.target,
                "start": r.start_score, "score": r.score}


def _finite(v) -> float | None:
    """A number for JSON (which has no NaN or infinity): None where it is not finite."""
    v = float(v)
    return v if np.isfinite(v) else None


def _top9_payload(tiles, i: int) -> dict:
    valid = tiles.valid[i]
    empty = np.full((TILE, TILE, 3), 235, np.uint8)

    def block(images):
        return tile_blocks([(img if ok else empty).astype(np.float32) / 255 for img, ok in zip(images, valid)])
    return {"projections": {m: data_url(block(tiles.projections[m][i])) for m in tiles.projections},
            "patches": data_url(block(tiles.patches[i])), "count": int(valid.sum())}


class _Top9Results:
    """A `zfcaffe top9` output folder: every map's top-k and the tiles of the shown maps."""

    def __init__(self, folder: str):
        path = os.path.join(folder, "results.npz")
        if not os.path.exists(path):
            raise ZfcaffeError(f"{folder}: no results.npz; expected an output folder of 'zfcaffe top9'")
        with np.load(path, allow_pickle=False) as z:
            self.arrays = {k: z[k] for k in z.files}
        self.paths = [str(p) for p in self.arrays.get("images", [])]
        self.folder = folder

    def describe(self) -> str:
        keys = sorted({k.split("/")[0] for k in self.arrays if k.endswith("/values")})
        return f"from {self.folder} ({len(self.paths)} images; layers {', '.join(keys)})"

    def has(self, key: str) -> bool:
        return f"{key}/values" in self.arrays

    def topk(self, key: str):
        from ..analyses.top9 import TopK
        return TopK.from_arrays(self.arrays, f"{key}/")

    def tiles(self, key: str, c: int) -> dict | None:
        shown = list(self.arrays.get(f"{key}/shown_maps", []))
        if c not in shown:
            return None
        i = shown.index(c)
        modes = [k.rsplit("/", 1)[1] for k in self.arrays if k.startswith(f"{key}/projection/")]

        tiles = types.SimpleNamespace(projections={m: self.arrays[f"{key}/projection/{m}"] for m in modes},
                                      patches=self.arrays[f"{key}/patch"], valid=self.arrays[f"{key}/valid"])
        return _top9_payload(tiles, i)
