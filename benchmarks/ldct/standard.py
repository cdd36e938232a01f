"""The standard-dose table (issue 16, part 5): medssl's default denoiser on real standard-dose
scans, where there is no reference. Measured with :func:`medssl.denoise.physics.quality_report`
against the input: the noise SD in homogeneous soft tissue (target: at least 30 % lower), the
NPS mean frequency (moving by at most 15 %) and the edge width (growing by at most 10 %),
mean of 3 seeds. The ``standard`` and ``standard-report`` commands of ``bench.py``.

Volumes of 48-61 slices take minutes per seed on 2 cores, so the chest series (lung1, lung2)
are measured on five evenly spaced slices, denoised as one five-slice volume (the default
fits and filters slice by slice in 2D, so the gaps between them do not matter).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

import medssl
from medssl.data import fetch
from medssl.denoise.filter2noise.api import denoise_volume
from medssl.denoise.filter2noise.config import preset
from medssl.denoise.physics import NoisePatches, quality_report
from medssl.io import Volume, read_volume

HERE = Path(__file__).resolve().parent
STANDARD_FILE = HERE / "standard.jsonl"
#: scan -> slices measured (``None``: all; these two are single slices)
STANDARD_SCANS: dict[str, tuple[int, ...] | None] = {
    "lung1": (8, 16, 24, 32, 40),  # of 48 slices, 5 mm
    "lung2": (10, 20, 30, 40, 50),  # of 61 slices, 5 mm
    "neck_ct": None,
    "chest_ct": None,
}
PRESET = "bilateral"  # method "medssl": the default until 2026-12-04 (its rows keep that meaning)
SEEDS = (0, 1, 2)
TARGETS = {"noise_sd_reduction": 0.30, "nps_mean_frequency_shift": 0.15, "edge_width_growth": 0.10}


def _source() -> dict[str, object]:
    """Which medssl ran: the repository's commit and, when it is the working tree, the files
    under ``medssl/`` that differ from that commit."""
    repo = HERE.parent.parent
    package = Path(medssl.__file__).resolve().parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        return done.stdout.strip()

    info: dict[str, object] = {"commit": git("rev-parse", "--short", "HEAD")}
    if package == repo / "medssl":
        changed = git("status", "--porcelain", "--", "medssl")
        info["modified"] = [line[3:] for line in changed.splitlines()]
    else:
        info["package"] = str(package)
    return info


def _load_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _scan(name: str) -> Volume:
    vol = read_volume(fetch(name))
    zs = STANDARD_SCANS[name]
    if zs is None:
        return vol
    return Volume(vol.array[list(zs)], spacing=vol.spacing, modality="CT")


def _medssl(vol: Volume, seed: int, name: str = PRESET, **fit: object) -> np.ndarray:
    cfg = preset(name).with_fit(**fit) if fit else preset(name)
    return denoise_volume(vol, cfg, seed=seed).volume.array


def _bm3d_psd(vol: Volume, seed: int) -> np.ndarray:
    """The kernel benchmark's ``bm3d_psd`` on each slice: BM3D given the noise PSD that
    medssl's noise model estimates from the slice (deterministic: the seed is not used)."""
    import bench  # the kernel benchmark (bench imports this module first)

    slices = vol.array.astype(np.float64)
    cases = [SimpleNamespace(noisy=sl, pixel_mm=float(vol.spacing[1])) for sl in slices]
    return np.stack([bench._bm3d_psd_estimated(case, seed)[0] for case in cases])


#: what ``standard --method`` runs: the default, the default with the SURE objective, the
#: ``nlm`` preset (a non-local means last stage), BM3D
METHODS: dict[str, Callable[[Volume, int], np.ndarray]] = {
    "medssl": _medssl,
    "medssl_sure": lambda vol, seed: _medssl(vol, seed, objective="sure"),
    "nlm": lambda vol, seed: _medssl(vol, seed, "nlm"),
    "bm3d_psd": _bm3d_psd,
}
#: the preset a method's rows record (the others derive from the default's)
METHOD_PRESET = {"nlm": "nlm"}


def cmd_standard(args: argparse.Namespace) -> None:
    """Denoise each scan with the default (3 seeds) and append its quality to ``--out``
    (standard.jsonl); (scan, seed) pairs already there are skipped: measure a changed
    denoiser into another file."""
    torch.set_num_threads(args.threads)
    rows = _load_rows(args.out)
    other = {r.get("method", "medssl") for r in rows} - {args.method}
    if other:
        raise SystemExit(
            f"{args.out} holds rows of {', '.join(sorted(other))}: "
            f"give {args.method} a file of its own (--out)"
        )
    done = {(r["scan"], r["seed"]) for r in rows}
    source = _source()
    for name in args.scans:
        vol = _scan(name)
        spacing = (float(vol.spacing[1]), float(vol.spacing[2]))
        for seed in SEEDS[: args.seeds]:
            if (name, seed) in done:
                continue
            t0 = time.perf_counter()
            out = METHODS[args.method](vol, seed)
            seconds = time.perf_counter() - t0
            quality = quality_report(vol.array, out, spacing).to_dict()
            row = {
                "scan": name,
                "slices": list(STANDARD_SCANS[name] or range(vol.shape[0])),
                "shape": list(vol.shape),
                "pixel_mm": round(spacing[0], 4),
                "preset": METHOD_PRESET.get(args.method, PRESET),
                "method": args.method,
                "seed": seed,
                "seconds": round(seconds, 1),
                "threads": args.threads,
                **quality,
                "medssl": source,
                "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
                "date": time.strftime("%Y-%m-%d"),
            }
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            short = {k: v for k, v in row.items() if k != "nps_radial"}
            print(json.dumps(short), flush=True)


