"""The Filter2Noise model: a cascade of attention-guided bilateral filter (AGBF) stages.

Each stage predicts sigma maps from its own input (spatial sigmas in pixels/voxels, one per
axis in the tensor's axis order, and a range sigma in network units, see
:mod:`~medssl.denoise.filter2noise.intensity`) and filters that input with
:func:`medssl.ops.bilateral_filter`. The sigmas are the model's explanation of what it does,
and can be edited at inference time (:class:`SigmaEdit`): every map is multiplied by a factor
map and clipped to the stage's bounds, and later stages see the edited result. With
``final_filter = "nlm"`` the last stage is :class:`NLMStage`: the same maps, its range weights
from patch differences (non-local means).

Sun et al., "Filter2Noise: Interpretable and Zero-Shot Low-Dose CT Image Denoising" (2025).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medssl.denoise.filter2noise.config import ModelConfig
from medssl.denoise.filter2noise.filters import gaussian_blur
from medssl.denoise.filter2noise.intensity import HU_PER_UNIT
from medssl.denoise.filter2noise.nlm import nonlocal_means
from medssl.denoise.filter2noise.predictors import (
    GlobalSigmaPredictor,
    LocalSigmaPredictor,
    PatchAttentionPredictor,
    coord_grid,
)
from medssl.ops import bilateral_filter, joint_bilateral_filter, radius_for_sigma

__all__ = [
    "AGBFStage",
    "Filter2Noise",
    "NLMStage",
    "SigmaEdit",
    "build_model",
    "resolved_final_filter",
]


@dataclass
class SigmaEdit:
    """An inference-time edit of every sigma map (no retraining).

    Attributes:
        strength: Global factor on every sigma (spatial and range); 0 returns the input.
        roi: Optional region ``(B or 1, 1, *spatial)`` (bool or 0..1 float) where
            ``roi_factor`` multiplies on top of ``strength``.
        roi_factor: Factor inside the region.
    """

    strength: float = 1.0
    roi: Tensor | None = None
    roi_factor: float = 1.0

    def factor(self, like: Tensor) -> Tensor | float:
        """The factor map for an input like ``like`` (a float where it is uniform)."""
        if self.roi is None or self.roi_factor == 1.0:
            return float(self.strength)
        roi = self.roi.to(device=like.device, dtype=like.dtype)
        return self.strength * (1.0 + (self.roi_factor - 1.0) * roi)

    @property
    def is_identity(self) -> bool:
        return self.strength == 1.0 and (self.roi is None or self.roi_factor == 1.0)


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


class AGBFStage(nn.Module):
    """One stage: sigma predictor + bilateral filter.

    Args:
        predictor: Maps ``(image, coords)`` to raw sigmas ``(B, nd + 1, *S)``.
        nd: Spatial dimensions.
        head: ``"bounded"`` (medssl): ``sigma = bound * sigmoid(raw + bias)``, static radius
            ``ceil(2 * sigma_max)``; ``"softplus"`` (published): ``min(softplus(raw), 6)`` and
            a radius from the largest predicted spatial sigma.
        sigma_max: Bound of the spatial sigmas per axis (tensor order), in pixels/voxels.
        range_max: Bound of the range sigma, in network units.
        init_spatial: Initial spatial sigma (pixels), for the bounded head.
        init_range: Initial range sigma (network units), for the bounded head.
        guide_sigma: 0 (published): the range weights compare the stage's own input values.
            > 0 (medssl's first stage): they compare a copy of the input smoothed in-plane by a
            Gaussian of this sigma (pixels), a joint bilateral filter
            (:func:`medssl.ops.joint_bilateral_filter`); the values averaged are still the
            input's. The guide is fixed: edits scale the sigma maps, not the guide.
    """

    def __init__(
        self,
        predictor: nn.Module,
        nd: int,
        *,
        head: str = "bounded",
        sigma_max: tuple[float, ...] = (3.0, 3.0),
        range_max: float = 1.0,
        init_spatial: float = 1.0,
        init_range: float = 0.1,
        guide_sigma: float = 0.0,
    ) -> None:
        super().__init__()
        if head not in ("bounded", "softplus"):
            raise ValueError(f"head must be 'bounded' or 'softplus', got {head!r}")
        if len(sigma_max) != nd:
            raise ValueError(f"sigma_max needs {nd} entries, got {sigma_max}")
        if guide_sigma < 0:
            raise ValueError(f"guide_sigma must be >= 0, got {guide_sigma}")
        self.predictor = predictor
        self.nd = nd
        self.kind = "bilateral"
        self.head = head
        self.guide_sigma = float(guide_sigma)
        self.register_buffer("bounds", torch.tensor([*sigma_max, range_max], dtype=torch.float32))
        self.register_buffer("lower", torch.zeros(nd + 1))
        # at most half the bound: a sigmoid started at its bound has no gradient (sigma_z, with
        # a bound of 1 voxel, would otherwise stay stuck at its maximum)
        init = [_logit(min(init_spatial, m / 2) / m) for m in sigma_max] + [
            _logit(init_range / range_max)
        ]
        self.bias = nn.Parameter(torch.tensor(init, dtype=torch.float32))
        self.radius = tuple(radius_for_sigma(m) for m in sigma_max) if head == "bounded" else None

    def set_initial_range(self, sigma_range: float) -> None:
        """Reset the range-sigma bias so that the stage starts at ``sigma_range``."""
        with torch.no_grad():
            lo, hi = float(self.lower[-1]), float(self.bounds[-1])
            self.bias[-1] = _logit((sigma_range - lo) / max(hi - lo, 1e-6))

    def set_range_floor(self, floor: float) -> None:
        """Lower bound of the range sigma (network units; medssl sets it from the noise level:
        a range sigma below the noise does not denoise)."""
        with torch.no_grad():
            self.lower[-1] = min(floor, 0.5 * float(self.bounds[-1]))

    def sigmas(self, x: Tensor, coords: Tensor | None) -> Tensor:
        """Sigma maps ``(B or 1, nd + 1, *S or 1s)``: spatial (tensor axis order), then range."""
        raw = self.predictor(x, coords)
        view = (1, -1, *([1] * self.nd))
        if self.head == "bounded":
            lo = self.lower.view(view)
            return lo + (self.bounds.view(view) - lo) * torch.sigmoid(raw + self.bias.view(view))
        return F.softplus(raw).clamp(max=6.0)

    def forward(
        self, x: Tensor, coords: Tensor | None = None, factor: Tensor | float = 1.0
    ) -> tuple[Tensor, Tensor]:
        """Filter ``x``; returns ``(output, sigma maps)``.

        Shape:
            x: ``(B, 1, *S)``; output the same; maps ``(B, nd + 1, *S)`` (or broadcastable).
        """
        s = self.sigmas(x, coords)
        if not (isinstance(factor, float) and factor == 1.0):
            bounds = self.bounds.view(1, -1, *([1] * self.nd))
            if self.head != "bounded":
                bounds = torch.full_like(bounds, 6.0)
            s = torch.minimum(s * factor, bounds)
        return self.filter(x, s), s

    def filter(self, x: Tensor, s: Tensor) -> Tensor:
        """Filter ``x`` with the (edited) maps ``s``: the bilateral filter, joint with the
        smoothed guide where ``guide_sigma > 0``."""
        if self.radius is not None:
            radius: tuple[int, ...] = self.radius
        else:  # published: window from the largest predicted spatial sigma (a host sync)
            radius = (radius_for_sigma(float(s[:, : self.nd].detach().max())),) * self.nd
        spatial = [s[:, a : a + 1] for a in range(self.nd)]
        if self.guide_sigma > 0:
            guide = gaussian_blur(x, self.guide_sigma)
            return joint_bilateral_filter(x, guide, spatial, s[:, self.nd :], radius)
        return bilateral_filter(x, spatial, s[:, self.nd :], radius)


class NLMStage(AGBFStage):
    """A last stage that averages by patch similarity: non-local means with per-pixel maps
    (:func:`~medssl.denoise.filter2noise.nlm.nonlocal_means`), 2D only.

    Its maps are read like a bilateral stage's: spatial sigmas ``(sigma_y, sigma_x)`` in
    pixels, then ``h`` in network units, the root-mean-square difference between two patches
    (Gaussian-weighted, ``patch_sigma`` pixels) at which a neighbour's weight falls to
    ``exp(-1/2)``. Range floor, initial value and edits apply to ``h`` as to a range sigma.

    Args:
        predictor: As for :class:`AGBFStage` (3 output maps).
        radius: Window half-width in pixels; the spatial sigmas are bounded by ``radius / 2``.
        patch_sigma: The patch weight's Gaussian sigma (pixels).
        range_max, init_spatial, init_range: As for :class:`AGBFStage`.
    """

    def __init__(
        self,
        predictor: nn.Module,
        *,
        radius: int = 4,
        patch_sigma: float = 1.0,
        range_max: float = 1.0,
        init_spatial: float = 1.0,
        init_range: float = 0.1,
    ) -> None:
        if radius < 1:
            raise ValueError(f"the NLM stage's radius must be >= 1, got {radius}")
        if patch_sigma < 0:
            raise ValueError(f"the NLM stage's patch_sigma must be >= 0, got {patch_sigma}")
        bound = radius / 2
        super().__init__(
            predictor,
            2,
            sigma_max=(bound, bound),
            range_max=range_max,
            init_spatial=init_spatial,
            init_range=init_range,
        )
        self.kind = "nlm"
        self.radius = (radius, radius)
        self.patch_sigma = float(patch_sigma)

    def filter(self, x: Tensor, s: Tensor) -> Tensor:
        """Non-local means of ``x`` (``(B, 1, H, W)``) with the maps ``s`` (``(B, 3, H, W)``
        or broadcastable)."""
        return nonlocal_means(x, (s[:, :1], s[:, 1:2]), s[:, 2:], self.radius[0], self.patch_sigma)


class Filter2Noise(nn.Module):
    """A cascade of :class:`AGBFStage`.

    Args:
        stages: The stages, applied in order.
        nd: Spatial dimensions (2: slices, 3: volumes with sigma_z).
        use_coords: Whether the predictors take pixel coordinates.
    """

    def __init__(self, stages: list[AGBFStage], nd: int, use_coords: bool = True) -> None:
        super().__init__()
        self.stages = nn.ModuleList(stages)
        self.nd = nd
        self.use_coords = use_coords

    @property
    def guide_sigmas(self) -> list[float]:
        """Per stage, the Gaussian sigma (pixels) of its range guide (0: self-guided)."""
        return [stage.guide_sigma for stage in self.stages]

    @property
    def stage_kinds(self) -> list[str]:
        """Per stage, ``"bilateral"`` or ``"nlm"`` (:class:`NLMStage`)."""
        return [stage.kind for stage in self.stages]

    @property
    def filters_items_independently(self) -> bool:
        """Whether each batch item's output depends on that item alone: true unless a stage
        picks its kernel radius from the batch's largest sigma (the published head)."""
        return all(stage.radius is not None for stage in self.stages)

    def _coords(self, x: Tensor, coords: Tensor | None) -> Tensor | None:
        if not self.use_coords:
            return None
        if coords is None:
            return coord_grid(tuple(x.shape[2:]), device=x.device, dtype=x.dtype)
        return coords

    def forward(
        self, x: Tensor, coords: Tensor | None = None, edit: SigmaEdit | None = None
    ) -> Tensor:
        """Denoise ``x`` (network units).

        Shape:
            x: ``(B, 1, *S)``; coords: ``(B or 1, nd, *S)`` in [-1, 1] (default: the grid of
            ``x``); output: ``(B, 1, *S)``.
        """
        return self.forward_with_maps(x, coords, edit)[0]

    def forward_with_maps(
        self, x: Tensor, coords: Tensor | None = None, edit: SigmaEdit | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """Denoise and return every stage's sigma maps (after the edit). A factor of 0 makes
        every sigma 0, i.e. the identity."""
        coords = self._coords(x, coords)
        factor: Tensor | float = 1.0 if edit is None else edit.factor(x)
        maps = []
        for stage in self.stages:
            x, s = stage(x, coords, factor)
            maps.append(s)
        return x, maps


def resolved_final_filter(cfg: ModelConfig) -> str:
    """The last stage's filter that ``cfg`` builds: ``"auto"`` is ``"nlm"`` in 2D and
    ``"bilateral"`` in 3D (the NLM stage is 2D only)."""
    if cfg.final_filter not in ("auto", "bilateral", "nlm"):
        raise ValueError(
            f"final_filter must be 'auto', 'bilateral' or 'nlm', got {cfg.final_filter!r}"
        )
    if cfg.final_filter == "auto":
        return "nlm" if cfg.nd == 2 else "bilateral"
    return cfg.final_filter


def build_model(cfg: ModelConfig) -> Filter2Noise:
    """Build a :class:`Filter2Noise` from a :class:`ModelConfig` (weights from the current
    torch seed)."""
    nd = cfg.nd
    sigma_max = (cfg.sigma_max_z, cfg.sigma_max, cfg.sigma_max) if nd == 3 else (cfg.sigma_max,) * 2
    range_max = cfg.range_max_hu / HU_PER_UNIT if cfg.intensity == "hu" else 1.0
    final = resolved_final_filter(cfg)
    if final == "nlm" and nd != 2:
        raise ValueError("the NLM last stage (final_filter='nlm') is 2D only: use mode 2d")
    stages: list[AGBFStage] = []
    for k in range(cfg.stages):
        if cfg.predictor == "local":
            pred: nn.Module = LocalSigmaPredictor(nd, cfg.width, cfg.dilations, cfg.use_coords)
        elif cfg.predictor == "patch_attention":
            if nd != 2:
                raise ValueError("the published patch-attention predictor is 2D only")
            pred = PatchAttentionPredictor()
        elif cfg.predictor == "global":
            pred = GlobalSigmaPredictor(nd)
        else:
            raise ValueError(f"unknown predictor {cfg.predictor!r}")
        if final == "nlm" and k == cfg.stages - 1:
            stages.append(
                NLMStage(
                    pred,
                    radius=cfg.nlm_radius,
                    patch_sigma=cfg.nlm_patch_sigma,
                    range_max=range_max,
                    init_spatial=cfg.init_spatial,
                    init_range=0.1 * range_max,
                )
            )
            continue
        stages.append(
            AGBFStage(
                pred,
                nd,
                head=cfg.head,
                sigma_max=sigma_max,
                range_max=range_max,
                init_spatial=cfg.init_spatial,
                init_range=0.1 * range_max,
                guide_sigma=cfg.guide_sigma if k == 0 else 0.0,
            )
        )
    return Filter2Noise(stages, nd, use_coords=cfg.use_coords)
