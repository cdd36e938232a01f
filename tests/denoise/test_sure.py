"""The SURE objective: noise probes coloured by the scan's NPS, and Stein's unbiased risk
estimate that equals the true error of a denoiser under correlated noise, where the white-noise
form of the estimate does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medssl.denoise.filter2noise.filters import gaussian_blur
from medssl.denoise.filter2noise.loss import coloured_noise, sure_loss, sure_probe
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


def test_local_noise_scale_follows_noise_that_is_not_stationary():
    """Noise 3x stronger in the right half of the body, none in the (clipped) air: the scale
    reads the ratio away from the boundary and the disc's edges, and its floor in the air."""
    from medssl.denoise.filter2noise.fit import local_noise_scale

    n = 256
    yy, xx = np.mgrid[:n, :n]
    body = ((yy - 128) / 120.0) ** 2 + ((xx - 128) / 120.0) ** 2 < 1
    img = np.where(body, 0.04, -1.0) + 0.3 * (((yy - 100) ** 2 + (xx - 150) ** 2) < 30**2)
    sd = np.where(xx < 128, 1.0, 3.0) * body
    noisy = torch.from_numpy(img + sd * fbp_noise((n, n), 0.01, 3, 0.4)).float()[None, None]
    scale = local_noise_scale(noisy)
    assert scale.shape == noisy.shape
    left = float(scale[0, 0, 150:210, 40:100].median())
    right = float(scale[0, 0, 150:210, 160:220].median())
    assert right / left == pytest.approx(3.0, rel=0.1)
    assert float(scale[0, 0, :8, :8].max()) == pytest.approx(0.1)  # clipped air: the floor
    volume = local_noise_scale(noisy[:, :, None].expand(1, 1, 2, n, n))  # slice by slice
    assert torch.allclose(volume[:, :, 1], scale)


def test_sure_with_the_local_scale_estimates_the_error_of_an_adaptive_denoiser():
    """Noise 3x stronger on the right, a denoiser that blurs only the left: the probes scaled
    by the local noise SD give the true error; probes of one stationary NPS of the same mean
    variance miss it by half (what ``FitConfig.sure_local_scale`` is for)."""
    n, sd, cutoff = 96, 0.05, 0.4
    yy, xx = np.mgrid[:n, :n]
    clean = torch.from_numpy(
        0.04 + 0.3 * ((yy - n / 2) ** 2 + (xx - n / 2) ** 2 < (n / 4) ** 2)
    ).float()[None, None]
    scale = torch.from_numpy(np.where(xx < n / 2, 0.5, 1.5)).float()[None, None]
    psd = _scaled_nps(n, sd, cutoff)

    def denoise(x: torch.Tensor, coords: torch.Tensor | None) -> torch.Tensor:
        return torch.where(scale < 1, gaussian_blur(x, 1.5), x)

    gen = torch.Generator().manual_seed(1)
    truth, scaled, stationary = [], [], []
    for seed in range(12):
        noise = scale * torch.from_numpy(fbp_noise((n, n), sd, seed, cutoff)).float()[None, None]
        y = clean + noise
        truth.append(float((denoise(y, None) - clean).square().mean()))
        probe, variance = sure_probe(tuple(y.shape), psd, gen, scale)
        assert variance == pytest.approx(float(psd.mean()) * float(scale.square().mean()))
        scaled.append(float(sure_loss(denoise, y, None, probe, variance=variance).total))
        probe, variance = sure_probe(tuple(y.shape), psd * float(scale.square().mean()), gen)
        stationary.append(float(sure_loss(denoise, y, None, probe, variance=variance).total))
    assert np.mean(scaled) == pytest.approx(np.mean(truth), rel=0.05)
    assert abs(np.mean(stationary) - np.mean(truth)) > 0.3 * np.mean(truth)


def test_the_fit_scales_its_probes_by_the_crops_local_noise_scale(monkeypatch):
    """Wiring: with ``sure_local_scale`` each step's probe gets the local scale of the very
    crop it perturbs (cut alongside it), and none without it."""
    import medssl.denoise.filter2noise.fit as fit
    from medssl.denoise.filter2noise.config import FitConfig, preset
    from medssl.denoise.filter2noise.model import build_model

    n = 64
    xx = np.mgrid[:n, :n][1]
    image = torch.from_numpy(0.04 + np.where(xx < n / 2, 0.01, 0.03) * fbp_noise((n, n), 1.0, 0))
    image = image.float()[None, None]
    seen: list[torch.Tensor | None] = []
    real = fit.sure_probe

    def spy(shape, psd, gen, scale=None):
        seen.append(scale)
        return real(shape, psd, gen, scale)

    monkeypatch.setattr(fit, "sure_probe", spy)
    psd = _scaled_nps(32, 0.02, 0.4).float()
    for local in (True, False):
        seen.clear()
        cfg = FitConfig(objective="sure", steps=3, crop=32, batch=2, sure_local_scale=local)
        model = build_model(preset("medssl").model)
        fit.fit_model(model, [image], cfg, noise_psd=lambda hw: psd)
        assert len(seen) == 3
        if not local:
            assert all(s is None for s in seen)
            continue
        whole = fit.local_noise_scale(image)
        for s in seen:
            assert s is not None and s.shape == (2, 1, 32, 32)
            # each crop's scale is a window of the whole image's scale
            windows = whole.unfold(2, 32, 1).unfold(3, 32, 1)[0, 0]  # (33, 33, 32, 32)
            for crop in s[:, 0]:
                assert (windows - crop).abs().amax(dim=(-1, -2)).min() < 1e-6
