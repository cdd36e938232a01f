"""Global and local contrastive losses of Chaitanya et al., "Contrastive learning of global and
local features for medical image segmentation with limited annotations" (NeurIPS 2020).

A batch holds ``N`` images (2D slices or 3D slabs). Image ``n`` comes from volume ``volume[n]``
and partition ``partition[n]`` (each volume is cut into ``S`` partitions along its axis, ``S = 4``
in the paper) and is seen under two augmentations. The ``2N`` embeddings are always ordered
``[view 1 of images 0..N-1, view 2 of images 0..N-1]``, so embedding ``i`` belongs to image
``i mod N`` and its other view is ``(i + N) mod 2N``.

- **Global loss** (paper Sec. 3.1, "Global contrastive loss"): one embedding per view from the
  encoder and the dense head ``g1``, with the three strategies for choosing positives and
  negatives ``G^R`` (SimCLR), ``G^{D-}`` and ``G^D`` (:func:`contrastive_masks`).
- **Local loss** (paper Sec. 3.2, "Local contrastive loss"): feature maps of the first decoder
  blocks and the 1x1-conv head ``g2``; a region embedding is the mean of a small window (3x3 in
  the paper) at fixed positions, contrasted against the other regions of the same image with
  strategies ``L^R`` and ``L^D`` (:func:`local_contrastive_loss`).

Both losses use the same per-positive term, for an anchor ``i`` and each positive ``p`` of it::

    l(i, p) = -log( exp(s_ip) / (exp(s_ip) + sum_{k in neg(i)} exp(s_ik)) )

with ``s`` the cosine similarity divided by the temperature; the loss is the mean over anchors
of the mean over the anchor's positives. The other positives of ``i`` are not in the
denominator. Each term is computed as ``softplus(logsumexp_{k in neg(i)} s_ik - s_ip)``, which is
the same value without overflow for any temperature.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = [
    "GlobalStrategy",
    "LocalStrategy",
    "contrastive_masks",
    "global_contrastive_loss",
    "grid_positions",
    "local_contrastive_loss",
    "local_masks",
    "region_embeddings",
]

GlobalStrategy = Literal["GR", "GD-", "GD"]
LocalStrategy = Literal["LR", "LD"]

_GLOBAL_STRATEGIES = ("GR", "GD-", "GD")
_LOCAL_STRATEGIES = ("LR", "LD")


def _labels(values: torch.Tensor | Sequence[int], name: str) -> torch.Tensor:
    t = torch.as_tensor(values)
    if t.dim() != 1:
        raise ValueError(f"{name} must have shape (N,), got {tuple(t.shape)}")
    if t.is_floating_point() or t.is_complex():
        raise TypeError(f"{name} must hold integers, got {t.dtype}")
    return t.long()


def contrastive_masks(
    partition: torch.Tensor | Sequence[int],
    volume: torch.Tensor | Sequence[int],
    strategy: GlobalStrategy,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and negative sets of every embedding for the global strategies (paper Sec. 3.1).

    Rows are anchors, columns candidates, both indexing the ``2N`` embeddings
    ``[view 1 of images 0..N-1, view 2 of images 0..N-1]``. The diagonal (an anchor with itself)
    is never positive nor negative, and no pair is both.

    - ``"GR"`` (SimCLR): positive = the other view of the same image; negatives = every other
      embedding.
    - ``"GD-"``: positives as ``GR``; both views of every other image with the *same partition*
      are removed (neither positive nor negative); negatives = the rest.
    - ``"GD"``: positives = the other view of the same image and both views of every other image
      with the same partition; negatives = both views of the images of other partitions.

    The paper's "same partition, other volume" rule is stated for batches with one image per
    (volume, partition). When a batch holds two images from the same partition of the *same*
    volume (nearby slices, even more alike than the same partition of another volume), they
    are treated like same-partition images of other volumes: positives in ``GD``, removed in
    ``GD-``. ``GR`` ignores partitions and volumes, so they are negatives there.

    Args:
        partition: ``(N,)`` int partition index of each image (``0..S-1``).
        volume: ``(N,)`` int volume id of each image.
        strategy: ``"GR"``, ``"GD-"`` or ``"GD"``.

    Returns:
        ``(pos, neg)``, both ``(2N, 2N)`` bool on the device of ``partition``.
    """
    if strategy not in _GLOBAL_STRATEGIES:
        raise ValueError(f"unknown global strategy {strategy!r}; use one of {_GLOBAL_STRATEGIES}")
    part = _labels(partition, "partition")
    vol = _labels(volume, "volume").to(part.device)
    if part.shape != vol.shape:
        raise ValueError(f"partition {tuple(part.shape)} and volume {tuple(vol.shape)} differ")
    n = part.shape[0]
    image = torch.arange(n, device=part.device).repeat(2)  # image of each of the 2N embeddings
    part2 = part.repeat(2)
    eye = torch.eye(2 * n, dtype=torch.bool, device=part.device)
    same_image = image[:, None] == image[None, :]
    same_part_other_image = (part2[:, None] == part2[None, :]) & ~same_image
    own_view = same_image & ~eye
    if strategy == "GR":
        pos = own_view
        neg = ~eye & ~pos
    elif strategy == "GD-":
        pos = own_view
        neg = ~eye & ~pos & ~same_part_other_image
    else:  # GD
        pos = own_view | same_part_other_image
        neg = ~eye & ~pos
    return pos, neg


