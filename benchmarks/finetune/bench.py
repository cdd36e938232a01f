"""nnU-Net v2 fine-tuning from medssl checkpoints against training from scratch, same budget,
split and seeds (issue: fine-tuning with nnU-Net v2).

    .venv/bin/python benchmarks/finetune/bench.py data               # the 8 labelled cases
    .venv/bin/python benchmarks/finetune/bench.py run --arm scratch --seed 0
    .venv/bin/python benchmarks/finetune/bench.py all                # every arm x 3 seeds
    .venv/bin/python benchmarks/finetune/bench.py report             # markdown table

Cases (as in the probe of benchmarks/pretrain/probe.py): the ICBM152 2009a T1 (nilearn) with
3 tissue classes (background, grey matter, white matter: the argmax of 1 - GM - WM, GM, WM
probability maps), resampled to 2 mm and z-scored as in pretraining, central 96³ cut into 8
non-overlapping 48³ blocks, written as NIfTI with label maps. ONE brain: the blocks share its
anatomy; this is a tiny, optimistic setting, not a segmentation benchmark.

Split (our own splits_final.json, one fold): train on blocks 0, 3, 5, 6, validate on blocks
1, 2, 4, 7. nnU-Net's final validation (sliding window, mirroring) predicts the 4 validation
blocks; medssl computes Dice per label from those predictions.

Arms: scratch (random initialisation) and one per pretraining method (mae, s3d, contrastive,
graphmatch), each the small ResEnc U-Net pretrained 300 steps by benchmarks/pretrain/probe.py on
Colin27, MNI152, brain1 and brain2: ICBM152 (the evaluated source) was left out of pretraining.
All arms use the same plans (the pretrained network's architecture, 48³ patches, batch 2,
2 mm), the trainer nnUNetTrainer_medsslShort (SGD, peak lr 1e-2, 5 % linear warm-up, poly),
the same epochs x iterations, and seeds 0, 1, 2 (initialisation of what is not pretrained, case
sampling, augmentation). Everything runs through ``medssl finetune`` on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
WORK = Path(os.environ.get("MEDSSL_BENCH_DIR", Path.home() / ".cache" / "medssl" / "bench"))
DATA = WORK / "finetune_data"
RESULTS = HERE / "results.jsonl"
ARMS = ("scratch", "mae", "s3d", "contrastive", "graphmatch")
SEEDS = (0, 1, 2)
TRAIN, VAL = (0, 3, 5, 6), (1, 2, 4, 7)
sys.path.insert(0, str(HERE.parent / "pretrain"))


def cmd_data(_: argparse.Namespace) -> None:
    from probe import _probe_data

    from medssl.io import Volume, write_volume

    blocks, labels = _probe_data()
    (DATA / "images").mkdir(parents=True, exist_ok=True)
    (DATA / "labels").mkdir(exist_ok=True)
    for i in range(len(blocks)):
        origin = (float(i) * 200.0, 0.0, 0.0)  # blocks are separate cases
        img = Volume(blocks[i, 0].numpy(), spacing=(2.0, 2.0, 2.0), origin=origin, modality="MR")
        lab = Volume(labels[i].numpy().astype(np.float32), spacing=(2.0, 2.0, 2.0), origin=origin)
        write_volume(img, DATA / "images" / f"block{i}_image.nii.gz", overwrite=True)
        write_volume(
            lab, DATA / "labels" / f"block{i}_label.nii.gz", overwrite=True, dtype=np.uint8
        )
    split = [{"train": [f"block{i}" for i in TRAIN], "val": [f"block{i}" for i in VAL]}]
    (DATA / "splits.json").write_text(json.dumps(split, indent=2) + "\n")
    print(f"wrote {len(blocks)} cases to {DATA}")


def _checkpoint(arm: str) -> Path:
    path = WORK / f"probe_{'mae' if arm == 'scratch' else arm}" / "checkpoint_final.pt"
    if not path.is_file():
        sys.exit(f"{path} missing: run benchmarks/pretrain/probe.py pretrain --method ... first")
    return path


def _run(arm: str, seed: int, epochs: int, iters: int) -> dict:
    if not (DATA / "splits.json").is_file():
        cmd_data(argparse.Namespace())
    run = WORK / f"finetune_{arm}_s{seed}_{epochs}x{iters}"
    cmd = [str(ROOT / ".venv" / "bin" / "medssl"), "finetune"]
    cmd += ["-d", str(DATA / "images"), "-l", str(DATA / "labels"), "-o", str(run)]
    cmd += ["--pretrained", str(_checkpoint(arm)), "--splits", str(DATA / "splits.json")]
    cmd += ["--trainer", "nnUNetTrainer_medsslShort", "--epochs", str(epochs)]
    cmd += ["--iterations", str(iters), "--seed", str(seed), "--device", "cpu"]
    cmd += ["--label-names", "background,grey_matter,white_matter"]
    if arm == "scratch":
        cmd.append("--scratch")  # the same plans (network, patch, spacing), random weights
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"{arm} seed {seed} failed:\n{proc.stderr[-3000:]}")
    dice = json.loads((run / "dice.json").read_text())["validation"]["mean"]
    return {
        "arm": arm,
        "seed": seed,
        "epochs": epochs,
        "iterations": iters,
        "dice": dice,
        "wall_s": round(wall, 1),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }


def _done() -> set[tuple]:
    if not RESULTS.is_file():
        return set()
    rows = [json.loads(line) for line in RESULTS.open()]
    return {(r["arm"], r["seed"], r["epochs"], r["iterations"]) for r in rows}


def _record(row: dict) -> None:
    with RESULTS.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def cmd_run(args: argparse.Namespace) -> None:
    _record(_run(args.arm, args.seed, args.epochs, args.iterations))


def cmd_all(args: argparse.Namespace) -> None:
    done = _done()
    for seed in SEEDS:
        for arm in args.arms:
            if (arm, seed, args.epochs, args.iterations) not in done:
                _record(_run(arm, seed, args.epochs, args.iterations))


def cmd_report(args: argparse.Namespace) -> None:
    rows = [json.loads(line) for line in RESULTS.open()]
    rows = [r for r in rows if r["epochs"] == args.epochs and r["iterations"] == args.iterations]
    print(f"Budget: {args.epochs} epochs x {args.iterations} iterations (batch 2, 48³).\n")
    print("| init | seeds | GM Dice | WM Dice | mean Dice | wall s (median) |")
    print("|---|---|---|---|---|---|")
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        if not mine:
            continue
        cells = []
        for key in ("grey_matter", "white_matter", "mean"):
            v = np.array([r["dice"][key] for r in mine])
            cells.append(f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}")
        wall = np.median([r["wall_s"] for r in mine])
        print(f"| {arm} | {len(mine)} | {' | '.join(cells)} | {wall:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("data")
    for name in ("run", "all", "report"):
        p = sub.add_parser(name)
        p.add_argument("--epochs", type=int, default=10)
        p.add_argument("--iterations", type=int, default=25)
        if name == "run":
            p.add_argument("--arm", choices=ARMS, required=True)
            p.add_argument("--seed", type=int, default=0)
        if name == "all":
            p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    args = parser.parse_args()
    {"data": cmd_data, "run": cmd_run, "all": cmd_all, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    main()
