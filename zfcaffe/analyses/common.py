"""What every analysis shares: image lists, progress bars, and writing figures plus an HTML page atomically."""
from __future__ import annotations

import hashlib
import json
import os
import re

import numpy as np

from ..errors import ZfcaffeError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".webp",
                    ".npy")   # a .npy is an input taken as it is (nets whose input is no image)


def list_images(source: str) -> list[tuple[str, int | None]]:
    """(path, label) from a folder (sorted, recursive) or a list file: one path per
    line, optionally followed by an integer label (Caffe's ImageData lists); relative
    paths are taken from the list's folder."""
    if os.path.isdir(source):
        found = []
        for root, _, files in os.walk(source):
            found += [os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
        if not found:
            raise ZfcaffeError(f"{source}: no images in this folder (looked for {', '.join(IMAGE_EXTENSIONS)})")
        return [(p, None) for p in sorted(found)]
    try:
        with open(source, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ZfcaffeError(f"{source}: cannot read image list: {e}") from None
    base = os.path.dirname(os.path.abspath(source))
    out = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(None, 1)
        label = None
        if len(parts) == 2 and re.fullmatch(r"-?\d+", parts[1]):
            line, label = parts[0], int(parts[1])
        path = line if os.path.isabs(line) else os.path.join(base, line)
        out.append((path, label))
    if not out:
        raise ZfcaffeError(f"{source}: the image list is empty; expected lines 'path [label]'")
    return out


def folder_classes(source: str, entries: list[tuple[str, int | None]]):
    """Labels from class folders (source/CLASS/.../image, as ImageFolder lays a dataset
    out): (entries with labels, class names), or (entries, None) when the images are not
    all in two or more such folders, or already have labels."""
    if not os.path.isdir(source) or any(label is not None for _, label in entries):
        return entries, None
    tops = [os.path.relpath(p, source).split(os.sep) for p, _ in entries]
    if any(len(parts) < 2 for parts in tops):
        return entries, None
    classes = sorted({parts[0] for parts in tops})
    if len(classes) < 2:
        return entries, None
    number = {c: i for i, c in enumerate(classes)}
    return [(p, number[parts[0]]) for (p, _), parts in zip(entries, tops)], classes


def scan_fingerprint(net, spec) -> str:
    """What a resumable scan computed, as a digest: the net's files, the weights' time of
    change (a retrained file under the same name starts over), and `spec` (layers,
    images, options: anything JSON)."""
    weights = net.graph.weights_path
    stamp = os.path.getmtime(weights) if weights and os.path.exists(weights) else None
    return hashlib.sha256(json.dumps([os.path.abspath(net.graph.path), weights and os.path.abspath(weights),
                                      stamp, spec], sort_keys=True).encode()).hexdigest()


def progress(total: int, desc: str, enabled: bool, unit: str = "step"):
    """A tqdm bar with rate and ETA (tqdm draws it better than hand-written code)."""
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, smoothing=0.1)


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def default_layers(net, count: int = 4) -> list[str]:
    """The first and last convolution and evenly spaced ones between them."""
    convs = [l.name for l in net.layers if l.type == "Convolution" and len(l.out_shapes[0]) == 4
             and min(l.out_shapes[0][2:]) >= 2]
    if len(convs) <= count:
        return convs
    idx = np.linspace(0, len(convs) - 1, count).round().astype(int)
    return [convs[i] for i in sorted(set(idx))]


def shown_key(net, layer_name: str) -> str:
    """The value pycaffe shows for a layer's output: after its in-place layers (the
    rectified conv5, as in the paper). A Caffe blob name serves too (pycaffe's
    net.blobs[name]: `pool5` of a Faster R-CNN, `pool4` of a pooling with a mask top),
    and a key (`pool4#0`) as it is."""
    return net.graph.resolve(layer_name, "a layer or blob", shown=True)


def input_hw(net) -> tuple[int, int]:
    """(height, width) of the net's (first) input."""
    h, w = net.graph.inputs[net.inputs[0]][2:]
    return int(h), int(w)


def recorded_value(net, key: str) -> np.ndarray:
    """A blob of the last recorded forward pass, the net's inputs included (layer_outputs
    holds layer outputs only); one line when nothing is recorded."""
    if key in net.graph.inputs:
        return np.asarray(net._input_data[key])
    try:
        return np.asarray(net.layer_outputs[key])
    except KeyError:
        raise ZfcaffeError(f"no recorded value of '{key}': run net.forward(...) first (a reshape, e.g. "
                           "net.evaluate on another batch size, clears it)") from None


def strongest_units(act: np.ndarray, n: int) -> list[tuple[int, int, int, float]]:
    """(channel, y, x, value) of the n feature maps with the largest activation."""
    c, h, w = act.shape
    flat = act.reshape(c, -1)
    best = flat.max(axis=1)
    order = np.argsort(-best, kind="stable")[:n]
    return [(int(ch), *divmod(int(flat[ch].argmax()), w), float(best[ch])) for ch in order]
