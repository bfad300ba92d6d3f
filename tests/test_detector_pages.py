"""Detectors, segmenters and pose nets as users meet them: `run` prints the boxes (input
and photo pixels), `visualize` writes the "Detections" section (clickable boxes, each
traced), `serve` draws the boxes and opens a box's trace on a click, and `occlusion
--detection K` follows one detection's score; on the WeChat QR detector with its real
weights and a generated QR code, and on the slim FCN-8s."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, render_in_chromium, run_cli, unavailable

QR_TEXT = "https://example.org/zfcaffe"


@pytest.fixture(scope="module")
def wechat(shared) -> list:
    d = shared / "census/wechat_qrcode"
    # OpenCV's wechat_qrcode: grey, scaled by 1/255 (ssd_detector.cpp), no mean
    return [d / "detect.prototxt", d / "detect.caffemodel", "--raw-scale", "1", "--no-mean", "--quiet"]


@pytest.fixture(scope="module")
def qr_image(tmp_path_factory):
    """A 360x360 QR code (segno) with a quiet zone: the net's input is 384x384, so the
    photo is resized and the boxes have photo coordinates of their own."""
    segno = pytest.importorskip("segno")
    path = tmp_path_factory.mktemp("qr") / "qr.png"
    segno.make(QR_TEXT, error="h").save(str(path), scale=8, border=6)
    size = Image.open(path).size
    assert size == (360, 360)
    return path


def _parse_boxes(stdout: str) -> list[tuple[float, ...]]:
    out = []
    for line in stdout.splitlines():
        m = re.match(r"\s+#(\d+) (\S+) ([\d.]+) box \(([^)]*)\) in input pixels, \(([^)]*)\) in the photo's", line)
        if m:
            out.append((int(m.group(1)), float(m.group(3)), *map(float, m.group(4).split(",")),
                        *map(float, m.group(5).split(","))))
    return out


def test_run_prints_the_qr_code_box_in_input_and_photo_pixels(wechat, qr_image):
    r = run_cli("run", *wechat, "--input", qr_image, "--labels", "qrcode")
    assert r.stdout.startswith("detection_output [1, 1, ")          # the output lines come first, as before
    assert "detections (ssd, from 'detection_output'; score >= 0.5" in r.stdout
    boxes = _parse_boxes(r.stdout)
    assert boxes and boxes[0][0] == 0 and boxes[0][1] > 0.9, r.stdout
    _, _, *inp, px0, py0, px1, py1 = boxes[0]
    # the code's modules span photo pixels 48..312 (border 6 x 8 px): the box hugs them
    assert all(abs(a - b) < 16 for a, b in zip((px0, py0, px1, py1), (48, 48, 312, 312))), boxes[0]
    np.testing.assert_allclose(inp, np.array([px0, py0, px1, py1]) * 384 / 360, atol=0.15)   # printed to 0.1 px
    assert "qrcode" in r.stdout and "unit prior " in r.stdout and "logit" in r.stdout


def test_visualize_draws_clickable_boxes_and_traces_the_top_detection(wechat, qr_image, tmp_path):
    out = tmp_path / "report"
    run_cli("visualize", *wechat, "--image", qr_image, "--layers", "stage1", "--top", "2", "--mode", "deconvnet",
            "--detections", "1", "-o", out)
    html = (out / "index.html").read_text()
    assert '<a class="box" href="#qr-det-0">' in html and '<a id="qr-det-0"></a>' in html
    assert (out / "qr_detection_0.png").exists()
    with np.load(out / "results.npz") as z:
        boxes, scores = z["detections/qr/boxes"], z["detections/qr/scores"]
        assert boxes.shape[1] == 4 and scores[0] > 0.9
        np.testing.assert_allclose(z["detections/qr/0/box"], boxes[0], rtol=1e-6)
        unit = tuple(z["detections/qr/0/unit_index"])
        assert len(unit) == 4 and "detections/qr/0/extra/prior" in z.files
        assert z["detections/qr/0/projection/deconvnet"].shape == (1, 384, 384)
        assert float(z["detections/qr/0/mass_in_box"]) > 0.6       # the Grad-CAM lies mostly on the code
    title, shot = render_in_chromium(out / "index.html", "detector_report.png", tmp_path, height=1800)
    loaded, total = map(int, title.split()[1].split("/"))
    assert loaded == total and total >= 4, title
    pixels = np.asarray(Image.open(shot).convert("RGB"), np.float32)
    assert pixels.std() > 10


def test_occlusion_follows_one_detections_score(wechat, qr_image, tmp_path):
    out = tmp_path / "occ"
    run_cli("occlusion", *wechat, "--image", qr_image, "--detection", "0", "--size", "192", "--stride", "96",
            "-o", out)
    with np.load(out / "results.npz") as z:
        score, base = z["score"], float(z["unoccluded_score"])
        assert score.shape == (3, 3) and base > 0.9
        assert score.min() < base - 0.01       # hiding a quarter of the code lowers its detection's score
    html = (out / "index.html").read_text()
    assert "detection #0" in html
    import zfcaffe
    from zfcaffe.analyses.occlusion import run_detection
    from zfcaffe.preprocess import for_net
    net = zfcaffe.Net(str(wechat[0]), str(wechat[1]))
    with pytest.raises(zfcaffe.ZfcaffeError, match=r"--detection 7, but the net finds 1 detection\(s\) in it"):
        run_detection(net, str(qr_image), for_net(net, raw_scale=1, no_mean=True), 7, show_progress=False)


def test_served_detector_page_boxes_open_their_trace(wechat, qr_image, tmp_path):
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    from test_serve import start_server, stop_server
    browser = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
    if browser is None:
        unavailable("chromium is not installed (.ci/run installs Debian's chromium)")
    sync = pytest.importorskip("playwright.sync_api")
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(qr_image, images / "qr.png")
    proc, url = start_server([*wechat[:-1], "--images", images, "--detections", "1"])
    try:
        import httpx
        d = httpx.get(url + "api/detections", params={"image": "0"}, timeout=60).json()
        assert d["kind"] == "detector" and d["detections"][0]["score"] > 0.9 and (d["width"], d["height"]) == (384, 384)
        assert httpx.get(url + "api/detection", params={"image": "0", "k": "99"}, timeout=60).status_code == 404
        with sync.sync_playwright() as p:
            b = p.chromium.launch(executable_path=browser, args=["--no-sandbox"])
            try:
                page = b.new_page(viewport={"width": 1400, "height": 1100}, bypass_csp=True)
                errors, asked = [], []
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on("request", lambda r: asked.append(r.url) if "/api/detection?" in r.url else None)
                page.goto(url + "#image=0&layer=stage2")
                page.wait_for_selector("#overlay rect.box", timeout=30000)
                assert page.locator("#overlay rect.box").count() == len(d["detections"])
                page.wait_for_selector("#detection-figure", timeout=60000)    # the top one opens by itself
                asked.clear()
                page.evaluate("document.querySelector('#detection-figure').remove()")
                box = page.locator("#overlay rect.box").first.bounding_box()
                page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                page.wait_for_selector("#detection-figure", timeout=60000)
                assert asked and "k=0" in asked[0]
                assert "det=0" in page.evaluate("location.hash")
                assert "of its mass in the box" in page.locator("#dense-view").text_content()
                (ROOT / "artifacts").mkdir(exist_ok=True)
                page.screenshot(path=str(ROOT / "artifacts/serve_detector.png"), full_page=True)
                assert not errors, errors
            finally:
                b.close()
    finally:
        stop_server(proc)


# -- a segmenter: FCN-8s (slim, seeded weights) --------------------------------------------------------------
@pytest.fixture(scope="module")
def fcn(shared) -> list:
    d = shared / "oracle/fcn8s_slim"
    return [d / "deploy.prototxt", d / "weights.caffemodel", "--quiet"]


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    import matplotlib.cbook
    path = tmp_path_factory.mktemp("photo") / "hopper.jpg"
    Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).save(path)
    return path


def test_run_and_visualize_a_segmenter_show_its_class_map(fcn, photo, tmp_path):
    r = run_cli("run", *fcn, "--input", photo)
    lines = r.stdout.splitlines()
    assert lines[0].startswith("score [1, 21, 64, 96]")
    assert lines[1].startswith("class map 64x96 (from 'score'; PASCAL VOC names")
    shares = [float(m.group(1)) for m in (re.search(r": ([\d.]+)% of the pixels", s) for s in lines[2:]) if m]
    assert shares == sorted(shares[:-1], reverse=True) + shares[-1:] and 99 < sum(shares) < 101, r.stdout
    out = tmp_path / "seg"
    run_cli("visualize", *fcn, "--image", photo, "--layers", "conv1_1", "--top", "1", "--mode", "deconvnet",
            "--detections", "1", "-o", out)
    with np.load(out / "results.npz") as z:
        cmap, (label,) = z["detections/hopper/class_map"], z["detections/hopper/classes"]
        assert cmap.shape == (64, 96) and label != 0
        assert z[f"detections/hopper/class_{label}/gradcam"].shape == (64, 96)
    assert (out / "hopper_class_map.png").exists() and (out / f"hopper_class_{label}.png").exists()
    assert "Segmentation" in (out / "index.html").read_text()


def test_served_segmenter_answers_a_pixel_with_its_class(shared, photo):
    import zfcaffe
    from zfcaffe.preprocess import for_net
    from zfcaffe.serve.model import NotFound, ServedModel
    d = shared / "oracle/fcn8s_slim"
    net = zfcaffe.Net(str(d / "deploy.prototxt"), str(d / "weights.caffemodel"))
    model = ServedModel(net, for_net(net), [str(photo)])
    try:
        info = model.info()
        assert info["dense"]["kind"] == "segmentation"
        dense = model.dense_results("0")
        assert dense["overlay"].startswith("data:image/png") and (dense["width"], dense["height"]) == (96, 64)
        from zfcaffe.analyses.segmentation import class_map
        expect = int(class_map(net)[10, 20])
        s = model.segment("0", 20, 10, ["deconvnet"])
        assert s["label"] == expect and s["figure"].startswith("data:image/png") and 0 < s["share"] < 1
        assert s["name"] in [c["name"] for c in dense["classes"]]
        with pytest.raises(NotFound):
            model.segment("0", 96, 0, ["deconvnet"])
        with pytest.raises(NotFound):
            model.detection("0", 0, ["deconvnet"])
    finally:
        model.close()


def test_threshold_and_detections_options_are_checked_by_the_parser(capsys):
    from zfcaffe.cli import build_parser
    parser = build_parser()
    args = parser.parse_args(["visualize", "a.prototxt", "b.caffemodel", "--threshold", "0.25", "--detections", "2"])
    assert (args.threshold, args.detections) == (0.25, 2)
    assert parser.parse_args(["run", "a.prototxt", "b.caffemodel", "--input", "x.png"]).threshold is None
    for bad in (["--threshold", "1.5"], ["--threshold", "x"], ["--detections", "0"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["serve", "a.prototxt", "b.caffemodel", *bad])
        assert bad[1] in capsys.readouterr().err


@pytest.mark.parametrize("case", ["enet", "openpose"])
def test_visualize_a_census_segmenter_and_openpose_with_fillers(shared, photo, tmp_path, case):
    """The census ENet (filler weights) shows its class map and a class's Grad-CAM;
    OpenPose's COCO net (filler weights) shows its heatmaps with peaks and a keypoint's
    trace, in visualize's report."""
    import zfcaffe
    from zfcaffe.preprocess import for_net
    from zfcaffe.recipes.visualize import visualize
    if case == "enet":
        net = zfcaffe.Net(str(shared / "census/enet/enet_deploy_final.prototxt"),
                          input_shapes={"data": (1, 3, 64, 128)}, allow_missing_weights=True)
        w = net.params["deconv6_0_0"][0]      # no filler in the file (Caffe's zeros would make every score 0)
        w.data = np.random.default_rng(1).normal(0, 0.1, w.shape).astype(np.float32)
        layer, threshold, section = "conv1_0_0", None, "Segmentation"
    else:
        net = zfcaffe.Net(str(shared / "census/openpose_coco/pose_deploy_linevec.prototxt"),
                          input_shapes={"image": (1, 3, 96, 96)}, allow_missing_weights=True)
        layer, threshold, section = "conv1_1", 0.0, "Keypoints"   # filler heatmaps are tiny: every peak shown
    out = tmp_path / case
    visualize(net, [str(photo)], str(out), layers=[layer], top=1, mode="deconvnet", preprocess=for_net(net),
              progress=False, threshold=threshold, detections=1)
    page = (out / "index.html").read_text()
    assert section in page
    with np.load(out / "results.npz") as z:
        keys = [k for k in z.files if k.startswith("detections/hopper/")]
        if case == "enet":
            assert z["detections/hopper/class_map"].shape == (64, 128)
            assert any(k.endswith("/gradcam") for k in keys)
        else:
            assert any(k.endswith("/gradcam") for k in keys), keys
    pictures = {p.name for p in out.glob("hopper_*.png")}
    assert ("hopper_class_map.png" if case == "enet" else "hopper_keypoints.png") in pictures, pictures
