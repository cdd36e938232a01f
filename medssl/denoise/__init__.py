"""Denoising: Filter2Noise, single-image baselines and image-quality metrics."""
