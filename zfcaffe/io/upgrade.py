"""Bring V0 and V1 nets to today's format, the way Caffe's UpgradeNetAsNeeded does.

V0 (before March 2014): `layers { layer { type: "conv" kernelsize ... } bottom top }`.
V1 (2014): `layers { type: CONVOLUTION ... }` with enum types and blobs_lr.
Both also used `input:` + `input_dim:`/`input_shape` instead of an Input layer,
and data layers carried scale/mean/crop/mirror in their own parameters.
The same functions upgrade a binary caffemodel's layer list.
"""
from __future__ import annotations

from .. import caffe_pb2
from ..errors import ZfcaffeError

V1 = caffe_pb2.V1LayerParameter

V1_TYPE_NAMES = {
    V1.NONE: "", V1.ABSVAL: "AbsVal", V1.ACCURACY: "Accuracy", V1.ARGMAX: "ArgMax",
    V1.BNLL: "BNLL", V1.CONCAT: "Concat", V1.CONTRASTIVE_LOSS: "ContrastiveLoss",
    V1.CONVOLUTION: "Convolution", V1.DECONVOLUTION: "Deconvolution", V1.DATA: "Data",
    V1.DROPOUT: "Dropout", V1.DUMMY_DATA: "DummyData", V1.EUCLIDEAN_LOSS: "EuclideanLoss",
    V1.ELTWISE: "Eltwise", V1.EXP: "Exp", V1.FLATTEN: "Flatten", V1.HDF5_DATA: "HDF5Data",
    V1.HDF5_OUTPUT: "HDF5Output", V1.HINGE_LOSS: "HingeLoss", V1.IM2COL: "Im2col",
    V1.IMAGE_DATA: "ImageData", V1.INFOGAIN_LOSS: "InfogainLoss",
    V1.INNER_PRODUCT: "InnerProduct", V1.LRN: "LRN", V1.MEMORY_DATA: "MemoryData",
    V1.MULTINOMIAL_LOGISTIC_LOSS: "MultinomialLogisticLoss", V1.MVN: "MVN",
    V1.POOLING: "Pooling", V1.POWER: "Power", V1.RELU: "ReLU", V1.SIGMOID: "Sigmoid",
    V1.SIGMOID_CROSS_ENTROPY_LOSS: "SigmoidCrossEntropyLoss", V1.SILENCE: "Silence",
    V1.SOFTMAX: "Softmax", V1.SOFTMAX_LOSS: "SoftmaxWithLoss", V1.SPLIT: "Split",
    V1.SLICE: "Slice", V1.TANH: "TanH", V1.WINDOW_DATA: "WindowData",
    V1.THRESHOLD: "Threshold",
}

V0_TYPES = {
    "accuracy": V1.ACCURACY, "bnll": V1.BNLL, "concat": V1.CONCAT, "conv": V1.CONVOLUTION,
    "data": V1.DATA, "dropout": V1.DROPOUT, "euclidean_loss": V1.EUCLIDEAN_LOSS,
    "flatten": V1.FLATTEN, "hdf5_data": V1.HDF5_DATA, "hdf5_output": V1.HDF5_OUTPUT,
    "im2col": V1.IM2COL, "images": V1.IMAGE_DATA, "infogain_loss": V1.INFOGAIN_LOSS,
    "innerproduct": V1.INNER_PRODUCT, "lrn": V1.LRN,
    "multinomial_logistic_loss": V1.MULTINOMIAL_LOGISTIC_LOSS, "pool": V1.POOLING,
    "relu": V1.RELU, "sigmoid": V1.SIGMOID, "softmax": V1.SOFTMAX,
    "softmax_loss": V1.SOFTMAX_LOSS, "split": V1.SPLIT, "tanh": V1.TANH,
    "window_data": V1.WINDOW_DATA,
}

# V1 fields that hold a parameter message of the same type in LayerParameter.
_SHARED_PARAM_FIELDS = [
    f.name for f in V1.DESCRIPTOR.fields
    if f.name.endswith("_param") and f.name in caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
]


def net_format(net: caffe_pb2.NetParameter) -> str:
    if any(l.HasField("layer") for l in net.layers):
        return "V0"
    if len(net.layers):
        return "V1"
    return "V2"


