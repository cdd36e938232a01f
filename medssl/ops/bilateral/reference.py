"""Pure-PyTorch reference of the bilateral filter: the fallback and the test oracle.

The forward loops over the window taps and keeps O(N) memory (never ``unfold``); its
backward relies on autograd (which stores each tap's weights, so it is O(N * taps)).
:func:`bilateral_filter_backward_reference` computes the same gradients explicitly, tap by
tap, in O(N) memory: it implements the backward op where no compiled kernel exists.

Semantics (shared by every implementation): for each centre voxel ``i`` and window offset
``d`` (``|d_a| <= radius_a``), with ``j`` the voxel at ``i + d`` under the border rule,

``w_ij = exp(-sum_a d_a^2 / (2 s_a(i)^2) - ||x_i - x_j||^2 / (2 r(i)^2))``,
``y_i = sum_j w_ij x_j / sum_j w_ij``,

where ``s_a(i)`` are the spatial sigmas (voxels) and ``r(i)`` the range sigma (input units) of
the centre voxel, each clamped below at :data:`SIGMA_EPS`; for C > 1 the squared distance is
summed over channels and the weights are shared by all channels.

Border rule: an index ``q`` outside ``[0, n)`` is reflected about the edge voxel without
repeating it (``-1 -> 1``, ``n -> n - 2``, as numpy's and PyTorch's ``reflect``) and then
clamped into ``[0, n)`` (which matters only where the radius exceeds ``n - 1``). An axis of
size 1 maps every tap onto the voxel itself, so the filter reduces exactly to the
lower-dimensional one.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "SIGMA_EPS",
    "bilateral_filter_backward_reference",
    "bilateral_filter_reference",
    "reflect_index",
]

#: Lower clamp of every sigma (voxels for spatial sigmas, input units for the range sigma):
#: a sigma of 0 means no smoothing along that axis (or in range), with finite gradients.
SIGMA_EPS = 1e-3


def reflect_index(n: int, radius: int, device: torch.device | str | None = None) -> Tensor:
    """Source index of each padded position ``p`` in ``[0, n + 2 * radius)`` (border rule).

    Shape:
        Output: ``(n + 2 * radius,)`` int64, values in ``[0, n)``.
    """
    q = torch.arange(-radius, n + radius, device=device)
    if n == 1:
        return torch.zeros_like(q)
    q = torch.where(q < 0, -q, q)
    q = torch.where(q > n - 1, 2 * (n - 1) - q, q)
    return q.clamp(0, n - 1)


def _pad(x: Tensor, radius: Sequence[int]) -> Tensor:
    """Pad the spatial axes of ``(B, C, *S)`` by ``radius`` with the border rule."""
    for axis, r in enumerate(radius):
        dim = 2 + axis
        x = x.index_select(dim, reflect_index(x.shape[dim], r, x.device))
    return x


def _neg_half_inv_sq(sigma: Tensor) -> Tensor:
    """``-1 / (2 * max(sigma, eps)^2)``."""
    return -0.5 / sigma.clamp(min=SIGMA_EPS).square()


def _shifted(
    xp: Tensor, radius: Sequence[int], offset: Sequence[int], size: Sequence[int]
) -> Tensor:
    """The view of the padded tensor holding, at each centre, its neighbour at ``offset``."""
    index = [slice(None), slice(None)]
    for r, d, n in zip(radius, offset, size, strict=True):
        index.append(slice(r + d, r + d + n))
    return xp[tuple(index)]


def bilateral_filter_reference(
    x: Tensor,
    sigma_spatial: Sequence[Tensor],
    sigma_range: Tensor,
    radius: Sequence[int],
) -> tuple[Tensor, Tensor]:
    """Reference bilateral filter.

    Args:
        x: Input ``(B, C, *S)`` with 2 or 3 spatial axes.
        sigma_spatial: One tensor per spatial axis (in the tensor's axis order), in voxels,
            broadcastable to ``(B, 1, *S)``.
        sigma_range: Range sigma in the input's units, broadcastable to ``(B, 1, *S)``.
        radius: Window radius per spatial axis.

    Returns:
        ``(out, norm)``: the filtered image ``(B, C, *S)`` and the sum of weights
        ``(B, 1, *S)``.
    """
    size = x.shape[2:]
    xp = _pad(x, radius)
    a_s = [_neg_half_inv_sq(s) for s in sigma_spatial]
    a_r = _neg_half_inv_sq(sigma_range)
    num = torch.zeros_like(x)
    den = torch.zeros_like(x[:, :1])
    for offset in itertools.product(*(range(-r, r + 1) for r in radius)):
        xn = _shifted(xp, radius, offset, size)  # (B, C, *S)
        dist2 = (x - xn).square().sum(1, keepdim=True)  # (B, 1, *S)
        logw = dist2 * a_r
        for d, a in zip(offset, a_s, strict=True):
            if d:
                logw = logw + (d * d) * a
        w = torch.exp(logw)
        num = num + w * xn
        den = den + w
    return num / den, den


def bilateral_filter_backward_reference(
    grad_out: Tensor,
    x: Tensor,
    out: Tensor,
    norm: Tensor,
    sigma_spatial: Sequence[Tensor],
    sigma_range: Tensor,
    radius: Sequence[int],
    output_mask: Sequence[bool],
) -> tuple[Tensor, list[Tensor], Tensor]:
    """Explicit gradients of :func:`bilateral_filter_reference`, tap by tap, O(N) memory.

    With ``g`` the gradient of the output, ``G_ij = sum_c g_ci (x_cj - y_ci) / W_i``:

    * ``dL/ds_a(i) = sum_j G_ij w_ij d_a^2 / s_a^3``, ``dL/dr(i) = sum_j G_ij w_ij D_ij / r^3``;
    * ``dL/dx_k`` collects, over every (centre ``i``, tap ``j``) pair, ``g_ci w_ij / W_i``
      for ``j = k`` and the range-weight terms ``2 a_r(i) G_ij w_ij (x_i - x_j)`` (for
      ``i = k``) and ``2 a_r(i) G_ij w_ij (x_j - x_i)`` (for ``j = k``), ``a_r = -1/(2 r^2)``.

    Args:
        output_mask: Which gradients to compute: ``[x, *sigma_spatial, sigma_range]``.

    Returns:
        ``(grad_x, grad_sigma_spatial, grad_sigma_range)``; per-voxel maps ``(B, 1, *S)``
        for the sigmas; zero-size tensors where not requested.
    """
    size = x.shape[2:]
    nd = len(size)
    sig = [s.expand(norm.shape) for s in sigma_spatial]
    sr = sigma_range.expand(norm.shape)
    a_s = [_neg_half_inv_sq(s) for s in sig]
    a_r = _neg_half_inv_sq(sr)
    g_hat = grad_out / norm  # (B, C, *S)
    a_hat = (g_hat * out).sum(1, keepdim=True)  # (B, 1, *S)
    xp = _pad(x, radius)
    want_x = bool(output_mask[0])
    acc_s = [torch.zeros_like(norm) for _ in range(nd)]
    acc_r = torch.zeros_like(norm)
    own = torch.zeros_like(x)
    pad_shape = [*x.shape[:2], *(n + 2 * r for n, r in zip(size, radius, strict=True))]
    gpad = x.new_zeros(pad_shape) if want_x else None
    for offset in itertools.product(*(range(-r, r + 1) for r in radius)):
        xn = _shifted(xp, radius, offset, size)
        diff = x - xn  # (B, C, *S), x_i - x_j
        dist2 = diff.square().sum(1, keepdim=True)
        logw = dist2 * a_r
        for d, a in zip(offset, a_s, strict=True):
            if d:
                logw = logw + (d * d) * a
        w = torch.exp(logw)
        t = ((g_hat * xn).sum(1, keepdim=True) - a_hat) * w  # G_ij * w_ij
        for axis, d in enumerate(offset):
            if d:
                acc_s[axis] = acc_s[axis] + t * (d * d)
        acc_r = acc_r + t * dist2
        if want_x:
            own = own + t * diff
            contrib = g_hat * w - 2 * a_r * t * diff  # to x_j: direct + range terms
            index = [slice(None), slice(None)]
            for r, d, n in zip(radius, offset, size, strict=True):
                index.append(slice(r + d, r + d + n))
            gpad[tuple(index)] += contrib  # type: ignore[index]
    empty = x.new_zeros(0)
    grad_x = empty
    if want_x:
        grad_x = 2 * a_r * own
        folded = gpad
        for axis, r in enumerate(radius):
            dim = 2 + axis
            n = size[axis]
            target_shape = list(folded.shape)  # type: ignore[union-attr]
            target_shape[dim] = n
            target = folded.new_zeros(target_shape)  # type: ignore[union-attr]
            folded = target.index_add_(dim, reflect_index(n, r, x.device), folded)  # type: ignore[arg-type]
        grad_x = grad_x + folded
    grad_s = []
    for axis in range(nd):
        if output_mask[1 + axis]:
            s = sig[axis]
            grad = acc_s[axis] / s.clamp(min=SIGMA_EPS).pow(3)
            grad_s.append(torch.where(s >= SIGMA_EPS, grad, torch.zeros_like(grad)))
        else:
            grad_s.append(empty)
    grad_r = empty
    if output_mask[1 + nd]:
        grad = acc_r / sr.clamp(min=SIGMA_EPS).pow(3)
        grad_r = torch.where(sr >= SIGMA_EPS, grad, torch.zeros_like(grad))
    return grad_x, grad_s, grad_r
