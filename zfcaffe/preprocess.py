"""Images to input blobs, as pycaffe's Transformer does it.

Pipeline: read (gray and RGBA handled) -> float in [0, 1] -> resize to the net's input
-> HWC to CHW -> RGB to BGR (unless the net was trained on RGB) -> x raw_scale (255) ->
minus mean -> x input_scale.

The resizes (RESIZES; describe() names the one used):
- warp (default): stretch with Pillow's bilinear filter (its support widens when
  shrinking, so it averages; borders repeat the edge pixels). Needs nothing optional.
- crop: Pillow's bilinear on the short side, then the centre is cut.
- pycaffe: pycaffe's own numbers, caffe.io.load_image + caffe.io.resize_image
  (scikit-image: Gaussian anti-aliasing when shrinking, zero-padded borders that darken
  the edge pixels; alpha dropped, not composited), for results equal to a pycaffe
  script's. Needs the `pycaffe` extra.
"""
from __future__ import annotations

import dataclasses
import os

import numpy as np

from .errors import ZfcaffeError
from .io.mean import read_mean


@dataclasses.dataclass
class Preprocess:
    height: int
    width: int
    channels: int = 3
    mean: np.ndarray | None = None       # (C,) or (C, H, W), in the raw_scale range
    mean_source: str = "none"
    raw_scale: float = 255.0
    input_scale: float = 1.0
    bgr: bool = True
    resize: str = "warp"                 # one of RESIZES (the module docstring says how each resizes)
    keep_size: bool = False              # no resize: the net's input takes the image's size
    defaults: frozenset = frozenset()    # the steps whose setting nobody chose (said in describe())

    def describe(self) -> str:
        """The exact pipeline, every default taken marked as such."""
        d = lambda step: " [default]" if step in self.defaults else ""  # noqa: E731
        size = ("no resize (--keep-size: the net takes the image's size)" if self.keep_size else
                f"resize ({self.resize}) to {self.height}x{self.width}{d('resize')} {RESIZES[self.resize]}")
        if self.channels != 3:
            order = f"{self.channels} channel(s)"
        else:
            order = ("RGB->BGR" if self.bgr else "RGB kept") + d("channel_order")
        mean = f"minus mean ({self.mean_source})" if self.mean is not None else f"no mean ({self.mean_source})"
        return (f"{size}, {order}, x{self.raw_scale:g}{d('raw_scale')}, {mean}, "
                f"x{self.input_scale:g}{d('input_scale')}")

    def __call__(self, path: str) -> np.ndarray:
        return self.prepare(path)[0]

    def map_box(self, path: str, box) -> tuple[int, int, int, int]:
        """A box (x0, y0, x1, y1) in the image file's pixels -> the same box in the
        net's input, through this pipeline's resize and crop."""
        with open_image(path) as im:
            iw, ih = im.size
        if self.keep_size:
            return tuple(box)
        sy, sx, nh, nw = _resize_plan(ih, iw, self.height, self.width, self.resize)
        oy, ox = (nh - self.height) // 2, (nw - self.width) // 2
        x0, y0, x1, y1 = box
        return (round(x0 * sx) - ox, round(y0 * sy) - oy, round(x1 * sx) - ox, round(y1 * sy) - oy)

    def prepare(self, path: str) -> tuple[np.ndarray, np.ndarray]:
        """(the net's input (C, H, W), the same pixels as RGB in [0, 1] for display).
        A .npy file is taken as the net's input as it is (nets whose input is no image)."""
        if str(path).lower().endswith(".npy"):
            return self._array_input(path)
        if self.channels not in (1, 3):
            raise ZfcaffeError(f"{path}: the net's input takes {self.channels} channels, an image has 3 (RGB) "
                               f"or 1 (grey); expected a .npy input of shape ({self.channels}, H, W)")
        if self.resize == "pycaffe":       # pycaffe's load_image and resize_image, end to end
            img = load_image_pycaffe(path, color=self.channels == 3)
            if not self.keep_size and img.shape[:2] != (self.height, self.width):
                img = resize_pycaffe(img, (self.height, self.width))
            return self.transform(img), np.clip(img, 0, 1)
        img = load_image(path, gray=self.channels == 1)
        if not self.keep_size:
            img = _fit(img, self.height, self.width, self.resize)
        return self.transform(img), img

    def _array_input(self, path: str) -> tuple[np.ndarray, np.ndarray]:
        from .io.npy import load_npy
        x = load_npy(path, f"the net's input, ({self.channels}, H, W)")
        if x.ndim == 4 and x.shape[0] == 1:
            x = x[0]
        if x.ndim != 3 or x.shape[0] != self.channels or not np.issubdtype(x.dtype, np.number):
            raise ZfcaffeError(f"{path}: input array of shape {list(x.shape)} ({x.dtype}); expected "
                               f"({self.channels}, H, W) numbers, already preprocessed for the net")
        if not self.keep_size and x.shape[1:] != (self.height, self.width):
            raise ZfcaffeError(f"{path}: input array is {x.shape[1]}x{x.shape[2]}; the net takes "
                               f"{self.height}x{self.width} (--keep-size lets the net take the array's size)")
        x = np.ascontiguousarray(x, np.float32)
        shown = x[::-1] if self.channels == 3 and self.bgr else x if self.channels == 3 else x.mean(0, keepdims=True)
        lo, hi = float(shown.min()), float(shown.max())
        return x, ((shown - lo) / max(hi - lo, 1e-12)).transpose(1, 2, 0)

    def input_range(self) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) of the net's input for pixels in [0, 1], each (C, H, W)."""
        return self.transform(np.zeros((self.height, self.width, self.channels), np.float32)), \
            self.transform(np.ones((self.height, self.width, self.channels), np.float32))

    def to_image(self, x: np.ndarray) -> np.ndarray:
        """The inverse of transform: the net's input (C, H, W) -> RGB (H, W, C) in [0, 1]
        (clipped), for showing what an optimisation made."""
        x = np.asarray(x, np.float64) / self.input_scale
        if self.mean is not None:
            x = x + _fit_mean(self.mean, x.shape, self.mean_source)
        x = x / self.raw_scale
        if self.bgr and self.channels == 3:
            x = x[::-1]
        return np.clip(x.transpose(1, 2, 0), 0, 1).astype(np.float32)

    def pixel_units(self, dx: np.ndarray) -> np.ndarray:
        """A change of the net's input in 0-255 pixel intensities."""
        return np.asarray(dx, np.float64) / self.input_scale / self.raw_scale * 255

    def transform(self, img: np.ndarray) -> np.ndarray:
        """An (H, W, C) RGB image in [0, 1], already of the input size, to the input."""
        x = img.transpose(2, 0, 1).astype(np.float32)
        if self.bgr and self.channels == 3:
            x = x[::-1]
        x = x * self.raw_scale
        if self.mean is not None:
            x = x - _fit_mean(self.mean, x.shape, self.mean_source)
        return np.ascontiguousarray(x * self.input_scale, dtype=np.float32)


