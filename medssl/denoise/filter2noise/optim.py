"""AdamW under a one-cycle schedule, in plain tensor code.

The fit takes AdamW steps with the one-cycle learning rate (and beta1) schedule of
Smith & Topin, the same update as ``torch.optim.AdamW`` with
``torch.optim.lr_scheduler.OneCycleLR`` at its defaults (checked against them in the tests).
It exists because creating any ``torch.optim`` optimiser imports ``torch._dynamo``, about one
second of a 20-second CLI run on 2 CPU cores; Filter2Noise has a few thousand parameters in a
handful of tensors, so the optimiser needs none of that machinery.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["OneCycleAdamW", "one_cycle"]


def _cos_anneal(start: float, end: float, frac: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * frac) + 1.0)


def one_cycle(
    step: int,
    total: int,
    max_lr: float,
    *,
    warmup: float = 0.3,
    div: float = 25.0,
    final_div: float = 1e4,
    beta1_range: tuple[float, float] = (0.85, 0.95),
) -> tuple[float, float]:
    """Learning rate and beta1 at ``step`` (0-based) of a ``total``-step one-cycle schedule.

    The rate rises from ``max_lr / div`` to ``max_lr`` over the first ``warmup`` fraction of
    the steps and falls to ``max_lr / (div * final_div)`` by the last step, both along a half
    cosine; beta1 moves the opposite way between ``beta1_range`` (high while the rate is low).
    """
    lo_beta, hi_beta = beta1_range
    first = max_lr / div
    last = first / final_div
    peak_at = float(warmup * total) - 1.0
    end_at = float(total - 1)
    if step <= peak_at:
        frac = step / peak_at if peak_at > 0 else 1.0
        return _cos_anneal(first, max_lr, frac), _cos_anneal(hi_beta, lo_beta, frac)
    span = end_at - peak_at
    frac = (step - peak_at) / span if span > 0 else 1.0
    return _cos_anneal(max_lr, last, frac), _cos_anneal(lo_beta, hi_beta, frac)


class OneCycleAdamW:
    """AdamW whose learning rate and beta1 follow :func:`one_cycle` over ``total`` steps.

    Args:
        params: The tensors to optimise (those without a gradient at a step are skipped).
        max_lr: Peak learning rate.
        total: Number of steps the schedule spans.
        weight_decay: Decoupled weight decay (multiplies the parameters by ``1 - lr * wd``).
        beta2: Second-moment decay.
        eps: Added to the bias-corrected root of the second moment.
    """

    def __init__(
        self,
        params: Sequence[Tensor],
        max_lr: float,
        total: int,
        *,
        weight_decay: float = 0.01,
        beta2: float = 0.999,
        eps: float = 1e-8,
    ) -> None:
        self.params = list(params)
        self.max_lr, self.total = max_lr, max(int(total), 1)
        self.weight_decay, self.beta2, self.eps = weight_decay, beta2, eps
        self.step_count = 0
        self._m = [torch.zeros_like(p) for p in self.params]
        self._v = [torch.zeros_like(p) for p in self.params]
        self._t = [0] * len(self.params)

    def zero_grad(self) -> None:
        """Drop the parameters' gradients."""
        for p in self.params:
            p.grad = None

    @property
    def lr(self) -> float:
        """The learning rate the next :meth:`step` uses."""
        return one_cycle(min(self.step_count, self.total - 1), self.total, self.max_lr)[0]

    @torch.no_grad()
    def step(self) -> None:
        """One AdamW update with the schedule's current rate and beta1, then advance it."""
        lr, beta1 = one_cycle(min(self.step_count, self.total - 1), self.total, self.max_lr)
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            self._t[i] += 1
            t = self._t[i]
            m, v = self._m[i], self._v[i]
            p.mul_(1.0 - lr * self.weight_decay)
            m.lerp_(g, 1.0 - beta1)
            v.mul_(self.beta2).addcmul_(g, g, value=1.0 - self.beta2)
            denom = (v.sqrt() / math.sqrt(1.0 - self.beta2**t)).add_(self.eps)
            p.addcdiv_(m, denom, value=-lr / (1.0 - beta1**t))
        self.step_count += 1
