"""The loss scale of the current training step, for gradients that are not linear in the
incoming gradient.

Under fp16 autocast the engine scales the loss by a :class:`torch.amp.GradScaler`'s factor
``s`` before the backward pass and divides the gradients by ``s`` afterwards. That is exact
for ordinary autograd, whose gradients are linear in the incoming gradient. An I-MLE backward
(:mod:`medssl.ssl.graphmatch.imle`) is not: it solves a matching at ``θ - λ ∂L/∂z`` and
returns a difference of matchings, whose size does not grow with ``∂L/∂z``; without knowing
``s`` it would move ``λ s`` instead of ``λ``, and the unscaling would divide its gradient by
``s``. The engine runs each step's forward inside :func:`loss_scale`; such a function reads
:func:`current_loss_scale` in its forward (the backward may run in another thread).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["current_loss_scale", "loss_scale"]

_SCALE: ContextVar[float] = ContextVar("medssl_loss_scale", default=1.0)


@contextmanager
def loss_scale(value: float) -> Iterator[None]:
    """Within the block, :func:`current_loss_scale` is ``value`` (the factor the loss will be
    multiplied by before its backward pass)."""
    token = _SCALE.set(float(value))
    try:
        yield
    finally:
        _SCALE.reset(token)


def current_loss_scale() -> float:
    """The loss scale of the step being computed (1.0 outside :func:`loss_scale`)."""
    return _SCALE.get()
