"""The training views of Filter2Noise: pixel-pair downsampling and the local shuffle.

Sun et al., "Filter2Noise: Interpretable and Zero-Shot Low-Dose CT Image Denoising" (2025).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["local_shuffle", "pad_to_even", "pair_downsample"]

# The six pairs of a 2x2 block (positions 0 = top-left, 1 = top-right, 2 = bottom-left,
# 3 = bottom-right) and the permutation that swaps each.
_PAIRS = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
_SWAPS = torch.tensor(
    [[1, 0, 2, 3], [2, 1, 0, 3], [3, 1, 2, 0], [0, 2, 1, 3], [0, 3, 2, 1], [0, 1, 3, 2]]
)


def pad_to_even(x: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """Reflect-pad the last two axes to even sizes; returns the padded tensor and the pads.

    Shape:
        x: ``(..., H, W)``; output ``(..., H + H % 2, W + W % 2)``.
    """
    ph, pw = x.shape[-2] % 2, x.shape[-1] % 2
    if ph or pw:
        flat = x.reshape(-1, 1, *x.shape[-2:])
        mode = "reflect" if min(x.shape[-2:]) > 1 else "replicate"
        flat = F.pad(flat, (0, pw, 0, ph), mode=mode)
        x = flat.reshape(*x.shape[:-2], *flat.shape[-2:])
    return x, (ph, pw)


def pair_downsample(x: Tensor) -> tuple[Tensor, Tensor]:
    """The two pixel-pair downsamplings: the means of the two diagonals of each 2x2 block.

    ``g1 = (x[2i, 2j] + x[2i+1, 2j+1]) / 2`` and ``g2 = (x[2i, 2j+1] + x[2i+1, 2j]) / 2``, over
    the last two axes (a 3D tensor is downsampled slice by slice, z kept).

    Shape:
        x: ``(..., H, W)`` with even H and W; outputs ``(..., H / 2, W / 2)``.
    """
    if x.shape[-2] % 2 or x.shape[-1] % 2:
        raise ValueError(f"pair_downsample needs even H and W, got {tuple(x.shape[-2:])}")
    a = x[..., 0::2, 0::2]
    b = x[..., 0::2, 1::2]
    c = x[..., 1::2, 0::2]
    d = x[..., 1::2, 1::2]
    return (a + d) / 2, (b + c) / 2


def local_shuffle(x: Tensor) -> Tensor:
    """Swap the most similar pair of pixels in each 2x2 block.

    The two pixels of each block whose values are closest (L1 over channels; the first pair in
    the order (0,1), (0,2), (0,3), (1,2), (1,3), (2,3) on ties) exchange places. Structure is
    kept (the swapped values are nearly equal) while the spatial correlation of the noise is
    broken. Deterministic.

    Shape:
        x: ``(B, C, H, W)`` or ``(B, C, D, H, W)`` with even H and W; output the same.
    """
    if x.shape[-2] % 2 or x.shape[-1] % 2:
        raise ValueError(f"local_shuffle needs even H and W, got {tuple(x.shape[-2:])}")
    H, W = x.shape[-2:]
    # (..., H/2, 2, W/2, 2) -> (..., H/2, W/2, 4)
    blocks = x.reshape(*x.shape[:-2], H // 2, 2, W // 2, 2).transpose(-3, -2)
    blocks = blocks.reshape(*x.shape[:-2], H // 2, W // 2, 4)
    diffs = torch.stack([(blocks[..., i] - blocks[..., j]).abs() for i, j in _PAIRS], -1)
    choice = diffs.sum(1, keepdim=True).argmin(-1)  # (B, 1, ..., H/2, W/2): summed over C
    perm = _SWAPS.to(x.device)[choice].expand(*blocks.shape)  # (..., 4)
    shuffled = blocks.gather(-1, perm)
    shuffled = shuffled.reshape(*x.shape[:-2], H // 2, W // 2, 2, 2).transpose(-3, -2)
    return shuffled.reshape(x.shape)
