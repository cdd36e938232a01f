"""The true noise of a simulated case: ``noisy - reference`` is the noise alone (the reference is
the same reconstruction of the noiseless sinogram), so its magnitude and its correlation can be
measured exactly, to judge a noise estimate made from the noisy image alone.

* Body: the largest connected region of the reference above -500 HU, holes filled (the lungs
  are inside).
* Soft tissue: the reference smoothed by a Gaussian (``SMOOTH_PX``) within [-150, 200] HU,
  inside the body, eroded by ``ERODE_PX`` pixels (away from edges, bone and air).
* Correlation length: the radius (pixels) at which the radially averaged autocorrelation of
  the noise in soft tissue falls to 1/e (Gaussian-smoothed white noise of std ``s`` pixels has
  ``exp(-r^2 / (4 s^2))``, hence ``2 s``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = [
    "NoiseTruth",
    "autocorrelation",
    "body_mask",
    "correlation_length_px",
    "noise_truth",
    "radial_autocorrelation",
    "soft_tissue_mask",
    "true_noise_sd",
    "true_psd",
]

BODY_HU = -500.0
SOFT_TISSUE_HU = (-150.0, 200.0)
SMOOTH_PX = 1.0
ERODE_PX = 3
MAX_LAG_PX = 24
PSD_MAX_LAG_PX = 16


class _Simulated(Protocol):
    noisy: np.ndarray
    reference: np.ndarray


@dataclass(frozen=True)
class NoiseTruth:
    """The true noise of one case (HU and pixels)."""

    soft_sd_hu: float
    body_sd_hu: float
    correlation_length_px: float
    rho_x: float  # correlation of horizontal neighbours (lag (0, 1)) in soft tissue
    rho_y: float  # of vertical neighbours (lag (1, 0))
    soft_pixels: int


def body_mask(reference: np.ndarray) -> np.ndarray:
    """The patient's body in a noiseless ``(H, W)`` HU image (bool, same shape)."""
    from scipy import ndimage

    labels, n = ndimage.label(reference > BODY_HU)
    if n == 0:
        return np.zeros(reference.shape, dtype=bool)
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
    return ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))


def soft_tissue_mask(reference: np.ndarray) -> np.ndarray:
    """Homogeneous soft tissue in a noiseless ``(H, W)`` HU image (bool, same shape)."""
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(np.asarray(reference, dtype=np.float64), SMOOTH_PX)
    lo, hi = SOFT_TISSUE_HU
    mask = (smooth >= lo) & (smooth <= hi) & body_mask(reference)
    return ndimage.binary_erosion(mask, iterations=ERODE_PX)


def autocorrelation(noise: np.ndarray, mask: np.ndarray, max_lag: int = MAX_LAG_PX) -> np.ndarray:
    """Correlation coefficient of ``noise`` at each lag ``(dy, dx)``, ``|dy|, |dx| <= max_lag``,
    over the pixel pairs that both lie in ``mask`` (each lag a mean over its own pairs).

    Shape:
        noise, mask: ``(H, W)``; returns ``(2 * max_lag + 1, 2 * max_lag + 1)``, lag ``(0, 0)``
        at the centre (``[max_lag + dy, max_lag + dx]``), lags without pairs 0.
    """
    m = np.asarray(mask, dtype=np.float64)
    e = np.asarray(noise, dtype=np.float64)
    e = (e - e[mask].mean()) * m
    shape = [2 * s for s in e.shape]  # zero padding: no wrap-around
    pairs = np.fft.irfft2(np.abs(np.fft.rfft2(e, shape)) ** 2, shape)
    counts = np.fft.irfft2(np.abs(np.fft.rfft2(m, shape)) ** 2, shape)
    lags = np.arange(-max_lag, max_lag + 1)
    dy, dx = np.meshgrid(lags, lags, indexing="ij")
    pairs, counts = pairs[dy, dx], np.round(counts[dy, dx])  # negative lags wrap to the end
    var = pairs[max_lag, max_lag] / counts[max_lag, max_lag]
    return np.where(counts > 0, pairs / np.maximum(counts, 1) / var, 0.0)


