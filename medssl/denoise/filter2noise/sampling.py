"""The training views of Filter2Noise: pixel-pair downsampling, the local shuffle, and
medssl's decorrelated views for correlated noise.

Sun et al., "Filter2Noise: Interpretable and Zero-Shot Low-Dose CT Image Denoising" (2025).

The pixel-pair split assumes noise that is independent from one pixel to the next: the two
views ``g1``/``g2`` then carry independent noise and their consistency terms cannot be met by
keeping it. CT noise is correlated over several pixels (the reconstruction kernel), so the two
views share noise and the fit takes it for structure. :func:`decorrelated_views` whitens the
image by the scan's noise power spectrum before the split (the two views of white noise are
independent) and colours each view back, so that below half the Nyquist frequency a view
holds the same anatomy as the plain split, with independent noise of the scan's texture.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "decorrelated_views",
    "local_shuffle",
    "pad_to_even",
    "pair_downsample",
    "whitening_gain",
]

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


def whitening_gain(psd: Tensor, max_gain: float) -> Tensor:
    """The amplitude gain that whitens noise of power spectrum ``psd``, capped at ``max_gain``.

    ``W(f) = min(max_gain, sqrt(mean(P) / P(f)))``: white noise keeps its level, frequencies
    where the noise is weak (the high frequencies of a smooth kernel) are raised at most
    ``max_gain`` times (anatomy there is raised alike and folds into the views).

    Shape:
        psd: ``(H, W)``, numpy/torch FFT order, any positive scale; output the same.
    """
    p = psd.double().clamp(min=0)
    floor = float(p.mean()) / max_gain**2
    return (p.mean() / p.clamp(min=max(floor, 1e-30))).sqrt().float()


def _low_band(gain: Tensor, h: int, w: int) -> Tensor:
    """The gain at the frequencies of a half-resolution grid ``(h, w)``: the full grid's
    frequencies below half the Nyquist frequency, in FFT order."""
    H, W = gain.shape
    iy = (torch.fft.fftfreq(h) * h).round().long() % H
    ix = (torch.fft.fftfreq(w) * w).round().long() % W
    return gain[iy][:, ix]


def decorrelated_views(y: Tensor, gain: Tensor, pad: int = 16) -> tuple[Tensor, Tensor]:
    """The two pixel-pair views of ``y`` with the noise decorrelated between them.

    ``y`` is whitened (its spectrum times ``gain``, see :func:`whitening_gain`), split by
    :func:`pair_downsample`, and each half-resolution view is coloured back (divided by the
    gain at its own frequencies). Below half the Nyquist frequency a view's anatomy is the
    plain split's; its noise is the whitened noise's split, independent between the views.
    Images are reflect-padded by ``pad`` pixels for the FFTs (no wrap-around at borders).

    Shape:
        y: ``(..., H, W)`` with even H and W; gain ``(H + 2 pad, W + 2 pad)``;
        outputs ``(..., H / 2, W / 2)``.
    """
    if y.shape[-2] % 2 or y.shape[-1] % 2 or pad % 2:
        raise ValueError(f"decorrelated_views needs even H, W and pad, got {tuple(y.shape)}")
    H, W = y.shape[-2:]
    if tuple(gain.shape) != (H + 2 * pad, W + 2 * pad):
        raise ValueError(f"gain {tuple(gain.shape)} does not match {(H + 2 * pad, W + 2 * pad)}")
    flat = y.reshape(-1, 1, H, W)
    if pad:
        mode = "reflect" if min(H, W) > pad else "replicate"
        flat = F.pad(flat, (pad, pad, pad, pad), mode=mode)
    white = torch.fft.irfft2(
        torch.fft.rfft2(flat) * gain[:, : flat.shape[-1] // 2 + 1], s=flat.shape[-2:]
    )
    g1, g2 = pair_downsample(white)
    h, w = g1.shape[-2:]
    back = 1.0 / _low_band(gain, h, w)[:, : w // 2 + 1]
    views = []
    for g in (g1, g2):
        v = torch.fft.irfft2(torch.fft.rfft2(g) * back, s=(h, w))
        if pad:
            v = v[..., pad // 2 : h - pad // 2, pad // 2 : w - pad // 2]
        views.append(v.reshape(*y.shape[:-2], H // 2, W // 2).to(y.dtype))
    return views[0], views[1]
