"""Filter2Noise settings: the model, the fit, and the named presets.

* ``medssl`` (default): per-pixel sigma maps from :class:`LocalSigmaPredictor` (local context +
  position), bounded sigmas with a static radius, HU-fixed intensities, the range sigma
  initialised from the image's noise estimate, training on random crops; in 2D its last stage
  is non-local means (``final_filter = "auto"``), in 3D a bilateral filter;
* ``bilateral``: the default before 4 December 2026: ``medssl`` with a bilateral last stage in
  2D as well (``final_filter = "bilateral"``);
* ``published``: every published choice (2 stages, patch-token attention, softplus capped at
  6, nearest upsampling, radius from the largest sigma, DoG 7x7 with sigmas 9 and 10,
  lambda 400, AdamW lr 1e-3 wd 0.01, OneCycle over 500 full-image steps, per-image min-max
  intensities);
* ``global``: medssl's settings with one sigma triple per stage and bilateral stages (the
  ablation);
* ``nlm``: medssl's settings with a non-local means last stage asked for explicitly
  (``final_filter = "nlm"``: range weights from patch differences; 2D only, refused in 3D).
  In 2D it is the default's model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

__all__ = ["PRESETS", "F2NConfig", "FitConfig", "ModelConfig", "preset"]


@dataclass(frozen=True)
class ModelConfig:
    """Architecture.

    Attributes:
        predictor: ``"local"``, ``"patch_attention"`` or ``"global"``.
        nd: 2 (slice by slice) or 3 (volume, with sigma_z).
        stages: Number of AGBF stages.
        head: ``"bounded"`` or ``"softplus"`` (see :class:`AGBFStage`).
        sigma_max: Bound of the in-plane spatial sigmas (pixels); radius ``ceil(2 * bound)``.
        sigma_max_z: Bound of sigma_z (voxels) for ``nd = 3``; a fit lowers it so that the
            z extent in mm is at most the in-plane one (:func:`~.api.z_bound`).
        range_max_hu: Bound of the range sigma (HU).
        width: Hidden channels of the local predictor.
        dilations: Dilations of its hidden layers.
        use_coords: Feed pixel coordinates to the predictor.
        init_spatial: Initial spatial sigma (pixels).
        init_range_noise: Initial range sigma as a multiple of the estimated noise std.
        range_floor_noise: Lower bound of every stage's range sigma as a multiple of the
            estimated noise std of the input (0: none). Without it, the per-pixel maps switch
            the second stage off in patches (range sigmas of 1-8 HU against 50-100 HU of noise)
            where the self-supervised loss takes correlated noise for structure. Both were
            0.3 and 2.0 with the pixel-pair noise estimate (about 0.7 of the true SD on ramp
            kernels); with the noise model's estimate (about the true SD) 0.2 and 1.4 keep
            about the same values on ramp kernels, and measured better on the development
            cases (lung1 z8/z24/z40, quarter dose, ramp/Shepp-Logan/Hann: +0.14 to +0.23 dB
            mean over 0.3/2.0).
        intensity: ``"hu"`` (fixed HU / 1000) or ``"minmax"`` (per image, the published way).
        guide_sigma: The first stage's range weights compare a Gaussian-smoothed copy of the
            image (this sigma, pixels, in-plane) instead of single noisy pixels: a joint
            bilateral filter (0: the published self-guided filter). Measured in
            ``benchmarks/ldct``: +1.17 dB mean PSNR at quarter dose over the self-guided
            filter with the other settings unchanged.
        final_filter: The last stage's filter: ``"bilateral"`` (the published cascade),
            ``"nlm"``: non-local means with per-pixel maps
            (:class:`~medssl.denoise.filter2noise.model.NLMStage`: its range weights compare
            Gaussian-weighted patches, not pixels; 2D only), or ``"auto"``: ``"nlm"`` in 2D,
            ``"bilateral"`` in 3D (a fit records the one it used). See ``benchmarks/ldct``,
            "A non-local means last stage".
        nlm_radius: The NLM stage's window half-width (pixels).
        nlm_patch_sigma: The NLM stage's patch weight (Gaussian sigma, pixels).
    """

    predictor: str = "local"
    nd: int = 2
    stages: int = 2
    head: str = "bounded"
    sigma_max: float = 3.0
    sigma_max_z: float = 1.0
    range_max_hu: float = 1000.0
    width: int = 16
    dilations: tuple[int, ...] = (2, 4)
    use_coords: bool = True
    init_spatial: float = 1.0
    init_range_noise: float = 1.4
    range_floor_noise: float = 0.2
    intensity: str = "hu"
    guide_sigma: float = 1.0
    final_filter: str = "bilateral"
    nlm_radius: int = 4
    nlm_patch_sigma: float = 1.0


@dataclass(frozen=True)
class FitConfig:
    """Fitting on the one scan.

    Attributes:
        steps: Optimiser steps (for slices of 512 x 512 pixels or more; see ``scale_steps``).
        scale_steps: Scale ``steps`` with the slice size, ``steps * sqrt(H * W) / 512`` clipped
            to ``[steps / 2, steps]``: on small images each pixel is seen more often per step,
            and the fit drifts to keeping noise sooner (measured in ``benchmarks/ldct``: at 128²
            and 256², 200-400 steps fall below 50 steps; at 512², 100 steps beat 25-50).
        lr: Peak learning rate (OneCycle).
        weight_decay: AdamW weight decay.
        crop: Crop size in pixels (even; 0 = whole images).
        batch: Crops per step.
        crop_depth: Slices per crop for ``nd = 3``.
        lam: Weight of the DoG edge term.
        dog: DoG kernel ``(size, sigma1, sigma2)``.
        edge_noise_floor: Multiple of the DoG response's noise level removed from the edge
            target (0: the published loss). Without it the edge term asks the output to keep
            the input's DoG magnitudes, noise included: on smooth reconstruction kernels,
            whose correlated noise has a strong DoG response, the fit then keeps the noise.
        noise_estimate: ``"nps"``: the noise level (the range sigma's floor and start) and the
            DoG response's noise level come from the scan's noise model; the floor then
            applies in proportion to the noise's correlation (none for a 1/e radius under
            0.75 px, as sharp kernels give; in full from 1.5 px: dev cases lung1 z8/z24/z40,
            quarter dose, ramp and Hann)
            (:func:`medssl.denoise.noise_model.estimate_noise_model`: SD and NPS measured in
            homogeneous tissue, right for correlated noise); ``"pixel_pairs"``: from the
            pixel-pair difference and the DoG response's robust std (too low on smooth
            kernels; models saved before the noise model).
        views: The two training views: ``"pairs"``: the published pixel-pair split (the
            default); ``"whitened"``: the split of the image whitened by the noise model's
            NPS, each view coloured back
            (:func:`~medssl.denoise.filter2noise.sampling.decorrelated_views`), so that the
            two views carry independent noise under a smooth kernel's correlated noise (the
            plain split where no noise model was measured). Measured worse, so not the
            default: lung1 z8, quarter dose, seed 0: ramp 42.04 dB with pairs, 40.99 / 40.93
            with gain caps 2 / 4; Hann 44.51 against 44.43 / 42.55 (``benchmarks/ldct``,
            "Self-supervision under correlated noise"). The loss has no term that asks a
            view's output to match the other view (its consistency terms compare outputs),
            so independent noise in the views asks for more smoothing, not less noise.
        whiten_max_gain: Cap of the whitening gain (see
            :func:`~medssl.denoise.filter2noise.sampling.whitening_gain`).
        texture_guard: With ``noise_estimate = "nps"``, the fit's noise level is at most this
            multiple of the noise model's SD with its low frequencies held to the ramp law of
            FBP noise (:func:`medssl.denoise.noise_model.fbp_low_band_sd`; 0: no guard). On
            small slices the homogeneous patches hold anatomical texture that the model reads
            as noise (CT_small, 128²: 1.2-4.4 times the true SD), and the fit then
            over-smooths. Only where the model measured patches of 16 px or less
            (``api.TEXTURE_GUARD_MAX_PATCH``). Measured on the cases where 1.3 binds at
            quarter dose (seed 0):
            ct_small Hann 37.43 -> 42.68 dB, cosine 36.27 -> 36.98, lung1 z40_256 cosine
            39.81 -> 39.98, Hann 40.79 -> 40.53, Shepp-Logan 38.37 -> 38.38; it binds on no
            ramp case and on none of the development cases at quarter dose.
        objective: The fitting loss: ``"filter2noise"`` (the published pixel-pair loss with
            the edge term) or ``"sure"``: Stein's unbiased estimate of the MSE for Gaussian
            noise with the scan's NPS (:func:`~medssl.denoise.filter2noise.loss.sure_loss`;
            the noise model's NPS, white noise of the pixel-pair level where none was
            measured). Measured worse than the published loss on the development cases
            (lung1 z8/z24/z40, quarter dose, seed 0: -0.03 to -1.6 dB, worst on z40, whose
            noise is the least stationary; ``benchmarks/ldct``, "A SURE objective"), so not
            the default: the estimate is only as right as the one stationary NPS it is given.
        sure_eps: Finite-difference step of the SURE divergence, as a fraction of the probe.
        sure_local_scale: With ``objective = "sure"``, scale the probes by the image's local
            noise SD (:func:`~medssl.denoise.filter2noise.fit.local_noise_scale`: CT noise is
            higher behind dense paths and absent in clipped air, one NPS is not enough).
            lung1 z40, quarter dose, ramp, seed 0: 37.66 dB without, 38.59 with (the default
            loss 38.98).
        shuffle: Local shuffle of the downsampled views.
        fit_slices: For a volume fitted slice by slice, at most this many slices (evenly
            spaced) are sampled for the fit; all slices are denoised.
    """

    steps: int = 100
    scale_steps: bool = True
    lr: float = 3e-3
    weight_decay: float = 0.01
    crop: int = 128
    batch: int = 4
    crop_depth: int = 8
    lam: float = 100.0
    dog: tuple[int, float, float] = (7, 9.0, 10.0)
    edge_noise_floor: float = 2.0
    shuffle: bool = True
    fit_slices: int = 8
    noise_estimate: str = "nps"
    views: str = "pairs"
    whiten_max_gain: float = 4.0
    texture_guard: float = 1.3
    objective: str = "filter2noise"
    sure_eps: float = 1e-3
    sure_local_scale: bool = True


@dataclass(frozen=True)
class F2NConfig:
    """Model and fit settings together."""

    model: ModelConfig = field(default_factory=ModelConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    name: str = "medssl"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> F2NConfig:
        model = dict(data.get("model", {}))
        # models saved before the guided first stage existed were fitted without it
        model.setdefault("guide_sigma", 0.0)
        if "dilations" in model:
            model["dilations"] = tuple(model["dilations"])
        fit = dict(data.get("fit", {}))
        # fitted before the noise model: pixel-pair noise level (edge floor as recorded)
        fit.setdefault("noise_estimate", "pixel_pairs")
        fit.setdefault("views", "pairs")  # fitted before the whitened views
        fit.setdefault("texture_guard", 0.0)  # fitted before the texture guard
        fit.setdefault("objective", "filter2noise")  # fitted before the SURE objective
        if "dog" in fit:
            fit["dog"] = tuple(fit["dog"])
        return F2NConfig(ModelConfig(**model), FitConfig(**fit), data.get("name", "custom"))

    def with_fit(self, **changes: Any) -> F2NConfig:
        return replace(self, fit=replace(self.fit, **changes))

    def steps_for(self, height: int, width: int) -> int:
        """The number of fitting steps for slices of ``height x width`` pixels."""
        steps = self.fit.steps
        if not self.fit.scale_steps:
            return steps
        scaled = round(steps * (height * width) ** 0.5 / 512)
        return int(min(max(scaled, (steps + 1) // 2), steps))

    def with_model(self, **changes: Any) -> F2NConfig:
        return replace(self, model=replace(self.model, **changes))


PRESETS: dict[str, F2NConfig] = {
    "medssl": F2NConfig(ModelConfig(final_filter="auto")),
    "bilateral": F2NConfig(ModelConfig(final_filter="bilateral"), FitConfig(), "bilateral"),
    "published": F2NConfig(
        ModelConfig(
            predictor="patch_attention",
            stages=2,
            head="softplus",
            use_coords=False,
            intensity="minmax",
            guide_sigma=0.0,
        ),
        FitConfig(
            steps=500,
            scale_steps=False,
            lr=1e-3,
            weight_decay=0.01,
            crop=0,
            batch=1,
            lam=400.0,
            edge_noise_floor=0.0,
            noise_estimate="pixel_pairs",
            views="pairs",
        ),
        name="published",
    ),
    "global": F2NConfig(ModelConfig(predictor="global", use_coords=False), FitConfig(), "global"),
    "nlm": F2NConfig(ModelConfig(final_filter="nlm"), FitConfig(), "nlm"),
}


def preset(name: str) -> F2NConfig:
    """A named preset (``medssl``, ``bilateral``, ``published``, ``global``, ``nlm``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]
