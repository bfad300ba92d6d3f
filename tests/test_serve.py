"""`zfcaffe serve`: the page in real Chromium, every API endpoint, hostile requests,
and a bounded burst. The server runs on a free loopback port, started and stopped by
these tests; nothing else is contacted."""
from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import zlib
import struct

import numpy as np
import pytest

from conftest import ROOT, run_cli, unavailable
from shapes import make_shapes

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")


def start_server(args: list, timeout: float = 60) -> tuple[subprocess.Popen, str]:
    """`zfcaffe serve ARGS --port 0` in a new process; (process, its URL)."""
    proc = subprocess.Popen([sys.executable, "-m", "zfcaffe", "serve", *map(str, args), "--port", "0", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    m = re.match(r"zfcaffe serve: (http://127\.0\.0\.1:\d+/)", line)
    if not m:
        proc.kill()
        raise AssertionError(f"no address from the server: {line!r} {proc.stderr.read()[-2000:]}")
    url = m.group(1)
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "api/model", timeout=5).read()
            return proc, url
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("the server did not answer")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


@pytest.fixture(scope="module")
def served(shared, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    images = tmp / "images"
    make_shapes(images, per_class=4)
    m = shared / "models/cifar10_quick"
    net = [m / "cifar10_quick.prototxt", m / "cifar10_quick_iter_4000.caffemodel", "--mean", m / "mean.binaryproto"]
    run_cli("top9", *net, "--images", images, "--layers", "conv1,conv3", "--mode", "deconvnet", "-o", tmp / "top9",
            "--quiet")
    proc, url = start_server([*net, "--images", images, "--top9", tmp / "top9"])
    yield proc, url, tmp
    stop_server(proc)


def get(url: str, path: str, **params):
    return httpx.get(url + path.lstrip("/"), params=params, timeout=60)


def poll(url: str, path: str, **params) -> dict:
    for _ in range(300):
        r = get(url, path, **params)
        assert r.status_code in (200, 202), r.text
        if r.json()["state"] != "running":
            return r.json()
        time.sleep(0.2)
    raise AssertionError("the job did not finish")


def test_every_endpoint_answers_as_documented(served):
    _, url, _ = served
    model = get(url, "/api/model").json()
    names = [l["name"] for l in model["layers"]]
    assert names == ["conv1", "pool1", "conv2", "pool2", "conv3", "pool3", "ip1", "ip2", "prob"]
    assert [i["id"] for i in model["images"]] == [str(i) for i in range(20)] and "paths" not in json.dumps(model)
    assert "/" not in "".join(i["name"] for i in model["images"])          # names, never paths
    r = get(url, "/api/input.png", image="3")
    assert r.headers["content-type"] == "image/png" and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", r.content[16:24]) == (32, 32)
    scores = get(url, "/api/scores", image="3").json()
    assert scores["kind"] == "classes" and len(scores["top"]) == 5 and scores["top"][0]["name"] in (
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    meta = get(url, "/api/maps", image="3", layer="conv2").json()
    assert meta["channels"] == 32 and (meta["height"], meta["width"]) == (16, 16) and len(meta["max"]) == 32
    assert meta["strongest"][0] == int(np.argmax(meta["max"]))
    assert get(url, "/api/maps.png", image="3", layer="conv2").content[:4] == b"\x89PNG"
    u = get(url, "/api/unit", image="3", layer="conv2", c=5, y=4, x=7).json()
    assert u["unit"] == [5, 4, 7] and set(u["projections"]) == {"deconvnet", "guided", "backprop"}
    assert u["patch"].startswith("data:image/png;base64,")
    best = get(url, "/api/unit", image="3", layer="conv2", c=5, modes="guided").json()   # no y, x: the map's maximum
    assert set(best["projections"]) == {"guided"} and best["value"] == pytest.approx(meta["max"][5], rel=1e-6)
    assert get(url, "/api/unit", image="3", layer="ip1", c=7).json()["unit"] == [7]
    assert get(url, "/api/filters.png", layer="conv1").content[:4] == b"\x89PNG"
    # top-9: the folder's tiles (conv3), computed from its top-k, or scanned on demand (conv2)
    for layer in ("conv3", "conv2"):
        t = poll(url, "/api/top9", layer=layer, c=2)
        assert t["state"] == "done" and t["count"] == 9 and t["patches"].startswith("data:image/png"), t
    v = poll(url, "/api/classviz", layer="conv3", c=4)
    assert v["state"] == "done" and v["score"] > v["start"] and v["image"].startswith("data:image/png")


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with one tiny compressed row."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_bad_ids_traversal_and_hostile_uploads_are_refused(served, shared):
    _, url, tmp = served
    for path, params, code, words in [
            ("/api/input.png", {"image": "999"}, 404, "no image '999'"),
            ("/api/input.png", {"image": "../../../etc/passwd"}, 404, "no image"),
            ("/api/input.png", {"image": str(tmp / "images/disc/000.png")}, 404, "no image"),
            ("/api/maps", {"image": "1", "layer": "nope"}, 404, "no layer 'nope'"),
            ("/api/unit", {"image": "1", "layer": "conv2", "c": "32"}, 404, "maps 0 to 31"),
            ("/api/unit", {"image": "1", "layer": "conv2", "c": "1", "y": "16", "x": "0"}, 404, "outside"),
            ("/api/unit", {"image": "1", "layer": "conv2", "c": "x1"}, 400, "expected a whole number"),
            ("/api/unit", {"image": "1", "layer": "conv2", "c": "1", "modes": "magic"}, 400,
             "mode 'magic'; expected one or more of"),
            ("/api/unit", {"image": "1", "layer": "conv2"}, 400, "missing ?c=N"),
            ("/api/filters.png", {"layer": "pool1"}, 404, "has no filters"),
            ("/api/top9", {"layer": "conv2", "c": "-1"}, 404, "maps 0 to 31")]:
        r = get(url, path, **params)
        assert r.status_code == code and words in r.json()["error"], (path, params, r.text)
        assert str(tmp) not in r.json()["error"] or str(tmp) in str(params)   # only what was sent comes back
    for raw in ("/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/static/../app.py", "/app.py", "/model.py",
                "/..%2fapp.py"):
        r = httpx.get(url.rstrip("/") + raw, timeout=10)
        assert r.status_code == 404 and b"root:" not in r.content and b"import" not in r.content, raw
    up = url + "api/upload"
    assert httpx.post(up, content=b"\0" * (21 << 20), timeout=60).status_code == 413
    r = httpx.post(up, content=b"this is not an image", timeout=30)
    assert r.status_code == 400 and "the upload: cannot read image" in r.json()["error"]
    assert "/tmp" not in r.json()["error"]                                    # the server's paths stay private
    r = httpx.post(up, content=_png_header_only(30000, 30000), timeout=30)
    assert r.status_code == 400 and "pixels" in r.json()["error"], r.text
    r = httpx.post(up, content=(tmp / "images/square/001.png").read_bytes(), timeout=30)
    assert r.status_code == 200 and re.fullmatch(r"u\d+", r.json()["id"])
    new = r.json()["id"]
    assert new in [i["id"] for i in get(url, "/api/model").json()["images"]]
    assert get(url, "/api/maps", image=new, layer="conv1").json()["channels"] == 32


def test_a_broken_served_image_is_named_by_its_id_not_its_path(shared, tmp_path):
    import zfcaffe
    from zfcaffe.errors import ZfcaffeError
    from zfcaffe.preprocess import for_net
    from zfcaffe.serve.model import ServedModel
    m = shared / "models/cifar10_quick"
    net = zfcaffe.Net(str(m / "cifar10_quick.prototxt"), str(m / "cifar10_quick_iter_4000.caffemodel"))
    good = make_shapes(tmp_path / "images", per_class=1)[0]
    (tmp_path / "broken.png").write_bytes(b"not a png")
    model = ServedModel(net, for_net(net, str(m / "mean.binaryproto")), [good, str(tmp_path / "broken.png")])
    try:
        assert model.scores("0")["kind"] == "classes"
        with pytest.raises(ZfcaffeError) as e:
            model.scores("1")
        assert "image 1 (broken.png): cannot read image" in str(e.value) and str(tmp_path) not in str(e.value)
    finally:
        model.close()


def test_a_burst_is_answered_or_refused_and_memory_comes_back(served):
    proc, url, _ = served
    rng = np.random.default_rng(0)

    async def burst(n):
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
            async def one(i):
                layer, size = [("conv1", 32), ("conv2", 16), ("conv3", 8)][i % 3]
                params = {"image": str(i % 20), "layer": layer, "c": int(rng.integers(0, 32)),
                          "y": int(rng.integers(0, size)), "x": int(rng.integers(0, size))}
                return (await client.get("/api/unit", params=params)).status_code
            return await asyncio.gather(*(one(i) for i in range(n)))

    asyncio.run(burst(60))                          # warm: sessions, kernels, caches at their bound
    baseline = rss_mb(proc.pid)
    t = time.perf_counter()
    codes = asyncio.run(burst(200))
    took = time.perf_counter() - t
    time.sleep(1)
    after = rss_mb(proc.pid)
    counts = {c: codes.count(c) for c in set(codes)}
    assert set(codes) <= {200, 503} and counts.get(200, 0) >= 16, counts
    assert took < 60
    assert after <= baseline + 64, (baseline, after)
    assert get(url, "/api/model").status_code == 200 and proc.poll() is None
    print(f"burst of 200: {counts} in {took:.1f} s; RSS {baseline:.0f} -> {after:.0f} MB")


def test_the_page_in_chromium(served):
    _, url, _ = served
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
    if browser is None:
        unavailable("chromium is not installed (.ci/run installs Debian's chromium)")
    sync = pytest.importorskip("playwright.sync_api")
    artifacts = ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    with sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=browser, args=["--no-sandbox"])
        try:
            # bypass_csp: Playwright evaluates its waiting conditions as strings, which the page's CSP forbids
            page = b.new_page(viewport={"width": 1400, "height": 1000}, bypass_csp=True)
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            t = time.perf_counter()
            page.goto(url + "#image=2&layer=conv2")
            page.wait_for_selector("#projections img", timeout=30000)
            loaded = time.perf_counter() - t
            assert page.locator("#scores tr").count() == 5
            # click a unit of the feature-map grid: its projections and its top-9 appear
            box = page.locator("#atlas").bounding_box()
            page.mouse.click(box["x"] + box["width"] * 0.55, box["y"] + box["height"] * 0.3)
            page.wait_for_function("location.hash.includes('&y=')")
            page.wait_for_selector("#top9 img", timeout=60000)
            page.wait_for_function("document.querySelector('#unit-title').textContent.includes('activation')")
            title = page.locator("#unit-title").text_content()
            hash_ = page.evaluate("location.hash")
            c, y, x = (re.search(f"{k}=(\\d+)", hash_).group(1) for k in ("c", "y", "x"))
            assert f"map {c} at ({y}, {x})" in title
            page.screenshot(path=str(artifacts / "serve.png"), full_page=True)
            # keyboard: next map, next layer
            page.keyboard.press("ArrowRight")
            page.wait_for_function(f"location.hash.includes('c={(int(c) + 1) % 32}')")
            page.keyboard.press("ArrowDown")
            page.wait_for_function("location.hash.includes('layer=pool2')")
            page.wait_for_selector("#projections img")
            # a permalink opens the same view
            other = b.new_page(bypass_csp=True)
            other.goto(url + "#image=5&layer=conv3&c=4&y=1&x=2")
            other.wait_for_function("document.querySelector('#unit-title').textContent.includes('map 4 at (1, 2)')")
            other.wait_for_selector("#top9 img", timeout=60000)
            assert other.locator("#image-select").input_value() == "5"
            other.screenshot(path=str(artifacts / "serve-permalink.png"), full_page=True)
            assert not errors, errors
        finally:
            b.close()
    assert loaded < 10
