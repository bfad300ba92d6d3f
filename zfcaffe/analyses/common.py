"""What every analysis shares: image lists, batched and threaded preprocessing,
progress bars, and writing figures plus an HTML page atomically."""
from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import re

import numpy as np

from ..atomic import atomic_dir
from ..errors import ZfcaffeError
from ..viz.report import Report

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".webp")


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


def batches(paths: list[str], pre, batch: int, workers: int = 2):
    """Yield (start index, (B, C, H, W) inputs) with images decoded by a thread pool."""
    with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
        for start in range(0, len(paths), batch):
            chunk = paths[start:start + batch]
            yield start, np.stack(list(pool.map(pre, chunk)))


def progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, smoothing=0.1)


@dataclasses.dataclass
class Figure:
    name: str          # file name in the output folder
    png: bytes
    caption: str


def write_output(out_dir: str, title: str, sections: list[tuple[str, list[Figure], list]],
                 arrays: dict[str, np.ndarray] | None = None, keep: list[str] = ()) -> str:
    """Write figures, an optional results.npz and index.html (figures embedded) into
    out_dir, atomically; files named in `keep` (e.g. a scan cache) are carried over."""
    report = Report(title)
    with atomic_dir(out_dir) as tmp:
        for name in keep:
            src = os.path.join(out_dir, name)
            if os.path.exists(src):
                os.replace(src, os.path.join(tmp, name))
        for heading, figures, texts in sections:
            report.heading(heading)
            for t in texts:
                if isinstance(t, tuple):   # (header, rows): a table
                    report.table(*t)
                else:
                    report.text(t)
            for fig in figures:
                with open(os.path.join(tmp, fig.name), "wb") as f:
                    f.write(fig.png)
                report.image(fig.png, fig.caption, fig.name)
        if arrays:
            np.savez(os.path.join(tmp, "results.npz"), **arrays)
        with open(os.path.join(tmp, "index.html"), "w", encoding="utf-8") as f:
            f.write(report.render())
    return os.path.join(out_dir, "index.html")


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
