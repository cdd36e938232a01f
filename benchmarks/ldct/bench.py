"""LDCT benchmark: Filter2Noise (medssl defaults) against the published configuration, the
global-sigma ablation, ZS-N2N, BM3D (blind and oracle) and Gaussian smoothing (fixed and oracle)
on real CT slices with simulated low dose (see ``cases.py``).

Commands (run from the repository root with the project's environment)::

    .venv/bin/python benchmarks/ldct/bench.py run --dose quarter     # results -> results.jsonl
    .venv/bin/python benchmarks/ldct/bench.py curve                  # steps vs PSNR -> curve.jsonl
    .venv/bin/python benchmarks/ldct/bench.py sweep --set lam=50,100  # one setting, few cases
    .venv/bin/python benchmarks/ldct/bench.py timing                 # CLI wall time, peak memory
    .venv/bin/python benchmarks/ldct/bench.py volume                 # 2D vs 3D -> volume.json
    .venv/bin/python benchmarks/ldct/bench.py noise                  # noise correlation
    .venv/bin/python benchmarks/ldct/bench.py kernels                # true noise per kernel
    .venv/bin/python benchmarks/ldct/bench.py kernels-report         # its tables (stdout)
    .venv/bin/python benchmarks/ldct/bench.py kernel-quality         # quality per kernel
    .venv/bin/python benchmarks/ldct/bench.py bm3d-report            # BM3D baselines per kernel
    .venv/bin/python benchmarks/ldct/bench.py bm3d-check             # BM3D's PSD scale
    .venv/bin/python benchmarks/ldct/bench.py standard               # real standard dose
    .venv/bin/python benchmarks/ldct/bench.py standard-report        # its table (stdout)
    .venv/bin/python benchmarks/ldct/bench.py interslice             # standard-dose noise, z
    .venv/bin/python benchmarks/ldct/bench.py figure                 # figure.png
    .venv/bin/python benchmarks/ldct/bench.py report                 # RESULTS.md tables (stdout)

``run`` appends one JSON line per (method, case, dose, seed) and skips what is already there,
so an interrupted run resumes. BM3D is the ``bm3d`` package (non-commercial licence), the
``bench`` extra: install it for the benchmark only (``.venv/bin/pip install "bm3d>=4.0"``);
medssl itself never imports it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cases import DOSES, Case, load_cases  # noqa: E402
from standard import (  # noqa: E402
    add_standard_commands,
    cmd_interslice,
    cmd_nps_figure,
    cmd_standard,
    cmd_standard_report,
)
from truth import noise_truth, true_psd  # noqa: E402

from medssl.denoise.baselines.gaussian import gaussian_denoise, oracle_search  # noqa: E402
from medssl.denoise.baselines.zsn2n import zsn2n_denoise  # noqa: E402
from medssl.denoise.filter2noise.api import denoise_volume  # noqa: E402
from medssl.denoise.filter2noise.config import ModelConfig, preset  # noqa: E402
from medssl.denoise.metrics import SOFT_TISSUE_WINDOW, psnr, ssim  # noqa: E402
from medssl.denoise.noise import noise_std_hu  # noqa: E402
from medssl.io import Volume  # noqa: E402

RESULTS = HERE / "results.jsonl"
CURVE = HERE / "curve.jsonl"
TIMING = HERE / "timing.json"
SWEEP = HERE / "sweep.jsonl"
KERNELS_FILE = HERE / "kernels.jsonl"
BENCH_KERNELS = ("ramp", "shepp-logan", "cosine", "hann", "hamming")
SEEDS = (0, 1, 2)
BM3D_SCALE = 1000.0  # BM3D runs on HU / 1000; its sigma is given in HU


def _f2n(name: str, **changes: object) -> Callable[[Case, int], np.ndarray]:
    """A preset with some settings changed (FitConfig or ModelConfig field names)."""
    model = {k: v for k, v in changes.items() if k in ModelConfig.__dataclass_fields__}
    fit = {k: v for k, v in changes.items() if k not in model}

    def run(case: Case, seed: int) -> np.ndarray:
        cfg = preset(name)
        cfg = cfg.with_fit(**fit) if fit else cfg
        cfg = cfg.with_model(**model) if model else cfg
        vol = Volume(
            case.noisy[None].astype(np.float32), spacing=(1.0, case.pixel_mm, case.pixel_mm)
        )
        return denoise_volume(vol, cfg, seed=seed).volume.array[0]

    return run


ZSN2N_STEPS = 500  # the paper: 2000 (on a GPU); ~1.5 s per 512^2 step on one CPU core


def _zsn2n(case: Case, seed: int) -> np.ndarray:
    x = torch.from_numpy(case.noisy.astype(np.float32) / 1000.0)
    return zsn2n_denoise(x, steps=ZSN2N_STEPS, seed=seed).numpy() * 1000.0


def _gauss_fixed(case: Case, seed: int) -> np.ndarray:
    return gaussian_denoise(case.noisy, 1.0)


def _gauss_oracle(case: Case, seed: int) -> np.ndarray:
    best, _ = oracle_search(
        lambda s: psnr(gaussian_denoise(case.noisy, s), case.reference), 0.2, 6.0
    )
    return gaussian_denoise(case.noisy, best)


def _bm3d_module() -> ModuleType:
    import bm3d

    if not hasattr(np, "trapz"):  # bm4d 4.2.5 (bm3d's engine) calls np.trapz, gone in numpy 2
        np.trapz = np.trapezoid  # type: ignore[attr-defined]
    return bm3d


def _bm3d(case: Case, sigma_hu: float) -> np.ndarray:
    out = _bm3d_module().bm3d(case.noisy.astype(np.float64) / BM3D_SCALE, sigma_hu / BM3D_SCALE)
    return np.asarray(out, dtype=np.float64) * BM3D_SCALE


def _bm3d_psd(case: Case, psd_hu2: np.ndarray) -> np.ndarray:
    """BM3D for correlated noise, given the noise PSD on the image grid.

    ``psd_hu2`` is in the form of ``NoiseModel.psd`` (numpy FFT order, mean = the noise
    variance in HU²). The bm3d package wants ``E|fft2(noise)|²`` of the image it denoises
    (mean = variance x pixel count: a scalar ``sigma`` becomes ``sigma² * z.size`` in every bin,
    bm4d's ``bm4d``), and the image is in HU / BM3D_SCALE, hence the factor
    ``z.size / BM3D_SCALE²`` (checked on Gaussian-filtered noise of known PSD, RESULTS.md).

    Shape:
        ``psd_hu2``: ``case.noisy.shape``; returns ``case.noisy.shape`` (HU).
    """
    z = case.noisy.astype(np.float64) / BM3D_SCALE
    if psd_hu2.shape != z.shape:
        raise ValueError(f"PSD shape {psd_hu2.shape} != image shape {z.shape}")
    psd = np.asarray(psd_hu2, dtype=np.float64) * (z.size / BM3D_SCALE**2)
    return np.asarray(_bm3d_module().bm3d(z, psd), dtype=np.float64) * BM3D_SCALE


def _bm3d_blind(case: Case, seed: int) -> np.ndarray:
    return _bm3d(case, noise_std_hu(case.noisy))


def _bm3d_oracle(case: Case, seed: int) -> np.ndarray:
    best, _ = oracle_search(
        lambda s: psnr(_bm3d(case, s), case.reference), 10.0, 400.0, coarse=7, refine=5
    )
    return _bm3d(case, best)


def _bm3d_oracle_coarse(case: Case, seed: int) -> tuple[np.ndarray, dict]:
    """``bm3d_oracle`` with a coarser search: 5 sigmas from 5 to 300 HU, then 3 golden-section
    steps (10 BM3D calls; ``bm3d_oracle`` makes 15), the best output kept."""
    outs: dict[float, np.ndarray] = {}

    def score(sigma: float) -> float:
        outs[sigma] = _bm3d(case, sigma)
        return psnr(outs[sigma], case.reference)

    best, _ = oracle_search(score, 5.0, 300.0, coarse=5, refine=3)
    return outs[best], {"sigma_hu": round(float(best), 2)}


def cmd_bm3d_check(args: argparse.Namespace) -> None:
    """The PSD scale of ``_bm3d_psd``, checked on a piecewise-constant phantom (discs and a
    bar, -200 to 500 HU, 256²) plus circularly Gaussian-filtered white noise of SD 50 HU and a
    known PSD: RMSE (HU) of BM3D given a scalar sigma, the true PSD in ``_bm3d_psd``'s form,
    that PSD times 1/N (the "mean = variance" reading: too weak), times 1/4 and 4, and a flat
    PSD of the same variance (must equal the scalar sigma on white noise)."""
    from scipy import ndimage

    n, sd = 256, 50.0
    yy, xx = np.mgrid[:n, :n]
    img = np.zeros((n, n))
    for cy, cx, r, v in ((80, 80, 40, 300.0), (170, 150, 60, -200.0), (60, 190, 25, 500.0)):
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = v
    img[200:240, 20:100] = 150.0
    delta = np.zeros((n, n))
    delta[0, 0] = 1.0
    rng = np.random.default_rng(0)
    head = "| noise filter (px) | noisy | scalar sigma | true PSD | PSD / N | PSD / 4 | PSD x 4 |"
    print(head + " flat PSD |")
    print("|---|---|---|---|---|---|---|---|")
    for filt in (0.0, 1.0, 2.0):
        kernel = np.fft.fft2(ndimage.gaussian_filter(delta, filt, mode="wrap"))
        noise = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((n, n))) * kernel))
        noise *= sd / noise.std()
        psd = np.abs(kernel) ** 2
        psd *= sd**2 / psd.mean()  # mean = variance (HU²), NoiseModel.psd's form
        case = Case("check", n, 1.0, "quarter", img + noise, img)
        outs = [
            case.noisy,
            _bm3d(case, sd),
            _bm3d_psd(case, psd),
            _bm3d_psd(case, psd / psd.size),
            _bm3d_psd(case, psd / 4),
            _bm3d_psd(case, psd * 4),
            _bm3d_psd(case, np.full(psd.shape, sd**2)),
        ]
        cells = " | ".join(f"{np.sqrt(np.mean((o - img) ** 2)):.1f}" for o in outs)
        print(f"| {filt:g} | {cells} |", flush=True)


def _bm3d_psd_estimated(case: Case, seed: int) -> tuple[np.ndarray, dict]:
    """BM3D given the noise PSD that medssl's noise model estimates from the noisy slice
    (``estimate_noise_model``); blind BM3D where it finds no homogeneous tissue."""
    from medssl.denoise.noise_model import estimate_noise_model

    model = estimate_noise_model(case.noisy, (case.pixel_mm, case.pixel_mm))
    if model.patches == 0 or model.sd_hu <= 0:
        return _bm3d_blind(case, seed), {"fallback": True}
    info = {"fallback": False, "noise_sd_hu": round(float(model.sd_hu), 3)}
    return _bm3d_psd(case, model.psd(case.noisy.shape)), info


def _bm3d_oracle_psd(case: Case, seed: int) -> tuple[np.ndarray, dict]:
    """BM3D given the PSD of the true noise ``noisy - reference`` (``truth.true_psd``): one
    call, the oracle for correlated noise (the scalar ``bm3d_oracle`` takes ~12 calls)."""
    psd = true_psd(case.noisy, case.reference)
    return _bm3d_psd(case, psd), {"noise_sd_hu": round(float(np.sqrt(psd.mean())), 3)}


# name -> (function, seeded)
# a method may return (image, extra row fields)
Method = Callable[[Case, int], "np.ndarray | tuple[np.ndarray, dict]"]
METHODS: dict[str, tuple[Method, bool]] = {
    # "medssl": the default until 2026-12-04 (its rows keep that meaning): the bilateral preset
    "medssl": (_f2n("bilateral"), True),
    # the default before the noise model (pixel-pair noise level, no edge noise floor)
    "medssl_v1": (_f2n("bilateral", noise_estimate="pixel_pairs", edge_noise_floor=0.0), True),
    "published": (_f2n("published"), False),
    "global": (_f2n("global"), True),
    # medssl's settings with a non-local means last stage (patch distances)
    "nlm": (_f2n("nlm"), True),
    "selfguided": (_f2n("bilateral", guide_sigma=0.0), False),
    "zsn2n": (_zsn2n, False),
    "bm3d_blind": (_bm3d_blind, False),
    "bm3d_oracle": (_bm3d_oracle, False),
    "bm3d_oracle_coarse": (_bm3d_oracle_coarse, False),
    "bm3d_psd": (_bm3d_psd_estimated, False),
    "bm3d_oracle_psd": (_bm3d_oracle_psd, False),
    "gauss_1px": (_gauss_fixed, False),
    "gauss_oracle": (_gauss_oracle, False),
    "noisy": (lambda c, s: c.noisy, False),
}


def _scores(out: np.ndarray, case: Case) -> dict[str, float]:
    return {
        "psnr": psnr(out, case.reference),
        "ssim": ssim(out, case.reference),
        "psnr_soft": psnr(out, case.reference, SOFT_TISSUE_WINDOW),
    }


def _load(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _append(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def _done() -> set[tuple]:
    return {
        (r["method"], r["case"], r["dose"], r["seed"], r.get("kernel", "ramp"))
        for r in _load(RESULTS)
    }


def _record(path: Path, row: dict, method: Method, case: Case, seed: int = 0) -> None:
    """Time ``method(case, seed)``, score its output and append ``row`` with the seconds, the
    scores and the method's extra fields (if it returns ``(image, dict)``) to ``path`` (and
    print it)."""
    t0 = time.perf_counter()
    out = method(case, seed)
    out, extra = out if isinstance(out, tuple) else (out, {})
    row = {
        **row,
        "seconds": round(time.perf_counter() - t0, 3),
        **{k: round(v, 4) for k, v in _scores(out, case).items()},
        **extra,
    }
    _append(path, row)
    print(json.dumps(row), flush=True)


def cmd_run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    names = tuple(args.cases) if args.cases else None
    cases = load_cases(tuple(args.dose), names, kernels=tuple(args.kernels))
    if args.reverse:  # a second process can work from the other end of the list
        cases = cases[::-1]
    for case in cases:
        for method in args.methods:
            fn, seeded = METHODS[method]
            for seed in SEEDS[: args.seeds] if seeded else (0,):
                key = (method, case.name, case.dose, seed, case.kernel)
                if key in _done():  # re-read: another process may have done it meanwhile
                    continue
                row = {
                    "method": method,
                    "case": case.name,
                    "size": case.size,
                    "dose": case.dose,
                    "seed": seed,
                }
                if case.kernel != "ramp":  # rows without a kernel are ramp
                    row["kernel"] = case.kernel
                _record(RESULTS, row, fn, case, seed)


def cmd_curve(args: argparse.Namespace) -> None:
    """PSNR against fitting steps (and time) for the medssl preset, at quarter dose."""
    torch.set_num_threads(args.threads)
    done = {(r["steps"], r["case"]) for r in _load(CURVE)}
    for case in load_cases(("quarter",), tuple(args.cases) if args.cases else None):
        for steps in args.steps:
            if (steps, case.name) in done:
                continue
            row = {"steps": steps, "case": case.name, "size": case.size}
            _record(CURVE, row, _f2n("bilateral", steps=steps, scale_steps=False), case)


def cmd_sweep(args: argparse.Namespace) -> None:
    """medssl with one setting changed (``--set name=v1,v2,...``, a FitConfig or ModelConfig
    field), seed 0, quarter dose:
    for trying a setting on a few cases before a full ``run``."""
    torch.set_num_threads(args.threads)
    name, values = args.set.split("=", 1)
    done = {(r["setting"], r["value"], r["case"]) for r in _load(SWEEP)}
    for case in load_cases(("quarter",), tuple(args.cases) if args.cases else None):
        for value in (float(v) for v in values.split(",")):
            if (name, value, case.name) in done:
                continue
            row = {"setting": name, "value": value, "case": case.name, "size": case.size}
            _record(SWEEP, row, _f2n("bilateral", **{name: value}), case)


def _timed_cli(cmd: list[str], repeats: int = 1) -> dict[str, object]:
    """Wall time (median of ``repeats`` runs, and each run's) and peak RSS of a ``medssl``
    process (GNU time's %M, KiB)."""
    walls, peaks = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True, check=True
        )
        walls.append(round(time.perf_counter() - t0, 2))
        peaks.append(int(proc.stderr.strip().splitlines()[-1]) / 1024)
    return {
        "wall_s": float(np.median(walls)),
        "runs_s": walls,
        "peak_rss_mib": round(max(peaks), 1),
    }


def _timing_slice(name: str, folder: Path) -> tuple[Path, int]:
    """The quarter-dose case ``name`` written as NIfTI into ``folder``: (path, slice size)."""
    from medssl.io import write_volume

    case = load_cases(("quarter",), (name,))[0]
    src = folder / f"{name}.nii.gz"
    vol = Volume(case.noisy[None].astype(np.float32), (1.0, case.pixel_mm, case.pixel_mm))
    write_volume(vol, src)
    return src, case.size


def _machine_and_date() -> dict[str, str]:
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
    }


