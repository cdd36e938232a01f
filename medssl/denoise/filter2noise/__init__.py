"""Filter2Noise: single-scan, self-supervised, interpretable CT denoising.

Sun et al., "Filter2Noise: Interpretable and Zero-Shot Low-Dose CT Image Denoising" (2025),
re-implemented from the paper's description with medssl's changes: per-pixel sigma maps from a
predictor with local context and position, bounded sigmas on a static-radius fused kernel,
HU-fixed intensities, noise-adaptive settings, crop-based fitting, volumes (2D fitted on a
sample of slices, or 3D with sigma_z), and sigma-map edits at inference time.
"""

from medssl.denoise.filter2noise.api import (
    DenoiseResult,
    FittedDenoiser,
    apply_denoiser,
    denoise_volume,
    fit_denoiser,
    load_denoiser,
)
from medssl.denoise.filter2noise.config import PRESETS, F2NConfig, FitConfig, ModelConfig, preset
from medssl.denoise.filter2noise.fit import FitReport, estimate_noise_std, fit_model
from medssl.denoise.filter2noise.loss import dog_kernel, edge_loss, filter2noise_loss
from medssl.denoise.filter2noise.maps import save_sigma_maps
from medssl.denoise.filter2noise.model import AGBFStage, Filter2Noise, SigmaEdit, build_model
from medssl.denoise.filter2noise.roi import parse_roi
from medssl.denoise.filter2noise.sampling import local_shuffle, pad_to_even, pair_downsample

__all__ = [
    "PRESETS",
    "AGBFStage",
    "DenoiseResult",
    "F2NConfig",
    "Filter2Noise",
    "FitConfig",
    "FitReport",
    "FittedDenoiser",
    "ModelConfig",
    "SigmaEdit",
    "apply_denoiser",
    "build_model",
    "denoise_volume",
    "dog_kernel",
    "edge_loss",
    "estimate_noise_std",
    "filter2noise_loss",
    "fit_denoiser",
    "fit_model",
    "load_denoiser",
    "local_shuffle",
    "pad_to_even",
    "pair_downsample",
    "parse_roi",
    "preset",
    "save_sigma_maps",
]
