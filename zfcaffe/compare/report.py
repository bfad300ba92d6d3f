"""The comparison report: index.html (the plot embedded), report.json and error.png,
written into the output folder atomically."""
from __future__ import annotations

import html
import json
import math
import os


def error_plot(report) -> bytes:
    """max|diff|/max|ref| along the depth (log scale), the tolerance and the first divergence marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import io
    rows = report.compared
    fig, ax = plt.subplots(figsize=(11, 3.6), dpi=100)
    floor = 1e-9
    xs = [i for i, r in enumerate(rows) if r.rel is not None]
    ys = [max(r.rel, floor) if math.isfinite(r.rel) else 1e3 for r in rows if r.rel is not None]
    colours = ["#c62828" if r.rel > report.tol else "#2e7d32" for r in rows if r.rel is not None]
    ax.plot(xs, ys, color="#888", lw=0.8, zorder=1)
    ax.scatter(xs, ys, c=colours, s=14, zorder=2)
    bad = [i for i, r in enumerate(rows) if r.verdict == "shape differs"]
    if bad:
        ax.scatter(bad, [1e2] * len(bad), marker="x", color="#c62828", s=30, zorder=3, label="shape differs")
        ax.legend(loc="upper left", fontsize=8)
    ax.axhline(report.tol, color="#c62828", ls="--", lw=0.8)
    ax.text(0, report.tol * 1.3, f"--tol {report.tol:g}", color="#c62828", fontsize=8)
    if report.first is not None:
        at = next(i for i, r in enumerate(rows) if r.key == report.first)
        ax.axvline(at, color="#c62828", lw=0.8, alpha=0.6)
        ax.text(at, 2e2, f" first: {rows[at].layer}", color="#c62828", fontsize=8, va="bottom")
    ax.set_yscale("log")
    ax.set_ylim(floor / 2, 1e4)
    ax.set_xlabel("layer (net order)")
    ax.set_ylabel("max|diff| / max|ref|")
    step = max(1, len(rows) // 30)
    ax.set_xticks(range(0, len(rows), step))
    ax.set_xticklabels([rows[i].layer for i in range(0, len(rows), step)], rotation=60, ha="right", fontsize=7)
    ax.set_title(f"zfcaffe (Caffe's numerics) vs {report.other}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    png = buf.getvalue()
    plt.close(fig)
    return png


def _fmt(x, spec: str) -> str:
    return "" if x is None else (format(x, spec) if math.isfinite(x) else str(x))


def render_html(report, png: bytes) -> str:
    from ..viz.report import Report as Page
    page = Page(f"zfcaffe compare: {os.path.basename(report.net)} vs {report.other}")
    status = "PASS" if report.ok else "FAIL"
    page.parts.append(f'<p style="font-size:1.2em"><b style="color:{"#2e7d32" if report.ok else "#c62828"}">'
                      f"{status}</b> {html.escape(report.summary)}</p>")
    if report.first is not None:
        page.heading("First divergence: the usual causes, each recomputed")
        page.table(["layer", "cause", "test", "result"],
                   [[c.get("layer", ""), c["cause"], c["test"], c["result"]] for c in report.causes]
                   or [["", "(no usual cause applies to this layer type)", "", ""]])
    if report.checks:
        page.heading("Input checks")
        for c in report.checks:
            page.text(c)
    page.image(png, "error along the depth: max|diff|/max|ref| per layer (red: beyond --tol)", "error.png")
    page.heading("Layers")
    rows = []
    for r in report.rows:
        rows.append([r.index, r.layer + ("" if r.key == r.layer else f" [{r.key}]"), r.type, "x".join(map(str, r.ours_shape)),
                     "" if r.other_shape is None else "x".join(map(str, r.other_shape)),
                     r.other_name or "", r.how or "", _fmt(r.rel, ".3g"), _fmt(r.cos, ".6f"), r.verdict])
    page.table(["#", "layer", "type", "Caffe shape", "other shape", "other's name", "matched", "max|diff|/max|ref|",
                "cosine", "verdict"], rows)
    page.heading("Run")
    page.pre("\n".join([f"net: {report.net}", f"weights: {report.weights}", f"other side: {report.other}",
                        f"inputs: {report.inputs}; the other side was fed {report.fed}", f"tolerance: {report.tol:g}",
                        f"seconds: {report.seconds}"] + [f"note: {n}" for n in report.notes]))
    text = page.render()
    # colour the verdicts
    for word, colour in (("diverges", "#c62828"), ("shape differs", "#c62828"), ("absent", "#999")):
        text = text.replace(f"<td>{word}</td>", f'<td style="color:{colour};font-weight:bold">{word}</td>')
    text = text.replace("<td>matches (", '<td style="color:#2e7d32;font-weight:bold">matches (')
    return text


def write_report(report, out: str) -> str:
    from ..atomic import atomic_dir
    png = error_plot(report)
    with atomic_dir(out) as tmp:
        with open(os.path.join(tmp, "error.png"), "wb") as f:
            f.write(png)
        with open(os.path.join(tmp, "report.json"), "w") as f:
            json.dump(report.to_json(), f, indent=1, allow_nan=True, default=str)
        with open(os.path.join(tmp, "index.html"), "w") as f:
            f.write(render_html(report, png))
    return out
