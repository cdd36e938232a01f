"""Pretraining benchmark: data-loader and model-step throughput, peak memory, and a short real
3D MAE run (dense and S3D side by side) whose loss is tracked on held-out volumes.

Commands (from the repository root, with the project's environment)::

    .venv/bin/python benchmarks/pretrain/bench.py loader    # samples/s per core -> loader.jsonl
    .venv/bin/python benchmarks/pretrain/bench.py step      # model step, peak RSS -> step.jsonl
    .venv/bin/python benchmarks/pretrain/bench.py flops     # ResEnc-L fwd+bwd FLOPs -> flops.json
    .venv/bin/python benchmarks/pretrain/bench.py curve --method mae   # -> curve_mae.jsonl
    .venv/bin/python benchmarks/pretrain/bench.py curve --method s3d   # -> curve_s3d.jsonl
    .venv/bin/python benchmarks/pretrain/bench.py plot      # curve.png
    .venv/bin/python benchmarks/pretrain/bench.py report    # RESULTS.md tables (stdout)

Data (docs/data.md, fetched from the package registries): training volumes from four sources
(Colin27 / mricron-data, ICBM152 / nilearn, MNI152 / nimare, the NIST phantom DICOM series /
mrbias); held-out volumes from two other sources (the ITK examples head MR and the pyradiomics
brain and breast MR). The brain templates share one space, so the split is by source.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
WORK = Path(os.environ.get("MEDSSL_BENCH_DIR", Path.home() / ".cache" / "medssl" / "bench"))

TRAIN = {
    "colin27": "ch2.nii.gz",
    "icbm152": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "mni152": "tpl-MNI152NLin6Asym_res-01_T1w.nii.gz",
    "nist_phantom": ".",
}
VAL = {
    "itk_t1": "KmeansTest_T1UCharRaw.nii.gz",
    "brain1": "brain1_image.nrrd",
    "brain2": "brain2_image.nrrd",
    "breast1": "breast1_image.nrrd",
}


def _paths(names: dict[str, str]) -> list[Path]:
    from medssl.data import fetch

    out = []
    for name, member in names.items():
        main = fetch(name)
        folder = main if main.is_dir() else main.parent
        out.append(folder / member if member != "." else folder)
    return out


def _machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
    }


def _config() -> dict:
    from medssl.ssl.config import load_config

    return load_config(ROOT / "configs" / "mae3d-small.yaml").model_dump()


def _append(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def _cached(patch_spacing: float = 1.5):
    from medssl.ssl.config import load_config
    from medssl.ssl.pretrain import prepare_volumes

    raw = _config()
    raw["data"]["target_spacing"] = [patch_spacing] * 3  # the recipe itself is frozen
    cfg = load_config(raw)
    vols, _ = prepare_volumes(_paths(TRAIN), cfg, None, workers=2)
    return vols


# ---- loader -------------------------------------------------------------------------------
def cmd_loader(args: argparse.Namespace) -> None:
    """Samples/s of PatchDataset alone in one process (= one core), then with 2 workers."""
    from torch.utils.data import DataLoader

    from medssl.data.patches import PatchDataset, StepBatchSampler
    from medssl.transforms.ssl import AugmentConfig, ssl_augmentation

    torch.set_num_threads(1)
    vols = _cached(1.0)
    out = HERE / "loader.jsonl"
    for patch in (64, 128, 160):
        for aug_name, aug in (
            ("flip+intensity", AugmentConfig()),
            ("flip+intensity+affine(p=0.2)", AugmentConfig(affine_prob=0.2)),
        ):
            ds = PatchDataset(vols, (patch,) * 3, seed=0, transform=ssl_augmentation(aug, 3))
            for i in range(3):  # warm the page cache and MONAI's imports
                ds[i]
            n = args.samples
            t = time.perf_counter()
            for i in range(n):
                ds[1000 + i]
            dt = time.perf_counter() - t
            _append(
                out,
                {
                    "patch": patch,
                    "augment": aug_name,
                    "workers": 0,
                    "samples_per_s_per_core": n / dt,
                    "ms_per_sample": 1000 * dt / n,
                    **_machine(),
                },
            )
        ds = PatchDataset(
            vols, (patch,) * 3, seed=0, transform=ssl_augmentation(AugmentConfig(), 3)
        )
        steps = max(4, args.samples // 2)
        loader = DataLoader(
            ds, batch_sampler=StepBatchSampler(2, steps + 2), num_workers=2, prefetch_factor=4
        )
        it = iter(loader)
        next(it)
        next(it)
        t = time.perf_counter()
        for _ in range(steps):
            next(it)
        dt = time.perf_counter() - t
        _append(
            out,
            {
                "patch": patch,
                "augment": "flip+intensity",
                "workers": 2,
                "samples_per_s": 2 * steps / dt,
                **_machine(),
            },
        )


# ---- model step ---------------------------------------------------------------------------
def _step_child(preset: str, patch: int, batch: int, method: str, amp: str, steps: int) -> dict:
    from medssl.models import build_network
    from medssl.ssl.mae3d import MaskedAutoencoder

    mae = MaskedAutoencoder(
        build_network(preset, seed=0), sparse=method == "s3d", block_size=16, mask_ratio=0.75
    )
    opt = torch.optim.AdamW([p for p in mae.parameters() if p.requires_grad], lr=1e-4)
    x = torch.randn(batch, 1, patch, patch, patch)
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
            out = mae(x, seeds=list(range(i * batch, (i + 1) * batch)))
            loss = mae.loss(x, out)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    step = float(np.median(times[1:]))  # the first step pays for allocations
    return {
        "preset": preset,
        "patch": patch,
        "batch": batch,
        "method": method,
        "amp": amp,
        "s_per_step": step,
        "samples_per_s": batch / step,
        "first_step_s": times[0],
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "params_m": sum(p.numel() for p in mae.network.parameters()) / 1e6,
        **_machine(),
    }


def cmd_step(args: argparse.Namespace) -> None:
    """Each setting in a fresh process, so that its peak RSS is its own."""
    grid = [("small", 64, 2, m, a, 4) for m in ("mae", "s3d") for a in ("off", "bf16")] + [
        ("resenc-l", 128, 1, m, "off", args.resencl_steps) for m in ("mae", "s3d")
    ]
    for preset, patch, batch, method, amp, steps in grid:
        call = f"bench._step_child({preset!r}, {patch}, {batch}, {method!r}, {amp!r}, {steps})"
        code = f"import json, sys; sys.path.insert(0, {str(HERE)!r}); import bench; "
        code += f"print(json.dumps({call}))"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if proc.returncode != 0:  # e.g. killed for memory: record it, go on
            row = {"preset": preset, "patch": patch, "batch": batch, "method": method,
                   "amp": amp, "error": f"exit {proc.returncode}: {proc.stderr[-300:]}",
                   **_machine()}  # fmt: skip
            _append(HERE / "step.jsonl", row)
            continue
        _append(HERE / "step.jsonl", json.loads(proc.stdout.strip().splitlines()[-1]))


def cmd_flops(args: argparse.Namespace) -> None:
    """FLOPs of one ResEnc-L fwd+bwd at 160³ (counted on the meta device, nothing computed)."""
    from torch.utils.flop_counter import FlopCounterMode

    from medssl.models import build_network
    from medssl.ssl.mae3d import MaskedAutoencoder

    rows = {}
    for method in ("mae", "s3d"):
        with torch.device("meta"):
            mae = MaskedAutoencoder(
                build_network("resenc-l"), sparse=method == "s3d", block_size=16
            )
            x = torch.randn(1, 1, 160, 160, 160)
        mask = torch.zeros(1, 10, 10, 10, dtype=torch.bool, device="meta")
        counter = FlopCounterMode(display=False)
        with counter:
            out = mae(x, block_mask=mask)
            mae.loss(x, out).backward()
        rows[method] = counter.get_total_flops()
    result = {"patch": 160, "batch": 1, "fwd_bwd_flops": rows, **_machine()}
    (HERE / "flops.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


# ---- curve --------------------------------------------------------------------------------
def cmd_curve(args: argparse.Namespace) -> None:
    from medssl.ssl.pretrain import pretrain

    cfg = copy.deepcopy(_config())
    cfg["train"]["steps"] = args.steps
    cfg["train"]["val_every"] = args.val_every
    cfg["train"]["checkpoint_every"] = 50
    run = WORK / f"curve_{args.method}"
    resume = (run / "checkpoint_latest.pt").is_file()
    t = time.perf_counter()
    result = pretrain(
        args.method,
        None if resume else _paths(TRAIN),
        run,
        config=None if resume else cfg,
        resume=resume,
        val_data=None if resume else _paths(VAL),
    )
    rows = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    (HERE / f"curve_{args.method}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{args.method}: step {result.step}, {time.perf_counter() - t:.0f} s")


def _zero_predictor_loss() -> float:
    """Masked MSE of predicting 0 (the z-score mean) on the fixed validation patches."""
    from medssl.ssl.config import load_config
    from medssl.ssl.mae3d import BlockMasker, expand_mask
    from medssl.ssl.pretrain import prepare_volumes

    cfg = load_config(_config())
    vols, _ = prepare_volumes(_paths(VAL), cfg, None)
    from medssl.data.patches import PatchDataset

    patch = cfg.model.patch_size
    ds = PatchDataset(vols, patch, seed=cfg.train.seed + 1, foreground_prob=1.0)
    masker = BlockMasker(cfg.mae.block_size, cfg.mae.mask_ratio)
    num = den = 0.0
    for i in range(cfg.data.val_samples):
        item = ds[i]
        m = expand_mask(masker(patch, [int(item["seed"])]), patch)[0]
        num += float((item["image"] ** 2 * m).sum())
        den += float(m.sum())
    return num / den


def cmd_plot(args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours = {"mae": "tab:blue", "s3d": "tab:orange"}
    for method in ("mae", "s3d"):
        path = HERE / f"curve_{method}.jsonl"
        if not path.is_file():
            continue
        rows = [json.loads(line) for line in path.open()]
        tr = [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]
        va = [(r["step"], r["val/loss"]) for r in rows if "val/loss" in r]
        if tr:
            s, v = zip(*tr, strict=True)
            k = 5
            smooth = np.convolve(v, np.ones(k) / k, mode="valid")
            ax.plot(s[k - 1 :], smooth, color=colours[method], alpha=0.45, lw=1,
                    label=f"{method} train (moving mean of {k} logs)")  # fmt: skip
        if va:
            s, v = zip(*va, strict=True)
            ax.plot(s, v, "o-", color=colours[method], label=f"{method} held-out sources")
    zero = _zero_predictor_loss()
    ax.axhline(zero, color="grey", ls="--", lw=1, label="predict the mean (0)")
    ax.set_xlabel("step (global batch 2, 64³ patches at 1.5 mm)")
    ax.set_ylabel("MSE on masked voxels (z-scored)")
    ax.set_title("3D MAE on the small ResEnc U-Net: dense vs S3D")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(HERE / "curve.png", dpi=110)
    print(f"zero-predictor loss {zero:.4f}; wrote {HERE / 'curve.png'}")


def cmd_report(args: argparse.Namespace) -> None:
    """Markdown tables from the result files (the latest row per setting)."""

    def rows(name: str) -> list[dict]:
        path = HERE / name
        return [json.loads(line) for line in path.open()] if path.is_file() else []

    loader: dict[tuple, dict] = {}
    for r in rows("loader.jsonl"):
        loader[(r["patch"], r["augment"], r["workers"])] = r
    print("| patch | augmentation | processes | samples/s | ms/sample (1 core) |")
    print("|---|---|---|---|---|")
    for (patch, aug, workers), r in sorted(loader.items()):
        if workers == 0:
            rate, ms = r["samples_per_s_per_core"], f"{r['ms_per_sample']:.1f}"
            print(f"| {patch}³ | {aug} | 1 (in process) | {rate:.1f} | {ms} |")
        else:
            print(f"| {patch}³ | {aug} | {workers} workers | {r['samples_per_s']:.1f} | |")
    step: dict[tuple, dict] = {}
    for r in rows("step.jsonl"):
        step[(r["preset"], r["patch"], r["batch"], r["method"], r["amp"])] = r
    print()
    print("| network | patch | batch | method | AMP | s/step | samples/s | peak RSS (GB) |")
    print("|---|---|---|---|---|---|---|---|")
    for (preset, patch, batch, method, amp), r in step.items():
        if "error" in r:
            print(f"| {preset} | {patch}³ | {batch} | {method} | {amp} | {r['error'][:60]} | | |")
            continue
        print(
            f"| {preset} ({r['params_m']:.1f} M) | {patch}³ | {batch} | {method} | {amp} | "
            f"{r['s_per_step']:.2f} | {r['samples_per_s']:.3f} | {r['peak_rss_gb']:.1f} |"
        )
    for method in ("mae", "s3d"):
        vals = [r for r in rows(f"curve_{method}.jsonl") if "val/loss" in r]
        if vals:
            print(f"\n{method} held-out loss: " + ", ".join(
                f"{r['step']}: {r['val/loss']:.3f}" for r in vals))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("loader")
    p.add_argument("--samples", type=int, default=40)
    p = sub.add_parser("step")
    p.add_argument("--resencl-steps", type=int, default=2)
    sub.add_parser("flops")
    p = sub.add_parser("curve")
    p.add_argument("--method", choices=("mae", "s3d"), required=True)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--val-every", type=int, default=25)
    sub.add_parser("plot")
    sub.add_parser("report")
    args = ap.parse_args()
    {
        "loader": cmd_loader,
        "step": cmd_step,
        "flops": cmd_flops,
        "curve": cmd_curve,
        "plot": cmd_plot,
        "report": cmd_report,
    }[args.cmd](args)


if __name__ == "__main__":
    main()
