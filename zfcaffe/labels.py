"""Class names: a file (Caffe's synset_words.txt format or one name a line), a
comma-separated list, or the built-in sets users meet most (ILSVRC-2012 in Caffe's
class-index order, CIFAR-10, PASCAL VOC, COCO, Cityscapes, ADE20K, face), chosen
automatically by the class count where that count names one set."""
from __future__ import annotations

import dataclasses
import os
import re

from .errors import ZfcaffeError

_DATA = os.path.join(os.path.dirname(__file__), "data")
BUILT_IN = {
    "imagenet": ("imagenet_synset_words.txt", "ILSVRC-2012 (ImageNet) names, Caffe's class order"),
    "cifar10": ("cifar10_labels.txt", "CIFAR-10 names"),
    "voc": ("voc_labels.txt", "PASCAL VOC names (background + 20)"),
    "coco": ("coco_labels.txt", "COCO names (background + 80, SSD's labelmap_coco order)"),
    "cityscapes": ("cityscapes_labels.txt", "Cityscapes names (the 19 train ids)"),
    "ade20k": ("ade20k_labels.txt", "ADE20K names (the 150 classes of PSPNet's objectName150)"),
    "face": (None, "face detector names (background, face)"),
}
# Sets whose nets come with and without a background class: the file holds the 80
# COCO names alone (background prepended), the VOC file background + 20 (dropped).
_BACKGROUND_ADDED = {"coco"}
# Class count -> (set, keep the background?) where the count names one set.
_AUTO = {1000: ("imagenet", True), 10: ("cifar10", True), 21: ("voc", True), 20: ("voc", False),
         81: ("coco", True), 80: ("coco", False), 19: ("cityscapes", True), 150: ("ade20k", True)}
_SYNSET = re.compile(r"^n\d{8}\s+")


@dataclasses.dataclass
class Labels:
    names: list[str]
    source: str                       # what the report says about where the names came from

    def __call__(self, index: int) -> str:
        return self.names[index] if 0 <= index < len(self.names) else f"class {index}"


def _short(line: str) -> str:
    """'n01440764 tench, Tinca tinca' -> 'tench'; any other line as it is."""
    if _SYNSET.match(line):
        return _SYNSET.sub("", line).split(",")[0].strip()
    return line


def _read(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
    except OSError as e:
        raise ZfcaffeError(f"{path}: cannot read labels: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ZfcaffeError(f"{path}: labels are not UTF-8 text; expected one class name a line") from None
    while lines and not lines[-1]:
        lines.pop()
    return [_short(line) for line in lines]


def built_in(name: str, classes: int | None = None) -> Labels:
    """A built-in set; for `voc`/`coco`/`face` with `classes` one fewer than the
    set has, the set without its background class."""
    file, what = BUILT_IN[name]
    names = ["background", "face"] if file is None else _read(os.path.join(_DATA, file))
    if name in _BACKGROUND_ADDED:
        names = ["background"] + names
    if classes is not None and classes == len(names) - 1 and names[0] == "background":
        return Labels(names[1:], what.replace("background + ", "without background, ")
                      .replace("(background, face)", "(face)"))
    return Labels(names, what)


def resolve_labels(spec: str | None, classes: int, channels: int = 3) -> Labels:
    """Names for a class output of `classes` classes.

    spec: None (automatic, for a colour net except ImageNet's: ImageNet names for
    1000 classes, CIFAR-10 for 10, PASCAL VOC for 21 (20: without background), COCO
    for 81 (80: without background), Cityscapes for 19, ADE20K for 150; indices
    otherwise), a built-in set ('imagenet', 'cifar10', 'voc', 'coco', 'cityscapes',
    'ade20k', 'face'; voc/coco/face with or without their background class, as
    `classes` says), 'none', a file, or names separated by commas ('sfw,nsfw')."""
    if spec == "none":
        return Labels([], "class indices (--labels none)")
    if spec is None:
        name, _ = _AUTO.get(classes, (None, True))
        if name is None or (name != "imagenet" and channels != 3):
            return Labels([], "class indices (no --labels given)")
        auto = built_in(name, classes)
        return Labels(auto.names, f"{auto.source}, chosen because the class output has {classes} classes "
                                  "(--labels FILE to change)")
    if spec in BUILT_IN:
        labels = built_in(spec, classes)
        labels.source += f" (--labels {spec})"
    elif os.path.exists(spec) or "," not in spec:
        labels = Labels(_read(spec), spec)
    else:
        labels = Labels([s.strip() for s in spec.split(",")], f"given with --labels ({spec})")
    if len(labels.names) != classes:
        raise ZfcaffeError(f"{spec}: {len(labels.names)} class names, but the class output has {classes} "
                           "classes; expected one name per class")
    return labels
