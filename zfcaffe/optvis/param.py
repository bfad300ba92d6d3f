"""Parameterisations: how the optimised numbers make the net's input, and the
adjoint that takes the input's gradient back to them. Both make inputs of the
preprocessing's valid range."""
from __future__ import annotations

import numpy as np

# Lucid's colour correlation of ImageNet (the square root of its covariance, RGB):
# optimising decorrelated colours makes the steps comparable across channels.
COLOR_CORRELATION_SVD_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_MATRIX = COLOR_CORRELATION_SVD_SQRT / np.max(np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0))


class PixelParam:
    """The input itself, clipped to the valid range after every step."""

    def __init__(self, init: np.ndarray, low: np.ndarray, high: np.ndarray):
        self.theta = np.array(init, np.float32)
        self.low, self.high = low, high

    def image(self) -> np.ndarray:
        return self.theta

    def adjoint(self, grad: np.ndarray) -> np.ndarray:
        return grad

    def project(self) -> None:
        np.clip(self.theta, self.low, self.high, out=self.theta)


def irfft2_adjoint(grad: np.ndarray, width: int) -> np.ndarray:
    """The exact adjoint of theta (..., H, W//2+1, 2) -> irfft2(theta, norm='ortho'):
    rfft2 with the columns whose conjugates are not stored counted twice."""
    z = np.fft.rfft2(grad, norm="ortho")
    z[..., 1:(width + 1) // 2] *= 2
    return np.stack([z.real, z.imag], axis=-1)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-z)) through tanh: no overflow however large |z| grows."""
    return 0.5 + 0.5 * np.tanh(0.5 * np.asarray(z, np.float64))


def fourier_scale(height: int, width: int, decay: float = 1.0) -> np.ndarray:
    """Lucid's spectrum scale: 1 / f^decay (f floored at one cycle per image), so one
    step moves low frequencies most and the image starts smooth; divided by 4 (Lucid's
    constant) so a unit spectrum makes values of about +-1 before the sigmoid."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    freqs = np.sqrt(fx * fx + fy * fy)
    return (1.0 / np.maximum(freqs, 1.0 / max(height, width)) ** decay / 4.0)[..., None]


class FourierParam:
    """A decorrelated Fourier image (Lucid's fft + colour decorrelation + sigmoid):
    the spectrum is scaled down by frequency (fourier_scale), colours are decorrelated
    (ImageNet's colour correlation), a sigmoid (that cannot overflow) keeps pixels in
    (0, 1), and the preprocessing then makes the net's input. `to_input(pixels)` is the
    preprocessing (linear in the pixels) and `to_input_adjoint` its adjoint."""

    def __init__(self, channels: int, height: int, width: int, to_input, to_input_adjoint, seed: int = 0,
                 decay: float = 1.0, sd: float = 0.01):
        rng = np.random.default_rng(seed)
        self.h, self.w, self.c = height, width, channels
        self.scale = fourier_scale(height, width, decay)
        self.theta = rng.normal(0, sd, (channels, height, width // 2 + 1, 2))
        self.to_input, self.to_input_adjoint = to_input, to_input_adjoint
        self._cache = None

    def _pixels(self) -> np.ndarray:
        spectrum = self.theta * self.scale
        unit = np.fft.irfft2(spectrum[..., 0] + 1j * spectrum[..., 1], s=(self.h, self.w), norm="ortho")
        colour = np.einsum("ij,jhw->ihw", COLOR_MATRIX, unit) if self.c == 3 else unit
        pixels = sigmoid(colour)
        self._cache = pixels
        return pixels

    def pixels(self) -> np.ndarray:
        """The image as RGB pixels (C, H, W) in (0, 1), before the preprocessing."""
        return self._pixels().copy()

    def image(self) -> np.ndarray:
        return np.asarray(self.to_input(self._pixels()), np.float32)

    def adjoint(self, grad: np.ndarray) -> np.ndarray:
        pixels = self._cache if self._cache is not None else self._pixels()
        d = self.to_input_adjoint(np.asarray(grad, np.float64)) * pixels * (1 - pixels)
        if self.c == 3:
            d = np.einsum("ji,jhw->ihw", COLOR_MATRIX, d)
        return irfft2_adjoint(d, self.w) * self.scale

    def project(self) -> None:
        """Nothing to clip: the sigmoid keeps every pixel valid."""