def _pairwise_loss(
    pos_sim: torch.Tensor, neg_lse: torch.Tensor, pos_mask: torch.Tensor
) -> torch.Tensor:
    """Mean over anchors (with a positive) of the mean over their positives of ``l(i, p)``.

    Args:
        pos_sim: ``(A, P)`` similarity of each anchor to each candidate positive.
        neg_lse: ``(A,)`` log-sum-exp of the anchor's negative similarities (``-inf`` for none).
        pos_mask: ``(A, P)`` bool, which candidates are positives.
    """
    terms = F.softplus(neg_lse[:, None] - pos_sim)  # -log(e^s / (e^s + sum e^neg)), stable
    terms = torch.where(pos_mask, terms, torch.zeros_like(terms))
    n_pos = pos_mask.sum(dim=1)
    has_pos = n_pos > 0
    if not bool(has_pos.any()):
        return pos_sim.sum() * 0.0  # keeps the graph; no anchor has a positive
    per_anchor = terms.sum(dim=1) / n_pos.clamp_min(1).to(terms.dtype)
    return per_anchor[has_pos].mean()


def _masked_logsumexp(x: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``logsumexp`` of ``x`` over ``mask`` along ``dim``; ``-inf`` where the mask is empty.

    Empty rows give ``-inf`` with zero gradient (a plain masked ``logsumexp`` would give NaN
    gradients there).
    """
    neg_inf = torch.tensor(float("-inf"), dtype=x.dtype, device=x.device)
    has_any = mask.any(dim=dim, keepdim=True)
    filled = torch.where(mask, x, neg_inf)
    filled = torch.where(has_any, filled, torch.zeros_like(x))  # safe row for empty masks
    lse = torch.logsumexp(filled, dim=dim, keepdim=True)
    return torch.where(has_any, lse, neg_inf).squeeze(dim)


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def global_contrastive_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    partition: torch.Tensor | Sequence[int],
    volume: torch.Tensor | Sequence[int],
    strategy: GlobalStrategy = "GD",
    temperature: float = 0.1,
) -> torch.Tensor:
    """Global contrastive loss with the ``GR``/``GD-``/``GD`` strategies (paper Sec. 3.1).

    Similarities are cosine similarities of the L2-normalised embeddings divided by
    ``temperature``. For every anchor ``i`` of the ``2N`` embeddings and every positive ``p``
    of it (:func:`contrastive_masks`)::

        l(i, p) = -log( exp(s_ip) / (exp(s_ip) + sum_{k in neg(i)} exp(s_ik)) )

    and the loss is the mean over anchors of the mean over that anchor's positives.

    Degenerate cases (no NaN in value or gradient):

    - An anchor without negatives (e.g. ``GR`` with ``N = 1``, or ``GD`` when every image has
      the same partition) has ``l(i, p) = -log 1 = 0`` for each positive, with zero gradient;
      it still counts in the mean over anchors. A batch without any negative gives ``0``.
    - An anchor without positives (impossible with two views) is left out of the mean; if no
      anchor has one the loss is ``0`` (connected to the graph).

    Args:
        z1: ``(N, D)`` embeddings of view 1 (any scale; they are L2-normalised here).
        z2: ``(N, D)`` embeddings of view 2, same images in the same order.
        partition: ``(N,)`` int partition of each image.
        volume: ``(N,)`` int volume of each image.
        strategy: ``"GR"``, ``"GD-"`` or ``"GD"`` (the paper's best is ``GD``).
        temperature: ``tau`` (0.1 in the paper).

    Returns:
        Scalar loss (float32 for half-precision inputs).
    """
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must both be (N, D), got {tuple(z1.shape)}, {tuple(z2.shape)}")
    _check_temperature(temperature)
    pos, neg = contrastive_masks(partition, volume, strategy)
    if pos.shape[0] != 2 * z1.shape[0]:
        raise ValueError(f"{z1.shape[0]} embeddings per view but {pos.shape[0] // 2} labels")
    pos, neg = pos.to(z1.device), neg.to(z1.device)
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = z @ z.T / temperature  # (2N, 2N)
    return _pairwise_loss(sim, _masked_logsumexp(sim, neg), pos)


def grid_positions(
    spatial_shape: Sequence[int], region_size: int = 3, stride: int | None = None
) -> torch.Tensor:
    """Top-left corners of a regular grid of ``region_size`` windows (the default regions).

    Per axis of length ``L`` the grid has ``n = (L - region_size) // stride + 1`` windows at
    ``offset + j * stride`` (``j = 0..n-1``), with
    ``offset = (L - region_size - (n - 1) * stride) // 2``, so the grid is centred in the map.
    ``stride`` defaults to ``region_size``: non-overlapping windows that tile the map, the
    leftover border (less than one window) split between both sides (the odd voxel, if any,
    at the far end). Positions are listed in row-major (C) order of the grid.

    Example: a 2D ``12 x 12`` map with ``region_size = 3`` gives 16 windows at rows/cols
    ``0, 3, 6, 9``; a ``13 x 13`` map the same; a ``14 x 14`` map rows/cols ``1, 4, 7, 10``.

    Args:
        spatial_shape: ``(H, W)`` or ``(D, H, W)`` of the feature map.
        region_size: Window edge in voxels.
        stride: Step between windows (default ``region_size``).

    Returns:
        ``(K, d)`` int64 corners, ``K = prod(n)``.
    """
    stride = region_size if stride is None else int(stride)
    if region_size < 1 or stride < 1:
        raise ValueError(f"region_size and stride must be >= 1, got {region_size}, {stride}")
    axes = []
    for length in spatial_shape:
        if length < region_size:
            raise ValueError(f"map {tuple(spatial_shape)} is smaller than region {region_size}")
        n = (length - region_size) // stride + 1
        offset = (length - region_size - (n - 1) * stride) // 2
        axes.append(offset + stride * torch.arange(n))
    grids = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], dim=1).long()


def region_embeddings(
    f: torch.Tensor, region_size: int = 3, positions: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean feature of each ``region_size^d`` window (paper Sec. 3.2's local regions).

    Args:
        f: ``(N, C, H, W)`` or ``(N, C, D, H, W)`` feature map.
        region_size: Window edge in voxels (3 in the paper).
        positions: ``(K, d)`` int window top-left corners (``d`` = 2 or 3, in the order of the
            spatial axes); ``None`` for :func:`grid_positions` with its defaults.

    Returns:
        ``(N, K, C)`` window means (not normalised), in the order of ``positions``.
    """
    if f.dim() not in (4, 5):
        raise ValueError(f"expected (N, C, H, W) or (N, C, D, H, W), got {tuple(f.shape)}")
    spatial = tuple(f.shape[2:])
    d = len(spatial)
    if positions is None:
        positions = grid_positions(spatial, region_size)
    positions = torch.as_tensor(positions, device=f.device)
    if positions.dim() != 2 or positions.shape[1] != d:
        raise ValueError(f"positions must be (K, {d}), got {tuple(positions.shape)}")
    if positions.is_floating_point():
        raise TypeError("positions must be integer window corners")
    positions = positions.long()
    upper = torch.tensor(spatial, device=f.device) - region_size
    if bool((positions < 0).any()) or bool((positions > upper).any()):
        raise ValueError(
            f"a {region_size}-voxel window at some of the positions leaves the map {spatial}"
        )
    # linear index of every voxel of every window: corner + offset inside the window
    offsets = torch.stack(
        torch.meshgrid(*[torch.arange(region_size, device=f.device)] * d, indexing="ij"), dim=-1
    ).reshape(-1, d)  # (r^d, d)
    coords = positions[:, None, :] + offsets[None]  # (K, r^d, d)
    strides = torch.tensor([math.prod(spatial[a + 1 :]) for a in range(d)], device=f.device)
    flat_index = (coords * strides).sum(-1)  # (K, r^d)
    k = positions.shape[0]
    values = f.flatten(2)[:, :, flat_index.reshape(-1)]  # (N, C, K * r^d)
    return values.reshape(f.shape[0], f.shape[1], k, -1).mean(-1).transpose(1, 2)


def local_masks(
    partition: torch.Tensor | Sequence[int],
    volume: torch.Tensor | Sequence[int],
    strategy: LocalStrategy,
    num_regions: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which images hold positives of a region, and which regions of its image are negatives.

    The local loss factorises: a positive of region ``k`` is always region ``k`` of another
    embedding, a negative always another region of the anchor's own image (both views).

    - Image level, ``(2N, 2N)``: for ``"LR"`` the other view of the same image (as ``GR``); for
      ``"LD"`` also both views of every other image with the same partition (as ``GD``, so
      including other images of the same partition of the *same* volume; see
      :func:`contrastive_masks`).
    - Region level, ``(K, 2K)``: columns are the regions ``[view of the anchor 0..K-1, other
      view 0..K-1]`` of the anchor's image; region ``k`` has negatives ``k' != k`` in both views.

    Args:
        partition: ``(N,)`` int partition of each image.
        volume: ``(N,)`` int volume of each image.
        strategy: ``"LR"`` or ``"LD"``.
        num_regions: ``K``.

    Returns:
        ``(image_pos, region_neg)``: ``(2N, 2N)`` and ``(K, 2K)`` bool.
    """
    if strategy not in _LOCAL_STRATEGIES:
        raise ValueError(f"unknown local strategy {strategy!r}; use one of {_LOCAL_STRATEGIES}")
    image_pos, _ = contrastive_masks(partition, volume, "GR" if strategy == "LR" else "GD")
    eye = torch.eye(num_regions, dtype=torch.bool, device=image_pos.device)
    region_neg = ~torch.cat([eye, eye], dim=1)
    return image_pos, region_neg


def local_contrastive_loss(
    f1: torch.Tensor,
    f2: torch.Tensor,
    partition: torch.Tensor | Sequence[int],
    volume: torch.Tensor | Sequence[int],
    strategy: LocalStrategy = "LD",
    region_size: int = 3,
    positions: torch.Tensor | None = None,
    temperature: float = 0.1,
) -> torch.Tensor:
    """Local contrastive loss with the ``LR``/``LD`` strategies (paper Sec. 3.2).

    The two views must be spatially aligned (the paper uses intensity-only augmentations for
    this stage), so region ``k`` is the same place in both. Each region embedding is the mean
    of a ``region_size^d`` window at a fixed position (:func:`region_embeddings`), then
    L2-normalised. Anchors are all ``2N * K`` regions (both views, so the loss is symmetric in
    the views).

    - ``"LR"``: positive of region ``k`` of view ``v`` of image ``n`` = region ``k`` of the
      other view of ``n``; negatives = the other regions ``k' != k`` of image ``n``, both views
      (``2(K-1)`` of them).
    - ``"LD"``: positives also region ``k`` of both views of every other image with the same
      partition (another volume; same-volume images of the same partition, if any, count too,
      as in ``GD``). Negatives stay the other regions of the anchor's *own* image only: a region
      of another image at another position may show the same anatomy (volumes are not
      registered, the partitions only roughly aligned), so using it as a negative would add
      false negatives, while regions within one image are known to be different places.

    The per-positive term and the averaging are those of :func:`global_contrastive_loss`
    (mean over the ``2N * K`` anchors of the mean over their positives; with ``K = 1`` there
    are no negatives and the loss is 0).

    Args:
        f1: ``(N, C, H, W)`` or ``(N, C, D, H, W)`` projected feature map of view 1.
        f2: Same shape, view 2.
        partition: ``(N,)`` int partition of each image.
        volume: ``(N,)`` int volume of each image.
        strategy: ``"LR"`` or ``"LD"`` (the paper's best is ``LD``).
        region_size: Window edge (3 in the paper).
        positions: ``(K, d)`` int window top-left corners; ``None`` for the non-overlapping
            centred grid of :func:`grid_positions` (stride = ``region_size``). For large 3D
            maps pass a sparser grid, e.g. ``grid_positions(shape, 3, stride=6)``: memory
            grows as ``N * K^2``.
        temperature: ``tau`` (0.1 in the paper).

    Returns:
        Scalar loss (float32 for half-precision inputs).
    """
    if f1.shape != f2.shape:
        raise ValueError(f"f1 {tuple(f1.shape)} and f2 {tuple(f2.shape)} differ")
    _check_temperature(temperature)
    n = f1.shape[0]
    e = region_embeddings(torch.cat([f1, f2]).float(), region_size, positions)  # (2N, K, C)
    e = F.normalize(e, dim=-1)
    k = e.shape[1]
    image_pos, region_neg = local_masks(partition, volume, strategy, k)
    if image_pos.shape[0] != 2 * n:
        raise ValueError(f"{n} feature maps per view but {image_pos.shape[0] // 2} labels")
    image_pos, region_neg = image_pos.to(e.device), region_neg.to(e.device)
    # negatives: the anchor's regions against [own view, other view] of its own image
    other = torch.cat([e[n:], e[:n]])  # other view of each embedding
    own_image = torch.cat([e, other], dim=1)  # (2N, 2K, C)
    neg_sim = torch.einsum("ikc,ijc->ikj", e, own_image) / temperature  # (2N, K, 2K)
    neg_lse = _masked_logsumexp(neg_sim, region_neg.expand_as(neg_sim))  # (2N, K)
    # positives: region k against region k of every embedding
    pos_sim = torch.einsum("ikc,jkc->ikj", e, e) / temperature  # (2N, K, 2N)
    pos_mask = image_pos[:, None, :].expand_as(pos_sim)
    return _pairwise_loss(
        pos_sim.reshape(2 * n * k, -1), neg_lse.reshape(-1), pos_mask.reshape(2 * n * k, -1)
    )
