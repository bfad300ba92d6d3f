"""The static HTML report: one self-contained page (images embedded), no server."""
from __future__ import annotations

import base64
import html


class Report:
    def __init__(self, title: str):
        self.title = title
        self.parts: list[str] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def text(self, text: str) -> None:
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def pre(self, text: str) -> None:
        self.parts.append(f"<pre>{html.escape(text)}</pre>")

    def image(self, png: bytes, alt: str, file_name: str | None = None) -> None:
        data = base64.b64encode(png).decode("ascii")
        link = f' <a href="{html.escape(file_name)}">{html.escape(file_name)}</a>' if file_name else ""
        self.parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'
                          f"<figcaption>{html.escape(alt)}{link}</figcaption></figure>")

    def boxes(self, png: bytes, size: tuple[int, int], boxes: list[dict], alt: str,
              file_name: str | None = None) -> None:
        """An image with boxes drawn over it as SVG, each a link (the page's own anchors):
        boxes are dicts of x0, y0, x1, y1 in the image's pixels (size: width, height),
        label, href and colour ('#rrggbb'). The boxes stay sharp at any zoom and each
        can be clicked to its own section of the page."""
        w, h = size
        data = base64.b64encode(png).decode("ascii")
        parts = []
        for b in boxes:
            x0, y0 = max(0.0, float(b["x0"])), max(0.0, float(b["y0"]))
            x1, y1 = min(float(w), float(b["x1"])), min(float(h), float(b["y1"]))
            colour, label = html.escape(b.get("colour", "#ff3b30")), html.escape(b.get("label", ""))
            ty = y0 - 3 if y0 > 14 else y0 + 13
            parts.append(f'<a class="box" href="{html.escape(b["href"])}"><title>{label}</title>'
                         f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{max(x1 - x0, 1):.1f}" height="{max(y1 - y0, 1):.1f}" '
                         f'fill="{colour}" fill-opacity="0.08" stroke="{colour}" stroke-width="{max(w, h) / 200:.2f}"/>'
                         f'<text x="{x0 + 2:.1f}" y="{ty:.1f}" fill="{colour}" font-size="{max(w, h) / 32:.1f}" '
                         f'paint-order="stroke" stroke="#fff" stroke-width="{max(w, h) / 160:.2f}">{label}</text></a>')
        link = f' <a href="{html.escape(file_name)}">{html.escape(file_name)}</a>' if file_name else ""
        self.parts.append(
            f'<figure class="boxes"><svg viewBox="0 0 {w} {h}" width="{max(w, 480) if w >= h else round(max(h, 480) * w / h)}" '
            f'role="img" aria-label="{html.escape(alt)}" style="max-width:100%;height:auto;border:1px solid #ddd">'
            f'<image href="data:image/png;base64,{data}" x="0" y="0" width="{w}" height="{h}" '
            f'preserveAspectRatio="none" style="image-rendering:pixelated"/>{"".join(parts)}</svg>'
            f"<figcaption>{html.escape(alt)}{link}</figcaption></figure>")

    def anchor(self, name: str) -> None:
        """A place a box of `boxes` can link to (#name)."""
        self.parts.append(f'<a id="{html.escape(name)}"></a>')

    def table(self, header: list[str], rows: list[list]) -> None:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def render(self) -> str:
        style = ("body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}"
                 "img{max-width:100%;border:1px solid #ddd}figure{margin:1em 0}"
                 "figcaption{font-size:0.85em;color:#555}table{border-collapse:collapse;font-size:0.8em}"
                 "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}"
                 "pre{background:#f6f6f6;padding:0.6em;overflow-x:auto}")
        return ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
                f"<title>{html.escape(self.title)}</title><style>{style}</style></head><body>"
                f"<h1>{html.escape(self.title)}</h1>" + "\n".join(self.parts) + "</body></html>")
