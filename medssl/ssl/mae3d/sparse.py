"""SparK-style sparse encoders for CNNs (the S3D variant of Revisiting MAE).

A masked-out block must not leak into the encoder: every convolution's output is multiplied by
the visible map at its resolution, and every instance norm takes its mean and variance over
visible voxels only (then zeroes the masked ones). Computed densely on the masked tensor, as
SparK does on GPUs: the result at visible voxels equals that of a sparse convolution over the
visible blocks.

:func:`sparsify` switches the encoder's ``Conv{2,3}d`` and ``InstanceNorm{2,3}d`` modules to
sparse subclasses *in place* (their class changes, nothing else): parameter names and shapes stay
those of the plain network, so its ``state_dict`` is the plain U-Net's and
:func:`unsparsify` restores plain behaviour.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medssl.ssl.mae3d.masking import expand_mask

__all__ = ["MaskState", "SparseConv", "SparseInstanceNorm", "sparsify", "unsparsify"]


class MaskState:
    """The block mask the sparse modules of one network read during a forward pass.

    ``visible(shape)`` gives ``(B, 1, *shape)`` (1 = visible), cached per resolution.
    """

    def __init__(self) -> None:
        self._mask: torch.Tensor | None = None
        self._cache: dict[tuple[int, ...], torch.Tensor] = {}

    def set(self, mask: torch.Tensor | None) -> None:
        """Set the ``(B, *grid)`` bool mask (``True`` = masked), or ``None`` for dense mode."""
        self._mask = mask
        self._cache = {}

    @property
    def active(self) -> bool:
        return self._mask is not None

    def visible(self, like: torch.Tensor) -> torch.Tensor:
        assert self._mask is not None
        shape = tuple(like.shape[2:])
        key = (*shape, like.dtype.itemsize, like.device.index or 0)
        hit = self._cache.get(key)
        if hit is None:
            m = self._mask.to(like.device)
            hit = (1.0 - expand_mask(m, shape)).to(like.dtype)
            self._cache[key] = hit
        return hit


class SparseConv(nn.Module):
    """Mixin class given to ``nn.Conv2d``/``nn.Conv3d`` modules by :func:`sparsify`."""

    _mask_state: MaskState

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._conv_forward(x, self.weight, self.bias)  # type: ignore[operator]
        if self._mask_state.active:
            out = out * self._mask_state.visible(out)
        return out


class SparseInstanceNorm(nn.Module):
    """Mixin class given to ``nn.InstanceNorm2d/3d`` modules: statistics over visible voxels."""

    _mask_state: MaskState
    eps: float
    weight: torch.Tensor | None
    bias: torch.Tensor | None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._mask_state.active:
            return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)
        dtype = x.dtype
        x = x.float()  # statistics in float32, also under bf16/fp16 autocast
        vis = self._mask_state.visible(x)
        dims = tuple(range(2, x.dim()))
        n = vis.sum(dim=dims, keepdim=True).clamp_min(1.0)
        mean = (x * vis).sum(dim=dims, keepdim=True) / n
        var = (((x - mean) * vis) ** 2).sum(dim=dims, keepdim=True) / n
        y = (x - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            shape = (1, -1) + (1,) * len(dims)
            y = y * self.weight.view(shape) + self.bias.view(shape)  # type: ignore[union-attr]
        return (y * vis).to(dtype)


_SPARSE_CLASSES: dict[type, type] = {}


def _sparse_class(cls: type, mixin: type) -> type:
    if cls not in _SPARSE_CLASSES:
        _SPARSE_CLASSES[cls] = type(f"Sparse{cls.__name__}", (mixin, cls), {})
    return _SPARSE_CLASSES[cls]


def sparsify(module: nn.Module, state: MaskState) -> int:
    """Make every conv and instance norm below ``module`` sparse, in place.

    Returns:
        How many modules were switched.
    """
    n = 0
    for m in module.modules():
        if type(m) in (nn.Conv2d, nn.Conv3d):
            m.__class__ = _sparse_class(type(m), SparseConv)
        elif type(m) in (nn.InstanceNorm2d, nn.InstanceNorm3d):
            if m.track_running_stats:
                raise ValueError("sparse instance norm does not track running statistics")
            m.__class__ = _sparse_class(type(m), SparseInstanceNorm)
        elif isinstance(m, nn.modules.batchnorm._NormBase | nn.GroupNorm | nn.LayerNorm):
            raise ValueError(
                f"S3D supports instance norms only; the encoder has {type(m).__name__}, whose "
                "statistics would include masked voxels (use a plans file with InstanceNorm)"
            )
        else:
            continue
        m._mask_state = state  # type: ignore[assignment]
        n += 1
    return n


def unsparsify(module: nn.Module) -> None:
    """Undo :func:`sparsify`: every sparse module gets its plain class back."""
    for m in module.modules():
        if isinstance(m, SparseConv | SparseInstanceNorm):
            m.__class__ = m.__class__.__mro__[2]
            del m._mask_state
