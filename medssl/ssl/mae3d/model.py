"""Masked autoencoders for U-Nets: the dense MAE and Spark3D (S3D) of Revisiting MAE.

Both reconstruct the input through the full U-Net; the reconstruction head is the U-Net's own
final 1x1 convolution (its "segmentation" layer with as many outputs as input channels), the
one layer nnU-Net re-initialises when it fine-tunes. The loss is the MSE on masked voxels only.

- **dense** (``MaskedAutoencoder(sparse=False)``): masked blocks of the input are set to zero and
  the plain network runs on the result.
- **S3D** (``sparse=True``): the encoder's convolutions and norms see only visible blocks
  (:mod:`medssl.ssl.mae3d.sparse`); before the decoder, the masked positions of every skip
  connection are filled with a learned per-stage, per-channel mask token.

In both, ``self.network`` keeps exactly the plain U-Net's parameter names, so its
``state_dict()`` is what nnU-Net loads; the mask tokens live beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medssl.models.unet import network_dim
from medssl.ssl.mae3d.masking import BlockMasker, RecordedMasker, block_grid, expand_mask
from medssl.ssl.mae3d.sparse import MaskState, sparsify, unsparsify

__all__ = ["MAEObjective", "MAEOutput", "MaskedAutoencoder", "masked_mse"]


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over masked voxels only.

    Args:
        pred: ``(B, C, *S)`` reconstruction.
        target: ``(B, C, *S)`` original (normalised) input.
        mask: ``(B, 1, *S)`` with 1 on masked voxels, 0 on visible ones.

    Returns:
        Scalar: ``sum(mask * (pred - target)²) / (C · sum(mask))``. Visible voxels get no
        gradient.
    """
    diff = (pred.float() - target.float()) ** 2
    m = mask.to(diff.dtype)
    denom = m.sum() * pred.shape[1]
    return (diff * m).sum() / denom.clamp_min(1.0)


@dataclass
class MAEOutput:
    """What a forward pass gives.

    Attributes:
        reconstruction: ``(B, C, *S)``.
        mask: ``(B, 1, *S)`` float, 1 where masked.
        block_mask: ``(B, *grid)`` bool, ``True`` where masked.
    """

    reconstruction: torch.Tensor
    mask: torch.Tensor
    block_mask: torch.Tensor


