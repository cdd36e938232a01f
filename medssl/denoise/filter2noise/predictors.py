"""Sigma predictors: networks that map an image to raw sigma maps.

Every predictor returns ``(B, nd + 1, *spatial)`` raw values (one channel per spatial axis, in
the tensor's axis order, then the range channel; broadcastable shapes are allowed); the stage
turns them into bounded sigmas.

* :class:`LocalSigmaPredictor` (medssl's default): a small dilated CNN on the image and its
  pixel coordinates, so the maps follow anatomy and position, per pixel.
* :class:`PatchAttentionPredictor`: the published Filter2Noise predictor: one sigma triple per
  8x8 patch token from two position-free single-head attention layers, nearest-upsampled.
* :class:`GlobalSigmaPredictor`: one learned sigma triple per stage (the ablation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GlobalSigmaPredictor", "LocalSigmaPredictor", "PatchAttentionPredictor", "coord_grid"]


def coord_grid(spatial: tuple[int, ...], *, device=None, dtype=torch.float32) -> Tensor:  # type: ignore[no-untyped-def]
    """Pixel coordinates scaled to [-1, 1] along each axis.

    Shape:
        Output: ``(1, len(spatial), *spatial)``.
    """
    axes = [
        torch.linspace(-1.0, 1.0, n, device=device, dtype=dtype)
        if n > 1
        else torch.zeros(1, device=device, dtype=dtype)
        for n in spatial
    ]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]


class LocalSigmaPredictor(nn.Module):
    """Per-pixel sigma maps from local context and position.

    ``[image, coordinates] -> conv3 -> GELU -> dilated conv3 (x len(dilations)) -> conv1``;
    the receptive field is ``1 + 2 * (1 + sum(dilations))`` pixels. The last layer starts at
    zero, so the maps start constant at the stage's initial sigmas.

    Args:
        nd: Spatial dimensions (2 or 3); the convolution type follows.
        width: Hidden channels.
        dilations: Dilations of the hidden 3x3 layers.
        use_coords: Feed the pixel coordinates (position) to the network.
    """

    def __init__(
        self,
        nd: int = 2,
        width: int = 16,
        dilations: tuple[int, ...] = (2, 4),
        use_coords: bool = True,
    ) -> None:
        super().__init__()
        conv = nn.Conv2d if nd == 2 else nn.Conv3d
        self.nd = nd
        self.use_coords = use_coords
        layers: list[nn.Module] = [conv(1 + (nd if use_coords else 0), width, 3, padding=1)]
        for d in dilations:
            layers += [
                nn.GELU(),
                conv(width, width, 3, padding=d, dilation=d, padding_mode="replicate"),
            ]
        self.body = nn.Sequential(*layers, nn.GELU())
        self.head = conv(width, nd + 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor, coords: Tensor | None = None) -> Tensor:
        """Shape: ``x (B, 1, *S)``, ``coords (B or 1, nd, *S)`` -> ``(B, nd + 1, *S)``."""
        if self.use_coords:
            if coords is None:
                coords = coord_grid(tuple(x.shape[2:]), device=x.device, dtype=x.dtype)
            x = torch.cat([x, coords.to(x.dtype).expand(x.shape[0], *coords.shape[1:])], 1)
        return self.head(self.body(x))


class _SingleHeadAttention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, t: Tensor) -> Tensor:
        q, k, v = self.qkv(self.norm(t)).chunk(3, -1)
        return t + self.proj(F.scaled_dot_product_attention(q, k, v))


class PatchAttentionPredictor(nn.Module):
    """The published predictor: patch tokens, position-free attention, one triple per patch.

    Args:
        patch: Patch size (8).
        hidden: Token width (8).
        layers: Attention layers (2).
    """

    def __init__(self, patch: int = 8, hidden: int = 8, layers: int = 2) -> None:
        super().__init__()
        self.patch = patch
        self.embed = nn.Linear(patch * patch, hidden)
        self.blocks = nn.ModuleList(_SingleHeadAttention(hidden) for _ in range(layers))
        self.out = nn.Linear(hidden, 3)

    def forward(self, x: Tensor, coords: Tensor | None = None) -> Tensor:
        """Shape: ``x (B, 1, H, W)`` -> ``(B, 3, H, W)`` (constant over each patch)."""
        B, _, H, W = x.shape
        p = self.patch
        ph, pw = (-H) % p, (-W) % p
        xp = F.pad(x, (0, pw, 0, ph), mode="replicate")
        tokens = F.unfold(xp, p, stride=p).transpose(1, 2)  # (B, n_tokens, p*p)
        t = self.embed(tokens)
        for block in self.blocks:
            t = block(t)
        raw = self.out(t).transpose(1, 2).reshape(B, 3, (H + ph) // p, (W + pw) // p)
        raw = F.interpolate(raw, scale_factor=p, mode="nearest")
        return raw[:, :, :H, :W]


class GlobalSigmaPredictor(nn.Module):
    """One learned sigma triple (or quadruple in 3D) for the whole image: the ablation."""

    def __init__(self, nd: int = 2) -> None:
        super().__init__()
        self.nd = nd
        self.raw = nn.Parameter(torch.zeros(nd + 1))

    def forward(self, x: Tensor, coords: Tensor | None = None) -> Tensor:
        """Shape: ``x (B, 1, *S)`` -> ``(1, nd + 1, 1, ..., 1)`` (broadcast by the stage)."""
        return self.raw.view(1, -1, *([1] * self.nd))
