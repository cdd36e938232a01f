"""The NLM last stage: exact gradients, the bilateral filter as its one-pixel patch case,
patches that tell texture from noise, and the model built, fitted, saved and reloaded with it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medssl.denoise.filter2noise import apply_denoiser, build_model, fit_denoiser, nlm, preset
from medssl.denoise.filter2noise.model import NLMStage, SigmaEdit
from medssl.denoise.filter2noise.nlm import kernel_available, nonlocal_means, patch_blur
from medssl.ops import bilateral_filter
from tests.denoise.phantom import phantom


def _direct(x, sy, sx, h, radius, patch_sigma):
    """NLM written out with autograd (every offset's weight kept): the reference."""
    height, width = x.shape[-2:]
    padded = F.pad(x, (radius,) * 4, mode="reflect")
    num, den = x, torch.ones_like(x)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy == dx == 0:
                continue
            xs = padded[..., radius + dy : radius + dy + height, radius + dx : radius + dx + width]
            dist = patch_blur((x - xs) ** 2, patch_sigma)
            w = torch.exp(-dist / (2 * h**2) - dy**2 / (2 * sy**2) - dx**2 / (2 * sx**2))
            num, den = num + w * xs, den + w
    return num / den


def test_forward_and_every_gradient_match_the_direct_form():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 11, 13, dtype=torch.float64, generator=gen).requires_grad_()
    maps = [
        (0.6 + torch.rand(2, 1, 11, 13, dtype=torch.float64, generator=gen)).requires_grad_()
        for _ in range(3)
    ]
    g = torch.randn(2, 1, 11, 13, dtype=torch.float64, generator=gen)
    got = nonlocal_means(x, (maps[0], maps[1]), maps[2], 3, 1.0)
    want = _direct(x, *maps, 3, 1.0)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    grads_got = torch.autograd.grad((got * g).sum(), [x, *maps])
    grads_want = torch.autograd.grad((want * g).sum(), [x, *maps])
    for name, a, b in zip(("x", "sigma_y", "sigma_x", "h"), grads_got, grads_want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10, msg=name)


def _kernel_and_loops(x, maps, radius, patch_sigma):
    """Output and the four gradients from the compiled kernel and from the torch loops."""
    g = torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(9))
    res = []
    for kernel in (True, False):
        inputs = [t.detach().clone().requires_grad_() for t in (x, *maps)]
        y = nonlocal_means(
            inputs[0], (inputs[1], inputs[2]), inputs[3], radius, patch_sigma, kernel=kernel
        )
        res.append([y, *torch.autograd.grad((y * g).sum(), inputs)])
    return res


@pytest.mark.parametrize(
    ("shape", "radius", "patch_sigma", "keep"),
    [
        ((2, 1, 11, 13), 3, 1.0, True),  # smaller than one band of rows
        ((1, 1, 70, 45), 4, 1.0, True),  # three bands, the last one short
        ((1, 1, 70, 45), 4, 1.0, False),  # the backward recomputing the distances
        ((3, 1, 33, 9), 2, 0.5, True),
        ((1, 1, 40, 33), 2, 0.0, False),  # one-pixel patches
    ],
)
def test_compiled_kernel_matches_the_torch_loops(monkeypatch, shape, radius, patch_sigma, keep):
    """The C++ kernel (row bands with halos, slabs summed in order, distances kept or
    recomputed) against the torch loops, forward and every gradient, float64."""
    assert kernel_available(), "the compiled NLM kernel is not loaded (medssl ops info)"
    if not keep:
        monkeypatch.setattr(nlm, "_KEEP_BYTES", 0)
    gen = torch.Generator().manual_seed(shape[2])
    x = 3 * torch.randn(shape, dtype=torch.float64, generator=gen)
    maps = [0.4 + 2 * torch.rand(shape, dtype=torch.float64, generator=gen) for _ in range(3)]
    got, want = _kernel_and_loops(x, maps, radius, patch_sigma)
    for name, a, b in zip(("out", "x", "sigma_y", "sigma_x", "h"), got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)


def test_compiled_kernel_is_bitwise_repeatable_over_thread_counts():
    gen = torch.Generator().manual_seed(4)
    x = 50 * torch.randn(2, 1, 75, 64, generator=gen)
    maps = [0.5 + 2 * torch.rand(2, 1, 75, 64, generator=gen) for _ in range(2)]
    maps.append(20 + 40 * torch.rand(2, 1, 75, 64, generator=gen))
    threads = torch.get_num_threads()
    runs = []
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            runs.append(_kernel_and_loops(x, maps, 4, 1.0)[0])
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


def test_one_pixel_patches_are_the_bilateral_filter():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 1, 24, 20, generator=gen)
    sy, sx, h = (0.5 + torch.rand(1, 1, 24, 20, generator=gen) for _ in range(3))
    got = nonlocal_means(x, (sy, sx), h, 2, patch_sigma=0.0)
    torch.testing.assert_close(got, bilateral_filter(x, [sy, sx], h, 2), rtol=1e-5, atol=1e-5)


