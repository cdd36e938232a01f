"""Non-local means with per-pixel parameters: a bilateral filter whose range weights compare
patches instead of single pixels.

For each pixel ``p`` and each offset ``d`` of a ``(2r + 1)^2`` window::

    D_d(p) = sum_u g(u) * (x(p + u) - x(p + d + u))^2        (g: a Gaussian of patch_sigma)
    w_d(p) = exp(-D_d(p) / (2 h(p)^2) - d_y^2 / (2 s_y(p)^2) - d_x^2 / (2 s_x(p)^2))
    y(p)   = sum_d w_d(p) x(p + d) / sum_d w_d(p)                (w_0 = 1: the pixel itself)

``h`` plays the part of the bilateral filter's range sigma (with ``patch_sigma = 0`` the
filter *is* the bilateral filter with a ``(2r + 1)^2`` window): it is in the image's units
and is the root-mean-square patch difference at which a neighbour's weight falls to
``exp(-1/2)``. Two patches of the same tissue differ by their noise only, and comparing
patches rather than pixels tells noise from structure where a single pixel cannot (Buades et
al., "A non-local algorithm for image denoising", CVPR 2005).

Out-of-image neighbours are reflected about the edge pixel, as in
:func:`medssl.ops.bilateral_filter`; the patch weights outside the image are 0.
The forward and backward are loops over the window's offsets with the patch differences
recomputed in the backward, so memory stays at a few images (nothing is kept per offset) and
the gradient (to the image, through the averaged values and the patch distances, and to the three
parameter maps) is exact; ``tests/denoise/test_nlm.py`` checks it against autograd through a
direct implementation.

On the CPU the loops run in the compiled kernel ``medssl::nlm_forward``/``nlm_backward``
(``medssl/ops/bilateral/csrc/nlm_cpu.cpp``: one pass over the image per offset, rows in
cache-sized bands, deterministic whatever the thread count); the torch loops here are the
fallback (other devices, ``MEDSSL_KERNEL_DISABLE=1``) and the kernel's test oracle.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

import medssl.ops  # noqa: F401  (loads the compiled kernels)
from medssl.denoise.filter2noise.filters import gaussian_1d

__all__ = ["kernel_available", "nonlocal_means", "patch_blur"]


def _taps(sigma: float) -> list[float]:
    """The patch weight's taps: ``2 * ceil(3 sigma) + 1`` of a normalised Gaussian; ``[1]``
    for ``sigma <= 0``."""
    if sigma <= 0:
        return [1.0]
    return gaussian_1d(2 * math.ceil(3 * sigma) + 1, sigma).tolist()


def kernel_available(device: torch.device | str = "cpu") -> bool:
    """Whether the compiled NLM kernel serves tensors on ``device`` (the CPU only)."""
    if torch.device(device).type != "cpu":
        return False
    try:
        torch._C._dispatch_find_schema_or_throw("medssl::nlm_forward", "")
    except RuntimeError:
        return False
    return True


def patch_blur(x: Tensor, sigma: float) -> Tensor:
    """Separable Gaussian weighting over the last two axes (``2 * ceil(3 sigma) + 1`` taps)
    with zero borders, so that the operation is its own adjoint. ``sigma <= 0``: ``x``.

    Shape:
        x: ``(..., H, W)``; output like ``x``.
    """
    if sigma <= 0:
        return x
    taps = _taps(sigma)
    size = len(taps)
    half = size // 2
    height, width = x.shape[-2:]
    padded = F.pad(x, (half, half, 0, 0))
    rows = padded[..., :width] * taps[0]
    for i in range(1, size):
        rows.add_(padded[..., i : i + width], alpha=taps[i])
    padded = F.pad(rows, (0, 0, half, half))
    out = padded[..., :height, :] * taps[0]
    for i in range(1, size):
        out.add_(padded[..., i : i + height, :], alpha=taps[i])
    return out


def _offsets(radius: int) -> list[tuple[int, int]]:
    return [
        (dy, dx)
        for dy in range(-radius, radius + 1)
        for dx in range(-radius, radius + 1)
        if (dy, dx) != (0, 0)
    ]


def _at(padded: Tensor, radius: int, dy: int, dx: int, height: int, width: int) -> Tensor:
    """The image shifted by ``(dy, dx)``: a view into the ``radius``-padded image."""
    return padded[..., radius + dy : radius + dy + height, radius + dx : radius + dx + width]


#: Weights under exp(-70) ~ 4e-31 (against the centre tap's 1) are set to exactly 0, as the
#: bilateral kernel does: the result does not change, a filter with every sigma at 0 is exactly
#: the identity, and no denormal float (~13x slower on x86) enters the sums.
_MAX_EXPONENT = 70.0
#: The kernel keeps the forward's patch distances for the backward up to this size (a fit's
#: crops take ~30 MB); beyond it the backward recomputes them.
_KEEP_BYTES = 512 * 2**20
_MIN_WEIGHT = math.exp(-_MAX_EXPONENT)


def _weight(dist: Tensor, inv_h: Tensor, inv_y: Tensor, inv_x: Tensor, dy: int, dx: int) -> Tensor:
    z = dist * inv_h
    if dy:
        z.add_(inv_y, alpha=dy * dy)
    if dx:
        z.add_(inv_x, alpha=dx * dx)
    w = z.clamp_(max=_MAX_EXPONENT + 10.0).neg_().exp_()
    return w.mul_(w >= _MIN_WEIGHT)


class _NonLocalMeans(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        padded: Tensor,
        inv_h: Tensor,
        inv_y: Tensor,
        inv_x: Tensor,
        radius: int,
        patch_sigma: float,
        kernel: bool,
    ) -> Tensor:
        ctx.radius, ctx.patch_sigma, ctx.kernel = radius, patch_sigma, kernel  # type: ignore[attr-defined]
        if kernel:
            # the patch distances are kept for the backward (saves recomputing them: ~1/3 of
            # the work) unless they would take more than _KEEP_BYTES
            size = padded.element_size() * inv_h.numel() * ((2 * radius + 1) ** 2 - 1)
            keep = any(ctx.needs_input_grad[:4]) and size <= _KEEP_BYTES  # type: ignore[attr-defined]
            out, den, dist = torch.ops.medssl.nlm_forward(
                padded, inv_h, inv_y, inv_x, radius, _taps(patch_sigma), keep
            )
            ctx.save_for_backward(padded, inv_h, inv_y, inv_x, out, den, dist)
            return out
        height, width = inv_h.shape[-2:]
        x = _at(padded, radius, 0, 0, height, width)
        num = x.clone()
        den = torch.ones_like(x)
        for dy, dx in _offsets(radius):
            xs = _at(padded, radius, dy, dx, height, width)
            dist = patch_blur((x - xs).square_(), patch_sigma)
            w = _weight(dist, inv_h, inv_y, inv_x, dy, dx)
            num.addcmul_(w, xs)
            den.add_(w)
        out = num / den
        ctx.save_for_backward(padded, inv_h, inv_y, inv_x, out, den)
        return out

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: Tensor
    ) -> tuple[Tensor | None, ...]:
        radius, patch_sigma = ctx.radius, ctx.patch_sigma  # type: ignore[attr-defined]
        if ctx.kernel:  # type: ignore[attr-defined]
            saved = ctx.saved_tensors  # type: ignore[attr-defined]
            grads = torch.ops.medssl.nlm_backward(grad, *saved, radius, _taps(patch_sigma))
            return (*grads, None, None, None)
        padded, inv_h, inv_y, inv_x, out, den = ctx.saved_tensors  # type: ignore[attr-defined]
        height, width = inv_h.shape[-2:]
        x = _at(padded, radius, 0, 0, height, width)
        g = grad / den
        g_padded = torch.zeros_like(padded)
        g_x = _at(g_padded, radius, 0, 0, height, width)
        g_x.add_(g)  # the centre tap: weight 1, no parameter gradient
        g_h, g_y, g_xx = torch.zeros_like(inv_h), torch.zeros_like(inv_y), torch.zeros_like(inv_x)
        for dy, dx in _offsets(radius):
            xs = _at(padded, radius, dy, dx, height, width)
            diff = x - xs
            dist = patch_blur(diff.square(), patch_sigma)
            w = _weight(dist, inv_h, inv_y, inv_x, dy, dx)
            gw = g * w
            _at(g_padded, radius, dy, dx, height, width).add_(gw)  # through the value
            g_logw = gw * (xs - out)
            g_h.sub_(g_logw * dist)
            if dy:
                g_y.sub_(g_logw, alpha=dy * dy)
            if dx:
                g_xx.sub_(g_logw, alpha=dx * dx)
            # through the patch distance: dL/dD = -inv_h * dL/dlogw, D = blur(diff^2)
            g_diff = patch_blur(g_logw * inv_h, patch_sigma).mul_(diff).mul_(-2.0)
            g_x.add_(g_diff)
            _at(g_padded, radius, dy, dx, height, width).sub_(g_diff)
        return g_padded, g_h, g_y, g_xx, None, None, None


def nonlocal_means(
    x: Tensor,
    spatial: tuple[Tensor, Tensor],
    h: Tensor,
    radius: int,
    patch_sigma: float = 1.0,
    *,
    kernel: bool | None = None,
) -> Tensor:
    """Non-local means with per-pixel spatial sigmas and patch-distance scale (see the module).

    Args:
        x: The image, ``(B, 1, H, W)``.
        spatial: ``(sigma_y, sigma_x)`` in pixels, each broadcastable to ``x``.
        h: Patch-distance scale in the image's units, broadcastable to ``x``.
        radius: Window half-width in pixels (``(2 radius + 1)^2`` taps).
        patch_sigma: Gaussian patch weight's sigma in pixels (0: single pixels, the bilateral
            filter).
        kernel: Use the compiled CPU kernel (``None``: wherever it serves ``x``'s device and
            dtype; ``False``: the torch loops, the kernel's oracle).

    Returns:
        ``(B, 1, H, W)``, differentiable in ``x``, ``spatial`` and ``h``.
    """
    if x.dim() != 4 or x.shape[1] != 1:
        raise ValueError(f"nonlocal_means takes (B, 1, H, W), got {tuple(x.shape)}")
    if radius < 1:
        raise ValueError(f"radius must be >= 1, got {radius}")
    # the bilateral kernel's border rule: reflect about the edge pixel (replicate on an axis
    # shorter than the window)
    mode = "reflect" if min(x.shape[-2:]) > radius else "replicate"
    padded = F.pad(x, (radius,) * 4, mode=mode)
    shape = x.shape
    # sigma -> 0 gives a weight of exactly 0 (the identity), never a division by zero
    inv_h = (0.5 / h.clamp_min(1e-6).square()).expand(shape).contiguous()
    inv_y = (0.5 / spatial[0].clamp_min(1e-3).square()).expand(shape).contiguous()
    inv_x = (0.5 / spatial[1].clamp_min(1e-3).square()).expand(shape).contiguous()
    usable = (
        kernel_available(x.device)
        and x.dtype in (torch.float32, torch.float64)
        and inv_h.dtype == inv_y.dtype == inv_x.dtype == x.dtype
    )
    if kernel and not usable:
        raise RuntimeError(
            f"the compiled NLM kernel does not serve {x.dtype} on {x.device} "
            f"(or was not built: see `medssl ops status`)"
        )
    use = usable if kernel is None else kernel
    return _NonLocalMeans.apply(padded, inv_h, inv_y, inv_x, radius, float(patch_sigma), use)