def cmd_timing(args: argparse.Namespace) -> None:
    """Process start to file written, with the CLI: one 512^2 slice, one 256^2 slice (median
    of ``--repeats`` runs each), and the 48-slice lung1 volume (NRRD in, NIfTI out; one run)."""
    import tempfile

    from medssl.data import fetch

    medssl = str(Path(sys.executable).with_name("medssl"))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("lung1_z24", "lung1_z24_256"):
            src, size = _timing_slice(name, Path(tmp))
            rows[f"{name} ({size}^2 slice)"] = _timed_cli(
                [
                    medssl,
                    "denoise",
                    str(src),
                    "-o",
                    str(Path(tmp) / f"{name}_out.nii.gz"),
                    "--overwrite",
                ],
                args.repeats,
            )
        rows["lung1 volume (48 x 512^2, NRRD in)"] = _timed_cli(
            [medssl, "denoise", str(fetch("lung1")), "-o", str(Path(tmp) / "lung1.nii.gz")]
        )
    info = {"rows": rows, **_machine_and_date()}
    TIMING.write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info, indent=1))


def cmd_timing_presets(args: argparse.Namespace) -> None:
    """Wall time of the CLI per preset, the presets alternated run by run so that they share
    the machine's state: the 512^2 slice (``--repeats`` rounds) and the 48-slice lung1 volume
    (one round). Writes ``timing_presets.json``; the ratios are what to compare."""
    import tempfile

    from medssl.data import fetch

    medssl = str(Path(sys.executable).with_name("medssl"))
    runs: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    with tempfile.TemporaryDirectory() as tmp:
        src, _ = _timing_slice("lung1_z24", Path(tmp))
        inputs = {"lung1_z24 (512^2 slice)": (src, args.repeats)}
        inputs["lung1 volume (48 x 512^2, NRRD in)"] = (fetch("lung1"), 1)
        for label, (path, rounds) in inputs.items():
            for _ in range(rounds):
                for name in args.presets:
                    out = Path(tmp) / f"out_{name}.nii.gz"
                    cmd = [medssl, "denoise", str(path), "-o", str(out), "--overwrite"]
                    runs[label][name].append(_timed_cli([*cmd, "--preset", name]))
    rows = {
        label: {
            name: {
                "wall_s": float(np.median([r["wall_s"] for r in got])),
                "runs_s": [r["wall_s"] for r in got],
                "peak_rss_mib": max(r["peak_rss_mib"] for r in got),
            }
            for name, got in per.items()
        }
        for label, per in runs.items()
    }
    info = {"rows": rows, **_machine_and_date()}
    (HERE / "timing_presets.json").write_text(json.dumps(info, indent=1) + "\n")
    print(json.dumps(info, indent=1))


