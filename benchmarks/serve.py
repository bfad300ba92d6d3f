"""`zfcaffe serve` latency through its HTTP API, CaffeNet 227 (generated weights) on
this machine. Targets: a projection within 300 ms of a click, the page under 1 s.

"click" is GET /api/unit?modes=deconvnet (what the page asks first; guided and backprop
follow in a second request) for a unit not asked for before (no cache), on the image the
server already ran ("same image") or on another one (its recording forward included);
"page" is what the page fetches before its first projection shows, in order (files,
model, input, scores, maps, atlas, first unit), on a fresh server; "browser" is the
same measured in Chromium from navigation to the first projection on screen.

    python benchmarks/serve.py [--clicks 20]
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import numpy as np

from common import make_caffenet, photo_files, table, workdir

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from test_serve import start_server, stop_server  # noqa: E402

import httpx  # noqa: E402


def timed(client, path, **params) -> float:
    t = time.perf_counter()
    r = client.get(path, params=params)
    assert r.status_code == 200, r.text
    return (time.perf_counter() - t) * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clicks", type=int, default=20)
    args = ap.parse_args()
    proto, weights = make_caffenet(workdir())
    photos = photo_files(24)
    listing = workdir() / "serve-images.txt"
    listing.write_text("".join(p + "\n" for p in photos))
    proc, url = start_server([proto, weights, "--mean", "104,117,123", "--images", listing])
    rng = np.random.default_rng(0)
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            model = client.get("/api/model").json()
            t = time.perf_counter()
            for path in ("/", "/app.js", "/style.css", "/api/model"):
                client.get(path)
            for path, params in (("/api/input.png", {}), ("/api/scores", {}), ("/api/maps", {"layer": "conv1"}),
                                 ("/api/maps.png", {"layer": "conv1"}),
                                 ("/api/unit", {"layer": "conv1", "c": 0, "modes": "deconvnet"})):
                timed(client, path, image="0", **params)      # what the page fetches, in its order
            page_ms = (time.perf_counter() - t) * 1000
            rows = []
            for layer in [l for l in model["layers"] if l["type"] in ("Convolution", "InnerProduct")]:
                shape = layer["shape"]
                same, other = [], []
                for i in range(args.clicks):
                    c = int(rng.integers(0, shape[0]))
                    where = {} if len(shape) == 1 else {"y": int(rng.integers(0, shape[1])),
                                                         "x": int(rng.integers(0, shape[2]))}
                    timed(client, "/api/maps", image="1", layer=layer["name"])        # the page has the layer
                    same.append(timed(client, "/api/unit", image="1", layer=layer["name"], c=c, modes="deconvnet",
                                      **where))
                    image = str(2 + i % 22)
                    other.append(timed(client, "/api/unit", image=image, layer=layer["name"], c=c, modes="deconvnet",
                                       **where))
                    timed(client, "/api/unit", image="1", layer=layer["name"], c=0)     # back to image 1
                rows.append([layer["name"], f"{np.median(same):.0f}", f"{np.percentile(same, 95):.0f}",
                             f"{np.median(other):.0f}", f"{np.percentile(other, 95):.0f}", f"{max(other):.0f}"])
    finally:
        stop_server(proc)
    print(f"CaffeNet 227 (generated weights), {os.cpu_count()} cores; page (files, model, input, scores, conv1 "
          f"maps and atlas, first projection): {page_ms:.0f} ms")
    print(table(["click on a unit of", "same image median ms", "p95", "new image median ms", "p95", "max"], rows))
    browser_ms = browser_first_projection(url=None, proto=proto, weights=weights, listing=listing)
    if browser_ms is not None:
        print(f"Chromium: navigation to the first projection on screen, fresh server: {browser_ms:.0f} ms")


def browser_first_projection(url, proto, weights, listing) -> float | None:
    import shutil
    browser = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if browser is None:
        return None
    proc, url = start_server([proto, weights, "--mean", "104,117,123", "--images", listing])
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=browser, args=["--no-sandbox"])
            page = b.new_page()
            page.goto("about:blank")          # the browser's own start is not the page's
            t = time.perf_counter()
            page.goto(url + "#image=0&layer=conv5")
            page.wait_for_selector("#projections img")
            ms = (time.perf_counter() - t) * 1000
            b.close()
        return ms
    finally:
        stop_server(proc)


if __name__ == "__main__":
    main()
