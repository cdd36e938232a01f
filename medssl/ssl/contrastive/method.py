"""The two training stages of Chaitanya et al. (NeurIPS 2020) on an nnU-Net U-Net.

1. :class:`GlobalContrastiveObjective`: the encoder and a dense projection head ``g1`` are
   trained with the global loss (``G^R``, ``G^D-`` or ``G^D``); the decoder is not used.
2. :class:`LocalContrastiveObjective`: the encoder is frozen; the first decoder blocks (down to
   1/4 of the input resolution by default) and a 1x1-conv head ``g2`` are trained with the
   local loss (``L^R`` or ``L^D``) on spatially aligned views.

Both take the engine's batches from :class:`medssl.data.views.ViewDataset` and, under DDP,
gather embeddings over all processes with gradients, so the negatives come from the global
batch. ``trained_keys()`` lists the U-Net keys the stage trains, for the export's metadata.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medssl.models.unet import network_dim
from medssl.ssl.contrastive.heads import GlobalProjectionHead, LocalProjectionHead
from medssl.ssl.contrastive.losses import global_contrastive_loss, local_contrastive_loss
from medssl.ssl.distributed import all_gather_with_grad

__all__ = [
    "GlobalContrastiveObjective",
    "LocalContrastiveObjective",
    "default_local_blocks",
    "freeze_decoder",
]


def _freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def freeze_decoder(network: nn.Module) -> None:
    """Freeze the decoder's own parameters (nnU-Net's decoder holds a reference to the
    encoder, so ``network.decoder.parameters()`` would freeze the encoder too)."""
    for name, p in network.named_parameters():
        if name.startswith("decoder."):
            p.requires_grad_(False)


def default_local_blocks(network: Any) -> int:
    """Decoder blocks up to 1/4 of the input resolution (the paper's local-loss scale)."""
    return max(1, len(network.encoder.output_channels) - 3)


class GlobalContrastiveObjective(nn.Module):
    """Stage 1: global contrastive loss on encoder features.

    Args:
        network: A U-Net with ``encoder`` (returning skips) and ``decoder``.
        strategy: ``GR``, ``GD-`` or ``GD``.
        temperature: 0.1 in the paper.
        hidden, out: Projection head widths (1024 -> 128 in the paper).

    Batches: ``view1``/``view2`` ``(B, C, *S)``, ``partition`` and ``volume`` ``(B,)``.
    """

    network_prefix = "network."

    def __init__(
        self,
        network: Any,
        *,
        strategy: str = "GD",
        temperature: float = 0.1,
        hidden: int = 1024,
        out: int = 128,
    ) -> None:
        super().__init__()
        self.network = network
        self.strategy = strategy
        self.temperature = float(temperature)
        self.head = GlobalProjectionHead(network.encoder.output_channels[-1], hidden, out)
        self.set_trainable()

    def set_trainable(self) -> None:
        """Encoder and head train, the decoder does not (call before a stage starts: the
        stages share one network)."""
        for p in self.parameters():
            p.requires_grad_(True)
        freeze_decoder(self.network)

    def trained_keys(self) -> list[str]:
        return [f"encoder.{k}" for k in self.network.encoder.state_dict()]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *S)`` -> ``(B, out)`` projected embeddings."""
        return self.head(self.network.encoder(x)[-1])

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        n = batch["view1"].shape[0]
        z = self.embed(torch.cat([batch["view1"], batch["view2"]]))
        z1 = all_gather_with_grad(z[:n])
        z2 = all_gather_with_grad(z[n:])
        part = all_gather_with_grad(batch["partition"])
        vol = all_gather_with_grad(batch["volume"])
        strategy: Any = self.strategy
        loss = global_contrastive_loss(z1, z2, part, vol, strategy, self.temperature)
        return {"loss": loss}


class LocalContrastiveObjective(nn.Module):
    """Stage 2: local contrastive loss on the first decoder blocks, the encoder frozen.

    Args:
        network: The U-Net (its encoder already trained by stage 1).
        strategy: ``LR`` or ``LD``.
        temperature: 0.1 in the paper.
        blocks: Decoder blocks trained (default :func:`default_local_blocks`).
        hidden, out: Widths of the 1x1-conv head.
        region_size: Region edge in feature-map cells (3 in the paper).

    Batches as :class:`GlobalContrastiveObjective`, with voxel-aligned views.
    """

    network_prefix = "network."

    def __init__(
        self,
        network: Any,
        *,
        strategy: str = "LD",
        temperature: float = 0.1,
        blocks: int | None = None,
        hidden: int = 128,
        out: int = 128,
        region_size: int = 3,
    ) -> None:
        super().__init__()
        self.network = network
        self.strategy = strategy
        self.temperature = float(temperature)
        self.region_size = int(region_size)
        n_dec = len(network.decoder.stages)
        self.blocks = int(blocks or default_local_blocks(network))
        if not 1 <= self.blocks <= n_dec:
            raise ValueError(f"local blocks must be in 1..{n_dec}, got {self.blocks}")
        channels = network.encoder.output_channels[-(self.blocks + 1)]
        dims = network_dim(network)
        self.head = LocalProjectionHead(channels, hidden, out, dims)
        self.set_trainable()

    def set_trainable(self) -> None:
        """Only the first decoder blocks and the head train (call before the stage starts)."""
        _freeze(self.network)
        for s in range(self.blocks):
            for m in (self.network.decoder.transpconvs[s], self.network.decoder.stages[s]):
                m.requires_grad_(True)
        self.head.requires_grad_(True)

    def trained_keys(self) -> list[str]:
        keys = [f"encoder.{k}" for k in self.network.encoder.state_dict()]  # stage 1's
        dec = self.network.decoder
        for s in range(self.blocks):
            keys += [f"decoder.transpconvs.{s}.{k}" for k in dec.transpconvs[s].state_dict()]
            keys += [f"decoder.stages.{s}.{k}" for k in dec.stages[s].state_dict()]
        return keys

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *S)`` -> ``(B, out, *S')`` head outputs after the trained decoder blocks."""
        with torch.no_grad():
            skips = self.network.encoder(x)
        dec = self.network.decoder
        lres = skips[-1]
        for s in range(self.blocks):
            y = dec.transpconvs[s](lres)
            y = torch.cat((y, skips[-(s + 2)]), 1)
            lres = dec.stages[s](y)
        return self.head(lres)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        n = batch["view1"].shape[0]
        f = self.features(torch.cat([batch["view1"], batch["view2"]]))
        f1 = all_gather_with_grad(f[:n])
        f2 = all_gather_with_grad(f[n:])
        part = all_gather_with_grad(batch["partition"])
        vol = all_gather_with_grad(batch["volume"])
        loss = local_contrastive_loss(
            f1,
            f2,
            part,
            vol,
            self.strategy,  # type: ignore[arg-type]
            region_size=self.region_size,
            temperature=self.temperature,
        )
        return {"loss": loss}
