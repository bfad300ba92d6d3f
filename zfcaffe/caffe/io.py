"""pycaffe's caffe.io: the Transformer, image loading and resizing, oversampling, and
the BlobProto / Datum conversions, with pycaffe's names, argument orders, layouts and
dtypes (images are H x W x C float32 in [0, 1]), and pycaffe's numbers: images are
decoded by Pillow (as imageio does for scikit-image), resized by scikit-image and SciPy
(a dependency of this layer only: the `pycaffe` extra), equal to real pycaffe's
(tests/test_pycaffe.py checks ../shared/pycaffe_io)."""
from __future__ import annotations

import numpy as np

from .. import caffe_pb2
from ..errors import ZfcaffeError


# -- BlobProto and Datum --------------------------------------------------------------------------
def blobproto_to_array(blob, return_diff: bool = False) -> np.ndarray:
    """A BlobProto as an array (legacy num/channels/height/width or BlobShape)."""
    data = np.array(blob.diff if return_diff else blob.data)
    if blob.HasField("num") or blob.HasField("channels") or blob.HasField("height") or blob.HasField("width"):
        return data.reshape(blob.num, blob.channels, blob.height, blob.width)
    return data.reshape(blob.shape.dim)


def array_to_blobproto(arr, diff=None):
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(np.shape(arr))
    blob.data.extend(np.asarray(arr).astype(float).flat)
    if diff is not None:
        blob.diff.extend(np.asarray(diff).astype(float).flat)
    return blob


def arraylist_to_blobprotovector_str(arraylist) -> bytes:
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend([array_to_blobproto(arr) for arr in arraylist])
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(text: bytes) -> list[np.ndarray]:
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(text)
    return [blobproto_to_array(blob) for blob in vec.blobs]


