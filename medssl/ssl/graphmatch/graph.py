"""kNN graphs over a batch and the GCN that refines node features before matching.

In LVM-Med (Nguyen et al., "LVM-Med: Learning Large-Scale Self-Supervised Vision Models for
Medical Imaging via Second-order Graph Matching", NeurIPS 2023) each augmented view of a batch
of ``n`` images becomes a graph with ``n`` nodes: nodes are the projected embeddings, edges join
each node to its ``k`` nearest neighbours, and a graph convolutional network (Kipf & Welling,
ICLR 2017), shared between the two graphs, mixes every node's feature with its neighbours'
before the vertex and edge affinities are computed.

The graph structure is computed without gradient (it is a discrete choice); the GCN's output is
differentiable in the node features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GCNLayer", "GraphRefiner", "knn_adjacency", "normalized_adjacency"]


@torch.no_grad()
def knn_adjacency(z: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Symmetric 0/1 adjacency of the ``k``-nearest-neighbour graph under cosine similarity.

    Node ``i`` is joined to the ``k`` other nodes with the largest cosine similarity to it (ties
    broken by :func:`torch.topk`); the directed graph is then symmetrised by OR, so every node
    has at least ``min(k, n - 1)`` neighbours. There are no self loops. No gradient flows
    through the result.

    Args:
        z: ``(n, D)`` node features.
        k: Neighbours per node; clipped to ``n - 1``.

    Returns:
        ``(n, n)`` float adjacency (``z``'s floating dtype and device), symmetric, zero
        diagonal.
    """
    if z.dim() != 2:
        raise ValueError(f"knn_adjacency expects (n, D) features, got {tuple(z.shape)}")
    n = z.shape[0]
    dtype = z.dtype if z.is_floating_point() else torch.float32
    adj = torch.zeros(n, n, dtype=dtype, device=z.device)
    kk = min(int(k), n - 1)
    if kk <= 0:
        return adj
    zn = F.normalize(z.detach().to(dtype), dim=1)
    sim = zn @ zn.T
    sim.fill_diagonal_(float("-inf"))
    idx = sim.topk(kk, dim=1).indices
    adj.scatter_(1, idx, 1.0)
    return torch.maximum(adj, adj.T)


def normalized_adjacency(adj: torch.Tensor) -> torch.Tensor:
    """Kipf & Welling's propagation matrix ``Â = D^{-1/2} (A + I) D^{-1/2}``.

    Args:
        adj: ``(n, n)`` symmetric adjacency without self loops (weights allowed).

    Returns:
        ``(n, n)`` with ``D = diag(rowsum(A + I))``.
    """
    a = adj + torch.eye(adj.shape[0], dtype=adj.dtype, device=adj.device)
    d = a.sum(dim=1).clamp_min(1e-12).rsqrt()
    return d[:, None] * a * d[None, :]


class GCNLayer(nn.Module):
    """One graph convolution ``H' = act(Â H W + b)``.

    Args:
        in_features: Input feature size.
        out_features: Output feature size.
        activation: Applied to the output; ``None`` for a linear layer.
        bias: Whether the linear map has a bias.

    Shape:
        h: ``(n, in_features)``; a_hat: ``(n, n)`` propagation matrix from
        :func:`normalized_adjacency` (not the raw adjacency); output ``(n, out_features)``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        activation: nn.Module | None = None,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.activation = activation

    def forward(self, h: torch.Tensor, a_hat: torch.Tensor) -> torch.Tensor:
        out = a_hat.to(h.dtype) @ self.linear(h)
        return self.activation(out) if self.activation is not None else out


class GraphRefiner(nn.Module):
    """A stack of GCN layers (ReLU between layers, none after the last), shared by both graphs.

    With ``residual=True`` (the default) a linear skip of the input is added to the stack's
    output, ``h = GCN_L(...GCN_1(z)) + z W_skip``. This is our addition to the paper's plain
    two-layer GCN: the renormalised propagation gives a node only ``1/(deg + 1)`` of its own
    feature per layer (about 1/7 for ``k = 5``), so after two layers a node is mostly the
    average of its neighbourhood, which differs between the two views; node identity, which
    the matching must recover, is then largely lost (in our sanity runs the plain stack did
    not learn to match at all). ``residual=False`` gives the plain stack.

    Args:
        in_dim: Node feature size ``D``.
        width: Hidden and output size (128 in LVM-Med).
        layers: Number of GCN layers (2 in LVM-Med).
        residual: Add the linear skip ``z W_skip`` to the output.

    Shape:
        h: ``(n, in_dim)``; adj: ``(n, n)`` raw 0/1 adjacency (e.g. from
        :func:`knn_adjacency`); output ``(n, width)``.
    """

    def __init__(
        self, in_dim: int, width: int = 128, layers: int = 2, residual: bool = True
    ) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError("GraphRefiner needs at least one layer")
        dims = [in_dim] + [width] * layers
        self.layers = nn.ModuleList(
            GCNLayer(dims[i], dims[i + 1], activation=nn.ReLU() if i < layers - 1 else None)
            for i in range(layers)
        )
        self.skip = nn.Linear(in_dim, width, bias=False) if residual else None

    def forward(self, h: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        a_hat = normalized_adjacency(adj.to(h.dtype))
        out = h
        for layer in self.layers:
            out = layer(out, a_hat)
        return out + self.skip(h) if self.skip is not None else out
