"""Projection heads of Chaitanya et al. (NeurIPS 2020), "Contrastive learning of global and local
features for medical image segmentation with limited annotations".

- :class:`GlobalProjectionHead` is ``g1`` of Sec. 3.1 ("Global contrastive loss"): global
  average pooling of the encoder's last feature map, then two dense layers (1024 -> 128 in the
  paper) giving the embedding ``z`` of :func:`~medssl.ssl.contrastive.global_contrastive_loss`.
- :class:`LocalProjectionHead` is ``g2`` of Sec. 3.2 ("Local contrastive loss"): two 1x1
  convolutions on the feature map of the first decoder blocks, giving the map ``f`` of
  :func:`~medssl.ssl.contrastive.local_contrastive_loss`.

Both are discarded after pretraining.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["GlobalProjectionHead", "LocalProjectionHead"]


class GlobalProjectionHead(nn.Module):
    """Global average pool -> Linear -> ReLU -> Linear.

    Args:
        in_channels: Channels ``C`` of the encoder features.
        hidden: Width of the hidden dense layer (1024 in the paper).
        out: Embedding size (128 in the paper).

    Shape:
        x: ``(N, C, *S)`` with any number of spatial axes (``(N, C, H, W)``,
        ``(N, C, D, H, W)``), averaged over all of them; an already pooled ``(N, C)`` is
        used as is. Output: ``(N, out)`` (not normalised; the loss normalises).
    """

    def __init__(self, in_channels: int, hidden: int = 1024, out: int = 128) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.mlp = nn.Sequential(
            nn.Linear(in_channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected (N, {self.in_channels}, *S) encoder features, got {tuple(x.shape)}"
            )
        pooled = x.flatten(2).mean(dim=2) if x.dim() > 2 else x
        return self.mlp(pooled)


class LocalProjectionHead(nn.Module):
    """1x1 conv -> ReLU -> 1x1 conv, in 2D or 3D.

    Args:
        in_channels: Channels ``C`` of the decoder feature map.
        hidden: Channels of the hidden 1x1 convolution.
        out: Channels of the projected map.
        spatial_dims: 2 (``Conv2d``) or 3 (``Conv3d``).

    Shape:
        x: ``(N, C, H, W)`` for ``spatial_dims=2``, ``(N, C, D, H, W)`` for 3.
        Output: ``(N, out, *S)``, same spatial size.
    """

    def __init__(self, in_channels: int, hidden: int, out: int, spatial_dims: int) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.spatial_dims = spatial_dims
        self.net = nn.Sequential(
            conv(in_channels, hidden, kernel_size=1),
            nn.ReLU(inplace=True),
            conv(hidden, out, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.spatial_dims + 2:
            raise ValueError(
                f"expected a {self.spatial_dims}D map (N, C, *S), got {tuple(x.shape)}"
            )
        return self.net(x)
