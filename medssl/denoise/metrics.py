"""Image-quality metrics for CT denoising, on fixed HU windows (never per-image min/max).

* PSNR and SSIM on HU clipped to [-1000, 1000] and mapped to [0, 1] (data range 1);
* PSNR in the soft-tissue window [-160, 240] HU.
"""

from __future__ import annotations

import numpy as np

from medssl.transforms.windows import FULL, SOFT_TISSUE, window

__all__ = ["FULL_WINDOW", "SOFT_TISSUE_WINDOW", "psnr", "ssim", "window"]

#: The named windows of :mod:`medssl.transforms.windows`, as ``(low, high)`` HU.
FULL_WINDOW = (FULL.low, FULL.high)
SOFT_TISSUE_WINDOW = (SOFT_TISSUE.low, SOFT_TISSUE.high)


def psnr(pred: np.ndarray, ref: np.ndarray, lo_hi: tuple[float, float] = FULL_WINDOW) -> float:
    """PSNR (dB) of two HU images after :func:`window` (data range 1)."""
    mse = float(np.mean((window(pred, lo_hi) - window(ref, lo_hi)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def ssim(pred: np.ndarray, ref: np.ndarray, lo_hi: tuple[float, float] = FULL_WINDOW) -> float:
    """SSIM of two 2D HU images after :func:`window` (data range 1, skimage defaults)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(window(pred, lo_hi), window(ref, lo_hi), data_range=1.0))