def upgrade_net(net: caffe_pb2.NetParameter, lines: list[int] | None = None,
                where: str = "") -> tuple[caffe_pb2.NetParameter, list[str]]:
    """Upgrade `net` in place to V2; returns it and notes on what was changed.

    `lines` (one source line per layer) is kept aligned with the layer list.
    """
    notes: list[str] = []
    fmt = net_format(net)
    if fmt == "V0":
        _upgrade_v0_padding(net, lines)
        for l in net.layers:
            _upgrade_v0_layer(l, where)
        notes.append("upgraded V0 layers (2014 format) to V1")
    if fmt in ("V0", "V1"):
        if len(net.layer):
            raise ZfcaffeError(f"{where}: mixes V1 'layers' and V2 'layer' fields; expected one of them")
        for v1 in net.layers:
            net.layer.add().CopyFrom(_v1_to_v2(v1, where))
        net.ClearField("layers")
        notes.append(f"upgraded {fmt} layer types (enums) to V2")
    if _upgrade_data_transformation(net):
        notes.append("moved data-layer scale/mean/crop/mirror into transform_param")
    if len(net.input):
        _upgrade_net_input(net, lines, where)
        notes.append("turned input/input_dim fields into an Input layer")
    return net, notes


def _v1_to_v2(v1: caffe_pb2.V1LayerParameter, where: str) -> caffe_pb2.LayerParameter:
    lp = caffe_pb2.LayerParameter()
    lp.name = v1.name
    lp.type = V1_TYPE_NAMES.get(v1.type, "")
    if v1.type not in V1_TYPE_NAMES:
        raise ZfcaffeError(f"{where}: V1 layer '{v1.name}' has unknown type enum {v1.type}")
    lp.bottom.extend(v1.bottom)
    lp.top.extend(v1.top)
    for b in v1.blobs:
        lp.blobs.add().CopyFrom(b)
    n_param = max(len(v1.param), len(v1.blob_share_mode), len(v1.blobs_lr), len(v1.weight_decay))
    for i in range(n_param):
        ps = lp.param.add()
        if i < len(v1.param):
            ps.name = v1.param[i]
        if i < len(v1.blob_share_mode):
            ps.share_mode = v1.blob_share_mode[i]
        if i < len(v1.blobs_lr):
            ps.lr_mult = v1.blobs_lr[i]
        if i < len(v1.weight_decay):
            ps.decay_mult = v1.weight_decay[i]
    lp.loss_weight.extend(v1.loss_weight)
    for r in v1.include:
        lp.include.add().CopyFrom(r)
    for r in v1.exclude:
        lp.exclude.add().CopyFrom(r)
    for f in _SHARED_PARAM_FIELDS:
        if v1.HasField(f):
            getattr(lp, f).CopyFrom(getattr(v1, f))
    return lp


def _upgrade_v0_padding(net: caffe_pb2.NetParameter, lines: list[int] | None) -> None:
    """V0 'padding' layers become the pad of the convolution that reads them."""
    pad_of = {}  # top blob of a padding layer -> (its bottom, pad)
    keep = []
    for i, l in enumerate(net.layers):
        v0 = l.layer
        if v0.type == "padding":
            pad_of[l.top[0]] = (l.bottom[0], v0.pad)
            continue
        for j, b in enumerate(l.bottom):
            if b in pad_of:
                src, pad = pad_of[b]
                l.bottom[j] = src
                l.layer.pad = pad
        keep.append(i)
    if len(keep) != len(net.layers):
        kept = [net.layers[i] for i in keep]
        kept_copies = [caffe_pb2.V1LayerParameter() for _ in kept]
        for c, k in zip(kept_copies, kept):
            c.CopyFrom(k)
        net.ClearField("layers")
        net.layers.extend(kept_copies)
        if lines is not None:
            lines[:] = [lines[i] for i in keep]