def cmd_volume(args: argparse.Namespace) -> None:
    """2D (fit on a sample of slices, in-plane filter) against 3D (sigma_z on the 3D kernel) on
    contiguous lung1 slices, each with its own simulated quarter dose."""
    from medssl.data import fetch
    from medssl.data.ldct import simulate_low_dose
    from medssl.io import read_volume

    torch.set_num_threads(args.threads)
    lung = read_volume(fetch("lung1"))
    px = float(lung.spacing[2])
    zs = range(args.z0, args.z0 + args.slices)
    pairs = [simulate_low_dose(lung.array[z].astype(np.float64), px, 2.5e4, seed=z) for z in zs]
    noisy = Volume(
        np.stack([p.noisy for p in pairs]).astype(np.float32),
        spacing=lung.spacing,
        modality="CT",
    )
    out_path = HERE / "volume.json"
    rows = (
        [r for r in json.loads(out_path.read_text()) if r["mode"] not in args.modes]
        if (out_path.exists())
        else []
    )
    configs = {"2d": preset("bilateral"), "3d": preset("bilateral").with_model(nd=3), "noisy": None}
    for mode in args.modes:
        cfg = configs[mode]
        for seed in SEEDS[: args.seeds] if cfg is not None else (0,):
            t0 = time.perf_counter()
            out = noisy.array if cfg is None else denoise_volume(noisy, cfg, seed=seed).volume.array
            dt = time.perf_counter() - t0
            scores = [
                _scores(out[i], Case("", 512, px, "quarter", p.noisy, p.reference))
                for i, p in enumerate(pairs)
            ]
            row = {
                "mode": mode,
                "seed": seed,
                "slices": f"{args.z0}-{args.z0 + args.slices - 1}",
                "seconds": round(dt, 2),
                **{k: round(float(np.mean([sc[k] for sc in scores])), 4) for k in scores[0]},
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            out_path.write_text(json.dumps(rows, indent=1) + "\n")


def _rho(e: np.ndarray, mask: np.ndarray, var: float, dy: int, dx: int) -> float:
    """Correlation coefficient of ``e`` at lag ``(dy, dx)`` over ``mask``."""
    h, w = e.shape
    a = e[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)]
    b = e[max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)]
    m = mask[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)]
    return float(np.mean((a * b)[m]) / var)