def _cell(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    """Mean of the seeds, with their range when there are several."""
    v = np.asarray(values, dtype=float) * scale
    if v.size == 0:
        return "-"
    if v.size == 1 or f"{v.min():.{digits}f}" == f"{v.max():.{digits}f}":
        return f"{v.mean():.{digits}f}"
    return f"{v.mean():.{digits}f} ({v.min():.{digits}f} to {v.max():.{digits}f})"


def cmd_standard_report(args: argparse.Namespace) -> None:
    """The standard-dose table (markdown on stdout): per scan, mean of its seeds."""
    rows = _load_rows(args.out)
    print(
        "| scan | slices | seeds | noise SD (HU) before → after | SD reduction % "
        "(≥ 30) | NPS mean freq. (cycles/mm) before → after | NPS shift % (≤ 15) | "
        "edge width (mm) before → after | edge growth % (≤ 10) | all three | s per run |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name in STANDARD_SCANS:
        rs = sorted((r for r in rows if r["scan"] == name), key=lambda r: r["seed"])
        if not rs:
            continue

        def col(key: str, rs: list[dict] = rs) -> list[float]:
            return [r[key] for r in rs if r.get(key) is not None]

        def met(key: str, rs: list[dict] = rs) -> bool | None:
            v = col(key, rs)
            if len(v) < len(rs):
                return None
            mean = float(np.mean(v))
            return (
                mean >= TARGETS[key] if key == "noise_sd_reduction" else abs(mean) <= TARGETS[key]
            )

        def verdict(key: str) -> str:
            return {True: " ✓", False: " ✗", None: " (not measured)"}[met(key)]

        def pair(a: str, b: str, digits: int) -> str:
            return f"{_cell(col(a), digits=digits)} → {_cell(col(b), digits=digits)}"

        slices = rs[0]["slices"]
        z = "1 slice" if len(slices) == 1 else f"z {','.join(map(str, slices))}"
        print(
            f"| {name} | {z} | {','.join(str(r['seed']) for r in rs)} "
            f"| {pair('noise_sd_before_hu', 'noise_sd_after_hu', 1)} "
            f"| {_cell(col('noise_sd_reduction'), 100)}{verdict('noise_sd_reduction')} "
            f"| {pair('nps_mean_frequency_before_per_mm', 'nps_mean_frequency_after_per_mm', 3)} "
            f"| {_cell(col('nps_mean_frequency_shift'), 100)}"
            f"{verdict('nps_mean_frequency_shift')} "
            f"| {pair('edge_width_before_mm', 'edge_width_after_mm', 2)} "
            f"| {_cell(col('edge_width_growth'), 100)}{verdict('edge_width_growth')} "
            f"| {'yes' if all(met(k) for k in TARGETS) else 'no'} "
            f"| {_cell(col('seconds'), digits=0)} |"
        )
    sources = {json.dumps(r.get("medssl"), sort_keys=True) for r in rows}
    print(f"\nmedssl: {'; '.join(sorted(sources))}")


NPS_FIGURE = HERE / "nps.png"


def cmd_nps_figure(args: argparse.Namespace) -> None:
    """``nps.png``: per standard-dose scan, the radial NPS of the input and of medssl's output
    (seed 0 of ``--out``), measured in the same homogeneous patches, with the NPS mean
    frequencies: an over-smoothed output moves its NPS to low frequencies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {r["scan"]: r for r in _load_rows(args.out) if r["seed"] == 0 and r.get("nps_radial")}
    names = [n for n in STANDARD_SCANS if n in rows]
    if not names:
        raise SystemExit(f"no rows with an NPS in {args.out}: run `bench.py standard` first")
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        r = rows[name]
        nps = r["nps_radial"]
        f = np.asarray(nps["frequency_per_mm"])
        for key, label, colour in (
            ("before_hu2_mm2", "input", "tab:gray"),
            ("after_hu2_mm2", "medssl (default)", "tab:blue"),
        ):
            ax.semilogy(f[1:], np.asarray(nps[key])[1:], color=colour, label=label)
        for key, colour in (
            ("nps_mean_frequency_before_per_mm", "tab:gray"),
            ("nps_mean_frequency_after_per_mm", "tab:blue"),
        ):
            ax.axvline(r[key], color=colour, ls="--", lw=0.8)
        ax.set_title(
            f"{name}: SD {r['noise_sd_before_hu']:.1f} → {r['noise_sd_after_hu']:.1f} HU, "
            f"mean f {100 * r['nps_mean_frequency_shift']:+.0f} %",
            fontsize=9,
        )
        ax.set_xlabel("spatial frequency (cycles/mm)")
        ax.set_ylabel("NPS (HU² mm²)")
        ax.legend(fontsize=8)
    fig.suptitle(
        "Real standard-dose scans: noise power spectrum before and after (dashed: mean "
        "frequency), seed 0",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(args.figure, dpi=90)
    print(f"wrote {args.figure}")


#: series scans whose neighbouring slices give a second, independent noise measurement
INTERSLICE_SCANS = ("lung1", "lung2")


def _interslice_bound(volume: np.ndarray, sites: NoisePatches) -> float:
    """SD / sqrt(1.5) of ``volume``'s second difference across slices in ``sites`` (chosen on
    ``volume[1:-1]``): an upper bound on the noise SD when neighbouring slices' noise is
    independent. ``volume``: ``(Z, Y, X)``."""
    second = volume[1:-1] - 0.5 * (volume[:-2] + volume[2:])
    return float(sites.tiles(second).std() / np.sqrt(1.5))


def cmd_interslice(args: argparse.Namespace) -> None:
    """Is the standard-dose "noise" noise? A measurement that does not rely on the in-plane
    patches being free of texture (markdown on stdout).

    In the homogeneous patches the noise model chooses, the second difference across slices,
    ``s[k] - (s[k-1] + s[k+1]) / 2``, holds 1.5x the noise variance of one slice when the
    noise of neighbouring slices is independent, plus whatever anatomy changes from slice to
    slice; anatomy shared by neighbours cancels. Its SD / sqrt(1.5) is an upper bound on the
    noise SD that no texture persisting over one slice spacing can inflate. As a check that it
    reads noise, white noise of known SD is added to every slice and the bound must grow as
    ``sqrt(before² + added²)``.
    """
    from medssl.denoise.noise_model import estimate_noise_model, fbp_low_band_sd
    from medssl.denoise.physics import noise_in_patches, noise_patches

    rng = np.random.default_rng(0)
    print(
        "| scan | slices (spacing mm) | patches (px) | in-slice SD (HU) | noise model SD | "
        "ramp-law SD | inter-slice bound (HU) | neighbour correlation | "
        f"+{args.add_hu:g} HU white: expected / measured bound |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.scans:
        vol = read_volume(fetch(name))
        a = vol.array.astype(np.float64)
        spacing = (float(vol.spacing[1]), float(vol.spacing[2]))
        inner = a[1:-1]
        sites = noise_patches(inner, max_slices=args.max_slices)

        here = sites.tiles(inner)
        nxt = sites.tiles(a[2:])
        corr = float((here * nxt).sum() / np.sqrt((here**2).sum() * (nxt**2).sum()))
        model = estimate_noise_model(a, spacing)
        in_slice = noise_in_patches(inner, sites, spacing).sd_hu
        before = _interslice_bound(a, sites)
        noisy = a + rng.normal(0.0, args.add_hu, a.shape)
        expected = float(np.hypot(before, args.add_hu))
        check = _interslice_bound(noisy, sites)
        print(
            f"| {name} | {a.shape[0]} ({vol.spacing[0]:g}) | {len(sites)} ({sites.patch}) | "
            f"{in_slice:.1f} | {model.sd_hu:.1f} | {fbp_low_band_sd(model):.1f} | "
            f"{before:.1f} | {corr:+.2f} | {expected:.1f} / {check:.1f} |",
            flush=True,
        )


def add_standard_commands(sub: argparse._SubParsersAction) -> None:
    """The ``standard`` and ``standard-report`` subcommands of ``bench.py``."""
    std = sub.add_parser("standard", help="Real standard-dose scans, no reference.")
    std.add_argument("--scans", nargs="+", default=list(STANDARD_SCANS), choices=STANDARD_SCANS)
    std.add_argument("--seeds", type=int, default=len(SEEDS))
    std.add_argument("--threads", type=int, default=2)
    std.add_argument(
        "--method",
        default="medssl",
        choices=METHODS,
        help="medssl (the bilateral preset: the default until 2026-12-04), medssl_sure (objective "
        "sure), nlm (the nlm preset: the default in 2D since) "
        "or bm3d_psd.",
    )
    std.add_argument("--out", type=Path, default=STANDARD_FILE, help="One file per method.")
    rep = sub.add_parser("standard-report", help="The standard-dose table (stdout).")
    rep.add_argument("--out", type=Path, default=STANDARD_FILE, help="The rows to tabulate.")
    fig = sub.add_parser("nps-figure", help="nps.png: the NPS before and after per scan.")
    fig.add_argument("--out", type=Path, default=STANDARD_FILE, help="The rows to plot.")
    fig.add_argument("--figure", type=Path, default=NPS_FIGURE)
    inter = sub.add_parser(
        "interslice", help="Standard-dose noise measured across slices (stdout)."
    )
    inter.add_argument(
        "--scans", nargs="+", default=list(INTERSLICE_SCANS), choices=INTERSLICE_SCANS
    )
    inter.add_argument("--max-slices", type=int, default=16)
    inter.add_argument("--add-hu", type=float, default=10.0, help="White noise of the check.")
