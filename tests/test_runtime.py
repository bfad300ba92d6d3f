"""The runtime's process-wide choices: when ONNX Runtime's threads may spin."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

CHECK = "from zfcaffe.runtime.session import threads_may_spin; print(threads_may_spin(), os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"


def _run(first: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    return subprocess.run([sys.executable, "-c", f"import os; {first}; {CHECK}"], env=env, capture_output=True,
                          text=True, check=True).stdout.split()


@pytest.mark.skipif("openblas" not in str(getattr(np.__config__, "CONFIG", {}).get("Build Dependencies", {})
                                           .get("blas", {}).get("name", "")).lower(),
                    reason="NumPy without OpenBLAS (or too old to say): ONNX Runtime's threads never spin")
def test_threads_spin_only_where_blas_threads_sleep():
    # imported before NumPy (as the command line does): OpenBLAS is asked to let its threads sleep at once
    assert _run("import zfcaffe; import numpy") == ["True", "4"]
    # NumPy first, nothing asked: OpenBLAS's threads spin after each call, so ONNX Runtime's must not
    assert _run("import numpy; import zfcaffe") == ["False", "None"]


# -- convert --dynamic: what the probe measures ------------------------------------------------------------
def test_dynamic_probe_compares_host_outputs_by_shape(build):
    """A YOLOv3 head: on the probe's random logits the file and zfcaffe's host layer keep one box
    apart (a near-threshold score), so the row count of the detections is compared by shape on
    its fixed axes; the host layer's inputs are still compared value by value."""
    from conftest import layer_text as L
    from test_layers_yolo import V3_PARAMS

    from zfcaffe.runtime.dynamic import free_axes
    text = (L("ca", "Convolution", "a", "convolution_param { num_output: 27 kernel_size: 1 }")
            + L("cb", "Convolution", "b", "convolution_param { num_output: 27 kernel_size: 1 }")
            + L("det", "Yolov3DetectionOutput", ["ca", "cb"], V3_PARAMS))
    net = build(text, {"a": (1, 27, 3, 4), "b": (1, 27, 6, 8)})
    assert free_axes(net) == ("batch", "spatial")
    assert net.graph.inputs == {"a": (1, 27, 3, 4), "b": (1, 27, 6, 8)}       # the net is back at its shapes


def test_dynamic_probe_feeds_valid_rois(build, tmp_path):
    """A Fast R-CNN-like net (rois input R x 5): the probe's ROIs name images of the probe's batch,
    inside them; random ones named images that are not there, and no axis was found free."""
    from conftest import layer_text as L

    from zfcaffe.runtime.dynamic import _probe_inputs, _probe_shapes, roi_inputs
    text = (L("c", "Convolution", "data", "convolution_param { num_output: 2 kernel_size: 1 }")
            + L("roi", "ROIPooling", ["c", "rois"], "roi_pooling_param { pooled_h: 2 pooled_w: 2 spatial_scale: 0.5 }")
            + L("fc", "InnerProduct", "roi", "inner_product_param { num_output: 3 }"))
    net = build(text, {"data": (1, 2, 12, 14), "rois": (4, 5)})
    assert roi_inputs(net.graph) == {"rois"}
    probe = _probe_shapes(dict(net.graph.inputs), ("batch", "spatial"), {"rois"})
    assert probe == {"data": (2, 2, 19, 27), "rois": (5, 5)}
    rois = _probe_inputs(probe, np.random.default_rng(0), {"rois"})["rois"]
    assert set(rois[:, 0]) <= {0, 1} and (rois[:, 1] <= rois[:, 3]).all() and (rois[:, 2] <= rois[:, 4]).all()
    assert rois[:, 1:].min() >= 0 and rois[:, [1, 3]].max() < 27 and rois[:, [2, 4]].max() < 19
    assert net.to_onnx(str(tmp_path / "roi.onnx"), dynamic=True) == ("batch", "spatial")
