"""LVM-Med's second-order graph-matching loss, assembled from its building blocks.

LVM-Med (Nguyen et al., "LVM-Med: Learning Large-Scale Self-Supervised Vision Models for
Medical Imaging via Second-order Graph Matching", NeurIPS 2023) turns a batch of ``n`` images,
each seen in two augmented views, into two graphs G1 and G2 with ``n`` nodes: node ``i`` of
G1 is view 1 of image ``i``, node ``i`` of G2 is view 2 of image ``i``. Edges join k nearest
neighbours; a shared GCN refines the node features. The graphs are matched by solving
Lawler's QAP on vertex (first-order) and edge (second-order) affinities, and the matching is
pushed towards the identity (view ``i`` ↔ view ``i``) with a Hamming loss; gradients flow
through the combinatorial solver by I-MLE (Niepert et al., NeurIPS 2021; see
:mod:`medssl.ssl.graphmatch.imle`).

The batch is cut into graphs of ``graph_size`` nodes (16 in LVM-Med; under DDP the global
batch, so graphs may span ranks), each matched on its own; the loss is their mean.

Affinities (``ĥ = h / ||h||`` are the L2-normalised GCN outputs):

- vertex: ``V[i, a] = α cos(h1_i, h2_a) + (1 - α) local(i, a)`` (``α = 0.8``), or the global
  cosine alone when no feature maps are given (:func:`vertex_affinity`);
- edge: ``E[(i, a), (j, b)] = A1[i, j] A2[a, b] cos(ĥ1_i - ĥ1_j, ĥ2_a - ĥ2_b)``, the
  cosine of the edge features as in LVM-Med (:func:`edge_affinity_matrix`; a Gaussian of
  their distance is an option);
- QAP matrix ``K = E + diag(vec(V))`` (:func:`qap_affinity_matrix`), index ``(i, a) = i*n + a``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medssl.ssl.graphmatch.graph import GraphRefiner, knn_adjacency
from medssl.ssl.graphmatch.imle import imle_match

__all__ = [
    "GraphMatchingLoss",
    "cosine_affinity",
    "edge_affinity_matrix",
    "graph_groups",
    "hamming_loss",
    "local_similarity",
    "matching_accuracy",
    "qap_affinity_matrix",
    "vertex_affinity",
]


def cosine_affinity(h1: torch.Tensor, h2: torch.Tensor) -> torch.Tensor:
    """``(n, n)`` cosine similarity ``cos(h1_i, h2_a)`` of ``(n, D)`` node features."""
    return F.normalize(h1, dim=1) @ F.normalize(h2, dim=1).T


def _correspondence_index(
    correspondence: torch.Tensor | None, n: int, p1: int, p2: int, same_grid: bool
) -> torch.Tensor:
    if correspondence is None:
        if not same_grid:
            raise ValueError(
                "feature maps of different spatial size need an explicit correspondence"
            )
        return torch.arange(p1).expand(n, p1)
    c = correspondence.to(torch.long)
    if c.numel() == p1:
        c = c.reshape(1, p1).expand(n, p1)
    elif c.numel() == n * p1:
        c = c.reshape(n, p1)
    else:
        raise ValueError(
            f"correspondence has {c.numel()} entries; expected {p1} (shared) or {n * p1} "
            "(one map per image)"
        )
    if bool((c >= p2).any()) or bool((c < -1).any()):
        raise ValueError(f"correspondence entries must be -1 or cell indices below {p2}")
    return c


def local_similarity(
    F1: torch.Tensor, F2: torch.Tensor, correspondence: torch.Tensor | None = None
) -> torch.Tensor:
    """Local (feature-map) similarity of every pair of images across the two views.

    Cells are the spatial positions of the maps, flattened in C order; each cell's feature is
    the ``C``-vector there, compared by cosine similarity. For the pair ``(i, a)``:

    - **correspondence term** ``s_corr(i, a)``: the mean over cells ``p`` of ``F1[i]`` with a
      counterpart of ``cos(F1[i, :, p], F2[a, :, c_i(p)])``, ``c_i`` the cell map of image
      ``i``'s augmentation (the hypothesis "``a`` is the second view of ``i``" puts ``i``'s
      counterpart of ``p`` at ``c_i(p)``);
    - **nearest-feature term** ``s_nn(i, a)``: the mean over cells ``p`` of ``F1[i]`` of
      ``max_q cos(F1[i, :, p], F2[a, :, q])``;
    - ``local(i, a) = (s_corr(i, a) + s_nn(i, a)) / 2``; when no cell of ``F1[i]`` has a
      counterpart, ``local(i, a) = s_nn(i, a)``.

    Args:
        F1: ``(n, C, *S1)`` feature maps of view 1 (2D ``S = (H, W)`` or 3D ``(D, H, W)``).
        F2: ``(n, C, *S2)`` feature maps of view 2.
        correspondence: Long tensor of flat cell indices into ``S2`` (C-order), ``-1`` for a
            cell of view 1 outside view 2: shape ``(P1,)`` or ``S1`` for one map shared by
            all images, ``(n, P1)`` or ``(n, *S1)`` for one per image (``P1 = prod(S1)``).
            ``None``: the views are spatially aligned (``S1 == S2``) and cell ``p`` matches
            cell ``p``.

    Returns:
        ``(n, n)`` similarities in ``[-1, 1]``, differentiable in ``F1`` and ``F2``.
    """
    if F1.dim() < 3 or F1.dim() != F2.dim() or F1.shape[:2] != F2.shape[:2]:
        raise ValueError(
            f"feature maps must be (n, C, *S) with equal n and C, got {tuple(F1.shape)} and "
            f"{tuple(F2.shape)}"
        )
    n = F1.shape[0]
    f1 = F.normalize(F1.flatten(2), dim=1)  # (n, C, P1)
    f2 = F.normalize(F2.flatten(2), dim=1)  # (n, C, P2)
    p1, p2 = f1.shape[2], f2.shape[2]
    sim = torch.einsum("icp,acq->iapq", f1, f2)  # (n, n, P1, P2)
    s_nn = sim.amax(dim=3).mean(dim=2)

    c = _correspondence_index(correspondence, n, p1, p2, F1.shape[2:] == F2.shape[2:])
    c = c.to(sim.device)
    valid = (c >= 0).to(sim.dtype)  # (n, P1)
    idx = c.clamp_min(0)[:, None, :, None].expand(n, n, p1, 1)
    matched = sim.gather(3, idx).squeeze(3)  # (n, n, P1)
    count = valid.sum(dim=1)  # (n,)
    s_corr = (matched * valid[:, None, :]).sum(dim=2) / count.clamp_min(1.0)[:, None]
    has = (count > 0)[:, None]
    return torch.where(has, 0.5 * (s_corr + s_nn), s_nn)


def vertex_affinity(
    h1: torch.Tensor,
    h2: torch.Tensor,
    F1: torch.Tensor | None = None,
    F2: torch.Tensor | None = None,
    correspondence: torch.Tensor | None = None,
    alpha: float = 0.8,
) -> torch.Tensor:
    """First-order affinity ``V[i, a] = α cos(h1_i, h2_a) + (1 - α) local(i, a)``.

    Args:
        h1, h2: ``(n, D)`` node features of the two graphs.
        F1, F2: ``(n, C, *S)`` feature maps for :func:`local_similarity`; when either is
            ``None`` the affinity is the global cosine alone (``α`` is ignored).
        correspondence: See :func:`local_similarity`.
        alpha: Weight of the global term.

    Returns:
        ``(n, n)``.
    """
    glob = cosine_affinity(h1, h2)
    if F1 is None or F2 is None:
        return glob
    local = local_similarity(F1, F2, correspondence).to(glob.dtype)
    return alpha * glob + (1.0 - alpha) * local


EDGE_AFFINITIES = ("cosine", "gaussian")


def edge_affinity_matrix(
    h1: torch.Tensor,
    h2: torch.Tensor,
    adj1: torch.Tensor,
    adj2: torch.Tensor,
    sigma: float = 1.0,
    kind: str = "cosine",
) -> torch.Tensor:
    """Second-order affinity of edge ``(i, j)`` of G1 with edge ``(a, b)`` of G2.

    The edge features are the differences of the end points' L2-normalised features,
    ``e1_ij = ĥ1_i - ĥ1_j`` and ``e2_ab = ĥ2_a - ĥ2_b``, and

    - ``kind="cosine"`` (LVM-Med's): ``E[i*n + a, j*n + b] = A1[i, j] A2[a, b] cos(e1_ij, e2_ab)``;
    - ``kind="gaussian"``: ``A1[i, j] A2[a, b] exp(-||e1_ij - e2_ab||² / σ)``;

    zero where either edge is absent (so zero on the diagonal, graphs having no self loops),
    symmetric.

    Args:
        h1, h2: ``(n, D)`` node features.
        adj1, adj2: ``(n, n)`` adjacencies (0/1, no self loops).
        sigma: Bandwidth ``σ`` of the Gaussian.
        kind: ``"cosine"`` or ``"gaussian"``.

    Returns:
        ``(n², n²)``.
    """
    if kind not in EDGE_AFFINITIES:
        raise ValueError(f"kind must be one of {EDGE_AFFINITIES}, got {kind!r}")
    n = h1.shape[0]
    d1 = F.normalize(h1, dim=1)
    d2 = F.normalize(h2, dim=1)
    e1 = (d1[:, None, :] - d1[None, :, :]).reshape(n * n, -1)  # row i*n + j
    e2 = (d2[:, None, :] - d2[None, :, :]).reshape(n * n, -1)  # row a*n + b
    if kind == "cosine":
        aff = F.normalize(e1, dim=1) @ F.normalize(e2, dim=1).T  # [(i, j), (a, b)]
    else:
        sq = (e1 * e1).sum(1)[:, None] + (e2 * e2).sum(1)[None, :] - 2.0 * e1 @ e2.T
        aff = torch.exp(-sq.clamp_min(0.0) / sigma)
    mask = adj1.reshape(n * n, 1).to(aff.dtype) * adj2.reshape(1, n * n).to(aff.dtype)
    aff = (aff * mask).reshape(n, n, n, n).permute(0, 2, 1, 3)  # [i, a, j, b]
    return aff.reshape(n * n, n * n)


def qap_affinity_matrix(vertex: torch.Tensor, edge: torch.Tensor) -> torch.Tensor:
    """Lawler's QAP matrix ``K = E + diag(vec(V))``: ``(n², n²)`` from ``(n, n)`` and ``(n², n²)``.

    ``vec(X)ᵀ K vec(X) = ⟨V, X⟩ + vec(X)ᵀ E vec(X)`` for a permutation matrix ``X``.
    """
    return edge + torch.diag(vertex.reshape(-1))


def _target(X: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    if target is None:
        return torch.eye(X.shape[0], dtype=X.dtype, device=X.device)
    return target.to(X.dtype)


def hamming_loss(X: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Hamming distance between a matching and the target, divided by ``n``.

    ``L = (1/n) Σ_ia [X_ia (1 - T_ia) + (1 - X_ia) T_ia]`` with ``T`` the identity (view ``i``
    of G1 ↔ view ``i`` of G2) unless given. For permutation matrices this is ``2 m / n`` with
    ``m`` the number of wrongly matched nodes, so it lies in ``[0, 2]``; swapping two nodes
    gives ``4 / n``. It is linear in ``X`` with ``∂L/∂X = (1 - 2T) / n``; I-MLE's target uses
    the gradient of the sum, ``1 - 2T`` (``imle_match(..., loss_weight=1/n)``).

    Args:
        X: ``(n, n)`` matching (a permutation matrix, or a mean of them).
        target: ``(n, n)`` permutation matrix; identity when ``None``.

    Returns:
        Scalar.
    """
    T = _target(X, target)
    n = X.shape[0]
    return (X * (1.0 - T) + (1.0 - X) * T).sum() / n


def matching_accuracy(X: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Fraction of nodes matched as in ``target`` (identity by default): ``⟨X, T⟩ / n``."""
    T = _target(X, target)
    return (X * T).sum() / X.shape[0]


class GraphMatchingLoss(nn.Module):
    """LVM-Med's graph-matching objective for two views of a batch.

    kNN graphs on ``z1`` and ``z2`` (:func:`knn_adjacency`, no gradient) → shared
    :class:`GraphRefiner` → vertex and edge affinities → perturb-and-MAP QAP matching with
    I-MLE gradients (:func:`medssl.ssl.graphmatch.imle.imle_match`) → Hamming loss to the
    identity matching.

    Args:
        in_dim: Size ``D`` of the projected embeddings.
        width: GCN width (128 in LVM-Med).
        k: Neighbours per node in the kNN graphs.
        alpha: Weight of the global cosine in the vertex affinity.
        lam: I-MLE's ``λ``, for the Hamming loss summed over a graph's nodes (LVM-Med's
            70-100; the reported loss is divided by the node count, which
            :func:`imle_match`'s ``loss_weight`` undoes).
        edge_sigma: Bandwidth ``σ`` of the Gaussian edge affinity.
        graph_size: Nodes per graph: a batch of ``n`` is cut into ``n // graph_size``
            graphs of near-equal size (at least one), matched one by one; the loss is their
            mean.
        edge_affinity: ``"cosine"`` (LVM-Med) or ``"gaussian"`` (see
            :func:`edge_affinity_matrix`).
        layers: GCN layers.
        residual: Linear skip around the GCN stack (see :class:`GraphRefiner`).
        edge_weight: Multiplies the edge affinities (1 in LVM-Med as we read it; the pairwise
            term sums over about ``n·k`` matched edge pairs against ``n`` vertex terms).
        noise: ``"gumbel"`` or ``"none"``; noise is only used in training mode (in eval mode
            the plain MAP matching is used).
        noise_scale: Scale of the Gumbel noise.
        samples: Noise samples per step (the loss is that of their mean matching).
        divide_by_lam: Divide the I-MLE gradient by ``λ``.

    Shape:
        z1, z2: ``(n, D)``; F1, F2: ``(n, C, *S)`` (2D or 3D) or ``None`` (then the vertex
        affinity is the global cosine only); correspondence: see
        :func:`local_similarity`.

    Returns (``forward``):
        ``{"loss": scalar Hamming loss (differentiable), "accuracy": detached fraction of
        nodes matched to their own other view in the matching the loss was computed on,
        "matching": detached (n, n) matching, block diagonal over the graphs}``.
    """

    def __init__(
        self,
        in_dim: int,
        width: int = 128,
        k: int = 5,
        alpha: float = 0.8,
        lam: float = 80.0,
        edge_sigma: float = 1.0,
        graph_size: int = 16,
        edge_affinity: str = "cosine",
        *,
        layers: int = 2,
        residual: bool = True,
        edge_weight: float = 1.0,
        noise: str = "gumbel",
        noise_scale: float = 1.0,
        samples: int = 1,
        divide_by_lam: bool = False,
    ) -> None:
        super().__init__()
        self.refiner = GraphRefiner(in_dim, width, layers, residual=residual)
        self.edge_weight = float(edge_weight)
        self.k = int(k)
        self.alpha = float(alpha)
        self.lam = float(lam)
        self.edge_sigma = float(edge_sigma)
        self.noise = noise
        self.noise_scale = float(noise_scale)
        self.samples = int(samples)
        self.divide_by_lam = bool(divide_by_lam)
        if graph_size < 2:
            raise ValueError(f"graph_size must be >= 2, got {graph_size}")
        if edge_affinity not in EDGE_AFFINITIES:
            raise ValueError(f"edge_affinity must be one of {EDGE_AFFINITIES}")
        self.graph_size = int(graph_size)
        self.edge_affinity = edge_affinity

    def affinities(
        self,
        z1: torch.Tensor,
        z2: torch.Tensor,
        F1: torch.Tensor | None = None,
        F2: torch.Tensor | None = None,
        correspondence: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(V (n, n), E (n², n²))``: vertex and (``edge_weight``-scaled) edge affinities."""
        if z1.shape != z2.shape or z1.dim() != 2:
            raise ValueError(
                f"z1, z2 must both be (n, D), got {tuple(z1.shape)} and {tuple(z2.shape)}"
            )
        adj1 = knn_adjacency(z1, self.k)
        adj2 = knn_adjacency(z2, self.k)
        h1 = self.refiner(z1, adj1)
        h2 = self.refiner(z2, adj2)
        vertex = vertex_affinity(h1, h2, F1, F2, correspondence, self.alpha)
        edge = edge_affinity_matrix(h1, h2, adj1, adj2, self.edge_sigma, self.edge_affinity)
        return vertex, self.edge_weight * edge

    def forward(
        self,
        z1: torch.Tensor,
        z2: torch.Tensor,
        F1: torch.Tensor | None = None,
        F2: torch.Tensor | None = None,
        correspondence: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        n = z1.shape[0]
        groups = graph_groups(n, self.graph_size)
        per_image = correspondence is not None and _per_image(correspondence, n, F1)
        losses, blocks = [], []
        for g in groups:
            corr = correspondence[g] if per_image else correspondence  # type: ignore[index]
            f1 = None if F1 is None else F1[g]
            f2 = None if F2 is None else F2[g]
            vertex, edge = self.affinities(z1[g], z2[g], f1, f2, corr)
            m = g.stop - g.start
            X = imle_match(
                vertex,
                edge,
                lam=self.lam,
                noise=self.noise if self.training else "none",
                samples=self.samples,
                generator=generator,
                noise_scale=self.noise_scale,
                divide_by_lam=self.divide_by_lam,
                loss_weight=1.0 / (m * len(groups)),  # the loss below: a mean of sums / m
            )
            losses.append(hamming_loss(X))
            blocks.append(X.detach())
        matching = torch.block_diag(*blocks)
        return {
            "loss": torch.stack(losses).mean(),
            "accuracy": matching_accuracy(matching),
            "matching": matching,
        }


def _per_image(correspondence: torch.Tensor, n: int, F1: torch.Tensor | None) -> bool:
    """Whether ``correspondence`` has one map per image (``(n, P1)`` or ``(n, *S1)``) rather
    than one shared map (``(P1,)`` or ``S1``)."""
    if F1 is None:
        return False
    cells = F1[0, 0].numel()
    return correspondence.numel() == n * cells and correspondence.numel() != cells


def graph_groups(n: int, size: int) -> list[slice]:
    """``n`` nodes cut into ``max(1, n // size)`` consecutive graphs of near-equal size (the
    first ones one node larger), so no graph is smaller than ``size`` unless the batch is:
    ``graph_groups(32, 16)`` is two graphs of 16, ``graph_groups(20, 16)`` one of 20."""
    count = max(1, n // size)
    base, extra = divmod(n, count)
    out, start = [], 0
    for i in range(count):
        stop = start + base + (1 if i < extra else 0)
        out.append(slice(start, stop))
        start = stop
    return out
