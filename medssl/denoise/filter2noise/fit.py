"""Fitting a Filter2Noise model to the one noisy scan.

Each step draws ``batch`` random crops (whole images with ``crop = 0``) from the fitting
images, evaluates :func:`~medssl.denoise.filter2noise.loss.filter2noise_loss` and takes an
AdamW step under a one-cycle learning-rate schedule (:mod:`.optim`). Crops keep their pixel
coordinates in the full image, so the position input means the same at fitting and at
inference. Deterministic given the seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from medssl.denoise.filter2noise.config import FitConfig
from medssl.denoise.filter2noise.loss import (
    dog_kernel,
    dog_response,
    filter2noise_loss,
    sure_loss,
    sure_probe,
)
from medssl.denoise.filter2noise.model import Filter2Noise
from medssl.denoise.filter2noise.optim import OneCycleAdamW
from medssl.denoise.filter2noise.sampling import pad_to_even, pair_downsample

__all__ = ["FitReport", "estimate_noise_std", "fit_model", "local_noise_scale"]


@dataclass
class FitReport:
    """What the fit did: per-step losses (total, consistency, edge) and its wall time."""

    losses: list[float] = field(default_factory=list)
    consistency: list[float] = field(default_factory=list)
    edge: list[float] = field(default_factory=list)
    seconds: float = 0.0
    steps: int = 0


#: Network intensity above which a pixel counts as tissue (-600 HU): noise is measured there,
#: not in the air around the patient, where CT noise is much lower.
TISSUE_THRESHOLD = -0.6


def robust_std(values: Tensor, mask: Tensor | None = None) -> float:
    """``1.4826 * MAD`` of the values (inside ``mask`` when it keeps >= 5 % of them)."""
    v = values.reshape(-1).float()
    if mask is not None:
        m = mask.reshape(-1)
        if int(m.sum()) >= max(16, 0.05 * m.numel()):
            v = v[m]
    if v.numel() > 2_000_000:
        v = v[torch.linspace(0, v.numel() - 1, 2_000_000).long()]
    return float(1.4826 * (v - v.median()).abs().median())


def estimate_noise_std(images: Sequence[Tensor]) -> float:
    """Robust noise standard deviation (network units) in the tissue, from the pixel-pair
    difference: ``g1 - g2`` cancels smooth anatomy and, for white noise, has the noise's
    standard deviation; the median absolute deviation ignores edges."""
    diffs, masks = [], []
    for img in images:
        even, _ = pad_to_even(img)
        g1, g2 = pair_downsample(even)
        diffs.append((g1 - g2).reshape(-1))
        masks.append(((g1 + g2) / 2 > TISSUE_THRESHOLD).reshape(-1))
    return robust_std(torch.cat(diffs), torch.cat(masks))


#: Block size (pixels) of :func:`local_noise_scale`
NOISE_SCALE_BLOCK = 32


def local_noise_scale(image: Tensor, block: int = NOISE_SCALE_BLOCK) -> Tensor:
    """The local noise SD of a noisy image relative to its tissue's: CT noise is higher
    behind dense paths (the centre of the body, bone) and absent where the scanner clipped
    the air, so a single noise level or NPS misstates it across the image.

    The median absolute 3x3 high-pass (binomial) in ``block``-pixel blocks (the median
    ignores the edges crossing a block), divided by its median over the blocks whose mean is
    tissue, clamped to [0.1, 4] and interpolated bilinearly to the pixel grid. A ratio, so
    the high-pass's share of a correlated noise's variance cancels where the NPS has the same
    shape everywhere.

    Shape:
        image: ``(1, 1, H, W)`` or ``(1, 1, D, H, W)`` (network units; each slice on its
        own); returns the same shape.
    """
    x = image.reshape(-1, 1, *image.shape[-2:]).float()  # (D, 1, H, W)
    k = torch.tensor([1.0, 2.0, 1.0])
    kernel = (k[:, None] * k[None, :] / 16.0)[None, None]
    h = (x - F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel)).abs()
    H, W = int(x.shape[-2]), int(x.shape[-1])
    by, bx = min(block, H), min(block, W)
    ny, nx = H // by, W // bx

    def blocks(t: Tensor) -> Tensor:  # (D, 1, H, W) -> (D, ny, nx, by * bx)
        t = t[..., : ny * by, : nx * bx].reshape(-1, ny, by, nx, bx)
        return t.permute(0, 1, 3, 2, 4).reshape(-1, ny, nx, by * bx)

    med = blocks(h).median(dim=-1).values  # (D, ny, nx)
    tissue = blocks(x).mean(dim=-1) > TISSUE_THRESHOLD
    scales = []
    for d in range(med.shape[0]):
        inside = med[d][tissue[d]]
        ref = (inside if inside.numel() else med[d].reshape(-1)).median()
        scales.append((med[d] / ref.clamp(min=1e-12)).clamp(0.1, 4.0))
    rel = torch.stack(scales)[:, None]  # (D, 1, ny, nx)
    out = F.interpolate(rel, size=(H, W), mode="bilinear", align_corners=False)
    return out.reshape(image.shape).to(image.dtype)


Views = tuple[Tensor, Tensor]


def _crops(
    images: Sequence[Tensor],
    coords: Sequence[Tensor | None],
    cfg: FitConfig,
    gen: torch.Generator,
    views: Sequence[Views] | None = None,
) -> tuple[Tensor, Tensor | None, Views | None]:
    """A batch of equal-sized crops (even in-plane size), their coordinates and, with
    ``views`` (each image's two half-resolution training views, made once from the whole
    image), the views' matching crops (the crops then start at even pixels)."""
    nd = images[0].dim() - 2
    min_hw = min(min(int(i.shape[-2]), int(i.shape[-1])) for i in images)
    size = min(cfg.crop, min_hw) if cfg.crop > 0 else min_hw
    size -= size % 2
    whole = cfg.crop <= 0 or size >= max(max(int(i.shape[-2]), int(i.shape[-1])) for i in images)
    if whole and len({tuple(i.shape) for i in images}) == 1 and cfg.batch == 1:
        idx = int(torch.randint(len(images), (1,), generator=gen))
        img, _ = pad_to_even(images[idx])
        c = coords[idx]
        if c is not None:
            c, _ = pad_to_even(c)
        return img, c, (None if views is None else views[idx])
    depth = min(cfg.crop_depth, min(int(i.shape[2]) for i in images)) if nd == 3 else 0
    step = 1 if views is None else 2
    ys, cs, v1s, v2s = [], [], [], []
    for _ in range(cfg.batch):
        idx = int(torch.randint(len(images), (1,), generator=gen))
        img, c = images[idx], coords[idx]
        H, W = int(img.shape[-2]), int(img.shape[-1])
        y0 = int(torch.randint((H - size) // step + 1, (1,), generator=gen)) * step
        x0 = int(torch.randint((W - size) // step + 1, (1,), generator=gen)) * step
        sl = [slice(None), slice(None)]
        if nd == 3:
            z0 = int(torch.randint(int(img.shape[2]) - depth + 1, (1,), generator=gen))
            sl.append(slice(z0, z0 + depth))
        half = [*sl, slice(y0 // 2, (y0 + size) // 2), slice(x0 // 2, (x0 + size) // 2)]
        sl += [slice(y0, y0 + size), slice(x0, x0 + size)]
        ys.append(img[tuple(sl)])
        if c is not None:
            cs.append(c[tuple(sl)])
        if views is not None:
            v1s.append(views[idx][0][tuple(half)])
            v2s.append(views[idx][1][tuple(half)])
    crop_views = (torch.cat(v1s), torch.cat(v2s)) if views is not None else None
    return torch.cat(ys), (torch.cat(cs) if cs else None), crop_views


def fit_model(
    model: Filter2Noise,
    images: Sequence[Tensor],
    cfg: FitConfig,
    *,
    coords: Sequence[Tensor | None] | None = None,
    seed: int = 0,
    progress: Callable[[int, int, float], None] | None = None,
    edge_noise_std: float | None = None,
    views: Sequence[Views] | None = None,
    noise_psd: Callable[[tuple[int, int]], Tensor] | None = None,
) -> FitReport:
    """Fit ``model`` to noisy images (network units) in place.

    Args:
        model: The model (its parameters are trained).
        images: Fitting images ``(1, 1, H, W)`` (or ``(1, 1, D, H, W)`` for ``nd = 3``).
        cfg: Fit settings.
        coords: Per image, its coordinate channels ``(1, nd, *S)`` (``None`` without).
        seed: Seed of the crop sampling.
        progress: Called as ``progress(step, steps, loss)`` after each step.
        edge_noise_std: The noise's share of the DoG response (network units), e.g. from the
            noise model's NPS; default: the response's robust std in the tissue.
        views: Per image, its two training views (``(1, 1, [D,] H', W')`` each, half the
            even-padded size), e.g. from
            :func:`~medssl.denoise.filter2noise.sampling.decorrelated_views`; default: the
            pixel-pair split of each crop.
        noise_psd: For ``cfg.objective = "sure"``: the noise power spectrum (network units²,
            mean = variance, numpy FFT order) on an ``(H, W)`` grid; required there.
    """
    if cfg.objective not in ("filter2noise", "sure"):
        raise ValueError(f"unknown objective {cfg.objective!r}: 'filter2noise' or 'sure'")
    if cfg.objective == "sure" and noise_psd is None:
        raise ValueError("the SURE objective needs the noise power spectrum (noise_psd)")
    psd_cache: dict[tuple[int, int], Tensor] = {}
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    coords = list(coords) if coords is not None else [None] * len(images)
    kernel = dog_kernel(*cfg.dog)
    floor = 0.0
    if cfg.edge_noise_floor > 0 and edge_noise_std is not None:
        floor = cfg.edge_noise_floor * edge_noise_std
    elif cfg.edge_noise_floor > 0:
        resp = torch.cat([dog_response(i, kernel).reshape(-1) for i in images])
        tissue = torch.cat([(i > TISSUE_THRESHOLD).reshape(-1) for i in images])
        floor = cfg.edge_noise_floor * robust_std(resp, tissue)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = OneCycleAdamW(params, cfg.lr, cfg.steps, weight_decay=cfg.weight_decay)
    report = FitReport()
    model.train()
    # SURE with a local noise scale: each image carries its scale as a second channel, so
    # that the crops (the same draws as without) cut both alike
    scaled = cfg.objective == "sure" and cfg.sure_local_scale
    crop_from = [torch.cat([i, local_noise_scale(i)], 1) for i in images] if scaled else images
    for step in range(cfg.steps):
        y, c, v = _crops(crop_from, coords, cfg, gen, views)
        scale = None
        if scaled:
            y, scale = y[:, :1].contiguous(), y[:, 1:]
        if cfg.objective == "sure":
            hw = (int(y.shape[-2]), int(y.shape[-1]))
            if hw not in psd_cache:
                psd_cache[hw] = noise_psd(hw).float()  # type: ignore[misc]
            probe, variance = sure_probe(tuple(y.shape), psd_cache[hw], gen, scale)
            parts = sure_loss(
                lambda x, cc: model(x, cc),
                y,
                c,
                probe.to(y.device),
                variance=variance,
                eps=cfg.sure_eps,
                batch_views=model.filters_items_independently,
            )
        else:
            parts = filter2noise_loss(
                lambda x, cc: model(x, cc),
                y,
                c,
                lam=cfg.lam,
                kernel=kernel,
                shuffle=cfg.shuffle,
                noise_floor=floor,
                batch_views=model.filters_items_independently,
                views=v,
            )
        opt.zero_grad()
        parts.total.backward()
        opt.step()
        report.losses.append(float(parts.total.detach()))
        report.consistency.append(parts.consistency)
        report.edge.append(parts.edge)
        if progress is not None:
            progress(step + 1, cfg.steps, report.losses[-1])
    model.eval()
    report.seconds = time.perf_counter() - t0
    report.steps = cfg.steps
    return report
