"""One detection's projection against a projection of a classifier unit of the same depth,
measured side by side in one run. Target: <= 1.5x.

    python benchmarks/detection_projection.py [--min-time 2] [--mode deconvnet]

Detection: MobileNet-SSD (../shared/oracle_ssd/mobilenet_ssd_slim: the chuanqi305 deploy, trunk
/4, its weights and 300x300 photo), recorded once; per call the detections are read and traced
(zfcaffe.analyses.detections.detections: the rows' priors walked back through Softmax /
Reshape / Concat / Flatten / Permute to the head conv), then the strongest detection whose unit
is in conv11_mbox_conf is projected (net.project_many from that unit). conv11_mbox_conf is the
24th convolution (conv0, conv1/dw, conv1, ..., conv11/dw, conv11, then the head).
Peers, at the same depth (the 24th convolution):
- "same net": a unit of conv12/dw of the same recorded SSD (its MobileNet v1 trunk);
- "classifier": MobileNet v1 as a classifier (../shared/models/mobilenet_shicai, full width,
  Caffe's fillers, 300x300), a unit of conv5_6/dw (the same place in shicai's naming).
The ratio against the same net is the target (same architecture and widths); the full-width
classifier is printed for scale.
"""
from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import zfcaffe  # noqa: E402  (before NumPy, as the command line imports it)

import numpy as np  # noqa: E402

from common import race, table  # noqa: E402
from zfcaffe.analyses import detections as D  # noqa: E402

SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared"


def strongest(net, key):
    act = net.layer_outputs[key][0]
    return (0,) + tuple(int(i) for i in np.unravel_index(act.argmax(), act.shape))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--min-time", type=float, default=2.0)
    ap.add_argument("--mode", default="deconvnet")
    args = ap.parse_args()
    case = SHARED / "oracle_ssd/mobilenet_ssd_slim"
    ssd = zfcaffe.Net(str(case / "deploy.prototxt"), str(case / "weights.caffemodel"))
    x = np.load(case / "input.npy")
    ssd.forward(data=x)
    dets = D.detections(ssd, 0.05)
    det = next(d for d in dets if d.unit.layer == "conv11_mbox_conf")
    index = det.index
    trunk = strongest(ssd, "conv12/dw")

    cls = zfcaffe.Net(str(SHARED / "models/mobilenet_shicai/mobilenet_deploy.prototxt"),
                      input_shapes={"data": (1, 3, 300, 300)})
    cls.forward(data=np.random.default_rng(0).standard_normal((1, 3, 300, 300)).astype(np.float32))
    cls_unit = strongest(cls, "conv5_6/dw")

    def detection():
        d = D.detections(ssd, 0.05)[index]
        return ssd.project_many(d.unit.key, [d.unit.index], args.mode)

    def same_net():
        return ssd.project_many("conv12/dw", [trunk], args.mode)

    def classifier():
        return cls.project_many("conv5_6/dw", [cls_unit], args.mode)

    def trace_only():
        return D.detections(ssd, 0.05)

    rates = race({"detection": detection, "same net": same_net, "classifier": classifier, "trace": trace_only},
                 1, args.min_time)
    ms = {k: 1000 / v for k, v in rates.items()}
    print(f"MobileNet-SSD detection #{index} ({det.name} {det.score:.3f}): {det.unit.what}; mode {args.mode}")
    print(table(["projection", "ms", "detection / this"], [
        ["detection (trace + project_many)", f"{ms['detection']:.1f}", "1.00"],
        ["  of which the trace (all 100 rows)", f"{ms['trace']:.2f}", ""],
        ["same net, trunk conv12/dw", f"{ms['same net']:.1f}", f"{ms['detection'] / ms['same net']:.2f}"],
        ["MobileNet v1 classifier conv5_6/dw", f"{ms['classifier']:.1f}", f"{ms['detection'] / ms['classifier']:.2f}"],
    ]))
    ratio = ms["detection"] / ms["same net"]
    print(f"ratio against a classifier unit of the same depth (same net): {ratio:.2f}x "
          f"(target <= 1.5x: {'met' if ratio <= 1.5 else 'MISSED'})")


if __name__ == "__main__":
    main()