def _upgrade_v0_layer(l: caffe_pb2.V1LayerParameter, where: str) -> None:
    v0 = l.layer
    t = v0.type
    if t not in V0_TYPES:
        raise ZfcaffeError(f"{where}: V0 layer '{v0.name}' has unknown type '{t}'")
    l.name = v0.name
    l.type = V0_TYPES[t]
    for b in v0.blobs:
        l.blobs.add().CopyFrom(b)
    l.blobs_lr.extend(v0.blobs_lr)
    l.weight_decay.extend(v0.weight_decay)
    T = V1
    has = v0.HasField
    if l.type in (T.CONVOLUTION, T.INNER_PRODUCT):
        p = l.convolution_param if l.type == T.CONVOLUTION else l.inner_product_param
        if has("num_output"):
            p.num_output = v0.num_output
        if has("biasterm"):
            p.bias_term = v0.biasterm
        if has("weight_filler"):
            p.weight_filler.CopyFrom(v0.weight_filler)
        if has("bias_filler"):
            p.bias_filler.CopyFrom(v0.bias_filler)
    if l.type == T.CONVOLUTION:
        p = l.convolution_param
        if has("pad"):
            p.pad.append(v0.pad)
        if has("kernelsize"):
            p.kernel_size.append(v0.kernelsize)
        if has("group"):
            p.group = v0.group
        if has("stride"):
            p.stride.append(v0.stride)
    elif l.type == T.POOLING:
        p = l.pooling_param
        if has("pad"):
            p.pad = v0.pad
        if has("kernelsize"):
            p.kernel_size = v0.kernelsize
        if has("stride"):
            p.stride = v0.stride
        if has("pool"):
            p.pool = v0.pool
    elif l.type == T.DROPOUT and has("dropout_ratio"):
        l.dropout_param.dropout_ratio = v0.dropout_ratio
    elif l.type == T.LRN:
        p = l.lrn_param
        for f in ("local_size", "alpha", "beta", "k"):
            if has(f):
                setattr(p, f, getattr(v0, f))
    elif l.type == T.CONCAT and has("concat_dim"):
        l.concat_param.concat_dim = v0.concat_dim
    elif l.type in (T.DATA, T.IMAGE_DATA, T.WINDOW_DATA, T.HDF5_DATA):
        dst = {T.DATA: l.data_param, T.IMAGE_DATA: l.image_data_param,
               T.WINDOW_DATA: l.window_data_param, T.HDF5_DATA: l.hdf5_data_param}[l.type]
        if has("source"):
            dst.source = v0.source
        if has("batchsize"):
            dst.batch_size = v0.batchsize
        tp = l.transform_param
        if has("scale"):
            tp.scale = v0.scale
        if has("meanfile"):
            tp.mean_file = v0.meanfile
        if has("cropsize"):
            tp.crop_size = v0.cropsize
        if has("mirror"):
            tp.mirror = v0.mirror
        if l.type == T.IMAGE_DATA:
            if has("new_height"):
                dst.new_height = v0.new_height
            if has("new_width"):
                dst.new_width = v0.new_width
            if has("shuffle_images"):
                dst.shuffle = v0.shuffle_images
        if l.type == T.WINDOW_DATA:
            for a, b in (("det_fg_threshold", "fg_threshold"), ("det_bg_threshold", "bg_threshold"),
                         ("det_fg_fraction", "fg_fraction"), ("det_context_pad", "context_pad"),
                         ("det_crop_mode", "crop_mode")):
                if has(a):
                    setattr(dst, b, getattr(v0, a))
    elif l.type == T.HDF5_OUTPUT and has("hdf5_output_param"):
        l.hdf5_output_param.CopyFrom(v0.hdf5_output_param)
    l.ClearField("layer")


def _upgrade_data_transformation(net: caffe_pb2.NetParameter) -> bool:
    """Old data layers kept scale/mean_file/crop_size/mirror in their own params."""
    changed = False
    for lp in net.layer:
        for field in ("data_param", "image_data_param", "window_data_param"):
            if not lp.HasField(field):
                continue
            src = getattr(lp, field)
            for name in ("scale", "mean_file", "crop_size", "mirror"):
                if src.HasField(name):
                    setattr(lp.transform_param, name, getattr(src, name))
                    src.ClearField(name)
                    changed = True
    return changed


def _upgrade_net_input(net: caffe_pb2.NetParameter, lines: list[int] | None, where: str) -> None:
    """`input:` + `input_dim:`/`input_shape` become an Input layer named "input"."""
    n = len(net.input)
    if len(net.input_shape) not in (0, n) and len(net.input_shape) != 1:
        raise ZfcaffeError(f"{where}: {n} inputs but {len(net.input_shape)} input_shape entries")
    if len(net.input_dim) and len(net.input_dim) != 4 * n:
        raise ZfcaffeError(
            f"{where}: {n} inputs need {4 * n} input_dim values, found {len(net.input_dim)}")
    lp = caffe_pb2.LayerParameter(name="input", type="Input")
    for i, top in enumerate(net.input):
        lp.top.append(top)
        shape = lp.input_param.shape.add()
        if len(net.input_shape):
            shape.CopyFrom(net.input_shape[i if len(net.input_shape) > 1 else 0])
        elif len(net.input_dim):
            shape.dim.extend(net.input_dim[4 * i: 4 * i + 4])
    layers = [caffe_pb2.LayerParameter() for _ in net.layer]
    for c, l in zip(layers, net.layer):
        c.CopyFrom(l)
    net.ClearField("layer")
    net.layer.append(lp)
    net.layer.extend(layers)
    net.ClearField("input")
    net.ClearField("input_dim")
    net.ClearField("input_shape")
    if lines is not None:
        lines.insert(0, 0)
