"""A robust noise estimate for CT images (HU), for reports and defaults."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["noise_std_hu"]


def noise_std_hu(hu: np.ndarray, max_slices: int = 16) -> float:
    """Noise standard deviation in HU, measured in the tissue (> -600 HU) from the pixel-pair
    difference of each slice (anatomy cancels; see
    :func:`~medssl.denoise.filter2noise.fit.estimate_noise_std`).

    Shape:
        hu: ``(Z, Y, X)`` or ``(Y, X)``.
    """
    from medssl.denoise.filter2noise.fit import estimate_noise_std
    from medssl.denoise.filter2noise.intensity import HU_PER_UNIT, hu_to_net

    arr = np.asarray(hu, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[None]
    idx = np.unique(
        np.linspace(0, arr.shape[0] - 1, min(max_slices, arr.shape[0])).round().astype(int)
    )
    images = [hu_to_net(torch.from_numpy(arr[i]))[None, None] for i in idx]
    return estimate_noise_std(images) * HU_PER_UNIT
