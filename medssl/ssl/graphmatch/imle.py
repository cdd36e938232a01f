"""Implicit MLE (I-MLE) gradients through the QAP solver.

I-MLE (Niepert, Minervini & Franceschi, "Implicit MLE: Backpropagating Through Discrete
Exponential Family Distributions", NeurIPS 2021) differentiates a discrete MAP state
``z(θ) = argmax_z ⟨θ, T(z)⟩`` by perturb-and-MAP: the forward pass returns
``z = MAP(θ + ε)`` for a noise sample ``ε``; the backward pass builds a *target* parameter
``θ' = θ - λ ∂L/∂z``, solves ``z' = MAP(θ' + ε)`` with the *same* noise, and returns
``∂L/∂θ ≈ T(z) - T(z')`` (the difference of the sufficient statistics of the two MAP states).
LVM-Med (Nguyen et al., NeurIPS 2023) trains its graph-matching objective this way.

Here the MAP problem is Lawler's QAP (:func:`medssl.ssl.graphmatch.qap.solve_qap`) with
parameters ``θ = (U, P)``: the unary (vertex) affinities ``U`` of shape ``(n, n)`` and the
pairwise (edge) affinities ``P`` of shape ``(n², n²)``, scoring a matching ``z`` as

    s(z) = ⟨U, z⟩ + vec(z)ᵀ P vec(z),

i.e. the QAP with ``K = P + diag(vec(U))``. The sufficient statistics are ``vec(z)`` for ``U``
and ``vec(z) vec(z)ᵀ`` for ``P``, so

    ∂L/∂U ≈ z - z',     ∂L/∂P ≈ vec(z) vec(z)ᵀ - vec(z') vec(z')ᵀ.

Choices (where the papers leave freedom):

- **noise**: Gumbel(0, 1) noise, times ``noise_scale``, is added to the unary term only; the
  pairwise term is not perturbed (perturbing ``n⁴`` entries would swamp the structure).
  ``noise="none"`` gives the plain MAP (and a finite-difference-style gradient).
- **target**: only the unary part moves, ``U' = U - λ ∂L/∂z``; ``P' = P`` because the loss
  depends on ``z`` only (its gradient with respect to ``vec(z)vec(z)ᵀ`` is zero).
- **scaling**: by default the gradient is the plain difference of MAP states, as in I-MLE's
  Algorithm (no division by ``λ``); ``divide_by_lam=True`` divides by ``λ``, which makes it a
  finite-difference estimate of the gradient's magnitude.
- **loss weight and loss scale**: I-MLE's target needs the gradient of *the* loss, not of a
  weighted or scaled copy: its size sets how far ``λ`` moves ``U``, and the difference of
  matchings it returns does not grow with the incoming gradient. When the matching enters the
  training loss multiplied by ``w`` (``1/n`` for a per-node mean) and the loss is scaled by a
  grad scaler's ``s`` (:func:`medssl.ssl.amp.current_loss_scale`, read in the forward), the
  incoming gradient is ``c g`` with ``c = w s``: the backward solves at ``U - λ g`` (the
  gradient divided by ``c``) and returns ``c`` times the difference, so a grad scaler's
  unscaling gives back the unscaled gradient and ``λ`` keeps its meaning whatever the
  normalisation of the loss (LVM-Med's λ = 80 is for the Hamming loss summed over nodes).
- **samples**: with ``S > 1`` noise samples the forward pass returns the *mean* of the ``S``
  MAP states (an estimate of the marginals); the backward pass uses the incoming gradient
  ``∂L/∂z`` for every sample's target and averages the ``S`` gradient estimates. For the
  linear losses used here (Hamming, accuracy) the loss of the mean is the mean of the losses.

The solver runs on the CPU (float64); results are returned on the inputs' device and dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from medssl.ssl.amp import current_loss_scale
from medssl.ssl.graphmatch.qap import solve_qap

__all__ = ["IMLEMatching", "imle_match", "map_matching", "perturbation_noise"]

NOISE_KINDS = ("gumbel", "none")


def perturbation_noise(
    shape: tuple[int, ...],
    noise: str = "gumbel",
    samples: int = 1,
    scale: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The perturbation ``ε`` of :func:`imle_match`: ``(samples, *shape)`` float64 on the CPU.

    Gumbel(0, 1) samples are ``-log(-log(u))`` with ``u ~ U(0, 1)`` drawn by
    :func:`torch.rand` from ``generator`` (a CPU generator; the global one when ``None``), so
    the same seed gives the same noise.

    Args:
        shape: Shape of one sample (``(n, n)`` for the unary term).
        noise: ``"gumbel"`` or ``"none"`` (zeros).
        samples: Number of samples ``S``.
        scale: Multiplies the noise (the perturb-and-MAP temperature).
        generator: Source of randomness.
    """
    if noise not in NOISE_KINDS:
        raise ValueError(f"noise must be one of {NOISE_KINDS}, got {noise!r}")
    full = (int(samples), *shape)
    if noise == "none":
        return torch.zeros(full, dtype=torch.float64)
    u = torch.rand(full, generator=generator, dtype=torch.float64)
    tiny = torch.finfo(torch.float64).tiny
    return -scale * torch.log(-torch.log(u.clamp(tiny, 1.0 - 1e-16)))


