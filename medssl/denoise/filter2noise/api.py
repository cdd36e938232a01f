"""Denoise a CT volume (or slice) with Filter2Noise: fit once per scan, apply to every slice.

* 2D mode (``nd = 2``, default): the model is fitted on up to ``fit_slices`` evenly spaced
  slices and applied to all slices.
* 3D mode (``nd = 3``): the model filters with sigma_z on the 3D kernel, using the
  neighbouring slices; it is fitted on crops of the volume with the in-plane pixel-pair
  downsampling applied per slice (z kept).

Intensities go through the fixed HU mapping (``medssl`` presets) or per-slice min-max scaling
(the ``published`` preset); outside-field-of-view padding below -1024 HU is restored
unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from medssl.denoise.filter2noise.config import F2NConfig, preset
from medssl.denoise.filter2noise.fit import FitReport, estimate_noise_std, fit_model
from medssl.denoise.filter2noise.intensity import AIR_HU, HU_PER_UNIT, hu_to_net, net_to_hu
from medssl.denoise.filter2noise.loss import dog_kernel
from medssl.denoise.filter2noise.model import (
    Filter2Noise,
    SigmaEdit,
    build_model,
    resolved_final_filter,
)
from medssl.denoise.filter2noise.predictors import coord_grid
from medssl.denoise.filter2noise.sampling import decorrelated_views, pad_to_even, whitening_gain
from medssl.denoise.noise_model import NoiseModel, estimate_noise_model, fbp_low_band_sd
from medssl.io import Volume

__all__ = ["DenoiseResult", "FittedDenoiser", "denoise_volume", "fit_denoiser", "load_denoiser"]

_FORMAT = "medssl-filter2noise"


@dataclass
class FittedDenoiser:
    """A fitted model with what is needed to apply it again.

    Attributes:
        model: The fitted network.
        config: Its settings.
        noise_std_hu: The noise estimate of the scan it was fitted on (HU).
        report: The fit's report.
    """

    model: Filter2Noise
    config: F2NConfig
    noise_std_hu: float
    report: FitReport | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        """Save atomically as a ``.pt`` file (weights, settings, noise estimate)."""
        from medssl.io import atomic_file

        payload = {
            "format": _FORMAT,
            "config": self.config.to_dict(),
            "state_dict": self.model.state_dict(),
            "noise_std_hu": self.noise_std_hu,
            "meta": self.meta,
        }
        with atomic_file(path) as tmp:
            torch.save(payload, tmp)
        return Path(path)


def load_denoiser(path: str | Path, *, device: str | torch.device = "cpu") -> FittedDenoiser:
    """Load a model saved by :meth:`FittedDenoiser.save`.

    Only tensors and plain values are read from the file (``weights_only=True``): a file that
    holds other Python objects is refused and nothing in it runs.

    Raises:
        InputError: The file is refused, unreadable, or not a medssl Filter2Noise model.
    """
    from medssl.errors import InputError
    from medssl.io import load_tensors_file

    hint = "pass a .pt file written by `medssl denoise --save-model`"
    payload = load_tensors_file(path, hint=hint)  # tensors and plain values only: no code runs
    if payload.get("format") != _FORMAT:
        raise InputError("not a medssl Filter2Noise model", path=path, hint=hint)
    config = F2NConfig.from_dict(payload["config"])
    model = build_model(config.model).to(device)
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return FittedDenoiser(
        model, config, float(payload["noise_std_hu"]), meta=payload.get("meta", {})
    )


@dataclass
class DenoiseResult:
    """The denoised volume (HU, same grid), the sigma maps and timings.

    Attributes:
        volume: Denoised volume.
        sigma_maps: Per stage, ``(Z, nd + 1, Y, X)`` float32: spatial sigmas (pixels/voxels,
            tensor axis order), then the range sigma in HU.
        denoiser: The fitted model.
        seconds: ``{"fit": s, "apply": s}``.
    """

    volume: Volume
    sigma_maps: list[np.ndarray]
    denoiser: FittedDenoiser
    seconds: dict[str, float]


def _to_net(hu: Tensor, cfg: F2NConfig) -> tuple[Tensor, Tensor]:
    """HU ``(Z, Y, X)`` -> network units and the per-slice range scale (HU per unit)."""
    if cfg.model.intensity == "hu":
        return hu_to_net(hu), torch.full((hu.shape[0],), HU_PER_UNIT)
    lo = hu.clamp(min=AIR_HU).amin(dim=(1, 2), keepdim=True)
    hi = hu.amax(dim=(1, 2), keepdim=True)
    scale = (hi - lo).clamp(min=1e-6)
    return (hu.clamp(min=AIR_HU) - lo) / scale, scale.reshape(-1)


def _from_net(u: Tensor, hu: Tensor, cfg: F2NConfig) -> Tensor:
    if cfg.model.intensity == "hu":
        return net_to_hu(u)
    lo = hu.clamp(min=AIR_HU).amin(dim=(1, 2), keepdim=True)
    hi = hu.amax(dim=(1, 2), keepdim=True)
    return u * (hi - lo).clamp(min=1e-6) + lo


def _fit_inputs(net: Tensor, cfg: F2NConfig) -> tuple[list[Tensor], list[Tensor | None]]:
    Z = net.shape[0]
    if cfg.model.nd == 3:
        vol = net[None, None]
        c = coord_grid(tuple(vol.shape[2:])) if cfg.model.use_coords else None
        return [vol], [c]
    n = min(cfg.fit.fit_slices, Z)
    idx = np.unique(np.linspace(0, Z - 1, n).round().astype(int)) if n < Z else np.arange(Z)
    c = coord_grid(tuple(net.shape[1:])) if cfg.model.use_coords else None
    return [net[i][None, None] for i in idx], [c] * len(idx)


def z_bound(cfg: F2NConfig, spacing: tuple[float, float, float]) -> float:
    """Bound of sigma_z (voxels) for a volume with ``spacing`` ``(dz, dy, dx)`` in mm.

    ``min(sigma_max_z, sigma_max * min(dy, dx) / dz)``: the smoothing along z reaches no
    further in mm than the in-plane smoothing. The loss has no term that sees blur across
    slices (its edge term is in-plane), so without this bound a fit on thick slices (lung1:
    5 mm slices, 0.57 mm pixels) drives sigma_z to its 1-voxel bound and mixes anatomy 5 mm
    apart (measured on lung1: below the noisy input's PSNR).
    """
    dz, dy, dx = (float(v) for v in spacing)  # positive: Volume checks its spacing
    return min(cfg.model.sigma_max_z, cfg.model.sigma_max * min(dy, dx) / dz)


#: A noise model measured on fewer homogeneous patches is not used (tiny images).
MIN_NOISE_PATCHES = 4
#: The texture guard (``FitConfig.texture_guard``) applies where the noise model had to
#: measure patches this small or smaller (slices under 256 px, or little homogeneous tissue):
#: on larger patches of large slices the texture stays below the noise, and the guard's ramp
#: law, in cycles per pixel, would misread a smooth kernel on small pixels.
TEXTURE_GUARD_MAX_PATCH = 16


def dog_noise_std(noise: NoiseModel, kernel: Tensor) -> float:
    """The standard deviation (HU) of the DoG response to noise of the given NPS:
    ``sqrt(mean(NPS * |DoG(f)|^2))`` on the noise model's frequency grid.

    Shape:
        kernel: ``(k, k)`` with ``k <= P`` (the noise model's patch size).
    """
    p = noise.patch
    k = kernel.detach().double().numpy()
    pad = np.zeros((p, p))
    pad[: k.shape[0], : k.shape[1]] = k
    gain = np.abs(np.fft.fft2(pad)) ** 2
    power = noise.nps / (noise.pixel_mm[0] * noise.pixel_mm[1])  # HU² per frequency bin
    return float(np.sqrt((power * gain).mean()))


#: Reflect padding (pixels) of the whitened views' FFTs.
VIEW_PAD = 16


def training_views(
    images: list[Tensor], noise: NoiseModel, max_gain: float
) -> list[tuple[Tensor, Tensor]]:
    """Each fitting image's two decorrelated training views (whitened by ``noise``'s NPS).

    Shape:
        images: each ``(1, 1, [D,] H, W)``; views ``(1, 1, [D,] H', W')`` with ``H'`` half
        the even-padded H.
    """
    out = []
    for img in images:
        even, _ = pad_to_even(img)
        H, W = even.shape[-2:]
        psd = torch.from_numpy(noise.psd((H + 2 * VIEW_PAD, W + 2 * VIEW_PAD)))
        gain = whitening_gain(psd, max_gain).to(img.device)
        out.append(decorrelated_views(even, gain, VIEW_PAD))
    return out


def _psd_in_net_units(
    nm: NoiseModel, level_hu: float, units: float
) -> Callable[[tuple[int, int]], Tensor]:
    """The noise model's PSD on a grid, rescaled to the fit's noise level, in network units²."""
    factor = (level_hu / nm.sd_hu) ** 2 / units**2

    def psd(hw: tuple[int, int]) -> Tensor:
        return torch.from_numpy(nm.psd(hw) * factor)

    return psd


def fit_denoiser(
    volume: Volume,
    config: F2NConfig | None = None,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: Callable[[int, int, float], None] | None = None,
) -> FittedDenoiser:
    """Fit a Filter2Noise model to a CT volume (HU).

    Args:
        volume: The noisy scan (HU), ``(Z, Y, X)``; a slice is ``(1, Y, X)``.
        config: Settings (default: the ``medssl`` preset).
        seed: Seed of the weights and the crop sampling.
        device: Torch device.
        progress: ``progress(step, steps, loss)``.
    """
    cfg = config or preset("medssl")
    if cfg.model.nd == 3 and volume.shape[0] < 2:
        cfg = cfg.with_model(nd=2)
    cfg = cfg.with_fit(steps=cfg.steps_for(*volume.shape[1:]), scale_steps=False)
    # the saved model records the filter it was built with, not "auto"
    cfg = cfg.with_model(final_filter=resolved_final_filter(cfg.model))
    if cfg.model.nd == 3:
        cfg = cfg.with_model(sigma_max_z=z_bound(cfg, volume.spacing))
    torch.manual_seed(seed)
    hu = torch.from_numpy(volume.array)
    net, scale = _to_net(hu, cfg)
    images, coords = _fit_inputs(net, cfg)
    noise = estimate_noise_std(images)
    edge_noise: float | None = None
    views = None
    noise_psd: Callable[[tuple[int, int]], Tensor] | None = None
    meta: dict[str, Any] = {}
    if cfg.fit.noise_estimate == "nps":
        nm = estimate_noise_model(volume.array, volume.spacing[1:])  # as the quality report
        units = float(scale.mean())  # HU per network unit
        edge_noise = 0.0  # no noise model measured: the published edge target
        if nm.patches >= MIN_NOISE_PATCHES and nm.sd_hu > 0:  # else: the pixel-pair level
            level = nm.sd_hu
            if cfg.fit.texture_guard > 0 and nm.patch <= TEXTURE_GUARD_MAX_PATCH:
                # few homogeneous regions (small slices): texture may pass for noise
                level = min(level, cfg.fit.texture_guard * fbp_low_band_sd(nm))
            noise = level / units
            # the floor grows with the noise's correlation: white-like noise (a sharp
            # kernel, 1/e radius under 0.75 px) keeps the published edge target
            share = min(max((nm.correlation_length_px - 0.75) / 0.75, 0.0), 1.0)
            dog_noise = dog_noise_std(nm, dog_kernel(*cfg.fit.dog)) * level / nm.sd_hu
            edge_noise = share * dog_noise / units
            meta["noise_level_hu"] = round(level, 3)
            if cfg.fit.views == "whitened":
                views = training_views(images, nm, cfg.fit.whiten_max_gain)
            noise_psd = _psd_in_net_units(nm, level, units)
        meta["noise_model"] = nm.to_dict()
    if cfg.fit.objective == "sure" and noise_psd is None:  # no noise model: white noise
        variance = float(noise) ** 2

        def noise_psd(hw: tuple[int, int]) -> Tensor:
            return torch.full(hw, variance)

    model = build_model(cfg.model)
    if cfg.model.head == "bounded":
        for stage in model.stages:
            stage.set_range_floor(cfg.model.range_floor_noise * noise)
            stage.set_initial_range(max(cfg.model.init_range_noise * noise, 1e-3))
    model = model.to(device)
    images = [i.to(device) for i in images]
    coords = [None if c is None else c.to(device) for c in coords]
    report = fit_model(
        model,
        images,
        cfg.fit,
        coords=coords,
        seed=seed,
        progress=progress,
        edge_noise_std=edge_noise,
        views=None if views is None else [(a.to(device), b.to(device)) for a, b in views],
        noise_psd=noise_psd,
    )
    noise_hu = noise * float(scale.mean())
    return FittedDenoiser(model, cfg, noise_hu, report, meta=meta)


@torch.no_grad()
def apply_denoiser(
    denoiser: FittedDenoiser,
    volume: Volume,
    *,
    edit: SigmaEdit | None = None,
    device: str | torch.device = "cpu",
    chunk: int = 4,
) -> tuple[Volume, list[np.ndarray]]:
    """Apply a fitted model to every slice; returns the denoised volume and sigma maps."""
    cfg = denoiser.config
    model = denoiser.model.to(device).eval()
    hu = torch.from_numpy(volume.array)
    net, scale = _to_net(hu, cfg)
    outs: list[Tensor] = []
    maps: list[list[Tensor]] = [[] for _ in model.stages]
    roi = None if edit is None or edit.roi is None else torch.as_tensor(edit.roi)
    if cfg.model.nd == 3:
        x = net[None, None].to(device)
        c = coord_grid(tuple(x.shape[2:]), device=device) if cfg.model.use_coords else None
        e = (
            edit
            if roi is None
            else SigmaEdit(edit.strength, roi.reshape(1, 1, *x.shape[2:]), edit.roi_factor)
        )  # type: ignore[union-attr]
        y, ms = model.forward_with_maps(x, c, e)
        outs.append(y[0, 0].cpu())
        for k, m in enumerate(ms):
            maps[k].append(m.expand(1, -1, *x.shape[2:])[0].transpose(0, 1).cpu())
    else:
        c = coord_grid(tuple(net.shape[1:]), device=device) if cfg.model.use_coords else None
        for z0 in range(0, net.shape[0], chunk):
            x = net[z0 : z0 + chunk, None].to(device)
            e = edit
            if roi is not None:
                e = SigmaEdit(edit.strength, roi[z0 : z0 + chunk, None].to(device), edit.roi_factor)  # type: ignore[union-attr]
            y, ms = model.forward_with_maps(x, c, e)
            outs.append(y[:, 0].cpu())
            for k, m in enumerate(ms):
                maps[k].append(m.expand(x.shape[0], -1, *x.shape[2:]).cpu())
    den = torch.cat(outs) if cfg.model.nd == 2 else outs[0]
    out_hu = _from_net(den, hu, cfg)
    keep = hu < AIR_HU  # outside-FOV padding stays as it was
    if edit is not None:  # where every sigma is 0 the filter is the identity: return the input
        if edit.strength == 0.0:
            keep = torch.ones_like(keep)
        elif roi is not None and edit.roi_factor == 0.0:
            keep = keep | roi.reshape(hu.shape).bool()
    out_hu = torch.where(keep, hu, out_hu)
    sigma_maps = []
    nd = cfg.model.nd
    for per_stage in maps:
        m = torch.cat(per_stage) if nd == 2 else per_stage[0]  # (Z, nd + 1, Y, X)
        m = m.clone()
        m[:, nd] *= scale.view(-1, 1, 1) if nd == 2 else float(scale.mean())
        sigma_maps.append(m.numpy().astype(np.float32))
    return volume.with_array(out_hu.numpy()), sigma_maps


def denoise_volume(
    volume: Volume,
    config: F2NConfig | None = None,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    edit: SigmaEdit | None = None,
    denoiser: FittedDenoiser | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> DenoiseResult:
    """Fit (unless ``denoiser`` is given) and apply Filter2Noise to a CT volume in HU."""
    t0 = time.perf_counter()
    if denoiser is None:
        denoiser = fit_denoiser(volume, config, seed=seed, device=device, progress=progress)
    t1 = time.perf_counter()
    out, maps = apply_denoiser(denoiser, volume, edit=edit, device=device)
    t2 = time.perf_counter()
    return DenoiseResult(out, maps, denoiser, {"fit": t1 - t0, "apply": t2 - t1})