class MaskedAutoencoder(nn.Module):
    """Dense MAE or S3D around an nnU-Net ``ResidualEncoderUNet``/``PlainConvUNet``.

    Args:
        network: A U-Net with ``encoder`` (returning skips) and ``decoder`` built with
            ``num_classes == input channels`` and deep supervision off.
        sparse: ``True`` for S3D, ``False`` for the dense MAE.
        block_size: Mask block edge in voxels (16 in the paper).
        mask_ratio: Fraction of blocks masked (0.75 in the paper), or ``(low, high)`` for a
            ratio drawn per sample (see :class:`BlockMasker`).
        masker: Replaces the random masker (e.g. a :class:`RecordedMasker` in tests).
        densify: S3D only: SparK's densify step, a normalisation and a convolution per
            encoder stage (3x3(x3); 1x1(x1) at the deepest) applied to the mask-token-filled
            features before the decoder. Pretraining-only modules (``densify.*``), like the
            mask tokens: the exported network does not contain them.

    Shape:
        x: ``(B, C, *S)`` with every ``S`` a multiple of ``block_size``.
    """

    def __init__(
        self,
        network: Any,
        *,
        sparse: bool,
        block_size: int = 16,
        mask_ratio: float | tuple[float, float] = 0.75,
        masker: BlockMasker | RecordedMasker | None = None,
        densify: bool = False,
    ) -> None:
        super().__init__()
        if not hasattr(network, "encoder") or not hasattr(network, "decoder"):
            raise TypeError("MaskedAutoencoder needs a U-Net with .encoder and .decoder")
        if getattr(network.decoder, "deep_supervision", False):
            raise ValueError("build the network with deep_supervision=False for MAE")
        self.network = network
        self.sparse = bool(sparse)
        self.block_size = int(block_size)
        self.masker = masker or BlockMasker(block_size, mask_ratio)
        self._state = MaskState()
        # deep supervision is off: the coarser output layers are never used in pretraining
        # (and nnU-Net re-initialises all of them), so they take no gradient
        for layer in list(network.decoder.seg_layers)[:-1]:
            layer.requires_grad_(False)
        if self.sparse:
            sparsify(network.encoder, self._state)
            channels = list(network.encoder.output_channels)
            self.mask_tokens = nn.ParameterList(nn.Parameter(torch.zeros(c)) for c in channels)
            for t in self.mask_tokens:
                nn.init.trunc_normal_(t, std=0.02)
        if densify and not self.sparse:
            raise ValueError("densify is S3D's step: it needs sparse=True")
        self.densify = None
        if densify:
            dims = network_dim(network)
            conv = nn.Conv3d if dims == 3 else nn.Conv2d
            norm = nn.InstanceNorm3d if dims == 3 else nn.InstanceNorm2d
            last = len(channels) - 1
            self.densify = nn.ModuleList(
                nn.Sequential(
                    norm(c, affine=True),
                    conv(c, c, 1 if i == last else 3, padding=0 if i == last else 1),
                )
                for i, c in enumerate(channels)
            )

    def check_patch(self, spatial_shape: Sequence[int]) -> None:
        """Raise ``ValueError`` unless every axis is a multiple of the block size."""
        bad = [s for s in spatial_shape if s % self.block_size]
        if bad:
            raise ValueError(
                f"patch {tuple(spatial_shape)} is not a multiple of the {self.block_size}-voxel "
                "mask block on every axis; choose a patch size divisible by the block size"
            )

    def forward(
        self,
        x: torch.Tensor,
        seeds: Sequence[int] | None = None,
        block_mask: torch.Tensor | None = None,
    ) -> MAEOutput:
        """Mask, encode, decode.

        Args:
            x: ``(B, C, *S)`` normalised images.
            seeds: One mask seed per sample (ignored when ``block_mask`` is given); default
                ``0..B-1``.
            block_mask: ``(B, *grid)`` bool mask to use as is.
        """
        spatial = tuple(x.shape[2:])
        self.check_patch(spatial)
        if block_mask is None:
            seeds = list(range(x.shape[0])) if seeds is None else list(seeds)
            block_mask = self.masker(spatial, seeds)
        block_mask = block_mask.to(x.device)
        if tuple(block_mask.shape[1:]) != block_grid(spatial, self.block_size):
            raise ValueError(f"block mask {tuple(block_mask.shape)} does not fit patch {spatial}")
        mask = expand_mask(block_mask, spatial).to(x.dtype)
        x_in = x * (1.0 - mask)
        if not self.sparse:
            recon = self.network(x_in)
        else:
            self._state.set(block_mask)
            try:
                skips = self.network.encoder(x_in)
            finally:
                self._state.set(None)
            filled = []
            for skip, token in zip(skips, self.mask_tokens, strict=True):
                m = expand_mask(block_mask, skip.shape[2:]).to(skip.dtype)
                shape = (1, -1) + (1,) * (skip.dim() - 2)
                filled.append(skip * (1.0 - m) + token.view(shape).to(skip.dtype) * m)
            if self.densify is not None:
                filled = [step(f) for step, f in zip(self.densify, filled, strict=True)]
            recon = self.network.decoder(filled)
        return MAEOutput(recon, mask, block_mask)

    def loss(self, x: torch.Tensor, out: MAEOutput) -> torch.Tensor:
        """Masked MSE of the reconstruction against ``x``."""
        return masked_mse(out.reconstruction, x, out.mask)

    def plain_network(self) -> nn.Module:
        """The network with plain (non-sparse) modules: the part nnU-Net fine-tunes.

        For S3D this undoes the sparse switch on ``self.network`` (call it once training is
        over); for the dense MAE it is ``self.network`` itself.
        """
        if self.sparse:
            unsparsify(self.network)
        return self.network


class MAEObjective(nn.Module):
    """The engine-facing wrapper: ``forward(batch) -> {"loss": ...}``.

    ``batch["image"]`` is ``(B, C, *S)``; ``batch["seed"]`` holds one mask seed per sample
    (from :class:`medssl.data.patches.PatchDataset`), so a sample's mask does not depend on
    the batch or the rank it lands in.
    """

    #: Prefix of the plain U-Net's keys in this module's ``state_dict``.
    network_prefix = "mae.network."

    def __init__(self, mae: MaskedAutoencoder) -> None:
        super().__init__()
        self.mae = mae

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["image"]
        seeds = batch["seed"].tolist() if "seed" in batch else None
        out = self.mae(x, seeds=seeds)
        loss = self.mae.loss(x, out)
        return {"loss": loss}
