"""A labelled image set made on the spot: classes of shapes and textures, drawn with
random colours, sizes, positions and noise (class folders, as ImageFolder lays them)."""
from __future__ import annotations

import os

import numpy as np

CLASSES = ("disc", "square", "triangle", "stripes", "checker")


def _draw(kind: str, size: int, rng):
    from PIL import Image, ImageDraw
    bg = tuple(int(v) for v in rng.integers(0, 256, 3))
    fg = tuple(int(v) for v in (np.array(bg) + rng.integers(96, 160, 3)) % 256)
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    r = int(rng.integers(size // 5, size // 3))
    cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
    if kind == "disc":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
    elif kind == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fg)
    elif kind == "triangle":
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fg)
    elif kind == "stripes":
        period = int(rng.integers(3, 7))
        for y in range(0, size, period):
            d.rectangle([0, y, size, y + period // 2], fill=fg)
    else:
        period = int(rng.integers(3, 7))
        for y in range(0, size, period):
            for x in range((y // period) % 2 * period, size, 2 * period):
                d.rectangle([x, y, x + period - 1, y + period - 1], fill=fg)
    noise = rng.normal(0, 12, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(img, np.float64) + noise, 0, 255).astype(np.uint8))


def make_shapes(folder, per_class: int = 40, size: int = 32, seed: int = 0) -> list[str]:
    """folder/CLASS/NNN.png for each class; returns the paths (sorted)."""
    rng = np.random.default_rng(seed)
    paths = []
    for kind in CLASSES:
        os.makedirs(os.path.join(folder, kind), exist_ok=True)
        for i in range(per_class):
            path = os.path.join(folder, kind, f"{i:03d}.png")
            _draw(kind, size, rng).save(path)
            paths.append(path)
    return sorted(paths)
