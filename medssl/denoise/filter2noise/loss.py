"""The Filter2Noise training loss.

With ``y`` the noisy image, ``f`` the denoiser, ``g1``/``g2`` the pixel-pair downsamplings,
``d_i = f(shuffle(g_i(y)))`` and ``X = f(y)``:

``L = 1/3 [L1(d1, d2) + L1(d1, g1(X)) + L1(d2, g2(X)) + L1(g1(X), g2(X))]
     + lambda * L1(|DoG * y|, |DoG * X|)``

The last term keeps the edges of the input: ``DoG`` is a difference-of-Gaussians kernel
(7x7 with sigmas 9 and 10 in the published method).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from medssl.denoise.filter2noise.filters import filter2d, gaussian_1d
from medssl.denoise.filter2noise.sampling import local_shuffle, pair_downsample

__all__ = [
    "LossParts",
    "coloured_noise",
    "dog_kernel",
    "edge_loss",
    "filter2noise_loss",
    "sure_loss",
]


def dog_kernel(size: int = 7, sigma1: float = 9.0, sigma2: float = 10.0) -> Tensor:
    """Difference of two normalised 2D Gaussians, ``G(sigma1) - G(sigma2)``.

    Shape:
        Output: ``(size, size)`` float32.
    """
    g1 = gaussian_1d(size, sigma1)
    g2 = gaussian_1d(size, sigma2)
    return (torch.outer(g1, g1) - torch.outer(g2, g2)).float()


def dog_response(x: Tensor, kernel: Tensor) -> Tensor:
    """``DoG * x`` over the last two axes (reflect borders)."""
    return filter2d(x, kernel)


def edge_loss(y: Tensor, X: Tensor, kernel: Tensor, noise_floor: float = 0.0) -> Tensor:
    """``L1(|DoG * y|, |DoG * X|)``: the denoised image keeps the input's edge magnitudes.

    With ``noise_floor > 0`` (medssl), the target is the input's edge magnitude with the noise's
    share removed, ``sqrt(max(|DoG * y|^2 - noise_floor^2, 0))``: flat regions then ask for a
    flat output instead of the input's noise texture, whatever the noise level.
    """
    target = filter2d(y, kernel).abs()
    if noise_floor > 0:
        target = (target.square() - noise_floor**2).clamp(min=0).sqrt()
    return F.l1_loss(filter2d(X, kernel).abs(), target)


@dataclass
class LossParts:
    """The loss and its terms (floats, for logging)."""

    total: Tensor
    consistency: float
    edge: float


def _denoise_both(
    denoiser: Callable[[Tensor, Tensor | None], Tensor],
    a: Tensor,
    b: Tensor,
    coords: Tensor | None,
    batched: bool,
) -> tuple[Tensor, Tensor]:
    """``f(a)`` and ``f(b)`` (same shape, same ``coords``), in one call of batch ``2B`` when
    ``batched``."""
    if not batched:
        return denoiser(a, coords), denoiser(b, coords)
    both = coords if coords is None or coords.shape[0] == 1 else torch.cat([coords, coords])
    fa, fb = denoiser(torch.cat([a, b]), both).chunk(2)
    return fa, fb


def filter2noise_loss(
    denoiser: Callable[[Tensor, Tensor | None], Tensor],
    y: Tensor,
    coords: Tensor | None,
    *,
    lam: float,
    kernel: Tensor,
    shuffle: bool = True,
    noise_floor: float = 0.0,
    batch_views: bool = False,
    views: tuple[Tensor, Tensor] | None = None,
) -> LossParts:
    """Evaluate the Filter2Noise loss on one batch.

    Args:
        denoiser: ``f(image, coords) -> denoised``; ``coords`` may be ``None``.
        y: Noisy images ``(B, 1, [D,] H, W)`` with even H and W.
        coords: Position channels of ``y`` (or ``None``), downsampled alongside.
        lam: Weight of the edge term.
        kernel: The DoG kernel.
        shuffle: Apply the local shuffle to the downsampled views.
        noise_floor: Noise share of the DoG response removed from the edge target (0: the
            published loss).
        batch_views: Denoise the two views in one call (one batch of ``2B``): faster, and
            the same result up to float rounding when the denoiser treats batch items
            independently (not the published head, whose kernel radius follows the batch's
            largest sigma).
        views: The two training views of ``y`` (``(B, 1, [D,] H/2, W/2)`` each), e.g.
            decorrelated ones; default: ``pair_downsample(y)``.
    """
    g1y, g2y = pair_downsample(y) if views is None else views
    c_ds = None
    if coords is not None:
        c1, c2 = pair_downsample(coords)
        c_ds = (c1 + c2) / 2
    v1 = local_shuffle(g1y) if shuffle else g1y
    v2 = local_shuffle(g2y) if shuffle else g2y
    d1, d2 = _denoise_both(denoiser, v1, v2, c_ds, batch_views)
    X = denoiser(y, coords)
    g1x, g2x = pair_downsample(X)
    consistency = (
        F.l1_loss(d1, d2) + F.l1_loss(d1, g1x) + F.l1_loss(d2, g2x) + F.l1_loss(g1x, g2x)
    ) / 3
    edge = edge_loss(y, X, kernel, noise_floor)
    total = consistency + lam * edge
    return LossParts(
        total=total, consistency=float(consistency.detach()), edge=float(edge.detach())
    )


def coloured_noise(shape: tuple[int, ...], psd: Tensor, gen: torch.Generator) -> Tensor:
    """Gaussian noise whose power spectrum over the last two axes is ``psd``.

    Each ``(H, W)`` plane is white noise filtered by ``sqrt(psd)`` in the Fourier domain
    (circularly), so its variance is ``psd.mean()`` and its autocovariance the inverse FFT of
    ``psd``; planes are independent.

    Shape:
        shape: ``(..., H, W)``; psd: ``(H, W)`` (numpy FFT order, mean = variance); output
        ``shape`` float32.
    """
    white = torch.randn(shape, generator=gen, dtype=torch.float32)
    spec = torch.fft.fft2(white) * psd.clamp(min=0).sqrt().to(torch.float32)
    return torch.fft.ifft2(spec).real.contiguous()


def sure_probe(
    shape: tuple[int, ...], psd: Tensor, gen: torch.Generator, scale: Tensor | None = None
) -> tuple[Tensor, float]:
    """A SURE probe and the noise variance it stands for: noise of the NPS ``psd``, times the
    local noise scale where one is given (noise ``scale(x) * c(x)``, ``c`` stationary with NPS
    ``psd``: its covariance is ``diag(scale) C diag(scale)``, its variance per pixel
    ``psd.mean() * mean(scale²)``).

    Shape:
        shape: ``(..., H, W)``; psd: ``(H, W)``; scale: ``shape`` or broadcastable to it;
        returns a probe of ``shape``.
    """
    probe = coloured_noise(shape, psd, gen)
    variance = float(psd.mean())
    if scale is not None:
        scale = scale.to(probe)
        probe = probe * scale
        variance *= float(scale.square().mean())
    return probe, variance


def sure_loss(
    denoiser: Callable[[Tensor, Tensor | None], Tensor],
    y: Tensor,
    coords: Tensor | None,
    probe: Tensor,
    *,
    variance: float,
    eps: float = 1e-3,
    batch_views: bool = False,
) -> LossParts:
    """Stein's unbiased risk estimate of the mean squared error, for correlated Gaussian noise.

    For ``y = x + n`` with ``n ~ N(0, C)``, ``E|f(y) - x|^2 = E|f(y) - y|^2 - tr(C) +
    2 tr(C J)`` (``J`` the Jacobian of ``f``), per pixel. ``tr(C J)`` is estimated with one
    probe ``m ~ N(0, C)`` (noise of the scan's own NPS) and a finite difference:
    ``m . (f(y + eps m) - f(y)) / eps`` (Monte-Carlo SURE, Ramani et al. 2008; the
    correlated-noise form needs the probe coloured like the noise). No clean image and no
    pixel-pair views: the estimate holds whatever the noise's correlation, provided ``C`` is
    right.

    Args:
        denoiser: ``f(image, coords) -> denoised``.
        y: Noisy images ``(B, 1, [D,] H, W)``.
        coords: Position channels of ``y`` (or ``None``).
        probe: ``m``, shaped as ``y``: noise with the scan's NPS (network units).
        variance: The noise variance (network units²), ``tr(C) / pixels``.
        eps: Finite-difference step as a fraction of the probe.
        batch_views: Evaluate ``f(y)`` and ``f(y + eps m)`` in one call (see
            :func:`filter2noise_loss`).

    Returns:
        ``total`` = the per-pixel MSE estimate; ``consistency`` = the data term
        ``mean (f(y) - y)^2``; ``edge`` = the divergence term ``2 mean(m (f(y+eps m)-f(y)))/eps``.
    """
    X, Xp = _denoise_both(denoiser, y, y + eps * probe, coords, batch_views)
    data = (X - y).square().mean()
    div = 2.0 * (probe * (Xp - X)).mean() / eps
    total = data + div - variance
    return LossParts(total=total, consistency=float(data.detach()), edge=float(div.detach()))