def cmd_noise(args: argparse.Namespace) -> None:
    """Spatial correlation of the simulated noise (noisy - reference, in tissue > -600 HU) and
    the correlation it implies between the two pixel-pair downsampled views g1 and g2."""
    print(
        "| case | noise std (HU) | rho(0,1) | rho(1,0) | rho(1,1) | rho(1,-1) | rho(0,2) "
        "| corr(g1 noise, g2 noise) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for case in load_cases(("quarter",)):
        e = case.noisy.astype(np.float64) - case.reference
        tissue = case.reference > -600
        e = e - e[tissue].mean()
        var = float(np.mean(e[tissue] ** 2))

        r = {k: _rho(e, tissue, var, *k) for k in ((0, 1), (1, 0), (1, 1), (1, -1), (0, 2))}
        # g1 = mean of (0,0),(1,1); g2 = mean of (0,1),(1,0) in each 2x2 block
        cov = (r[(0, 1)] + r[(1, 0)]) / 2
        corr = cov / np.sqrt((1 + r[(1, 1)]) / 2 * (1 + r[(1, -1)]) / 2)
        cells = " | ".join(f"{v:+.2f}" for v in r.values())
        print(f"| {case.name} | {np.sqrt(var):.1f} | {cells} | {corr:+.2f} |")


def _kernel_row(case: Case, with_model: bool) -> dict:
    """The true noise of a case (``truth.py``) and the noise estimates made from its noisy
    image alone."""
    t = noise_truth(case.noisy, case.reference)
    estimate = noise_std_hu(case.noisy)
    row = {
        "case": case.name,
        "size": case.size,
        "pixel_mm": round(case.pixel_mm, 4),
        "dose": case.dose,
        "kernel": case.kernel,
        "true_soft_sd_hu": round(t.soft_sd_hu, 3),
        "true_body_sd_hu": round(t.body_sd_hu, 3),
        "true_corr_len_px": round(t.correlation_length_px, 3),
        "true_rho_x": round(t.rho_x, 3),
        "true_rho_y": round(t.rho_y, 3),
        "soft_pixels": t.soft_pixels,
        "noise_std_hu": round(estimate, 3),
        "noise_std_ratio": round(estimate / t.soft_sd_hu, 4),
    }
    if with_model:
        from medssl.denoise.noise_model import estimate_noise_model

        model = estimate_noise_model(case.noisy, (case.pixel_mm, case.pixel_mm))
        row["model_sd_hu"] = round(float(model.sd_hu), 3)
        row["model_sd_ratio"] = round(float(model.sd_hu) / t.soft_sd_hu, 4)
        row["model_corr_len_px"] = round(float(model.correlation_length_px), 3)
    return row


def cmd_kernels(args: argparse.Namespace) -> None:
    """True noise (soft-tissue and body SD, correlation length) per case, dose and
    reconstruction kernel, beside today's estimate ``noise_std_hu``; rewrites the rows it
    computes in ``kernels.jsonl`` and keeps the others."""
    torch.set_num_threads(args.threads)
    cases = load_cases(
        tuple(args.dose), tuple(args.cases) if args.cases else None, tuple(args.kernels)
    )
    rows = []
    for case in cases:
        rows.append(_kernel_row(case, args.noise_model))
        print(json.dumps(rows[-1]), flush=True)
    date = time.strftime("%Y-%m-%d")
    new = {(r["case"], r["dose"], r["kernel"]): {**r, "date": date} for r in rows}
    kept = [r for r in _load(KERNELS_FILE) if (r["case"], r["dose"], r["kernel"]) not in new]
    tmp = KERNELS_FILE.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in [*kept, *new.values()]))
    tmp.replace(KERNELS_FILE)


