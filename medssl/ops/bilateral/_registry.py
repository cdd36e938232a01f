"""The Python half of the op registration: schemas where no compiled library defines them,
the reference as the device-generic implementation, fake (meta) kernels and autograd.

Both ops exist whatever was compiled:

* ``medssl::bilateral_filter(x, sigma_spatial, sigma_range, radius) -> (out, norm)``
* ``medssl::bilateral_filter_backward(grad_out, x, out, norm, sigma_spatial, sigma_range,
  radius, output_mask) -> (grad_x, grad_sigma_spatial, grad_sigma_range)``

The C++ library (when it loads) defines both schemas and registers CPU kernels, the CUDA
library registers CUDA kernels; the reference is registered as ``CompositeExplicitAutograd``,
which the dispatcher uses only for devices without a compiled kernel.
"""

from __future__ import annotations

import torch
from torch import Tensor

from medssl.ops.bilateral.reference import (
    bilateral_filter_backward_reference,
    bilateral_filter_reference,
)

__all__ = ["BACKWARD", "FORWARD", "register"]

FORWARD = "medssl::bilateral_filter"
BACKWARD = "medssl::bilateral_filter_backward"
_SCHEMAS = {
    "bilateral_filter": "bilateral_filter(Tensor x, Tensor[] sigma_spatial, Tensor sigma_range, "
    "int[] radius) -> (Tensor, Tensor)",
    "bilateral_filter_backward": "bilateral_filter_backward(Tensor grad_out, Tensor x, "
    "Tensor out, Tensor norm, Tensor[] sigma_spatial, Tensor sigma_range, int[] radius, "
    "bool[] output_mask) -> (Tensor, Tensor[], Tensor)",
}
_LIBS: list[torch.library.Library] = []  # keep the registrations alive
_DONE = False


def _opmath(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _map_like(x: Tensor) -> Tensor:
    return x.new_empty((x.shape[0], 1, *x.shape[2:]), dtype=_opmath(x.dtype))


def _forward_generic(
    x: Tensor, sigma_spatial: list[Tensor], sigma_range: Tensor, radius: list[int]
) -> tuple[Tensor, Tensor]:
    xs = x.to(_opmath(x.dtype))
    out, norm = bilateral_filter_reference(xs, sigma_spatial, sigma_range, radius)
    return out.to(x.dtype), norm


def _backward_generic(
    grad_out: Tensor,
    x: Tensor,
    out: Tensor,
    norm: Tensor,
    sigma_spatial: list[Tensor],
    sigma_range: Tensor,
    radius: list[int],
    output_mask: list[bool],
) -> tuple[Tensor, list[Tensor], Tensor]:
    dt = _opmath(x.dtype)
    gx, gs, gr = bilateral_filter_backward_reference(
        grad_out.to(dt), x.to(dt), out.to(dt), norm, sigma_spatial, sigma_range, radius, output_mask
    )
    return gx.to(x.dtype), [g.to(dt) for g in gs], gr.to(dt)


def _forward_fake(
    x: Tensor, sigma_spatial: list[Tensor], sigma_range: Tensor, radius: list[int]
) -> tuple[Tensor, Tensor]:
    torch._check(x.dim() in (4, 5), lambda: f"x must be 4D or 5D, got {x.dim()}D")
    return torch.empty_like(x, memory_format=torch.contiguous_format), _map_like(x)


def _backward_fake(
    grad_out: Tensor,
    x: Tensor,
    out: Tensor,
    norm: Tensor,
    sigma_spatial: list[Tensor],
    sigma_range: Tensor,
    radius: list[int],
    output_mask: list[bool],
) -> tuple[Tensor, list[Tensor], Tensor]:
    empty = x.new_empty(0)
    gx = torch.empty_like(x, memory_format=torch.contiguous_format) if output_mask[0] else empty
    gs = [_map_like(x) if m else empty for m in output_mask[1:-1]]
    gr = _map_like(x) if output_mask[-1] else empty
    return gx, gs, gr


def _setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    x, sigma_spatial, sigma_range, radius = inputs
    out, norm = output
    ctx.save_for_backward(x, out, norm, sigma_range, *sigma_spatial)
    ctx.radius = list(radius)
    ctx.mask = [
        bool(x.requires_grad),
        *(bool(s.requires_grad) for s in sigma_spatial),
        bool(sigma_range.requires_grad),
    ]
    ctx.mark_non_differentiable(norm)


def _autograd_backward(ctx, grad_out: Tensor, _grad_norm: Tensor | None):  # type: ignore[no-untyped-def]
    x, out, norm, sigma_range, *sigma_spatial = ctx.saved_tensors
    mask = ctx.mask
    gx, gs, gr = torch.ops.medssl.bilateral_filter_backward(
        grad_out.contiguous(), x, out, norm, sigma_spatial, sigma_range, ctx.radius, mask
    )
    return (
        gx if mask[0] else None,
        [g if m else None for g, m in zip(gs, mask[1:-1], strict=True)],
        gr if mask[-1] else None,
        None,
    )


def _op_exists(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(name, "")
        return True
    except RuntimeError:
        return False


def register(*, schemas_from_cpp: bool) -> None:
    """Register everything the compiled libraries do not provide (idempotent).

    Args:
        schemas_from_cpp: Whether the C++ library defined the schemas; otherwise they are
            defined here.
    """
    global _DONE
    if _DONE:
        return
    if not schemas_from_cpp and not _op_exists(FORWARD):
        lib = torch.library.Library("medssl", "DEF")
        for schema in _SCHEMAS.values():
            lib.define(schema)
        _LIBS.append(lib)
    impl = torch.library.Library("medssl", "FRAGMENT")
    impl.impl("bilateral_filter", _forward_generic, "CompositeExplicitAutograd")
    impl.impl("bilateral_filter_backward", _backward_generic, "CompositeExplicitAutograd")
    _LIBS.append(impl)
    torch.library.register_fake(FORWARD)(_forward_fake)
    torch.library.register_fake(BACKWARD)(_backward_fake)
    torch.library.register_autograd(FORWARD, _autograd_backward, setup_context=_setup_context)
    _DONE = True
