"""Class colours for segmentation maps: PASCAL VOC's bit-shuffled colormap, the
Cityscapes train-id colours, ADE20K's color150, and `palette_for` to pick one."""
from __future__ import annotations

import os

import numpy as np


def voc_colormap(n: int = 256) -> np.ndarray:
    """The VOC devkit's colormap (VOClabelcolormap.m): the bits of the class index
    spread over the high bits of R, G, B, three at a time -> (n, 3) uint8."""
    cmap = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, rgb = i, [0, 0, 0]
        for j in range(8):
            for k in range(3):
                rgb[k] |= ((c >> k) & 1) << (7 - j)
            c >>= 3
        cmap[i] = rgb
    return cmap


VOC = voc_colormap(21)
# cityscapesScripts helpers/labels.py, the colours of train ids 0-18
CITYSCAPES = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32)], np.uint8)


def _ade20k() -> np.ndarray:
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "ade20k_palette.txt")
    return np.loadtxt(path, dtype=np.uint8).reshape(-1, 3)


ADE20K = _ade20k()
_NAMED = {"voc": (VOC, "background aeroplane bicycle".split()),
          "cityscapes": (CITYSCAPES, "road sidewalk building".split()),
          "ade20k": (ADE20K, "wall building sky".split())}


def palette_for(classes: int, names: list[str] | None = None) -> np.ndarray:
    """(classes, 3) uint8 colours: the dataset's own palette where the names (or,
    without names, the class count: 21 VOC, 19 Cityscapes, 150 ADE20K) say which
    dataset the net was trained on; VOC's colormap (distinct for any count) otherwise."""
    names = list(names or [])
    for palette, first in _NAMED.values():
        if len(palette) == classes and (names[:3] == first if names else True):
            return palette.copy()
    if classes == 20 and names[:2] == ["aeroplane", "bicycle"]:
        return VOC[1:].copy()          # VOC without its background: each class keeps its colour
    return voc_colormap(max(classes, 1))[:classes]
