"""`zfcaffe inspect`: the model summary (shapes, parameters, cost, receptive fields)."""
from __future__ import annotations

from .graph import Graph
from .layers.base import count


def summarize(graph: Graph) -> dict:
    """A JSON-ready summary: one row per layer output, and totals."""
    rows = []
    total_params = total_macs = 0
    for layer in graph.layers:
        params = sum(b.size for b in layer.blobs) if layer.blobs else \
            sum(count(s) for s in layer.param_shapes(layer.in_shapes))
        macs = 0 if layer.is_input else layer.macs()
        total_params += params
        total_macs += macs
        tops = layer.tops or [None]
        for i, top in enumerate(tops):
            g = graph.geometry.get(top) if top else None
            rows.append({
                "layer": layer.name, "type": layer.type, "key": top,
                "bottoms": [b for b in layer.bottoms], "tops": list(layer.lp.top),
                "shape": list(graph.shapes[top]) if top else None,
                "params": params if i == 0 else 0, "macs": macs if i == 0 else 0,
                "receptive_field": None if g is None else ("all" if g.whole else list(g.rf)),
                "jump": None if g is None or g.whole else list(g.jump),
                "start": None if g is None or g.whole else list(g.start),
                "summary": layer.summary() if i == 0 else "",
            })
    return {"net": graph.name, "file": graph.path, "format": graph.format,
            "weights": graph.weights_path, "inputs": {k: list(v) for k, v in graph.inputs.items()},
            "layers": rows, "total_params": total_params, "total_macs": total_macs,
            "notes": list(graph.notes)}


def _human(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


def format_table(summary: dict) -> str:
    header = ["layer", "type", "bottoms -> tops", "output shape", "params", "mult-adds", "RF", "jump", "details"]
    lines = []
    for r in summary["layers"]:
        g = r["receptive_field"]
        rf = "" if g is None else ("all" if g == "all" else
                                   (f"{g[0]:g}" if g[0] == g[1] else f"{g[0]:g}x{g[1]:g}"))
        j = r["jump"]
        jump = "" if j is None else (f"{j[0]:g}" if j[0] == j[1] else f"{j[0]:g}x{j[1]:g}")
        flow = f"{','.join(r['bottoms']) or '-'} -> {r['key'] or '-'}"
        lines.append([r["layer"], r["type"], flow, "x".join(map(str, r["shape"] or [])),
                      _human(r["params"]) if r["params"] else "", _human(r["macs"]) if r["macs"] else "",
                      rf, jump, r["summary"]])
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(header)]
    widths[-1] = len(header[-1])
    fmt = lambda row: "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()  # noqa: E731
    out = [f"{summary['net'] or '(unnamed net)'}  [{summary['format']} file {summary['file']}]",
           fmt(header), fmt(["-" * w for w in widths])]
    out += [fmt(l) for l in lines]
    out.append(fmt(["-" * w for w in widths]))
    out.append(f"total: {_human(summary['total_params'])} parameters ({summary['total_params']:,}), "
               f"{_human(summary['total_macs'])} multiply-adds per forward pass")
    out += [f"note: {n}" for n in summary["notes"]]
    return "\n".join(out)