def test_zero_sigmas_are_exactly_the_identity():
    x = torch.randint(-5, 5, (1, 1, 16, 16)).float() / 10  # integer HU: exact zeros included
    zero = torch.zeros_like(x)
    assert torch.equal(nonlocal_means(x, (zero, zero), zero, 3), x)


def test_patches_keep_texture_that_single_pixels_take_for_noise():
    """Stripes 4 px wide with the noise's SD as amplitude: each filter at its best h (a grid),
    comparing patches leaves less error than comparing single pixels (measured: 0.85-0.87
    of it over seeds 2-5)."""
    gen = torch.Generator().manual_seed(2)
    yy = torch.arange(64).view(-1, 1).float().expand(64, 64)
    clean = torch.sign(torch.sin(2 * torch.pi * (yy + 0.5) / 8))[None, None]
    noisy = clean + torch.randn(1, 1, 64, 64, generator=gen)
    one = torch.ones_like(noisy)

    def best(patch_sigma: float) -> float:
        return min(
            float(
                (nonlocal_means(noisy, (2 * one, 2 * one), h * one, 4, patch_sigma) - clean).std()
            )
            for h in (0.4, 0.6, 0.8, 1.0, 1.2, 1.5, 1.8, 2.4)
        )

    assert best(1.0) < 0.92 * best(0.0)


def test_nlm_last_stage_fits_saves_and_reloads(tmp_path):
    vol, clean = phantom()
    cfg = (
        preset("medssl")
        .with_model(final_filter="nlm", nlm_radius=2)
        .with_fit(steps=6, scale_steps=False, crop=32, batch=2)
    )
    den = fit_denoiser(vol, cfg, seed=0)
    assert den.model.stage_kinds == ["bilateral", "nlm"]
    assert isinstance(den.model.stages[-1], NLMStage)
    out, maps = apply_denoiser(den, vol)
    assert maps[-1].shape == (vol.shape[0], 3, *vol.shape[1:])
    assert (maps[-1][:, :2] <= 1.0 + 1e-5).all()  # spatial sigmas bounded by radius / 2
    assert float(np.abs(out.array - clean).mean()) < float(np.abs(vol.array - clean).mean())
    path = den.save(tmp_path / "nlm.pt")
    from medssl.denoise.filter2noise import load_denoiser

    again = load_denoiser(path)
    assert again.model.stage_kinds == ["bilateral", "nlm"]
    np.testing.assert_array_equal(apply_denoiser(again, vol)[0].array, out.array)
    same, _ = apply_denoiser(den, vol, edit=SigmaEdit(strength=0.0))
    np.testing.assert_array_equal(same.array, vol.array)


def test_nlm_stage_refuses_3d_and_unknown_filters():
    with pytest.raises(ValueError, match="2D only"):
        build_model(preset("medssl").with_model(final_filter="nlm", nd=3).model)
    with pytest.raises(ValueError, match="final_filter"):
        build_model(preset("medssl").with_model(final_filter="median").model)


def test_the_nlm_preset_in_3d_is_refused_by_name():
    from medssl.denoise.settings import parse_settings
    from medssl.errors import InputError

    assert parse_settings(preset="nlm").f2n_config().model.final_filter == "nlm"
    with pytest.raises(InputError) as err:
        parse_settings(preset="nlm", mode="3d")
    assert str(err.value).startswith("preset nlm is 2D only"), str(err.value)


def test_ops_info_says_which_implementation_the_nlm_stage_uses(medssl):
    r = medssl("ops", "info")
    assert r.code == 0, r.output
    assert "NLM stage uses" in r.stdout and "compiled kernel (CPU)" in r.stdout, r.stdout


@pytest.mark.parametrize(
    ("name", "nd", "kinds"),
    [
        ("medssl", 2, ["bilateral", "nlm"]),  # the default: NLM last stage in 2D
        ("medssl", 3, ["bilateral", "bilateral"]),  # ... and bilateral in 3D
        ("bilateral", 2, ["bilateral", "bilateral"]),  # the default before 2026-12-04
    ],
)
def test_the_default_resolves_its_last_stage_and_records_it(tmp_path, name, nd, kinds):
    from medssl.denoise.filter2noise import load_denoiser

    vol, _ = phantom(shape=(4, 32, 32))
    cfg = preset(name).with_model(nd=nd).with_fit(steps=2, scale_steps=False, crop=16, batch=1)
    if nd == 3:
        cfg = cfg.with_fit(crop_depth=2)
    den = fit_denoiser(vol, cfg, seed=0)
    assert den.model.stage_kinds == kinds
    # the saved settings name the filter built, not "auto": a later change of "auto" cannot
    # rebuild a saved model differently
    assert den.config.model.final_filter == kinds[-1]
    assert load_denoiser(den.save(tmp_path / "m.pt")).model.stage_kinds == kinds


def test_an_unknown_final_filter_is_refused():
    from medssl.denoise.filter2noise.model import resolved_final_filter

    with pytest.raises(ValueError, match="'auto', 'bilateral' or 'nlm'"):
        resolved_final_filter(preset("medssl").with_model(final_filter="median").model)
