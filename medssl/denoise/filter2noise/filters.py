"""Fixed in-plane filters shared by the model and the loss: 1D/2D Gaussian kernels and a 2D
convolution over the last two axes with reflected borders."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["filter2d", "gaussian_1d", "gaussian_blur"]


def gaussian_1d(size: int, sigma: float) -> Tensor:
    """Normalised 1D Gaussian of ``size`` taps (float64), centred."""
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(t**2) / (2 * sigma**2))
    return g / g.sum()


def filter2d(x: Tensor, kernel: Tensor) -> Tensor:
    """Convolve the last two axes of ``(B, C, [D,] H, W)`` with a square 2D kernel.

    Borders are reflected (replicated where an axis is shorter than the kernel's half size).

    Shape:
        x: ``(B, C, [D,] H, W)``; kernel ``(k, k)`` with odd ``k``; output like ``x``.
    """
    k = kernel.to(x)
    size = k.shape[-1]
    flat = x.reshape(-1, 1, *x.shape[-2:])
    mode = "reflect" if min(x.shape[-2:]) > size // 2 else "replicate"
    flat = F.pad(flat, (size // 2,) * 4, mode=mode)
    return F.conv2d(flat, k[None, None]).reshape(x.shape)


def gaussian_blur(x: Tensor, sigma: float) -> Tensor:
    """In-plane Gaussian smoothing of the last two axes (kernel ``2 * ceil(3 sigma) + 1``
    wide, reflected borders); ``sigma <= 0`` returns ``x``.

    Shape:
        x: ``(B, C, [D,] H, W)``; output like ``x``.
    """
    if sigma <= 0:
        return x
    g = gaussian_1d(2 * math.ceil(3 * sigma) + 1, sigma)
    return filter2d(x, torch.outer(g, g).float())
