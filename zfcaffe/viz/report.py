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