def _kernel_rows(
    dose: str, all_seeds: bool, path: Path = RESULTS
) -> dict[tuple[str, str], dict[str, list[dict]]]:
    """results.jsonl rows of one dose by ``(kernel, method)``, then case (the last row of each
    (kernel, method, case, seed)); medssl's own rows seed 0 only unless ``all_seeds``."""
    rows = {}
    for r in _load(path):
        if r["dose"] != dose:
            continue
        if not all_seeds and r["method"] in ("medssl", "medssl_v1") and r["seed"] != 0:
            continue
        rows[(r.get("kernel", "ramp"), r["method"], r["case"], r["seed"])] = r
    by: dict[tuple[str, str], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for (kernel, method, case, _), r in rows.items():
        by[(kernel, method)][case].append(r)
    return by


BM3D_CORE = ("noisy", "gauss_oracle", "bm3d_blind", "bm3d_psd", "bm3d_oracle_psd")
SCALAR_ORACLES = ("bm3d_oracle", "bm3d_oracle_coarse")  # PSNR-searched sigma: slow, optional
CEILINGS = ("bm3d_oracle_psd", *SCALAR_ORACLES)
OPTIONAL = (*SCALAR_ORACLES, "medssl_v1", "medssl")  # shown where they cover the baselines' cases


def cmd_bm3d_report(args: argparse.Namespace) -> None:
    """BM3D baselines per reconstruction kernel beside medssl: mean PSNR / SSIM and seconds
    over the cases that the baselines (``BM3D_CORE``) all ran on (a scalar oracle or medssl is
    shown where it ran on all of them, else noted with its own cases), bm3d_psd per case, then
    the issue's targets: medssl - bm3d_psd (>= +0.5 dB) and medssl's gap to each BM3D ceiling
    at most half of the previous default's (``medssl_v1``)."""
    by = _kernel_rows(args.dose, args.all_seeds, args.results)
    kernels = [k for k in ("ramp", "shepp-logan", "cosine", "hann") if by[(k, "bm3d_psd")]]
    order = (*BM3D_CORE, *SCALAR_ORACLES, "medssl_v1", "medssl")

    def mean(kernel: str, m: str, cases: list[str], key: str = "psnr") -> float:
        return float(np.mean([np.mean([r[key] for r in by[(kernel, m)][c]]) for c in cases]))

    print(f"\n### {args.dose} dose: BM3D baselines per kernel, mean PSNR / SSIM (s / slice)\n")
    print("| kernel | cases | " + " | ".join(order) + " |")
    print("|---|---|" + "---|" * len(order))
    shown: dict[str, tuple[list[str], list[str]]] = {}
    notes = []
    for kernel in kernels:
        core = [m for m in BM3D_CORE if by[(kernel, m)]]
        cases = sorted(set.intersection(*[set(by[(kernel, m)]) for m in core]))
        methods = [m for m in order if cases and set(cases) <= set(by[(kernel, m)])]
        for m in OPTIONAL:
            part = sorted(set(cases) & set(by[(kernel, m)]))
            if m not in methods and part:
                notes.append(
                    f"{kernel}: {m} on {len(part)} of the {len(cases)} cases: "
                    f"{mean(kernel, m, part):.2f} dB against bm3d_psd "
                    f"{mean(kernel, 'bm3d_psd', part):.2f} and bm3d_oracle_psd "
                    f"{mean(kernel, 'bm3d_oracle_psd', part):.2f} on the same cases"
                )
        shown[kernel] = (methods, cases)
        cells = []
        for m in order:
            if m not in methods or not cases:
                cells.append("-")
                continue
            secs = "" if m == "noisy" else f" ({mean(kernel, m, cases, 'seconds'):.1f} s)"
            cells.append(
                f"{mean(kernel, m, cases):.2f} / {mean(kernel, m, cases, 'ssim'):.4f}{secs}"
            )
        print(f"| {kernel} | {len(cases)} | " + " | ".join(cells) + " |")
    fallbacks = [
        f"{k}/{c}"
        for k in kernels
        for c, rs in by[(k, "bm3d_psd")].items()
        if any(r.get("fallback") for r in rs)
    ]
    print(f"\nbm3d_psd fell back to blind BM3D (no homogeneous tissue): {fallbacks or 'never'}")
    for note in notes:
        print(f"\n{note}")
    print(
        f"\n### {args.dose} dose: bm3d_psd PSNR per case (dB; medssl - bm3d_psd; noise SD of "
        "the estimated PSD / of the true one, HU)\n"
    )
    print("| case | " + " | ".join(kernels) + " |")
    print("|---|" + "---|" * len(kernels))
    for c in sorted({c for k in kernels for c in by[(k, "bm3d_psd")]}):
        cells = []
        for k in kernels:
            got, true = by[(k, "bm3d_psd")].get(c), by[(k, "bm3d_oracle_psd")].get(c)
            if not got:
                cells.append("-")
                continue
            cell = f"{got[0]['psnr']:.2f}"
            if by[(k, "medssl")].get(c):
                cell += f" ({by[(k, 'medssl')][c][0]['psnr'] - got[0]['psnr']:+.2f})"
            if true and "noise_sd_hu" in got[0]:
                cell += f"; {got[0]['noise_sd_hu']:.0f} / {true[0]['noise_sd_hu']:.0f}"
            cells.append(cell)
        print(f"| {c} | " + " | ".join(cells) + " |")
    if args.dose != "quarter":
        return
    print(f"\n### {args.dose} dose: the issue's BM3D targets (dB, the cases above)\n")
    print(
        "| kernel | medssl - bm3d_psd (target >= +0.5) | met | ceiling | ceiling - medssl | "
        "ceiling - medssl_v1 | ratio (target <= 0.5) | met |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for kernel in kernels:
        methods, cases = shown[kernel]
        if not cases or not {"medssl", "medssl_v1", "bm3d_psd"} <= set(methods):
            continue
        new = mean(kernel, "medssl", cases)
        gain = new - mean(kernel, "bm3d_psd", cases)
        for ceiling in (c for c in CEILINGS if c in methods):
            top = mean(kernel, ceiling, cases)
            gap, gap_v1 = top - new, top - mean(kernel, "medssl_v1", cases)
            if gap_v1 <= 0:
                ratio, met = "-", "yes" if gap <= 0 else "no"
            else:
                ratio, met = f"{gap / gap_v1:.2f}", "yes" if gap <= 0.5 * gap_v1 else "no"
            print(
                f"| {kernel} | {gain:+.2f} | {'yes' if gain >= 0.5 else 'no'} | {ceiling} | "
                f"{gap:+.2f} | {gap_v1:+.2f} | {ratio} | {met} |"
            )
    print(
        "\nratio: medssl's gap to the ceiling over medssl_v1's (the previous default); "
        "<= 0.5 closes at least half of the gap."
    )


def _seed_range(per_case: dict[str, list[dict]], cases: list[str]) -> str:
    """How many seeds each case has: ``"3"``, or ``"1-3"`` where they differ."""
    counts = sorted({len(per_case[c]) for c in cases})
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


def cmd_kernel_quality(args: argparse.Namespace) -> None:
    """PSNR/SSIM per reconstruction kernel (results.jsonl rows of ``run --kernels``): the
    mean over the cases, the cases below the fixed 1-pixel Gaussian, and the margin over
    the oracle Gaussian; medssl's own rows use seed 0 unless ``--all-seeds``."""
    by = _kernel_rows(args.dose, args.all_seeds)
    methods = ["noisy", "gauss_1px", "gauss_oracle", "medssl_v1", "medssl"]
    print(f"\n### {args.dose} dose: mean over the cases (HU clipped to [-1000, 1000])\n")
    print("| kernel | cases | " + " | ".join(f"{m} PSNR / SSIM" for m in methods), end="")
    print(
        " | medssl - oracle Gaussian (dB) | medssl cases below the 1-px Gaussian | medssl seeds |"
    )
    print("|---|---|" + "---|" * (len(methods) + 3))
    for kernel in ("ramp", "shepp-logan", "cosine", "hann"):
        required = [m for m in methods if m != "medssl_v1"]  # the previous default: optional
        cases = sorted(set.intersection(*[set(by[(kernel, m)]) for m in required]))
        if not cases:
            continue
        cells, means = [], {}
        for m in methods:
            if not set(cases) <= set(by[(kernel, m)]):
                cells.append("-")
                continue
            per_case = {c: np.mean([r["psnr"] for r in by[(kernel, m)][c]]) for c in cases}
            ssim_ = np.mean([np.mean([r["ssim"] for r in by[(kernel, m)][c]]) for c in cases])
            means[m] = per_case
            cells.append(f"{np.mean(list(per_case.values())):.2f} / {ssim_:.4f}")
        gap = np.mean([means["medssl"][c] - means["gauss_oracle"][c] for c in cases])
        below = [c for c in cases if means["medssl"][c] < means["gauss_1px"][c]]
        print(
            f"| {kernel} | {len(cases)} | "
            + " | ".join(cells)
            + f" | {gap:+.2f} | "
            + (", ".join(below) if below else "none")
            + f" | {_seed_range(by[(kernel, 'medssl')], cases)} |"
        )
    print(f"\n### {args.dose} dose: medssl PSNR per case and kernel (dB; 1-px Gaussian)\n")
    kernels = [k for k in ("ramp", "shepp-logan", "cosine", "hann") if by[(k, "medssl")]]
    print("| case | " + " | ".join(kernels) + " |")
    print("|---|" + "---|" * len(kernels))
    names = sorted({c for k in kernels for c in by[(k, "medssl")]})
    for c in names:
        cells = []
        for k in kernels:
            got, g = by[(k, "medssl")].get(c), by[(k, "gauss_1px")].get(c)
            if not got or not g:
                cells.append("-")
                continue
            cells.append(f"{np.mean([r['psnr'] for r in got]):.2f} ({g[0]['psnr']:.2f})")
        print(f"| {c} | " + " | ".join(cells) + " |")


def _case_mean(
    per_case: dict[str, list[dict]], cases: list[str], field: str, seed: int | None
) -> float:
    """``field`` of the rows of each case (seed ``seed``, or all), averaged, then over cases."""
    return float(
        np.mean(
            [
                np.mean([r[field] for r in per_case[c] if seed is None or r["seed"] == seed])
                for c in cases
            ]
        )
    )


#: The development cases the NLM stage's settings were chosen on (the rest: validation).
NLM_DEV_CASES = ("lung1_z8", "lung1_z24", "lung1_z40", "lung1_z24_256")


def cmd_nlm_report(args: argparse.Namespace) -> None:
    """The NLM last stage (method ``nlm``) against the default (``medssl``) on the same seed,
    per kernel: mean PSNR / SSIM over the cases both have, the development / validation
    split, the cases below the 1-px Gaussian, the margins over the oracle Gaussian and over
    BM3D with the estimated PSD, and the gap to the oracle BM3D (PSD) relative to the previous
    default's (``medssl_v1``; the issue: at most half)."""
    by = _kernel_rows(args.dose, all_seeds=True)

    def psnr_of(kernel: str, method: str, case: str, seed: int | None) -> float | None:
        got = [r for r in by[(kernel, method)].get(case, []) if seed is None or r["seed"] == seed]
        return float(np.mean([r["psnr"] for r in got])) if got else None

    seed: int | None = None if args.all_seeds else args.seed
    label = "mean of seeds 0-2" if seed is None else f"seed {seed}"
    print(f"\n### {args.dose} dose: nlm against medssl, {label} (dB)\n")
    head = (
        "| kernel | cases (dev + validation) | medssl | nlm | nlm - medssl: all / dev / "
        "validation | nlm - oracle Gaussian | nlm - BM3D est. PSD | gap to the oracle BM3D, "
        "nlm / medssl_v1 (target <= 0.5) | nlm below the 1-px Gaussian | "
        "SSIM nlm / oracle Gaussian |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    per_case: list[tuple[str, str, float, float]] = []
    for kernel in ("ramp", "shepp-logan", "cosine", "hann"):
        cases = sorted(
            c
            for c in by[(kernel, "nlm")]
            if psnr_of(kernel, "nlm", c, seed) is not None
            and psnr_of(kernel, "medssl", c, seed) is not None
            and (seed is not None or min(len(by[(kernel, m)][c]) for m in ("nlm", "medssl")) >= 3)
            and all(by[(kernel, m)].get(c) for m in ("gauss_1px", "gauss_oracle", "bm3d_psd"))
        )
        if not cases:
            continue
        vals = {
            m: {c: psnr_of(kernel, m, c, seed if m in ("nlm", "medssl") else None) for c in cases}
            for m in (
                "nlm",
                "medssl",
                "medssl_v1",
                "gauss_1px",
                "gauss_oracle",
                "bm3d_psd",
                "bm3d_oracle_psd",
            )
        }
        diff = {c: vals["nlm"][c] - vals["medssl"][c] for c in cases}
        dev = [diff[c] for c in cases if c in NLM_DEV_CASES]
        val = [diff[c] for c in cases if c not in NLM_DEV_CASES]
        mean = {
            m: float(np.mean(list(v.values()))) for m, v in vals.items() if None not in v.values()
        }
        ratio = "-"
        if "bm3d_oracle_psd" in mean and "medssl_v1" in mean:
            gap = mean["bm3d_oracle_psd"] - mean["medssl_v1"]
            ratio = f"{(mean['bm3d_oracle_psd'] - mean['nlm']) / gap:.2f}" if gap > 0 else "-"
        below = [c for c in cases if vals["nlm"][c] < vals["gauss_1px"][c]]

        fmt = lambda v: f"{np.mean(v):+.2f}" if v else "-"  # noqa: E731
        print(
            f"| {kernel} | {len(cases)} ({len(dev)} + {len(val)}) | {mean['medssl']:.2f} | "
            f"{mean['nlm']:.2f} | {fmt(list(diff.values()))} / {fmt(dev)} / {fmt(val)} | "
            f"{mean['nlm'] - mean['gauss_oracle']:+.2f} | {mean['nlm'] - mean['bm3d_psd']:+.2f} | "
            f"{ratio} | {', '.join(below) if below else 'none'} | "
            f"{_case_mean(by[(kernel, 'nlm')], cases, 'ssim', seed):.4f} / "
            f"{_case_mean(by[(kernel, 'gauss_oracle')], cases, 'ssim', None):.4f} |"
        )
        per_case += [(c, kernel, vals["nlm"][c], diff[c]) for c in cases]
    kernels = [
        k for k in ("ramp", "shepp-logan", "cosine", "hann") if any(p[1] == k for p in per_case)
    ]
    print(f"\n### {args.dose} dose: nlm PSNR per case (dB; nlm - medssl, {label})\n")
    print("| case | " + " | ".join(kernels) + " |")
    print("|---|" + "---|" * len(kernels))
    cells = {(c, k): f"{v:.2f} ({d:+.2f})" for c, k, v, d in per_case}
    for c in sorted({p[0] for p in per_case}):
        tag = " (dev)" if c in NLM_DEV_CASES else ""
        print(f"| {c}{tag} | " + " | ".join(cells.get((c, k), "-") for k in kernels) + " |")


def cmd_kernels_report(args: argparse.Namespace) -> None:
    """Markdown tables of ``kernels.jsonl``: means per dose and kernel, then per case."""
    rows = _load(KERNELS_FILE)
    if not rows:
        print(f"no rows in {KERNELS_FILE}: run `bench.py kernels` first")
        return
    model = all("model_sd_hu" in r for r in rows)
    kernels = [k for k in BENCH_KERNELS if any(r["kernel"] == k for r in rows)]
    doses = [d for d in ("quarter", "normal") if any(r["dose"] == d for r in rows)]
    by = {(r["case"], r["dose"], r["kernel"]): r for r in rows}
    cases = sorted({r["case"] for r in rows}, key=lambda c: (-_case_size(rows, c), c))

    print("\n### Means over the cases (SD in HU, correlation length in pixels)\n")
    head = "| dose | kernel | cases | true SD soft tissue | true SD body | correlation length |"
    head += " rho x | rho y | noise_std_hu | ratio: mean (min-max) |"
    if model:
        head += " noise model | ratio: mean (min-max) | model correlation length |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for dose in doses:
        for k in kernels:
            g = [r for r in rows if r["dose"] == dose and r["kernel"] == k]
            if not g:
                continue
            ratio = [r["noise_std_ratio"] for r in g]
            line = (
                f"| {dose} | {k} | {len(g)} | {_mean(g, 'true_soft_sd_hu'):.1f} | "
                f"{_mean(g, 'true_body_sd_hu'):.1f} | {_mean(g, 'true_corr_len_px'):.2f} | "
                f"{_mean(g, 'true_rho_x'):+.2f} | {_mean(g, 'true_rho_y'):+.2f} | "
                f"{_mean(g, 'noise_std_hu'):.1f} | "
                f"{np.mean(ratio):.2f} ({min(ratio):.2f}-{max(ratio):.2f}) |"
            )
            if model:
                mr = [r["model_sd_ratio"] for r in g]
                line += (
                    f" {_mean(g, 'model_sd_hu'):.1f} | "
                    f"{np.mean(mr):.2f} ({min(mr):.2f}-{max(mr):.2f}) | "
                    f"{_mean(g, 'model_corr_len_px'):.2f} |"
                )
            print(line)
    for dose in doses:
        print(
            f"\n### {dose} dose per case: true soft-tissue noise SD (HU) / "
            "noise_std_hu (ratio); correlation length (px)\n"
        )
        print("| case | size | " + " | ".join(kernels) + " |")
        print("|---|---|" + "---|" * len(kernels))
        for c in cases:
            cells = []
            for k in kernels:
                r = by.get((c, dose, k))
                cells.append(
                    "-"
                    if r is None
                    else f"{r['true_soft_sd_hu']:.1f} / {r['noise_std_hu']:.1f} "
                    f"({r['noise_std_ratio']:.2f}); {r['true_corr_len_px']:.2f}"
                )
            print(f"| {c} | {_case_size(rows, c)} | " + " | ".join(cells) + " |")


def _mean(rows: list[dict], key: str) -> float:
    return float(np.mean([r[key] for r in rows]))


def _case_size(rows: list[dict], case: str) -> int:
    return next(r["size"] for r in rows if r["case"] == case)


def cmd_figure(args: argparse.Namespace) -> None:
    """Noisy / medssl / reference / the sigma maps of the last stage, for one case."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch.set_num_threads(args.threads)
    case = load_cases(("quarter",), (args.case,))[0]
    vol = Volume(case.noisy[None].astype(np.float32), (1.0, case.pixel_mm, case.pixel_mm))
    res = denoise_volume(vol, preset("bilateral"), seed=0)
    den = res.volume.array[0]
    maps = res.sigma_maps[0][0]  # stage 1, (3, H, W): sigma_y, sigma_x (pixels), sigma_r (HU)
    gauss = _gauss_oracle(case, 0)
    win = (-160, 240)
    panels = [
        (case.noisy, f"quarter dose  {psnr(case.noisy, case.reference):.2f} dB"),
        (gauss, f"oracle Gaussian  {psnr(gauss, case.reference):.2f} dB"),
        (den, f"medssl F2N  {psnr(den, case.reference):.2f} dB"),
        (case.reference, "reference"),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(16, 8.4))
    for ax, (img, title) in zip(axes[0], panels, strict=True):
        ax.imshow(img, cmap="gray", vmin=win[0], vmax=win[1])
        ax.set_title(title)
    titles = ("stage 1 sigma_y (mm)", "stage 1 sigma_x (mm)", "stage 1 sigma_r (HU)")
    scales = (case.pixel_mm, case.pixel_mm, 1.0)
    for k, ax in enumerate(axes[1][:3]):
        im = ax.imshow(maps[k] * scales[k], cmap="magma")
        ax.set_title(titles[k])
        fig.colorbar(im, ax=ax, fraction=0.046)
    axes[1][3].imshow(np.clip(case.noisy - den, -150, 150), cmap="gray")
    axes[1][3].set_title("removed: noisy - denoised (HU, +-150)")
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(f"{case.name}, quarter dose, soft-tissue window [-160, 240] HU")
    fig.tight_layout()
    fig.savefig(HERE / "figure.png", dpi=72)
    print("wrote", HERE / "figure.png")


def _mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std())


def cmd_report(args: argparse.Namespace) -> None:
    ramp = [r for r in _load(RESULTS) if r.get("kernel", "ramp") == "ramp"]  # kernel-quality
    rows = {(r["method"], r["case"], r["dose"], r["seed"]): r for r in reversed(ramp)}
    by: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for r in rows.values():  # the first row of each key (two processes may both have run it)
        by[(r["dose"], r["method"], r["case"])].append(r)
    methods = [m for m in METHODS if any(k[1] == m for k in by)]
    for dose in ("quarter", "normal"):
        cases = sorted({k[2] for k in by if k[0] == dose}, key=lambda c: (-_size(by, c), c))
        if not cases:
            continue
        present = [m for m in methods if all((dose, m, c) in by for c in cases)]
        partial = [
            m for m in methods if m not in present and any((dose, m, c) in by for c in cases)
        ]
        for key, label in (("psnr", "PSNR (dB)"), ("ssim", "SSIM")):
            print(f"\n### {dose} dose: {label} per case (HU clipped to [-1000, 1000])\n")
            print("| case | size | " + " | ".join(present + partial) + " |")
            print("|---|---|" + "---|" * len(present + partial))
            for c in cases:
                cells = []
                for m in present + partial:
                    got = by.get((dose, m, c), [])
                    if not got:
                        cells.append("-")
                        continue
                    mu, sd = _mean_std([r[key] for r in got])
                    digits = 4 if key == "ssim" else 2
                    cells.append(
                        f"{mu:.{digits}f}" + (f" ± {sd:.{digits}f}" if len(got) > 1 else "")
                    )
                print(f"| {c} | {_size(by, c)} | " + " | ".join(cells) + " |")
        print(f"\n### {dose} dose: means over the {len(cases)} cases\n")
        _means_table(by, dose, present, cases)
        for m in partial:
            sub = [c for c in cases if (dose, m, c) in by]
            print(f"\n### {dose} dose: {m} on the {len(sub)} cases it ran on ({', '.join(sub)})\n")
            _means_table(by, dose, [*present, m], sub)
            if "medssl" in present:
                _targets(by, dose, [m], sub)
        if "medssl" in present:
            seeds = defaultdict(list)
            for c in cases:
                for r in by[(dose, "medssl", c)]:
                    seeds[r["seed"]].append(r["psnr"])
            per_seed = [float(np.mean(seeds[k])) for k in sorted(seeds)]
            print(
                f"\nmedssl mean PSNR per seed ({', '.join(str(k) for k in sorted(seeds))}): "
                f"{', '.join(f'{v:.2f}' for v in per_seed)} "
                f"(spread {max(per_seed) - min(per_seed):.2f} dB)"
            )
            _targets(by, dose, present, cases)
    _report_extra()
    curve = _load(CURVE)
    if curve:
        print("\n### Speed/quality curve (quarter dose, seed 0)\n")
        print("| fitting steps | mean PSNR | mean SSIM | mean s / slice | cases |")
        print("|---|---|---|---|---|")
        groups: dict[int, list[dict]] = defaultdict(list)
        for r in curve:
            groups[r["steps"]].append(r)
        for steps in sorted(groups):
            g = groups[steps]
            print(
                f"| {steps} | {np.mean([r['psnr'] for r in g]):.2f} | "
                f"{np.mean([r['ssim'] for r in g]):.4f} | "
                f"{np.mean([r['seconds'] for r in g]):.1f} | {len(g)} |"
            )
        _plot_curve(groups)


def _plot_curve(groups: dict[int, list[dict]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = sorted(groups)
    cases = sorted({r["case"] for g in groups.values() for r in g})
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for case in cases:
        pts = [(s, r["psnr"]) for s in steps for r in groups[s] if r["case"] == case]
        ax.plot(*zip(*pts, strict=True), marker="o", lw=1, alpha=0.6, label=case)
    full = [s for s in steps if len(groups[s]) == len(cases)]  # a mean over the same cases
    ax.plot(
        full, [np.mean([r["psnr"] for r in groups[s]]) for s in full], "k-o", lw=2.5, label="mean"
    )
    ax.axvline(preset("medssl").fit.steps, color="grey", ls="--", label="default")
    ax.set_xscale("log")
    ax.set_xlabel("fitting steps (each 4 crops of 128x128)")
    ax.set_ylabel("PSNR (dB), quarter dose")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(HERE / "curve.png", dpi=80)


def _means_table(by: dict, dose: str, methods: list[str], cases: list[str]) -> None:
    print(
        "| method | PSNR | SSIM | PSNR soft tissue | PSNR 512² | PSNR 256² | s / slice (1 thread) |"
    )
    print("|---|---|---|---|---|---|---|")
    for m in methods:
        cell = _mean_cell(by, dose, m, cases)
        print(
            f"| {m} | {cell('psnr')} | {cell('ssim')} | {cell('psnr_soft')} | "
            f"{cell('psnr', 512)} | {cell('psnr', 256)} | {cell('seconds')} |"
        )


def _targets(by: dict, dose: str, methods: list[str], cases: list[str]) -> None:
    """medssl against each method: mean PSNR gain and SSIM difference over the cases."""

    def mean(m: str, key: str) -> float:
        return float(np.mean([np.mean([r[key] for r in by[(dose, m, c)]]) for c in cases]))

    goal = {"published": 0.5, "global": 0.3, "bm3d_blind": 1.0, "gauss_oracle": 1.0, "zsn2n": 1.0}
    if dose != "quarter":  # the issue's targets are set at quarter dose
        goal = {}
    print(f"\n{dose} dose: medssl (default settings) against each method, on these cases:\n")
    print("| against | PSNR gain (dB) | SSIM difference | issue target (dB) | met |")
    print("|---|---|---|---|---|")
    for m in methods:
        if m in ("medssl", "noisy"):
            continue
        gain = mean("medssl", "psnr") - mean(m, "psnr")
        dssim = mean("medssl", "ssim") - mean(m, "ssim")
        target = goal.get(m)
        met = "-" if target is None else ("yes" if gain >= target and dssim >= 0 else "no")
        shown = "-" if target is None else f"+{target}"
        print(f"| {m} | {gain:+.2f} | {dssim:+.4f} | {shown} | {met} |")


def _report_extra() -> None:
    if (HERE / "volume.json").exists():
        rows = json.loads((HERE / "volume.json").read_text())
        print("\n### 2D against 3D on contiguous lung1 slices (quarter dose per slice)\n")
        print("| mode | seeds | mean PSNR | mean SSIM | PSNR soft tissue | s (fit + apply) |")
        print("|---|---|---|---|---|---|")
        for mode in ("noisy", "2d", "3d"):
            g = [r for r in rows if r["mode"] == mode]
            if not g:
                continue
            print(
                f"| {mode} | {len(g)} | {np.mean([r['psnr'] for r in g]):.2f} | "
                f"{np.mean([r['ssim'] for r in g]):.4f} | "
                f"{np.mean([r['psnr_soft'] for r in g]):.2f} | "
                f"{np.mean([r['seconds'] for r in g]):.1f} |"
            )
        print(f"\nslices {rows[0]['slices']} of lung1 (512 x 512, 5 mm apart)")
    if TIMING.exists():
        info = json.loads(TIMING.read_text())
        print(f"\n### Wall time, process start to file written ({info['machine']})\n")
        print("| input | wall (s), median | runs (s) | peak RSS (MiB) |")
        print("|---|---|---|---|")
        for name, r in info["rows"].items():
            runs = ", ".join(f"{v:.2f}" for v in r.get("runs_s", [r["wall_s"]]))
            print(f"| {name} | {r['wall_s']:.2f} | {runs} | {r['peak_rss_mib']} |")


def _mean_cell(by: dict, dose: str, m: str, cases: list[str]) -> Callable[..., str]:
    def cell(key: str, size: int | None = None) -> str:
        vals = [
            np.mean([r[key] for r in by[(dose, m, c)]])
            for c in cases
            if size is None or _size(by, c) == size
        ]
        return f"{np.mean(vals):.{4 if key == 'ssim' else 2}f}" if vals else "-"

    return cell


def _size(by: dict, case: str) -> int:
    return next(r["size"] for k, v in by.items() if k[2] == case for r in v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run")
    run.add_argument("--dose", nargs="+", default=["quarter"], choices=["quarter", "normal"])
    run.add_argument("--cases", nargs="+")
    run.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    run.add_argument("--seeds", type=int, default=3)
    run.add_argument("--threads", type=int, default=2)
    run.add_argument("--reverse", action="store_true", help="Cases in reverse order.")
    run.add_argument("--kernels", nargs="+", default=["ramp"], help="Reconstruction kernels.")
    curve = sub.add_parser("curve")
    curve.add_argument("--steps", nargs="+", type=int, default=[25, 50, 100, 200, 400])
    curve.add_argument("--cases", nargs="+")
    curve.add_argument("--threads", type=int, default=2)
    sw = sub.add_parser("sweep")
    sw.add_argument(
        "--set", required=True, help="A FitConfig or ModelConfig field and values: name=v1,v2"
    )
    sw.add_argument("--cases", nargs="+")
    sw.add_argument("--threads", type=int, default=2)
    tim = sub.add_parser("timing")
    tim.add_argument("--repeats", type=int, default=3, help="Runs per slice (median reported).")
    tp = sub.add_parser("timing-presets")
    tp.add_argument("--presets", nargs="+", default=["bilateral", "medssl"])
    tp.add_argument("--repeats", type=int, default=3, help="Rounds on the slice.")
    sub.add_parser("noise")
    vol = sub.add_parser("volume")
    vol.add_argument("--z0", type=int, default=20)
    vol.add_argument("--slices", type=int, default=8)
    vol.add_argument("--seeds", type=int, default=2)
    vol.add_argument(
        "--modes", nargs="+", default=["noisy", "2d", "3d"], choices=["noisy", "2d", "3d"]
    )
    vol.add_argument("--threads", type=int, default=2)
    fig = sub.add_parser("figure")
    fig.add_argument("--case", default="lung1_z24")
    fig.add_argument("--threads", type=int, default=2)
    sub.add_parser("report")
    ker = sub.add_parser("kernels")
    ker.add_argument("--dose", nargs="+", default=["normal", "quarter"], choices=list(DOSES))
    ker.add_argument("--kernels", nargs="+", default=list(BENCH_KERNELS), choices=BENCH_KERNELS)
    ker.add_argument("--cases", nargs="+")
    ker.add_argument(
        "--noise-model",
        action="store_true",
        help="Add the estimate of medssl.denoise.noise_model.estimate_noise_model.",
    )
    ker.add_argument("--threads", type=int, default=2)
    sub.add_parser("kernels-report")
    kq = sub.add_parser("kernel-quality")
    kq.add_argument("--dose", default="quarter", choices=["quarter", "normal"])
    kq.add_argument("--all-seeds", action="store_true")
    nr = sub.add_parser("nlm-report")
    nr.add_argument("--dose", default="quarter", choices=["quarter", "normal"])
    nr.add_argument("--seed", type=int, default=0)
    nr.add_argument(
        "--all-seeds", action="store_true", help="Means of seeds 0-2 (cases with all three)."
    )
    sub.add_parser("bm3d-check")
    br = sub.add_parser("bm3d-report")
    br.add_argument("--dose", default="quarter", choices=["quarter", "normal"])
    br.add_argument("--all-seeds", action="store_true")
    br.add_argument(
        "--results", type=Path, default=RESULTS, help="Rows to read (default results.jsonl)."
    )
    add_standard_commands(sub)
    args = ap.parse_args()
    {
        "run": cmd_run,
        "curve": cmd_curve,
        "sweep": cmd_sweep,
        "timing": cmd_timing,
        "timing-presets": cmd_timing_presets,
        "noise": cmd_noise,
        "volume": cmd_volume,
        "figure": cmd_figure,
        "report": cmd_report,
        "kernels": cmd_kernels,
        "kernels-report": cmd_kernels_report,
        "kernel-quality": cmd_kernel_quality,
        "nlm-report": cmd_nlm_report,
        "bm3d-report": cmd_bm3d_report,
        "bm3d-check": cmd_bm3d_check,
        "standard": cmd_standard,
        "standard-report": cmd_standard_report,
        "nps-figure": cmd_nps_figure,
        "interslice": cmd_interslice,
    }[args.cmd](args)


if __name__ == "__main__":
    main()
