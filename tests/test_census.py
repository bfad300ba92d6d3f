"""Every prototxt of ../shared/census (fork-era models as posted) loads, `inspect` prints
its table, a forward pass with filler weights runs, and the exported ONNX file reruns
equal in ONNX Runtime on its own (whatever it leaves out, named)."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import zfcaffe
from conftest import SHARED, run_cli
from zfcaffe.inspect import format_table, summarize

#: smaller inputs where the net allows (the suite's time), and the inputs files leave open
INPUTS = {
    "ctpn/deploy.prototxt": {"data": (1, 3, 112, 160), "im_info": (1, 3)},
    "densenet121/DenseNet_121.prototxt": {"data": (1, 3, 96, 96)},
    "segnet/segnet_inference.prototxt": {"data": (1, 3, 360, 480)},      # its Upsample sizes are fixed
}
#: nets whose file fixes a large input (PSPNet's pyramid, SegNet's Upsample sizes): 10-20 s a forward pass
#: on 2 cores, so here they load, print and export; their families' tests run them at small sizes and the
#: fork oracles (pspnet_slim, segnet_slim) hold the same layers end to end
FORWARD_ELSEWHERE = {
    "pspnet50_ade20k/pspnet50_ADE20K_473.prototxt": "tests/test_layers_pspnet.py, oracle pspnet_slim",
    "segnet/segnet_inference.prototxt": "tests/test_layers_segnet.py (a 64x96 copy), oracle segnet_slim",
    "enet/enet_deploy_final.prototxt": {"data": (1, 3, 128, 256)},
    "faster_rcnn_vgg16/test.prototxt": {"data": (1, 3, 160, 224), "im_info": (1, 3)},
    "mobilenet_yolov3_lite_tusimple/mobilenet_yolov3_lite_deploy.prototxt": {"data": (1, 3, 256, 256)},
    "openpose_coco/pose_deploy_linevec.prototxt": {"image": (1, 3, 96, 128)},
    "rfcn_resnet50/test_agnostic.prototxt": {"data": (1, 3, 160, 224), "im_info": (1, 3)},
    "yolov2_darknet19_eric612/darknet19_deploy.prototxt": {"data": (1, 3, 160, 160)},
    "yolov3_chenyingpeng/mobilenet_v2_yolov3.prototxt": {"data": (1, 3, 160, 160)},
    "yolov3_chenyingpeng/yolov3_416x416.prototxt": {"data": (1, 3, 160, 160)},
    "yolov3_darknet_eric612/yolov3.prototxt": {"data": (1, 3, 160, 160)},
}


def census_files() -> list[str]:
    d = SHARED / "census"
    if not d.exists():
        return ["(no census)"]
    return sorted(str(p.relative_to(d)) for p in d.glob("*/*.prototxt"))



@pytest.mark.parametrize("name", census_files())
def test_census_net_loads_runs_and_exports(shared, tmp_path, name):
    path = shared / "census" / name
    # the real weights where the folder has them (the WeChat nets, the TuSimple lane net), else Caffe's fillers
    weights = next(iter(sorted(path.parent.glob(f"{path.stem.split('_deploy')[0]}*.caffemodel"))), None)
    net = zfcaffe.Net(str(path), weights and str(weights), input_shapes=INPUTS.get(name))
    for layer in net.layers:
        # Caffe fills BatchNorm's statistics with 0: x / sqrt(eps) at every layer, which a deep
        # net overflows to inf; unit variance keeps the values finite to compare
        if layer.type == "BatchNorm":
            net.params[layer.name][1].data = np.ones(layer.blobs[1].shape, np.float32)
            net.params[layer.name][2].data = np.ones(layer.blobs[2].shape, np.float32)
    table = format_table(summarize(net.graph))
    assert "total:" in table and all(l.name in table for l in net.layers[:3])
    if name in FORWARD_ELSEWHERE:
        net.to_onnx(str(tmp_path / "net.onnx"))
        ort.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
        return
    rng = np.random.default_rng(0)
    feeds = {}
    for key, shape in net.graph.inputs.items():
        if key == "im_info":
            feeds[key] = np.array([[shape_h, shape_w, 1.0] for shape_h, shape_w in
                                   [net.graph.inputs["data"][2:]]], np.float32)
        else:
            feeds[key] = rng.uniform(-1, 1, size=shape).astype(np.float32) * 5
    out = net.forward(**feeds)
    assert out and all(np.isfinite(v).all() for v in out.values()), name

    onnx_path = tmp_path / "net.onnx"
    net.to_onnx(str(onnx_path))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in sess.get_outputs()],
                   sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()})))
    cut = {n for n, _ in net.export_cut}
    assert got, f"{name}: the export kept no output (left out: {net.export_cut})"
    for blob, value in got.items():
        key = net.graph.blob_of.get(blob, blob) if blob not in net.graph.shapes else blob
        ref = net.layer_outputs[key]
        if net.graph.producer(key).host:
            # detections: filler weights give tied scores, whose order ONNX's NonMaxSuppression
            # may break otherwise (the oracle tests hold real detections row by row)
            assert value.ndim == ref.ndim and value.shape[-1] == ref.shape[-1], blob
            continue
        assert value.shape == ref.shape, (blob, value.shape, ref.shape)
        scale = max(float(np.abs(ref).max()), 1e-30)
        assert float(np.abs(value - ref).max()) / scale <= 1e-4, blob
    if not cut:
        assert set(got) == set(net.outputs)


def test_inspect_verb_prints_a_census_table(shared):
    r = run_cli("inspect", shared / "census/shufflenet/shufflenet_v2_1x_deploy.prototxt")
    assert "ShuffleChannel" in r.stdout and "total:" in r.stdout