def radial_autocorrelation(
    noise: np.ndarray, mask: np.ndarray, max_lag: int = MAX_LAG_PX
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`autocorrelation` averaged over rings of integer radius.

    Returns:
        ``(radius, rho)``: each ring's mean radius (pixels; 0 first) and its mean correlation
        coefficient (1 at radius 0), rings ``0 .. max_lag``.
    """
    rho = autocorrelation(noise, mask, max_lag)
    lags = np.arange(-max_lag, max_lag + 1)
    r = np.hypot(*np.meshgrid(lags, lags, indexing="ij"))
    ring = np.round(r).astype(int)
    radius = np.array([r[ring == k].mean() for k in range(max_lag + 1)])
    mean_rho = np.array([rho[ring == k].mean() for k in range(max_lag + 1)])
    return radius, mean_rho


def correlation_length_px(noise: np.ndarray, mask: np.ndarray, max_lag: int = MAX_LAG_PX) -> float:
    """The radius (pixels) where the radially averaged autocorrelation of ``noise`` in ``mask``
    first falls to 1/e, interpolated linearly between rings (``inf`` beyond ``max_lag``)."""
    radius, rho = radial_autocorrelation(noise, mask, max_lag)
    level = math.exp(-1.0)
    for k in range(1, len(rho)):
        if rho[k] <= level:
            r0, r1, a, b = radius[k - 1], radius[k], rho[k - 1], rho[k]
            return float(r0 + (a - level) / (a - b) * (r1 - r0))
    return math.inf


def noise_truth(noisy: np.ndarray, reference: np.ndarray) -> NoiseTruth:
    """The true noise ``noisy - reference`` of a simulated ``(H, W)`` image: its SD in soft
    tissue and in the whole body, and its correlation length in soft tissue."""
    e = np.asarray(noisy, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    soft, body = soft_tissue_mask(reference), body_mask(reference)
    if not soft.any():
        raise ValueError("no soft tissue in the reference: the true noise is not measured")
    rho = autocorrelation(e, soft, 1)
    return NoiseTruth(
        soft_sd_hu=float(e[soft].std()),
        body_sd_hu=float(e[body].std()),
        correlation_length_px=correlation_length_px(e, soft),
        rho_x=float(rho[1, 2]),
        rho_y=float(rho[2, 1]),
        soft_pixels=int(soft.sum()),
    )


def true_noise_sd(case: _Simulated) -> float:
    """The true noise SD (HU) in the soft tissue of a benchmark case (``cases.Case``)."""
    return noise_truth(case.noisy, case.reference).soft_sd_hu


def true_psd(noisy: np.ndarray, reference: np.ndarray, max_lag: int = PSD_MAX_LAG_PX) -> np.ndarray:
    """The power spectral density of the true noise ``noisy - reference`` on the image grid:
    the Fourier transform of its :func:`autocorrelation` in soft tissue (lags up to
    ``max_lag``, zero beyond; negative bins clipped to 0), scaled so that its mean is the
    noise variance in soft tissue (HU²), as ``NoiseModel.psd`` of ``medssl.denoise.noise_model``.

    Shape:
        noisy, reference: ``(H, W)`` with ``H, W > 2 * max_lag``; returns ``(H, W)``, numpy FFT
        order (DC at ``[0, 0]``).
    """
    e = np.asarray(noisy, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    soft = soft_tissue_mask(reference)
    if not soft.any():
        raise ValueError("no soft tissue in the reference: the true noise is not measured")
    h, w = e.shape
    if min(h, w) <= 2 * max_lag:
        raise ValueError(f"image {e.shape} too small for lags up to {max_lag}")
    lags = np.arange(-max_lag, max_lag + 1)
    acf = np.zeros((h, w))
    acf[np.ix_(lags % h, lags % w)] = autocorrelation(e, soft, max_lag)
    psd = np.maximum(np.real(np.fft.fft2(acf)), 0.0)
    return psd * (float(e[soft].var()) / max(float(psd.mean()), 1e-12))
