"""Class names: a file (Caffe's synset_words.txt format or one name a line), a
comma-separated list, or the two built-in sets users meet most (ILSVRC-2012 in
Caffe's class-index order, CIFAR-10), chosen automatically by the class count."""
from __future__ import annotations

import dataclasses
import os
import re

from .errors import ZfcaffeError

_DATA = os.path.join(os.path.dirname(__file__), "data")
BUILT_IN = {
    "imagenet": ("imagenet_synset_words.txt", "ILSVRC-2012 (ImageNet) names, Caffe's class order"),
    "cifar10": ("cifar10_labels.txt", "CIFAR-10 names"),
}
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


def built_in(name: str) -> Labels:
    file, what = BUILT_IN[name]
    return Labels(_read(os.path.join(_DATA, file)), what)


def resolve_labels(spec: str | None, classes: int, channels: int = 3) -> Labels:
    """Names for a class output of `classes` classes.

    spec: None (automatic: ImageNet names for 1000 classes, CIFAR-10 names for 10
    classes of a colour net; indices otherwise), 'imagenet', 'cifar10', 'none', a
    file, or names separated by commas ('sfw,nsfw')."""
    if spec == "none":
        return Labels([], "class indices (--labels none)")
    if spec is None:
        if classes == 1000:
            auto = built_in("imagenet")
        elif classes == 10 and channels == 3:
            auto = built_in("cifar10")
        else:
            return Labels([], "class indices (no --labels given)")
        return Labels(auto.names, f"{auto.source}, chosen because the class output has {classes} classes "
                                  "(--labels FILE to change)")
    if spec in BUILT_IN:
        labels = built_in(spec)
        labels.source += f" (--labels {spec})"
    elif os.path.exists(spec) or "," not in spec:
        labels = Labels(_read(spec), spec)
    else:
        labels = Labels([s.strip() for s in spec.split(",")], f"given with --labels ({spec})")
    if len(labels.names) != classes:
        raise ZfcaffeError(f"{spec}: {len(labels.names)} class names, but the class output has {classes} "
                           "classes; expected one name per class")
    return labels