def array_to_datum(arr, label=None):
    """A C x H x W array as a Datum: uint8 as bytes, anything else as float_data."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ValueError("Incorrect array shape.")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = arr.shape
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(arr.astype(float).flat)
    if label is not None:
        datum.label = label
    return datum


def datum_to_array(datum) -> np.ndarray:
    if len(datum.data):
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(datum.channels, datum.height, datum.width)
    return np.array(datum.float_data).astype(float).reshape(datum.channels, datum.height, datum.width)


# -- images ----------------------------------------------------------------------------------------------
# pycaffe's image numbers are scikit-image's (and SciPy's); zfcaffe.preprocess holds them
# (the CLI's --resize pycaffe uses them too) and loads those libraries only when used.
def load_image(filename: str, color: bool = True) -> np.ndarray:
    """H x W x 3 (or x 1 with color=False) float32 in [0, 1], as pycaffe's load_image
    gives it: skimage's img_as_float of the decoded pixels (uint8 / 255); grey images
    tiled to 3 channels; with colour, alpha is dropped (the RGB under transparent pixels
    kept as stored); color=False is skimage's as_gray: RGBA composited onto white
    (rgba2rgb), then rgb2gray (0.2125 R + 0.7154 G + 0.0721 B). (Real pycaffe's call,
    imread(as_grey=...), fails on scikit-image >= 0.19; these are the numbers of its
    one-keyword fix, as_gray.)"""
    from ..preprocess import load_image_pycaffe
    return load_image_pycaffe(filename, color)


def resize_image(im: np.ndarray, new_dims, interp_order: int = 1) -> np.ndarray:
    """Resize an H x W x K image to new_dims (height, width), as pycaffe does: for 1 or
    3 channels, min-max normalise, skimage.transform.resize(order=interp_order,
    mode="constant": zero-padded borders, anti-aliased when any axis shrinks, clipped
    to the input's range), de-normalise; a constant image stays constant; any other
    channel count through scipy.ndimage.zoom (corner-aligned, no anti-aliasing). float32."""
    from ..preprocess import resize_pycaffe
    return resize_pycaffe(im, new_dims, interp_order)


def oversample(images, crop_dims) -> np.ndarray:
    """The 4 corner crops, the centre crop and their mirrors of each image:
    (10 * N) x H' x W' x K, as pycaffe (mirrors are the last 5 of each 10)."""
    im_shape = np.array(images[0].shape)
    crop_dims = np.array(crop_dims)
    im_center = im_shape[:2] / 2.0
    h_indices = (0, im_shape[0] - crop_dims[0])
    w_indices = (0, im_shape[1] - crop_dims[1])
    crops_ix = np.empty((5, 4), dtype=int)
    curr = 0
    for i in h_indices:
        for j in w_indices:
            crops_ix[curr] = (i, j, i + crop_dims[0], j + crop_dims[1])
            curr += 1
    crops_ix[4] = np.tile(im_center, (1, 2)) + np.concatenate([-crop_dims / 2.0, crop_dims / 2.0])
    crops_ix = np.tile(crops_ix, (2, 1))
    crops = np.empty((10 * len(images), crop_dims[0], crop_dims[1], im_shape[-1]), dtype=np.float32)
    ix = 0
    for im in images:
        for crop in crops_ix:
            crops[ix] = im[crop[0]:crop[2], crop[1]:crop[3], :]
            ix += 1
        crops[ix - 5:ix] = crops[ix - 5:ix, :, ::-1, :]
    return crops


# -- the Transformer -------------------------------------------------------------------------------------
class Transformer:
    """pycaffe's Transformer: per input, transpose, channel swap, raw scale, mean and
    input scale, applied in that order by preprocess() and undone by deprocess()."""

    def __init__(self, inputs: dict):
        self.inputs = inputs
        self.transpose, self.channel_swap, self.raw_scale, self.mean, self.input_scale = {}, {}, {}, {}, {}

    def __check_input(self, in_):
        if in_ not in self.inputs:
            raise ZfcaffeError(f"{in_} is not one of the net inputs: {self.inputs}")

    def preprocess(self, in_, data) -> np.ndarray:
        self.__check_input(in_)
        caffe_in = np.asarray(data).astype(np.float32, copy=False)
        in_dims = tuple(int(d) for d in self.inputs[in_][2:])
        if caffe_in.shape[:2] != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        if in_ in self.transpose:
            caffe_in = caffe_in.transpose(self.transpose[in_])
        if in_ in self.channel_swap:
            caffe_in = caffe_in[self.channel_swap[in_], :, :]
        caffe_in = np.array(caffe_in, np.float32)       # a copy: the caller's image is left alone
        if self.raw_scale.get(in_) is not None:
            caffe_in *= self.raw_scale[in_]
        if self.mean.get(in_) is not None:
            caffe_in -= self.mean[in_]
        if self.input_scale.get(in_) is not None:
            caffe_in *= self.input_scale[in_]
        return caffe_in

    def deprocess(self, in_, data) -> np.ndarray:
        self.__check_input(in_)
        data = np.asarray(data)
        decaf_in = np.array(data, np.result_type(data.dtype, np.float32)).squeeze()   # pycaffe: data.copy()
        if self.input_scale.get(in_) is not None:
            decaf_in /= self.input_scale[in_]
        if self.mean.get(in_) is not None:
            decaf_in += self.mean[in_]
        if self.raw_scale.get(in_) is not None:
            decaf_in /= self.raw_scale[in_]
        if in_ in self.channel_swap:
            decaf_in = decaf_in[np.argsort(self.channel_swap[in_]), :, :]
        if in_ in self.transpose:
            decaf_in = decaf_in.transpose(np.argsort(self.transpose[in_]))
        return decaf_in

    def set_transpose(self, in_, order) -> None:
        self.__check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise ZfcaffeError("Transpose order needs to have the same number of dimensions as the input.")
        self.transpose[in_] = order

    def set_channel_swap(self, in_, order) -> None:
        self.__check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise ZfcaffeError("Channel swap needs to have the same number of dimensions as the input channels.")
        self.channel_swap[in_] = order

    def set_raw_scale(self, in_, scale) -> None:
        self.__check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean) -> None:
        """Per-channel values (C,) or a mean image (C, H, W); a mean image of another
        size is resized to the input's, as pycaffe does: min-max normalised,
        resize_image, de-normalised (a constant image stays constant)."""
        self.__check_input(in_)
        mean = np.asarray(mean)
        ms = mean.shape
        if mean.ndim == 1:
            if ms[0] != self.inputs[in_][1]:
                raise ValueError("Mean channels incompatible with input.")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            if len(ms) == 2:
                ms = (1,) + ms
                mean = mean[np.newaxis]
            if len(ms) != 3:
                raise ValueError("Mean shape invalid")
            in_shape = tuple(int(d) for d in self.inputs[in_][1:])
            if tuple(ms) != in_shape:
                m_min, m_max = mean.min(), mean.max()
                if m_max > m_min:
                    normal_mean = (mean - m_min) / (m_max - m_min)
                    mean = resize_image(normal_mean.transpose((1, 2, 0)),
                                        in_shape[1:]).transpose((2, 0, 1)) * (m_max - m_min) + m_min
                else:
                    mean = np.full(in_shape, m_min, mean.dtype)
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale) -> None:
        self.__check_input(in_)
        self.input_scale[in_] = scale
