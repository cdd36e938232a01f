"""The SURE objective: noise probes coloured by the scan's NPS, and Stein's unbiased risk
estimate that equals the true error of a denoiser under correlated noise, where the white-noise
form of the estimate does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medssl.denoise.filter2noise.filters import gaussian_blur
from medssl.denoise.filter2noise.loss import coloured_noise, sure_loss
from tests.denoise.phantom import fbp_noise, fbp_nps


def _scaled_nps(n: int, sd: float, cutoff: float) -> torch.Tensor:
    """The NPS of :func:`fbp_noise` on an ``n x n`` grid with mean ``sd²``."""
    p = fbp_nps((n, n), cutoff)
    return torch.from_numpy(p * sd**2 / p.mean())


def test_coloured_noise_has_the_variance_and_the_correlation_of_its_psd():
    n, sd = 128, 0.04
    psd = _scaled_nps(n, sd, cutoff=0.4)
    probe = coloured_noise((16, 1, n, n), psd, torch.Generator().manual_seed(0)).double()
    assert probe.shape == (16, 1, n, n) and probe.dtype == torch.float64
    assert probe.std().item() == pytest.approx(sd, rel=0.03)
    acov = torch.fft.ifft2(psd).real  # autocovariance at lag (0, 1), from the PSD
    rho = float(acov[0, 1] / acov[0, 0])
    measured = float((probe[..., :, 1:] * probe[..., :, :-1]).mean() / probe.var())
    assert rho > 0.5  # smooth-kernel noise: neighbours share most of it
    assert measured == pytest.approx(rho, abs=0.03)


def _truth_and_estimates(probe_psd_of, cutoff: float) -> tuple[float, float]:
    """Mean over draws of (true MSE, SURE) of a fixed 1-px Gaussian blur on a smooth image
    with FBP-like noise; ``probe_psd_of(psd)`` is the PSD the probes are drawn from."""
    n, sd = 96, 0.05
    yy, xx = np.mgrid[:n, :n]
    clean = torch.from_numpy(
        0.04 + 0.3 * ((yy - n / 2) ** 2 + (xx - n / 2) ** 2 < (n / 4) ** 2)
    ).float()[None, None]
    psd = _scaled_nps(n, sd, cutoff)
    gen = torch.Generator().manual_seed(1)
    truth, sure = [], []
    for seed in range(12):
        noise = torch.from_numpy(fbp_noise((n, n), sd, seed, cutoff)).float()[None, None]
        y = clean + noise

        def blur(x: torch.Tensor, coords: torch.Tensor | None) -> torch.Tensor:
            return gaussian_blur(x, 1.0)

        probe = coloured_noise(tuple(y.shape), probe_psd_of(psd), gen)
        parts = sure_loss(blur, y, None, probe, variance=float(noise.var()))
        truth.append(float((blur(y, None) - clean).square().mean()))
        sure.append(float(parts.total))
    return float(np.mean(truth)), float(np.mean(sure))


@pytest.mark.parametrize("cutoff", [0.75, 0.4])
def test_sure_with_probes_of_the_noise_psd_estimates_the_true_error(cutoff):
    truth, sure = _truth_and_estimates(lambda psd: psd, cutoff)
    assert sure == pytest.approx(truth, rel=0.1)


def test_sure_with_white_probes_misjudges_correlated_noise():
    """The white-noise SURE (probes of the right variance, no correlation) misses the error of
    the same blur under smooth-kernel noise by far: what the coloured probe is for."""
    truth, sure = _truth_and_estimates(lambda psd: torch.full_like(psd, float(psd.mean())), 0.4)
    assert abs(sure - truth) > 0.3 * truth


def test_a_fit_with_the_sure_objective_denoises_correlated_noise():
    """``objective = "sure"`` end to end (noise model -> PSD -> fit) on a small slice with
    smooth-kernel noise."""
    from medssl.denoise.filter2noise.api import denoise_volume
    from medssl.denoise.filter2noise.config import preset
    from medssl.denoise.noise_model import soft_tissue_mask
    from medssl.io import Volume

    torch.set_num_threads(1)
    n = 96
    yy, xx = np.mgrid[:n, :n]
    body = ((yy - n / 2) / (0.45 * n)) ** 2 + ((xx - n / 2) / (0.45 * n)) ** 2 < 1
    clean = np.where(body, 40.0, -1000.0)
    noisy = np.maximum(np.rint(clean + fbp_noise((n, n), 40.0, 2, 0.4)), -1024.0)
    cfg = preset("medssl").with_fit(objective="sure", steps=20)
    out = denoise_volume(Volume(noisy[None].astype(np.float32), spacing=(1.0, 0.7, 0.7)), cfg)
    inside = soft_tissue_mask(clean)
    assert np.isfinite(out.volume.array).all()
    assert out.denoiser.config.fit.objective == "sure"
    assert out.volume.array[0][inside].std() < 0.6 * noisy[inside].std()


def test_an_unknown_objective_is_refused():
    from medssl.denoise.filter2noise.config import FitConfig, preset
    from medssl.denoise.filter2noise.fit import fit_model
    from medssl.denoise.filter2noise.model import build_model

    cfg = preset("medssl")
    with pytest.raises(ValueError, match="unknown objective"):
        fit_model(build_model(cfg.model), [torch.zeros(1, 1, 8, 8)], FitConfig(objective="x"))
    with pytest.raises(ValueError, match="noise power spectrum"):
        fit_model(build_model(cfg.model), [torch.zeros(1, 1, 8, 8)], FitConfig(objective="sure"))
