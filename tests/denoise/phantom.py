"""A small noisy CT-like phantom for the denoising tests (HU, axial)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medssl.io import Volume


def phantom(
    shape=(4, 48, 56), noise_hu=60.0, seed=0, fov_padding=False
) -> tuple[Volume, np.ndarray]:
    """A body-like ellipse (40 HU) with a dense disc (400 HU) and a lung-like region (-800 HU)
    in air, plus spatially correlated noise. Returns the noisy volume and the clean array."""
    z, y, x = shape
    yy, xx = np.mgrid[:y, :x]
    body = ((yy - y / 2) / (0.42 * y)) ** 2 + ((xx - x / 2) / (0.45 * x)) ** 2 < 1
    clean = np.where(body, 40.0, -1000.0)
    clean[((yy - y / 2) ** 2 + (xx - 0.35 * x) ** 2) < (0.12 * y) ** 2] = 400.0
    clean[((yy - y / 2) ** 2 + (xx - 0.65 * x) ** 2) < (0.12 * y) ** 2] = -800.0
    clean = np.repeat(clean[None], z, 0)
    rng = np.random.default_rng(seed)
    noise = ndimage.gaussian_filter(rng.normal(size=shape), (0, 0.7, 0.7))
    noise *= noise_hu / noise.std()
    noisy = clean + noise
    if fov_padding:
        noisy[:, ((yy - y / 2) ** 2 + (xx - x / 2) ** 2) > (0.5 * min(y, x)) ** 2] = -2000.0
    return Volume(noisy.astype(np.float32), spacing=(2.0, 0.7, 0.7), modality="CT"), clean


def fbp_nps(shape: tuple[int, int], cutoff: float = 0.75) -> np.ndarray:
    """The NPS shape of filtered-back-projection noise with a Hann-apodised ramp,
    ``|f| * hann(f / cutoff)^2`` (``f`` radial, cycles/pixel; FFT order)."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.fftfreq(shape[1])[None, :]
    f = np.hypot(fy, fx)
    hann = np.where(f < cutoff, 0.5 + 0.5 * np.cos(np.pi * f / cutoff), 0.0)
    return f * hann**2


def fbp_noise(shape: tuple[int, int], sd: float, seed: int, cutoff: float = 0.75) -> np.ndarray:
    """Stationary noise of :func:`fbp_nps`'s spectrum scaled to ``sd`` (this draw's SD):
    the correlated noise a smooth reconstruction kernel gives (lower ``cutoff``: smoother)."""
    rng = np.random.default_rng(seed)
    n = np.fft.ifft2(np.fft.fft2(rng.normal(size=shape)) * np.sqrt(fbp_nps(shape, cutoff))).real
    return n * (sd / n.std())
