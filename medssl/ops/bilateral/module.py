"""``BilateralFilter``: a thin ``nn.Module`` over :func:`bilateral_filter`."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from medssl.ops.bilateral.functional import bilateral_filter

__all__ = ["BilateralFilter"]


class BilateralFilter(nn.Module):
    """Bilateral filter with default sigmas that a call can override with per-voxel maps.

    Args:
        radius: Window radius (int or one per spatial axis).
        sigma_spatial: Default spatial sigmas (voxels), one per spatial axis.
        sigma_range: Default range sigma (input units).

    Shape:
        - input: ``(B, C, H, W)`` or ``(B, C, D, H, W)``
        - output: same as the input

    Example:
        >>> f = BilateralFilter(radius=2, sigma_spatial=(1.0, 1.0), sigma_range=0.1)
        >>> f(torch.rand(1, 1, 8, 8)).shape
        torch.Size([1, 1, 8, 8])
    """

    def __init__(
        self,
        radius: int | Sequence[int],
        sigma_spatial: Sequence[float] | None = None,
        sigma_range: float | None = None,
    ) -> None:
        super().__init__()
        self.radius = radius if isinstance(radius, int) else tuple(radius)
        self.sigma_spatial = None if sigma_spatial is None else tuple(sigma_spatial)
        self.sigma_range = sigma_range

    def forward(
        self,
        x: Tensor,
        sigma_spatial: Sequence[float | Tensor] | None = None,
        sigma_range: float | Tensor | None = None,
    ) -> Tensor:
        spatial = sigma_spatial if sigma_spatial is not None else self.sigma_spatial
        rng = sigma_range if sigma_range is not None else self.sigma_range
        if spatial is None or rng is None:
            raise ValueError("BilateralFilter needs sigmas: set defaults or pass them to forward")
        return bilateral_filter(x, spatial, rng, self.radius)

    def extra_repr(self) -> str:
        return (
            f"radius={self.radius}, sigma_spatial={self.sigma_spatial}, "
            f"sigma_range={self.sigma_range}"
        )