def map_matching(unary: torch.Tensor, pairwise: torch.Tensor | None = None) -> torch.Tensor:
    """MAP matching ``argmax_z ⟨U, z⟩ + vec(z)ᵀ P vec(z)`` over permutation matrices.

    Args:
        unary: ``(n, n)`` vertex scores ``U``.
        pairwise: ``(n², n²)`` edge scores ``P`` or ``None`` (then a linear assignment).

    Returns:
        ``(n, n)`` float64 CPU permutation matrix.
    """
    u = unary.detach().to("cpu", torch.float64)
    n = u.shape[0]
    if pairwise is None:
        rows, cols = linear_sum_assignment(u.numpy(), maximize=True)
        z = np.zeros((n, n))
        z[rows, cols] = 1.0
        return torch.from_numpy(z)
    K = pairwise.detach().to("cpu", torch.float64) + torch.diag(u.reshape(-1))
    return solve_qap(K, n)


class IMLEMatching(torch.autograd.Function):
    """``forward(unary, pairwise, eps, lam, divide_by_lam, grad_scale) -> (n, n)`` mean MAP
    state.

    ``eps`` is ``(S, n, n)`` unary noise; ``pairwise`` may be ``None``; ``grad_scale`` is the
    factor ``c`` between the incoming gradient and the gradient of the loss I-MLE's target
    is defined by (see the module docstring). Use :func:`imle_match` rather than calling
    this directly.
    """

    @staticmethod
    def forward(
        ctx: Any,
        unary: torch.Tensor,
        pairwise: torch.Tensor | None,
        eps: torch.Tensor,
        lam: float,
        divide_by_lam: bool,
        grad_scale: float,
    ) -> torch.Tensor:
        u = unary.detach().to("cpu", torch.float64)
        p = None if pairwise is None else pairwise.detach().to("cpu", torch.float64)
        zs = torch.stack([map_matching(u + e, p) for e in eps])  # (S, n, n)
        ctx.save_for_backward(u, p, eps, zs)
        ctx.lam = float(lam)
        ctx.divide_by_lam = bool(divide_by_lam)
        ctx.grad_scale = float(grad_scale)
        return zs.mean(dim=0).to(device=unary.device, dtype=unary.dtype)

    @staticmethod
    def backward(ctx: Any, grad_z: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        u, p, eps, zs = ctx.saved_tensors
        if not bool(torch.isfinite(grad_z).all()):
            # an overflowed fp16 gradient (a grad scaler's scale grown too far): no target to
            # solve for; NaN gradients make the scaler skip this step and lower its scale
            nan = float("nan")
            grad_u = torch.full_like(grad_z, nan) if ctx.needs_input_grad[0] else None
            grad_p = None
            if p is not None and ctx.needs_input_grad[1]:
                grad_p = torch.full(p.shape, nan, dtype=grad_z.dtype, device=grad_z.device)
            return grad_u, grad_p, None, None, None, None
        c = ctx.grad_scale
        target = u - ctx.lam * grad_z.detach().to("cpu", torch.float64) / c
        zt = torch.stack([map_matching(target + e, p) for e in eps])  # (S, n, n)
        scale = c / zs.shape[0]
        if ctx.divide_by_lam:
            scale /= ctx.lam
        grad_u = grad_p = None
        if ctx.needs_input_grad[0]:
            grad_u = ((zs - zt).sum(dim=0) * scale).to(grad_z.device, grad_z.dtype)
        if p is not None and ctx.needs_input_grad[1]:
            v, vt = zs.flatten(1), zt.flatten(1)  # (S, n²)
            outer = v.T @ v - vt.T @ vt  # Σ_s vec(z_s) vec(z_s)ᵀ - vec(z'_s) vec(z'_s)ᵀ
            grad_p = (outer * scale).to(grad_z.device, grad_z.dtype)
        return grad_u, grad_p, None, None, None, None


def imle_match(
    unary: torch.Tensor,
    pairwise: torch.Tensor | None = None,
    lam: float = 80.0,
    noise: str = "gumbel",
    samples: int = 1,
    generator: torch.Generator | None = None,
    *,
    noise_scale: float = 1.0,
    divide_by_lam: bool = False,
    loss_weight: float = 1.0,
) -> torch.Tensor:
    """Perturb-and-MAP graph matching with I-MLE gradients (see the module docstring).

    Forward: ``z = mean_s MAP(U + ε_s, P)`` with ``ε_s`` from :func:`perturbation_noise`
    (``(samples, n, n)``, drawn from ``generator``). Backward, for an incoming gradient
    ``c g`` (``c = loss_weight`` times the current loss scale,
    :func:`medssl.ssl.amp.current_loss_scale`): ``z'_s = MAP(U - λ g + ε_s, P)`` with the same
    ``ε_s``, and

        ∂L/∂U = c/S Σ_s (z_s - z'_s),
        ∂L/∂P = c/S Σ_s (vec(z_s) vec(z_s)ᵀ - vec(z'_s) vec(z'_s)ᵀ),

    (divided by ``λ`` too when ``divide_by_lam``).

    Args:
        unary: ``(n, n)`` vertex affinities ``U`` (``U[i, a]``: node ``i`` of G1 with node
            ``a`` of G2).
        pairwise: ``(n², n²)`` edge affinities ``P`` (index ``(i, a)`` is ``i*n + a``), e.g.
            from :func:`medssl.ssl.graphmatch.loss.edge_affinity_matrix`; any differentiable
            function that built it receives the gradient. ``None`` for a linear assignment.
        lam: I-MLE's ``λ`` (step towards the target distribution).
        noise: ``"gumbel"`` or ``"none"``.
        samples: Number of noise samples ``S``.
        generator: CPU generator for the noise.
        noise_scale: Multiplies the Gumbel noise.
        divide_by_lam: Divide the gradient by ``λ``.
        loss_weight: The factor the matching's loss enters the training loss with (``1/n``
            when the loss is a Hamming distance divided by ``n``, as
            :func:`medssl.ssl.graphmatch.loss.hamming_loss`): ``λ`` then acts on the
            gradient of the unweighted loss.

    Returns:
        ``(n, n)`` matching on ``unary``'s device and dtype: a permutation matrix when
        ``samples == 1``, otherwise the mean of ``samples`` permutation matrices.
    """
    if unary.dim() != 2 or unary.shape[0] != unary.shape[1]:
        raise ValueError(f"unary must be (n, n), got {tuple(unary.shape)}")
    n = unary.shape[0]
    if pairwise is not None and tuple(pairwise.shape) != (n * n, n * n):
        raise ValueError(f"pairwise must be ({n * n}, {n * n}), got {tuple(pairwise.shape)}")
    if samples < 1:
        raise ValueError("samples must be >= 1")
    eps = perturbation_noise((n, n), noise, samples, noise_scale, generator)
    if not loss_weight > 0:
        raise ValueError(f"loss_weight must be > 0, got {loss_weight}")
    grad_scale = float(loss_weight) * current_loss_scale()
    return IMLEMatching.apply(unary, pairwise, eps, lam, divide_by_lam, grad_scale)
