"""LVM-Med graph matching on an nnU-Net U-Net encoder (the engine-facing objective).

The encoder's bottleneck feature map of each view gives the node embedding (global average
pool + projection head, as the contrastive global head) and the cell features of the local
vertex-affinity term; the views are crops of one slice/slab at different offsets, so the cell
correspondence between the two views of an image is the known shift between the crops
(``start2 - start1``, at the bottleneck's stride). Under DDP the embeddings and maps of all
processes are gathered with gradients, and the global batch is cut into graphs of
``graph_size`` nodes (a graph may span ranks; every rank computes the same loss).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medssl.models.unet import network_dim
from medssl.ssl.contrastive.heads import GlobalProjectionHead
from medssl.ssl.contrastive.method import freeze_decoder
from medssl.ssl.distributed import all_gather_with_grad
from medssl.ssl.graphmatch.loss import GraphMatchingLoss

__all__ = ["GraphMatchObjective", "shift_correspondence"]


def shift_correspondence(
    shift: torch.Tensor, spatial_shape: tuple[int, ...], stride: tuple[int, ...]
) -> torch.Tensor:
    """Cell correspondence of crops shifted by ``shift`` voxels.

    Args:
        shift: ``(n, d)`` ``start1 - start2`` in input voxels (view-1 voxel ``x`` is view-2
            voxel ``x + shift``).
        spatial_shape: Feature-map shape ``S`` (``d`` axes), the same for both views.
        stride: Input voxels per feature-map cell, per axis.

    Returns:
        ``(n, prod(S))`` flat view-2 cell index of every view-1 cell, ``-1`` outside view 2.
    """
    grids = torch.meshgrid(*[torch.arange(s) for s in spatial_shape], indexing="ij")
    cells = torch.stack([g.reshape(-1) for g in grids], dim=1)  # (P, d)
    st = torch.tensor(stride, dtype=torch.float64)
    moved = cells[None].double() + shift[:, None, :].double() / st  # (n, P, d)
    moved = torch.round(moved).long()
    size = torch.tensor(spatial_shape)
    inside = ((moved >= 0) & (moved < size)).all(dim=2)
    flat = torch.zeros(moved.shape[:2], dtype=torch.long)
    for axis in range(len(spatial_shape)):
        flat = flat * int(spatial_shape[axis]) + moved[..., axis].clamp(0, spatial_shape[axis] - 1)
    return torch.where(inside, flat, torch.full_like(flat, -1))


class GraphMatchObjective(nn.Module):
    """Second-order graph matching of the two views of a batch (LVM-Med, NeurIPS 2023).

    Args:
        network: A U-Net with ``encoder`` (the part this method trains) and ``decoder``.
        k, alpha, lam, width, edge_sigma, graph_size, edge_affinity: See
            :class:`GraphMatchingLoss`.
        head_hidden, head_out: Projection head widths.

    Batches: ``view1``/``view2`` ``(B, C, *S)``, ``start1``/``start2`` ``(B, d)`` crop corners
    and ``seed`` ``(B,)`` (the Gumbel noise of a step is drawn from the global batch's first
    seed, the same on every rank).
    """

    network_prefix = "network."

    def __init__(
        self,
        network: Any,
        *,
        k: int = 5,
        alpha: float = 0.8,
        lam: float = 80.0,
        width: int = 128,
        head_hidden: int = 1024,
        head_out: int = 128,
        edge_sigma: float = 1.0,
        graph_size: int = 16,
        edge_affinity: str = "cosine",
    ) -> None:
        super().__init__()
        self.network = network
        freeze_decoder(network)
        channels = network.encoder.output_channels[-1]
        self.head = GlobalProjectionHead(channels, head_hidden, head_out)
        self.matching = GraphMatchingLoss(
            head_out,
            width=width,
            k=k,
            alpha=alpha,
            lam=lam,
            edge_sigma=edge_sigma,
            graph_size=graph_size,
            edge_affinity=edge_affinity,
        )
        strides = [1] * network_dim(network)
        for s in network.encoder.strides:
            s = [s] * len(strides) if isinstance(s, int) else s
            strides = [a * int(b) for a, b in zip(strides, s, strict=True)]
        self.total_stride = tuple(strides)

    def trained_keys(self) -> list[str]:
        return [f"encoder.{k}" for k in self.network.encoder.state_dict()]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        n = batch["view1"].shape[0]
        fmap = self.network.encoder(torch.cat([batch["view1"], batch["view2"]]))[-1]
        z = self.head(fmap)
        z1, z2 = all_gather_with_grad(z[:n]), all_gather_with_grad(z[n:])
        f1, f2 = all_gather_with_grad(fmap[:n]), all_gather_with_grad(fmap[n:])
        shift = all_gather_with_grad(batch["start1"] - batch["start2"]).cpu()
        corr = shift_correspondence(shift, tuple(fmap.shape[2:]), self.total_stride)
        # one noise draw for the global batch: every rank must compute the same loss
        seeds = all_gather_with_grad(batch["seed"])
        gen = torch.Generator().manual_seed(int(seeds[0]) % (2**63))
        out = self.matching(z1, z2, f1, f2, corr, generator=gen)
        return {"loss": out["loss"], "accuracy": out["accuracy"]}
