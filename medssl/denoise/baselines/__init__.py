"""Single-image denoising baselines used by the LDCT benchmark (BM3D lives in benchmarks/: its
licence is non-commercial, so medssl never imports it)."""

from medssl.denoise.baselines.gaussian import gaussian_denoise, oracle_search
from medssl.denoise.baselines.zsn2n import ZSN2N, zsn2n_denoise

__all__ = ["ZSN2N", "gaussian_denoise", "oracle_search", "zsn2n_denoise"]
