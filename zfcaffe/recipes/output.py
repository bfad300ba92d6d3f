"""Writing an analysis's figures, numbers and HTML page into its folder."""
from __future__ import annotations

import os

import numpy as np

from ..atomic import atomic_dir
from ..viz.figures import Figure
from ..viz.report import Report


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
