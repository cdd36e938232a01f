"""Few-shot probe of the pretraining methods on real labelled data (issue: contrastive and graph
matching). Every method pretrains the small ResEnc U-Net on the same volumes, then a linear
head on its frozen encoder is trained on 1, 2 or 4 blocks of one labelled brain and tested on
held-back blocks of the same brain.

    .venv/bin/python benchmarks/pretrain/probe.py pretrain --method mae   # one per method:
    .venv/bin/python benchmarks/pretrain/probe.py pretrain --method s3d   #   mae s3d
    .venv/bin/python benchmarks/pretrain/probe.py pretrain --method contrastive
    .venv/bin/python benchmarks/pretrain/probe.py pretrain --method graphmatch
    .venv/bin/python benchmarks/pretrain/probe.py probe                    # -> probe.jsonl
    .venv/bin/python benchmarks/pretrain/probe.py report                   # markdown table

Pretraining volumes: Colin27 (mricron-data), MNI152 1 mm (nimare), pyradiomics brain1 and
brain2: all brain MR with axial slices along the first array axis (so the contrastive
partitions correspond). ICBM152 is *left out* of pretraining: it is the evaluated source.

Probe data: the ICBM152 2009a T1 with 3 tissue classes (background, grey matter, white
matter: the argmax of 1 - GM - WM, GM, WM probability maps), preprocessed like the pretraining
volumes (2 mm, nnU-Net z-score), central 96³ crop cut into 8 non-overlapping 48³ blocks. The
blocks come from ONE brain and share its anatomy: this is a small, optimistic setting, not a
segmentation benchmark. Test blocks are fixed (4 of 8); training uses 1, 2 or 4 of the other
4 (which ones rotate with the seed); the head is a 1x1x1 convolution on the frozen encoder's
first three stages (upsampled, concatenated: a per-voxel linear probe), trained for the same 300
Adam steps on 60k voxels drawn from the training blocks for every encoder. Dice of GM and WM
on the test blocks, 3 seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medssl.ssl import registry

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
WORK = Path(os.environ.get("MEDSSL_BENCH_DIR", Path.home() / ".cache" / "medssl" / "bench"))
sys.path.insert(0, str(HERE))

PRETRAIN = {
    "colin27": "ch2.nii.gz",
    "mni152": "tpl-MNI152NLin6Asym_res-01_T1w.nii.gz",
    "brain1": "brain1_image.nrrd",
    "brain2": "brain2_image.nrrd",
}
METHODS = tuple(registry.method_names())
BLOCK = 48
TEST_BLOCKS = (1, 2, 4, 7)
TRAIN_POOL = (0, 3, 5, 6)


def _config(method: str, steps: int) -> dict:
    cfg = {
        "model": {"plans": "small", "patch_size": [BLOCK] * 3},
        "data": {"target_spacing": [2.0, 2.0, 2.0], "num_workers": 1},
        "train": {
            "steps": steps,
            "batch_size": 4,
            "lr": 1e-3,
            "warmup_steps": 10,
            "log_every": 5,
            "checkpoint_every": 25,
            "seed": 0,
        },
        "contrastive": {"partitions": 4, "local_steps": steps // 3, "fallback": False},
    }
    if method == "contrastive":
        cfg["train"]["batch_size"] = 8  # 2 volumes x 4 partitions, two views each
    if method == "graphmatch":
        cfg["train"]["batch_size"] = 16  # 16 nodes per graph (LVM-Med)
    return cfg


def cmd_pretrain(args: argparse.Namespace) -> None:
    from bench import _paths

    from medssl.ssl.pretrain import pretrain

    run = WORK / f"probe_{args.method}"
    resume = (run / "run.json").is_file()
    t = time.perf_counter()
    result = pretrain(
        args.method,
        None if resume else _paths(PRETRAIN),
        run,
        config=None if resume else _config(args.method, args.steps),
        resume=resume,
    )
    rows = []
    for metrics in sorted(run.rglob("metrics.jsonl")):
        rows += [json.loads(line) for line in metrics.open()]
    rates = [r["train/samples_per_s"] for r in rows if "train/samples_per_s" in r]
    info = {
        "method": args.method,
        "steps": result.step,
        "wall_s": time.perf_counter() - t,
        "samples_per_s_median": float(np.median(rates)) if rates else None,
        "final_loss": result.last_loss,
        "date": time.strftime("%Y-%m-%d"),
    }
    with (HERE / "probe_pretrain.jsonl").open("a") as f:
        f.write(json.dumps(info) + "\n")
    print(json.dumps(info))


def _probe_data() -> tuple[torch.Tensor, torch.Tensor]:
    """8 blocks ``(8, 1, 48, 48, 48)`` of the ICBM152 T1 and their labels ``(8, 48, 48, 48)``."""
    from scipy.ndimage import zoom

    from medssl.data import fetch
    from medssl.data.patches import crop_with_padding
    from medssl.io import read_volume
    from medssl.ssl.config import load_config
    from medssl.ssl.pretrain import prepare_volumes

    t1 = fetch("icbm152")
    folder = t1.parent
    cfg = load_config(_config("mae", 1))
    vols, _ = prepare_volumes([t1], cfg, None)
    image = np.load(vols[0].image).astype(np.float32)
    gm = read_volume(folder / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz").array
    wm = read_volume(folder / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz").array
    labels = np.argmax(np.stack([1.0 - gm - wm, gm, wm]), axis=0).astype(np.uint8)
    factors = [a / b for a, b in zip(image.shape, labels.shape, strict=True)]
    labels = zoom(labels, factors, order=0)[tuple(slice(0, s) for s in image.shape)]
    assert labels.shape == image.shape, (labels.shape, image.shape)
    side = 2 * BLOCK
    starts = [(s - side) // 2 for s in image.shape]  # zero-padded where the image is smaller
    img = crop_with_padding(image, starts, (side,) * 3)
    lab = crop_with_padding(labels.astype(np.float32), starts, (side,) * 3).astype(np.uint8)
    blocks, labs = [], []
    for z in range(2):
        for y in range(2):
            for x in range(2):
                sl = (
                    slice(z * BLOCK, (z + 1) * BLOCK),
                    slice(y * BLOCK, (y + 1) * BLOCK),
                    slice(x * BLOCK, (x + 1) * BLOCK),
                )
                blocks.append(img[sl])
                labs.append(lab[sl])
    return torch.from_numpy(np.stack(blocks))[:, None], torch.from_numpy(np.stack(labs)).long()


def _encoder(method: str, seed: int) -> torch.nn.Module:
    from medssl.models import build_network
    from medssl.ssl.engine import load_checkpoint

    net = build_network("small", seed=seed)
    if method != "random":
        ckpt = load_checkpoint(WORK / f"probe_{method}" / "checkpoint_final.pt")
        model, prefix = ckpt["model"], ckpt["medssl"]["network_prefix"]
        state = {k[len(prefix) :]: v for k, v in model.items() if k.startswith(prefix)}
        net.load_state_dict(state)
    return net.encoder.eval()


@torch.no_grad()
def _features(encoder: torch.nn.Module, blocks: torch.Tensor) -> torch.Tensor:
    out = []
    for b in blocks:
        skips = encoder(b[None])[:3]
        size = b.shape[1:]
        up = [F.interpolate(s, size=size, mode="trilinear", align_corners=False) for s in skips]
        out.append(torch.cat(up, dim=1)[0])
    return torch.stack(out)


def _dice(pred: torch.Tensor, target: torch.Tensor, cls: int) -> float:
    p, t = pred == cls, target == cls
    denom = int(p.sum() + t.sum())
    return 2.0 * int((p & t).sum()) / denom if denom else float("nan")


def _fit_head(feats: torch.Tensor, labels: torch.Tensor, seed: int, steps: int = 300):
    """A 1x1x1 conv head = per-voxel logistic regression: fitted on 60k voxels drawn from the
    training blocks (class-balanced draws would favour thin GM; plain uniform draws are used)."""
    g = torch.Generator().manual_seed(seed)
    x = feats.permute(0, 2, 3, 4, 1).reshape(-1, feats.shape[1])
    y = labels.reshape(-1)
    pick = torch.randperm(len(y), generator=g)[:60000]
    x, y = x[pick], y[pick]
    torch.manual_seed(seed)
    head = torch.nn.Conv3d(feats.shape[1], 3, 1)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    w = head.weight.view(3, -1)
    for _ in range(steps):
        loss = F.cross_entropy(x @ w.T + head.bias, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head


def cmd_probe(args: argparse.Namespace) -> None:
    torch.set_num_threads(2)
    blocks, labels = _probe_data()
    rows = []
    for method in ("random", *METHODS):
        if method != "random" and not (WORK / f"probe_{method}" / "checkpoint_final.pt").exists():
            print(f"skipping {method}: not pretrained (run the pretrain command)")
            continue
        for seed in range(3):
            feats = _features(_encoder(method, seed if method == "random" else 0), blocks)
            for k in (1, 2, 4):
                pool = TRAIN_POOL[seed % 4 :] + TRAIN_POOL[: seed % 4]
                train = list(pool[:k])
                head = _fit_head(feats[train], labels[train], seed)
                with torch.no_grad():
                    pred = head(feats[list(TEST_BLOCKS)]).argmax(1)
                test = labels[list(TEST_BLOCKS)]
                row = {
                    "encoder": method,
                    "seed": seed,
                    "train_blocks": k,
                    "dice_gm": _dice(pred, test, 1),
                    "dice_wm": _dice(pred, test, 2),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    (HERE / "probe.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def cmd_report(args: argparse.Namespace) -> None:
    rows = [json.loads(line) for line in (HERE / "probe.jsonl").open()]
    print("| encoder | 1 block: GM / WM | 2 blocks: GM / WM | 4 blocks: GM / WM |")
    print("|---|---|---|---|")
    for enc in ("random", *METHODS):
        cells = []
        for k in (1, 2, 4):
            sel = [r for r in rows if r["encoder"] == enc and r["train_blocks"] == k]
            if not sel:
                cells.append("-")
                continue
            gm = np.array([r["dice_gm"] for r in sel])
            wm = np.array([r["dice_wm"] for r in sel])
            cells.append(f"{gm.mean():.3f} ± {gm.std():.3f} / {wm.mean():.3f} ± {wm.std():.3f}")
        if any(c != "-" for c in cells):
            print(f"| {enc} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pretrain")
    p.add_argument("--method", choices=METHODS, required=True)
    p.add_argument("--steps", type=int, default=100)
    sub.add_parser("probe")
    sub.add_parser("report")
    args = ap.parse_args()
    {"pretrain": cmd_pretrain, "probe": cmd_probe, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    main()
