"""Grad-CAM (Selvaraju et al.): a class score's gradient at a spatial layer, averaged
over each feature map, weights the maps; their rectified sum shows where the class
is. CAM (Zhou et al.) for nets that end in global pooling and a classifier: the
classifier's weights are those weights. Guided Grad-CAM: the map (upsampled)
times guided backprop."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import ZfcaffeError
from .gradients import gradients, one_hot, record_with_label, score_key


@dataclasses.dataclass
class GradCam:
    layer: str
    label: int
    method: str                    # "Grad-CAM" or "CAM"
    weights: np.ndarray            # (C,) the feature maps' weights
    cam: np.ndarray                # (h, w) at the layer's resolution, rectified
    heatmap: np.ndarray            # (H, W) upsampled to the input, in [0, 1]
    guided: np.ndarray | None      # (C, H, W) guided Grad-CAM, when asked for

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"cam": self.cam, "heatmap": self.heatmap, "weights": self.weights, "label": np.array(self.label)}
        if self.guided is not None:
            out["guided_gradcam"] = self.guided
        return out


def last_spatial_key(net, head) -> str:
    """The last blob with a spatial extent (> 1 x 1) that feeds the class scores."""
    below = score_key(net, head)
    order = [k for l in net.graph.compute_layers for k in l.tops]
    spatial = [k for k in order[:order.index(below)]
               if len(net.graph.shapes[k]) == 4 and min(net.graph.shapes[k][2:]) > 1]
    if not spatial:
        raise ZfcaffeError(f"{net.graph.path}: no spatial layer below the class output; expected a convolutional net")
    return spatial[-1]


def cam_weights(net, head, key: str) -> np.ndarray | None:
    """The classifier's weights when the net ends in global average pooling of `key`
    and one InnerProduct (or 1x1 convolution): CAM's weights, (classes, C)."""
    g = net.graph
    consumers = [l for l in g.compute_layers if key in l.bottoms]
    pool = consumers[0] if len(consumers) == 1 else None
    h, w = g.shapes[key][2:]
    if pool is None or pool.type != "Pooling" or pool.method != 1 or any(pool.pad) or \
            not (pool.global_pooling or tuple(pool.kernel) == (h, w)):    # an average over the whole map
        return None
    pooled = consumers[0].tops[0]
    after = [l for l in g.compute_layers if pooled in l.bottoms]
    if len(after) != 1 or after[0].type not in ("InnerProduct", "Convolution") or \
            after[0].tops[0] != score_key(net, head) or not after[0].blobs:
        return None
    w = after[0].blobs[0]
    return w.reshape(w.shape[0], -1) if w.reshape(w.shape[0], -1).shape[1] == g.shapes[key][1] else None


def upsample(cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling of a small map to the input's size (PIL)."""
    from PIL import Image
    return np.asarray(Image.fromarray(cam.astype(np.float32), "F").resize((width, height), Image.BILINEAR))


def cam_and_heatmap(weights: np.ndarray, act: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM's map from the maps' weights (C,) and the maps (C, h, w): their rectified
    weighted sum, and that sum upsampled to (height, width) and scaled to [0, 1]."""
    cam = np.maximum(np.tensordot(weights, act, axes=1), 0)
    heat = upsample(cam, height, width)
    return cam, heat / heat.max() if heat.max() > 0 else heat


def gradcam(net, x: np.ndarray, head, label: int | None = None, layer: str | None = None,
            method: str = "auto", guided: bool = True, smooth: int = 0, seed: int = 0) -> GradCam:
    """Grad-CAM (or CAM, method "cam"; "auto": CAM where the net allows, at the last
    spatial layer) of one input x (1, C, H, W) for the top class or `label`."""
    from ..analyses.common import shown_key
    g = net.graph
    key = shown_key(net, layer) if layer else last_spatial_key(net, head)   # after its in-place layers
    if len(g.shapes[key]) != 4:
        raise ZfcaffeError(f"{g.path}: layer '{layer}' has shape {list(g.shapes[key])}; Grad-CAM needs a "
                           "spatial layer (N x C x H x W)")
    skey = score_key(net, head)
    label = record_with_label(net, x, head, label)
    act = net.layer_outputs[key][0].astype(np.float64)
    fixed = cam_weights(net, head, key) if method in ("auto", "cam") else None
    if method == "cam" and fixed is None:
        raise ZfcaffeError(f"{g.path}: CAM needs a net that ends in global average pooling of '{key}' and one "
                           "classifier layer; use Grad-CAM")
    seeds = lambda n: {skey: one_hot(n.layer_outputs[skey].shape, label)}  # noqa: E731
    if fixed is not None:
        weights, name = fixed[label].astype(np.float64), "CAM"
    else:
        grad = gradients(net, x, seeds, "backprop", keys=[key], smooth=smooth, seed=seed, recorded=True)[key][0]
        weights, name = grad.astype(np.float64).mean(axis=(1, 2)), "Grad-CAM"
    cam, heat = cam_and_heatmap(weights, act, *x.shape[2:])
    guided_map = None
    if guided:
        gb = gradients(net, x, seeds, "guided", smooth=smooth, seed=seed, recorded=True)[net.inputs[0]][0]
        guided_map = gb * heat[None]
    return GradCam(key, label, name, weights, cam, heat, guided_map)