#: the resizes of the CLI's --resize, each with what describe() says of it
RESIZES = {
    "warp": "by Pillow's bilinear filter (stretched; edges repeated; pycaffe's own is --resize pycaffe)",
    "crop": "by Pillow's bilinear filter (short side; centre cut)",
    "pycaffe": "as pycaffe's caffe.io.resize_image (scikit-image; anti-aliased; zero-padded borders)",
}

#: the largest image decoded (pixels), checked from the header before decoding;
#: ZFCAFFE_MAX_PIXELS raises it
MAX_PIXELS = 64_000_000


def open_image(path: str):
    """A PIL image, opened lazily with its size checked against the pixel cap, or one
    clear error (missing file, not an image, too large)."""
    import warnings

    from PIL import Image, UnidentifiedImageError
    cap = int(os.environ.get("ZFCAFFE_MAX_PIXELS", MAX_PIXELS))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = max(cap, 1)
            im = Image.open(path)
    except FileNotFoundError:
        raise ZfcaffeError(f"{path}: no such image file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ZfcaffeError(f"{path}: the image is larger than {cap:,} pixels (set ZFCAFFE_MAX_PIXELS to allow "
                           "more)") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise ZfcaffeError(f"{path}: cannot read image ({e.__class__.__name__}); expected an image Pillow reads "
                           "(JPEG, PNG, BMP, GIF, TIFF, WebP, PPM)") from None
    if im.width * im.height > cap:
        im.close()
        raise ZfcaffeError(f"{path}: the image is {im.width}x{im.height} = {im.width * im.height:,} pixels, over "
                           f"the limit of {cap:,} (set ZFCAFFE_MAX_PIXELS to allow more)")
    return im


def load_image(path: str, gray: bool = False) -> np.ndarray:
    """HxWxC float32 in [0, 1]; C = 3 (RGB) or 1; transparency composited on white."""
    from PIL import Image
    with open_image(path) as im:
        try:
            if im.mode in ("RGBA", "LA", "P", "PA"):
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(bg, im)
            im = im.convert("L" if gray else "RGB")
            arr = np.asarray(im, dtype=np.float32) / 255.0
        except (OSError, ValueError, SyntaxError) as e:
            raise ZfcaffeError(f"{path}: the image data is broken ({e.__class__.__name__}: {e})") from None
    return arr[:, :, None] if arr.ndim == 2 else arr


# -- pycaffe's caffe.io numbers (scikit-image and SciPy, loaded only when used) ----------------------------
def _pycaffe_module(module: str, what: str):
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ZfcaffeError(f"{what} computes pycaffe's numbers with {module.split('.')[0]}, which is not "
                           "installed: pip install 'zfcaffe[pycaffe]'") from None


def _decoded(im) -> np.ndarray:
    """A PIL image's pixels as imageio (skimage.io.imread's plugin) hands them to
    pycaffe: palette images as RGB (RGBA with transparency), 1-bit as 8-bit grey,
    other colour spaces as RGB, 16-bit as uint16."""
    mode = im.mode
    if mode in ("P", "PA"):
        im = im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    return np.asarray(im)


def _img_as_float(img: np.ndarray) -> np.ndarray:
    """skimage.img_as_float: integers times 1 / their dtype's maximum (signed ones
    clipped at -1), floats as they are."""
    if img.dtype == np.bool_:
        return img.astype(np.float64)
    if np.issubdtype(img.dtype, np.integer):
        out = np.multiply(img, 1.0 / np.iinfo(img.dtype).max, dtype=np.float64)
        return np.maximum(out, -1.0) if np.issubdtype(img.dtype, np.signedinteger) else out
    return img


def load_image_pycaffe(path: str, color: bool = True) -> np.ndarray:
    """pycaffe's caffe.io.load_image (see zfcaffe.caffe.io): H x W x 3 (or 1) float32;
    decoded by Pillow (as imageio does for scikit-image) behind the pixel cap. A grey
    image with alpha counts as grey (pycaffe would return its 2 planes)."""
    with open_image(path) as im:
        try:
            img = _decoded(im)
        except (OSError, ValueError, SyntaxError) as e:
            raise ZfcaffeError(f"{path}: the image data is broken ({e.__class__.__name__}: {e})") from None
    if img.ndim == 3 and img.shape[2] == 2:
        img = img[:, :, 0]
    if not color and img.ndim == 3:
        skcolor = _pycaffe_module("skimage.color", "caffe.io.load_image")
        img = skcolor.rgb2gray(skcolor.rgba2rgb(img) if img.shape[2] == 4 else img)
    img = _img_as_float(img).astype(np.float32)
    if img.ndim == 2:
        img = img[:, :, np.newaxis]
        if color:
            img = np.tile(img, (1, 1, 3))
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return img


def resize_pycaffe(im: np.ndarray, new_dims, interp_order: int = 1) -> np.ndarray:
    """pycaffe's caffe.io.resize_image (see zfcaffe.caffe.io), float32."""
    im = np.asarray(im)
    if im.ndim != 3:
        raise ZfcaffeError(f"resize_image: the image has shape {list(im.shape)}; expected H x W x K")
    h, w = int(new_dims[0]), int(new_dims[1])
    if im.shape[-1] in (1, 3):
        im_min, im_max = im.min(), im.max()
        if not im_max > im_min:          # a constant image: avoid dividing by zero, as pycaffe does
            return np.full((h, w, im.shape[-1]), im_min, np.float32)
        transform = _pycaffe_module("skimage.transform", "resize_image")
        im_std = (im - im_min) / (im_max - im_min)
        # pycaffe leaves mode and anti-aliasing to scikit-image's defaults of its day: zero
        # padding, and a Gaussian blur first when any axis shrinks (pinned here; matched
        # to real pycaffe's numbers in tests/test_pycaffe.py)
        resized_std = transform.resize(im_std, (h, w), order=interp_order, mode="constant",
                                       anti_aliasing=bool(h < im.shape[0] or w < im.shape[1]))
        resized_im = resized_std * (im_max - im_min) + im_min
    else:
        ndimage = _pycaffe_module("scipy.ndimage", "resize_image")
        scale = tuple(np.array((h, w), dtype=float) / np.array(im.shape[:2]))
        resized_im = ndimage.zoom(im, scale + (1,), order=interp_order)
    return resized_im.astype(np.float32)


def _resize_plan(ih: int, iw: int, h: int, w: int, mode: str) -> tuple[float, float, int, int]:
    """(y scale, x scale, resized height, resized width) taking an ih x iw image to an
    h x w input: "crop" scales the short side (then the centre is cut), "warp" stretches."""
    if mode == "crop":
        s = max(h / ih, w / iw)
        return s, s, max(h, round(ih * s)), max(w, round(iw * s))
    return h / ih, w / iw, h, w


def _fit(img: np.ndarray, h: int, w: int, mode: str) -> np.ndarray:
    from PIL import Image
    ih, iw = img.shape[:2]
    _, _, nh, nw = _resize_plan(ih, iw, h, w, mode)
    if (nh, nw) != (ih, iw):
        chans = [np.asarray(Image.fromarray(img[:, :, c]).resize((nw, nh), Image.BILINEAR))
                 for c in range(img.shape[2])]
        img = np.stack(chans, axis=2)
    y0, x0 = (nh - h) // 2, (nw - w) // 2
    return img[y0:y0 + h, x0:x0 + w]


def _fit_mean(mean: np.ndarray, shape: tuple, source: str) -> np.ndarray:
    c, h, w = shape
    if mean.ndim == 1:
        if mean.size not in (1, c):
            raise ZfcaffeError(f"{source}: mean has {mean.size} values for {c} channels")
        return mean.reshape(-1, 1, 1)
    if mean.shape[0] != c:
        raise ZfcaffeError(f"{source}: mean has {mean.shape[0]} channels; the net's input has {c}")
    mh, mw = mean.shape[1:]
    if mh >= h and mw >= w:  # centre-crop a larger mean image, as Caffe's crop does
        y0, x0 = (mh - h) // 2, (mw - w) // 2
        return mean[:, y0:y0 + h, x0:x0 + w]
    # smaller mean image: use its per-channel average
    return mean.reshape(c, -1).mean(axis=1).reshape(c, 1, 1)


def mean_from_arg(arg: str | None) -> tuple[np.ndarray | None, str]:
    """--mean accepts a .binaryproto, a .npy, or per-channel values '104,117,123'."""
    if not arg:
        return None, "none"
    try:
        values = [float(v) for v in arg.split(",")]
    except ValueError:
        values = None
    if values is not None:
        if not all(np.isfinite(values)):
            raise ZfcaffeError(f"--mean '{arg}': expected finite per-channel values like 104,117,123")
        return np.asarray(values, np.float32), f"values {arg}"
    if not os.path.exists(arg):
        raise ZfcaffeError(f"--mean '{arg}': no such file, and not per-channel numbers; expected a .binaryproto, "
                           "a .npy or values like 104,117,123")
    return read_mean(arg), arg


def for_net(net, mean: str | None = None, raw_scale: float | None = None, input_scale: float | None = None,
            resize: str | None = None, input_name: str | None = None, train_val: str | None = None,
            no_mean: bool = False, channel_order: str | None = None, keep_size: bool = False) -> Preprocess:
    """The preprocessing for a net's image input. Defaults come from the TEST-phase
    data layer's transform_param of `train_val` when given (mean_file or mean_value,
    scale); explicit arguments win; nothing is dropped silently (a missing mean file
    is an error)."""
    name = input_name or net.inputs[0]
    shape = net.graph.inputs[name]
    if len(shape) != 4:
        raise ZfcaffeError(f"input '{name}' has shape {list(shape)}; images need N x C x H x W")
    if no_mean and mean:
        raise ZfcaffeError("--mean and --no-mean contradict each other; expected one of them")
    m, src = mean_from_arg(mean)
    if no_mean:
        src = "--no-mean"
    scale_default = None
    if train_val:
        tp = _test_transform_param(train_val)
        if tp is not None:
            if m is None and not no_mean and tp.mean_file:
                path = tp.mean_file if os.path.exists(tp.mean_file) else \
                    os.path.join(os.path.dirname(train_val), os.path.basename(tp.mean_file))
                if not os.path.exists(path):
                    raise ZfcaffeError(
                        f"{train_val}: the TEST data layer's mean_file '{tp.mean_file}' does not exist (nor "
                        f"{path}); expected it there, or --mean FILE|B,G,R, or --no-mean to use no mean")
                m, src = read_mean(path), f"{path} (from {train_val})"
            if m is None and not no_mean and len(tp.mean_value):
                m, src = np.asarray(tp.mean_value, np.float32), f"values {list(tp.mean_value)} (from {train_val})"
            if tp.HasField("scale"):
                scale_default = tp.scale
    if m is not None:
        _fit_mean(m, tuple(shape[1:]), src)  # a mean that cannot fit fails here, before any work
    if channel_order not in (None, "bgr", "rgb"):
        raise ZfcaffeError(f"channel order '{channel_order}'; expected rgb or bgr")
    if resize not in (None, *RESIZES):
        raise ZfcaffeError(f"resize '{resize}'; expected one of {', '.join(RESIZES)}")
    if resize == "pycaffe":        # say a missing library now, before any work
        _pycaffe_module("skimage.transform", "--resize pycaffe")
    chosen = {"resize": resize, "channel_order": channel_order, "raw_scale": raw_scale,
              "input_scale": input_scale if input_scale is not None else scale_default}
    return Preprocess(shape[2], shape[3], shape[1], m, src if m is not None or no_mean else "none given",
                      255.0 if raw_scale is None else raw_scale,
                      chosen["input_scale"] if chosen["input_scale"] is not None else 1.0,
                      channel_order != "rgb", resize or "warp", keep_size,
                      frozenset(k for k, v in chosen.items() if v is None))


def _test_transform_param(train_val: str):
    from . import caffe_pb2
    from .graph.graph import _included
    from .io.prototxt import parse_net_text
    from .io.upgrade import upgrade_net
    parsed = parse_net_text(train_val)
    net, _ = upgrade_net(parsed.param, list(parsed.layer_lines), where=train_val)
    state = caffe_pb2.NetState(phase=caffe_pb2.TEST)
    for lp in net.layer:
        if lp.HasField("transform_param") and _included(lp, state):
            return lp.transform_param
    return None
