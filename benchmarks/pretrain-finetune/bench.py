"""Pre-registered few-shot experiment: does pretraining help nnU-Net fine-tuning on a task that
needs spatial context? (issue: pretraining evidence). The protocol and the success criterion
are in RESULTS.md, committed before any run.

    .venv/bin/python benchmarks/pretrain-finetune/bench.py prepare      # pool + labelled slices
    .venv/bin/python benchmarks/pretrain-finetune/bench.py pretrain --method s3d   # s3d,
    .venv/bin/python benchmarks/pretrain-finetune/bench.py pretrain --method contrastive
    .venv/bin/python benchmarks/pretrain-finetune/bench.py pretrain --method graphmatch
    .venv/bin/python benchmarks/pretrain-finetune/bench.py probe        # the screen -> probe.jsonl
    .venv/bin/python benchmarks/pretrain-finetune/bench.py finetune     # every arm x budget x seed
    .venv/bin/python benchmarks/pretrain-finetune/bench.py report       # the tables of RESULTS.md
    .venv/bin/python benchmarks/pretrain-finetune/bench.py figure       # figure.png
    .venv/bin/python benchmarks/pretrain-finetune/bench.py explore --recipe scratch --arms s3d
        # exploratory (explore.jsonl): an arm fine-tuned with the other arm's lr / deep supervision

Task: 2D axial slices of brain MR; 9 classes: background and the frontal, parietal, temporal
and occipital lobes of each hemisphere, from the AAL atlas (regions grouped by their names,
see ``LOBES``; insula, cingulate, limbic, subcortical and cerebellar regions are background).
Left and right lobes look alike: the classes need spatial context, not an intensity threshold.
Training subject: Colin27 (AAL is drawn on it). Test subject: the MNI152 NLin6Asym 1 mm T1
(FSL's template, another brain), labelled by the same AAL map resampled by world coordinates
(both are in MNI space; nearest neighbour). The test subject is left out of pretraining.
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
DATA = WORK / "ptft_data"
MEDSSL = [str(ROOT / ".venv" / "bin" / "python"), "-m", "medssl"]

#: AAL region-name prefixes of each lobe (hemisphere from the _L/_R suffix)
LOBES = {
    "frontal": ("Precentral", "Frontal_", "Rolandic_Oper", "Supp_Motor_Area", "Olfactory",
                "Rectus", "Paracentral_Lobule"),
    "parietal": ("Postcentral", "Parietal_", "SupraMarginal", "Angular", "Precuneus"),
    "temporal": ("Temporal_", "Heschl", "Fusiform"),
    "occipital": ("Occipital_", "Calcarine", "Cuneus", "Lingual"),
}  # fmt: skip
CLASSES = ["background"] + [f"{lobe}_{side}" for lobe in LOBES for side in ("L", "R")]
#: the pretraining pool (the test subject, MNI152, is not in it)
POOL = {
    "colin27": "ch2.nii.gz",
    "icbm152": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "brain1": "brain1_image.nrrd",
    "brain2": "brain2_image.nrrd",
    "itk_t1": "KmeansTest_T1UCharRaw.nii.gz",
    "nist_phantom": None,  # the DICOM series folder
}
ARMS = ("scratch", "s3d", "contrastive", "graphmatch")
BUDGETS = (2, 5)
SEEDS = (0, 1, 2, 3, 4)
MIN_CLASSES = 6  # a slice is eligible when it shows at least this many of the 8 lobes


def _sample(name: str) -> Path:
    out = subprocess.run([*MEDSSL, "data", "fetch", name], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(out.stderr)
    return Path(out.stdout.strip().split(": ", 1)[1])


def lobe_lookup(names_file: Path) -> dict[int, int]:
    """AAL label value -> class index (0 background) from ``aal.nii.txt`` (``idx name code``)."""
    table = {}
    for line in names_file.read_text().splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        value, name = int(parts[0]), parts[1]
        cls = 0
        for lobe, prefixes in LOBES.items():
            if name.startswith(prefixes) and name[-2:] in ("_L", "_R"):
                cls = CLASSES.index(f"{lobe}_{name[-1]}")
        table[value] = cls
    return table


def _lobe_map(aal, lookup: dict[int, int]):
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(aal).astype(np.int64)
    lut = np.zeros(arr.max() + 1, np.uint8)
    for value, cls in lookup.items():
        if value <= arr.max():
            lut[value] = cls
    out = sitk.GetImageFromArray(lut[arr])
    out.CopyInformation(aal)
    return out


def eligible(labels: np.ndarray) -> list[int]:
    """Axial slices (first array axis) showing at least MIN_CLASSES of the 8 lobes."""
    shown = [len(set(np.unique(labels[z]).tolist()) - {0}) for z in range(labels.shape[0])]
    return [z for z, n in enumerate(shown) if n >= MIN_CLASSES]


def train_slices(candidates: list[int], seed: int, budget: int) -> list[int]:
    """The ``budget`` training slices of ``seed``: the first ``budget`` of one seeded shuffle
    of the eligible Colin27 slices (so the 2 slices of a seed are among its 5), paired across
    arms."""
    order = np.random.default_rng([seed, 2027]).permutation(len(candidates))
    return sorted(candidates[i] for i in order[:budget])


def cmd_prepare(_: argparse.Namespace) -> None:
    import SimpleITK as sitk

    colin = _sample("colin27").parent
    mni = _sample("mni152").parent
    lookup = lobe_lookup(colin / "aal.nii.txt")
    aal = sitk.ReadImage(str(colin / "aal.nii.gz"))
    subjects = {
        "colin27": (sitk.ReadImage(str(colin / "ch2.nii.gz")), _lobe_map(aal, lookup)),
    }
    t1 = sitk.ReadImage(str(mni / "tpl-MNI152NLin6Asym_res-01_T1w.nii.gz"))
    aal_on_mni = sitk.Resample(aal, t1, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    subjects["mni152"] = (t1, _lobe_map(aal_on_mni, lookup))
    (DATA / "images").mkdir(parents=True, exist_ok=True)
    (DATA / "labels").mkdir(exist_ok=True)
    info = {}
    for name, (img, lab) in subjects.items():
        arr = sitk.GetArrayFromImage(lab)
        zs = eligible(arr)
        info[name] = {"shape": list(arr.shape), "eligible": zs}
        for z in zs:
            case = f"{name}_z{z:03d}"
            sitk.WriteImage(sitk.Cast(img[:, :, z : z + 1], sitk.sitkFloat32),
                            str(DATA / "images" / f"{case}_image.nii.gz"))  # fmt: skip
            sitk.WriteImage(lab[:, :, z : z + 1], str(DATA / "labels" / f"{case}_label.nii.gz"))
    test = info["mni152"]["eligible"][::3]  # every third eligible slice: fixed test set
    info["test"] = [f"mni152_z{z:03d}" for z in test]
    pool = {}
    for name, file in POOL.items():
        path = _sample(name)
        pool[name] = str(path if file is None else path.parent / file)
    info["pool"] = pool
    (DATA / "info.json").write_text(json.dumps(info, indent=1))
    print(json.dumps({k: (len(v["eligible"]) if isinstance(v, dict) and "eligible" in v else v)
                      for k, v in info.items() if k != "test"}, indent=1))  # fmt: skip
    print(f"test slices: {len(test)}")


STEPS = {"s3d": 300, "contrastive": 200, "graphmatch": 300}  # contrastive: + 100 local steps


def _info() -> dict:
    if not (DATA / "info.json").is_file():
        cmd_prepare(argparse.Namespace())
    return json.loads((DATA / "info.json").read_text())


def run_dir(method: str) -> Path:
    return WORK / f"ptft_{method}"


#: the pretrained networks of the experiment: digests (:func:`weights_digest`) of each
#: method's checkpoint_final.pt; every fine-tuning seed of an arm must use the same one
PINNED = HERE / "checkpoints.json"


def weights_digest(checkpoint: Path) -> str:
    """The first 16 hex digits of a SHA-256 over a pretraining checkpoint's network weights
    (names and bytes, in name order): equal digests mean the same pretrained network, whatever
    else the file holds (optimiser state, step times)."""
    import hashlib

    from medssl.ssl.engine import load_checkpoint

    state = load_checkpoint(checkpoint)["model"]
    h = hashlib.sha256()
    for name in sorted(state):
        h.update(name.encode())
        h.update(state[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _check_pinned(arm: str, accept_new: bool = False) -> str:
    """The digest of ``arm``'s checkpoint, after checking it against ``checkpoints.json``:
    exits with what to do when they differ, unless ``accept_new`` (then the new digest is
    pinned; the rows record which network each run used)."""
    digest = weights_digest(_checkpoint(arm))
    pins = json.loads(PINNED.read_text()) if PINNED.is_file() else {}
    if arm in pins and pins[arm] != digest and not accept_new:
        sys.exit(
            f"{run_dir(arm) / 'checkpoint_final.pt'}: its weights (digest {digest}) are not "
            f"the pretrained network the experiment's latest seeds used ({pins[arm]}, "
            f"{PINNED.name}). Re-create that network as RESULTS.md says (the commit to "
            "pretrain with), or pass --accept-new-weights to continue with this one and say "
            "so in RESULTS.md: one arm then holds runs from two pretrained networks"
        )
    if pins.get(arm) != digest:
        pins[arm] = digest
        PINNED.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
    return digest


def cmd_pretrain(args: argparse.Namespace) -> None:
    """One method's pretraining on the pool (resumes a stopped run)."""
    run = run_dir(args.method)
    cmd = [*MEDSSL, "pretrain", "--method", args.method, "-o", str(run)]
    if (run / "run.json").is_file():
        cmd.append("--resume")
    else:
        cmd += ["-c", str(HERE / "configs" / f"{args.method}.yaml")]
        cmd += ["--steps", str(STEPS[args.method])]
        for path in _info()["pool"].values():
            cmd += ["-d", path]
    t = time.perf_counter()
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        sys.exit(proc.returncode)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()  # fmt: skip
    row = {"method": args.method, "wall_s": round(time.perf_counter() - t, 1),
           "date": time.strftime("%Y-%m-%d"), "commit": commit or None,
           "weights": weights_digest(_checkpoint(args.method)),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores"}  # fmt: skip
    with (HERE / "pretrain.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")


#: fine-tuning budget of amendment 1 (RESULTS.md): 40 x 25 iterations; the protocol's 10 x 25
#: predicted background only, its two rows are in finetune_10x25.jsonl
FT_EPOCHS, FT_ITERS, FT_VAL_ITERS = 40, 25, 5
PROBE = HERE / "probe.jsonl"
FINETUNE = HERE / "finetune.jsonl"
EXPLORE = HERE / "explore.jsonl"  # exploratory runs (recipes swapped), not the experiment


def _slices(info: dict, seed: int, budget: int) -> tuple[list[str], list[str]]:
    train = [f"colin27_z{z:03d}" for z in train_slices(info["colin27"]["eligible"], seed, budget)]
    return train, list(info["test"])


def _checkpoint(method: str) -> Path:
    path = run_dir(method) / "checkpoint_final.pt"
    if not path.is_file():
        sys.exit(f"{path} missing: run bench.py pretrain --method {method} first")
    return path


def _read(case: str, kind: str) -> np.ndarray:
    import SimpleITK as sitk

    path = DATA / ("images" if kind == "image" else "labels") / f"{case}_{kind}.nii.gz"
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))[0]


def _encoder(method: str, seed: int):
    """The frozen encoder of ``method`` (``random``: nnU-Net's initialisation from ``seed``)."""
    import torch

    from medssl.finetune.nnunet.checkpoint import export_nnunet, read_export
    from medssl.models import build_network

    torch.manual_seed(seed)
    net = build_network("small", "2d", output_channels=len(CLASSES), seed=seed)
    if method != "random":
        export = WORK / f"ptft_{method}_export.pth"
        if not export.is_file():
            export_nnunet(_checkpoint(method), export)
        weights, _ = read_export(export)
        state = net.state_dict()
        state.update({k: v for k, v in weights.items() if k.startswith("encoder.")})
        net.load_state_dict(state)
    return net.encoder.eval()


def _features(encoder, image: np.ndarray):
    """``(1, C, H, W)`` features of the first three stages at the slice's size (z-scored,
    padded to a multiple of 16, cropped back)."""
    import torch
    import torch.nn.functional as F

    x = (image - image.mean()) / max(float(image.std()), 1e-6)
    h, w = x.shape
    ph, pw = -h % 16, -w % 16
    t = F.pad(torch.from_numpy(x.astype(np.float32))[None, None], (0, pw, 0, ph))
    with torch.no_grad():
        skips = encoder(t)[:3]
    ups = [F.interpolate(f, size=t.shape[2:], mode="bilinear", align_corners=False) for f in skips]
    return torch.cat(ups, 1)[:, :, :h, :w]


def _mean_dice(preds: dict[str, np.ndarray], cases: list[str]) -> float:
    from medssl.finetune.nnunet.run import dice_per_label

    labels = {name: i for i, name in enumerate(CLASSES)}
    per = [dice_per_label(preds[c], _read(c, "label"), labels) for c in cases]
    by_class = [np.nanmean([p[n] for p in per]) for n in CLASSES[1:]]
    return float(np.mean(by_class))


def cmd_probe(args: argparse.Namespace) -> None:
    """The screen: a per-pixel linear probe on each frozen encoder (see RESULTS.md)."""
    import torch

    torch.set_num_threads(args.threads)
    info = _info()
    done = set()
    if PROBE.is_file():
        done = {(r["arm"], r["budget"], r["seed"]) for r in map(json.loads, PROBE.open())}
    for method in ("random", *STEPS):
        for seed in SEEDS:
            encoder = None
            for budget in BUDGETS:
                if (method, budget, seed) in done:
                    continue
                encoder = encoder or _encoder(method, seed)
                train, test = _slices(info, seed, budget)
                feats = [_features(encoder, _read(c, "image")) for c in train]
                targets = [
                    torch.from_numpy(_read(c, "label").astype(np.int64))[None] for c in train
                ]
                torch.manual_seed(seed)
                head = torch.nn.Conv2d(feats[0].shape[1], len(CLASSES), 1)
                opt = torch.optim.Adam(head.parameters(), lr=1e-2)
                for _ in range(300):
                    opt.zero_grad()
                    loss = sum(
                        torch.nn.functional.cross_entropy(head(f), t)
                        for f, t in zip(feats, targets, strict=True)
                    ) / len(feats)
                    loss.backward()
                    opt.step()
                with torch.no_grad():
                    preds = {
                        c: head(_features(encoder, _read(c, "image"))).argmax(1)[0].numpy()
                        for c in test
                    }
                row = {"arm": method, "budget": budget, "seed": seed,
                       "dice": round(_mean_dice(preds, test), 4),
                       "date": time.strftime("%Y-%m-%d")}  # fmt: skip
                with PROBE.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)


def _finetune(
    arm: str,
    budget: int,
    seed: int,
    threads: int | None = None,
    accept_new: bool = False,
    recipe: str | None = None,
) -> dict:
    """One fine-tuning run; ``recipe`` (exploratory runs only) swaps the arm's fine-tuning
    recipe: ``scratch`` = peak lr 1e-2 with deep supervision, ``pretrained`` = 1e-3 without
    (``None``: each arm its own, as the protocol)."""
    ckpt = _checkpoint("s3d" if arm == "scratch" else arm)  # scratch: the architecture only
    weights = None if arm == "scratch" else _check_pinned(arm, accept_new)  # before any write
    info = _info()
    train, test = _slices(info, seed, budget)
    work = WORK / f"ptft_ft_{arm}_b{budget}_s{seed}_e{FT_EPOCHS}"
    if recipe:
        work = work.with_name(f"{work.name}_{recipe}recipe")
    work.mkdir(parents=True, exist_ok=True)
    cases = [*train, *test]
    (work / "images.txt").write_text(
        "".join(f"{DATA / 'images' / (c + '_image.nii.gz')}\n" for c in cases)
    )
    (work / "labels.txt").write_text(
        "".join(f"{DATA / 'labels' / (c + '_label.nii.gz')}\n" for c in cases)
    )
    (work / "splits.json").write_text(json.dumps([{"train": train, "val": test}]))
    cmd = [*MEDSSL, "finetune", "-d", str(work / "images.txt"), "-l", str(work / "labels.txt")]
    cmd += [
        "-o",
        str(work / "run"),
        "--pretrained",
        str(ckpt),
        "--splits",
        str(work / "splits.json"),
    ]
    cmd += ["--trainer", "nnUNetTrainer_medsslShort", "--epochs", str(FT_EPOCHS)]
    cmd += ["--iterations", str(FT_ITERS), "--val-iterations", str(FT_VAL_ITERS)]
    cmd += ["--seed", str(seed), "--device", "cpu", "--label-names", ",".join(CLASSES)]
    if arm == "scratch":
        cmd.append("--scratch")
    if recipe:
        cmd += {"scratch": ["--lr", "1e-2", "--deep-supervision"],
                "pretrained": ["--lr", "1e-3", "--no-deep-supervision"]}[recipe]  # fmt: skip
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)  # torch's intra-op threads in nnU-Net's process
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"{arm} budget {budget} seed {seed} failed:\n{proc.stderr[-3000:]}")
    dice = json.loads((work / "run" / "dice.json").read_text())["validation"]["mean"]
    return {"arm": arm, "budget": budget, "seed": seed, "dice": round(dice["mean"], 4),
            "pretrained_weights": weights, **({"recipe": recipe} if recipe else {}),
            "per_class": {k: round(v, 4) for k, v in dice.items() if k != "mean"},
            "epochs": FT_EPOCHS, "iterations": FT_ITERS, "threads": threads,
            "wall_s": round(time.perf_counter() - t, 1), "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores"}  # fmt: skip


def _run_missing(
    path: Path,
    runs: list[tuple[str, int, int, str | None]],
    threads: int | None,
    accept_new: bool = False,
) -> None:
    """Each (arm, budget, seed, recipe) of ``runs`` not yet in ``path``, in the order given:
    run it, then append its row (so a stopped session loses at most the run in progress)."""
    done = set()
    if path.is_file():
        done = {
            (r["arm"], r["budget"], r["seed"], r.get("recipe"))
            for r in map(json.loads, path.open())
        }
    for arm, budget, seed, recipe in runs:
        if (arm, budget, seed, recipe) not in done:
            row = _finetune(arm, budget, seed, threads, accept_new, recipe)
            with path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)


def cmd_finetune(args: argparse.Namespace) -> None:
    """Every arm x budget x seed not yet in finetune.jsonl: the budgets in the order given (the
    primary 2 slices first), within a budget seed by seed (each seed's arms together: paired)."""
    runs = [(a, b, s, None) for b in args.budgets for s in args.seeds for a in args.arms]
    _run_missing(FINETUNE, runs, args.threads, args.accept_new_weights)


def cmd_explore(args: argparse.Namespace) -> None:
    """Exploratory, not part of the pre-registered analysis (explore.jsonl): the arms with
    the other arm's fine-tuning recipe, to tell the pretrained weights from the learning
    rate and deep supervision the pretrained arms use."""
    runs = [(a, 2, s, args.recipe) for s in args.seeds for a in args.arms]
    _run_missing(EXPLORE, runs, args.threads)


def _paired(rows: list[dict], arm: str, budget: int) -> tuple[float, float, float, int]:
    """Mean paired difference to scratch and its 95 % t interval (mean, low, high, n)."""
    from scipy import stats

    by = {(r["arm"], r["budget"], r["seed"]): r["dice"] for r in rows}
    d = [by[arm, budget, s] - by["scratch", budget, s] for s in SEEDS
         if (arm, budget, s) in by and ("scratch", budget, s) in by]  # fmt: skip
    if len(d) < 2:
        return float("nan"), float("nan"), float("nan"), len(d)
    half = stats.t.ppf(0.975, len(d) - 1) * np.std(d, ddof=1) / np.sqrt(len(d))
    return float(np.mean(d)), float(np.mean(d) - half), float(np.mean(d) + half), len(d)


def cmd_report(_: argparse.Namespace) -> None:
    for title, path, arms, base in (
        ("Screen: linear probe on the frozen encoder", PROBE, ("random", *STEPS), "random"),
        ("Fine-tuning with nnU-Net", FINETUNE, ARMS, "scratch"),
    ):
        if not path.is_file():
            continue
        rows = [json.loads(line) for line in path.open()]
        if base == "random":
            rows = [{**r, "arm": "scratch" if r["arm"] == "random" else r["arm"]} for r in rows]
            arms = ("scratch", *STEPS)
        print(f"\n### {title}\n")
        print("| arm | budget | Dice per seed (0-4) | mean | paired diff. to "
              f"{base} [95 % CI] |\n|---|---|---|---|---|")  # fmt: skip
        for budget in BUDGETS:
            for arm in arms:
                vals = {
                    r["seed"]: r["dice"] for r in rows if r["arm"] == arm and r["budget"] == budget
                }
                if not vals:
                    continue
                cells = " / ".join(f"{vals[s]:.3f}" if s in vals else "-" for s in SEEDS)
                diff = ""
                if arm != "scratch":
                    m, lo, hi, n = _paired(rows, arm, budget)
                    diff = (
                        f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}] (n={n})"
                        if n >= 2
                        else f"n={n}: no interval"
                    )
                print(f"| {arm if arm != 'scratch' or base == 'scratch' else base} | {budget} | "
                      f"{cells} | {np.mean(list(vals.values())):.3f} | {diff} |")  # fmt: skip
        if base == "scratch":
            _by_pretraining(rows)


def _by_pretraining(rows: list[dict]) -> None:
    """For reading only (amendment 2): each pretrained arm's paired differences to scratch
    split by the pretrained network the runs used (rows without a digest: the first
    pretraining, whose networks are lost)."""
    by = {(r["arm"], r["budget"], r["seed"]): r for r in rows}
    print("\n| arm | budget | pretrained network | seeds | paired diff. to scratch per seed |")
    print("|---|---|---|---|---|")
    for budget in BUDGETS:
        for arm in ARMS[1:]:
            groups: dict[str, list[tuple[int, float]]] = {}
            for s in SEEDS:
                if (arm, budget, s) in by and ("scratch", budget, s) in by:
                    net = by[arm, budget, s].get("pretrained_weights") or "first (lost)"
                    d = by[arm, budget, s]["dice"] - by["scratch", budget, s]["dice"]
                    groups.setdefault(net, []).append((s, d))
            for net, ds in groups.items():
                seeds = ", ".join(str(s) for s, _ in ds)
                cells = " / ".join(f"{d:+.3f}" for _, d in ds)
                print(f"| {arm} | {budget} | {net} | {seeds} | {cells} |")


def _prediction(arm: str, budget: int, seed: int, case: str) -> Path | None:
    """The file of the fine-tuned network's prediction for a test slice (nnU-Net's validation
    output in the run's folder), or None when that run's folder is not in the cache."""
    work = WORK / f"ptft_ft_{arm}_b{budget}_s{seed}_e{FT_EPOCHS}" / "run" / "nnUNet_results"
    return next(iter(sorted(work.glob(f"*/*/fold_0/validation/{case}.nii.gz"))), None)


def cmd_figure(args: argparse.Namespace) -> None:
    """figure.png: Dice per seed (paired), the paired differences with their 95 % intervals,
    and one test slice as each arm's fine-tuned network labels it (one seed, 2 slices)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import SimpleITK as sitk
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    if not FINETUNE.is_file():
        sys.exit(f"{FINETUNE} missing: run bench.py finetune first (the figure draws its rows)")
    rows = [json.loads(line) for line in FINETUNE.open()]
    by = {(r["arm"], r["budget"], r["seed"]): r["dice"] for r in rows}
    info = _info()
    case = args.case or info["test"][len(info["test"]) // 2]
    seed = args.seed
    if seed is None:  # the last seed whose four runs (2 slices) are all in the cache
        have = [s for s in SEEDS if all(_prediction(a, 2, s, case) is not None for a in ARMS)]
        if not have:
            sys.exit(f"no seed has all four 2-slice runs in {WORK}: run bench.py finetune")
        seed = have[-1]
    fig = plt.figure(figsize=(15, 9))
    grid = fig.add_gridspec(2, 6, height_ratios=(1, 1.2))
    ax = fig.add_subplot(grid[0, :3])
    for budget, style in zip(BUDGETS, ("-o", "--s"), strict=True):
        for s in SEEDS:
            xs = [i for i, a in enumerate(ARMS) if (a, budget, s) in by]
            if xs:
                ax.plot(xs, [by[ARMS[i], budget, s] for i in xs], style, color=f"C{s}",
                        alpha=0.8, label=f"seed {s}, {budget} slices")  # fmt: skip
    ax.set_xticks(range(len(ARMS)), ARMS)
    ax.set_ylabel("mean Dice, 8 lobes, 23 MNI152 slices")
    ax.set_title("Dice per seed (lines join the paired runs of a seed)")
    ax.legend(fontsize=7, ncol=2)
    ax = fig.add_subplot(grid[0, 3:])
    for k, budget in enumerate(BUDGETS):
        for i, arm in enumerate(ARMS[1:]):
            m, lo, hi, n = _paired(rows, arm, budget)
            if n >= 2:
                x = i + (k - 0.5) * 0.25
                ax.errorbar(x, m, yerr=[[m - lo], [hi - m]], fmt="o", capsize=4, color=f"C{k}",
                            label=f"{budget} slices" if i == 0 else None)  # fmt: skip
                ax.annotate(f"n={n}", (x, hi), textcoords="offset points", xytext=(0, 4),
                            ha="center", fontsize=7)  # fmt: skip
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylim(top=max(0.01, ax.get_ylim()[1] + 0.005))
    ax.set_xticks(range(len(ARMS) - 1), ARMS[1:])
    ax.set_ylabel("Dice(pretrained) - Dice(scratch)")
    ax.set_title("paired difference to scratch, mean and 95 % t interval")
    ax.legend(fontsize=8)
    image, label = _read(case, "image"), _read(case, "label")
    cmap = ListedColormap(["black", *[plt.get_cmap("tab10")(i) for i in range(8)]])
    panels = [(image, "gray", f"{case} (test subject)"), (label, cmap, "reference (AAL lobes)")]
    for arm in ARMS:
        dice = by.get((arm, 2, seed))
        title = f"{arm}, seed {seed}" + (f": Dice {dice:.3f}" if dice is not None else "")
        found = _prediction(arm, 2, seed, case)
        pred = sitk.GetArrayFromImage(sitk.ReadImage(str(found)))[0] if found else None
        panels.append((pred, cmap, title))
    for k, (img, cm, title) in enumerate(panels):
        ax = fig.add_subplot(grid[1, k])
        if img is None:
            ax.text(0.5, 0.5, "run not in the cache", ha="center", transform=ax.transAxes)
        else:
            vmax = None if cm == "gray" else len(CLASSES) - 1
            ax.imshow(img, cmap=cm, vmin=0 if vmax else None, vmax=vmax, origin="lower",
                      interpolation="nearest")  # fmt: skip
        if k == 1:
            handles = [Patch(color=cmap(i), label=CLASSES[i]) for i in range(1, len(CLASSES))]
            ax.legend(handles=handles, fontsize=6, loc="upper center", ncol=4,
                      bbox_to_anchor=(0.5, 0.0), frameon=False)  # fmt: skip
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.suptitle("Pretraining then nnU-Net fine-tuning with 2 or 5 labelled slices "
                 "(benchmarks/pretrain-finetune)")  # fmt: skip
    fig.tight_layout()
    fig.savefig(HERE / "figure.png", dpi=72)
    print("wrote", HERE / "figure.png", f"(slice {case}, seed {seed})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("prepare")
    pre = sub.add_parser("pretrain")
    pre.add_argument("--method", choices=list(STEPS), required=True)
    probe = sub.add_parser("probe")
    probe.add_argument("--threads", type=int, default=2)
    ft = sub.add_parser("finetune")
    ft.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ft.add_argument("--budgets", nargs="+", type=int, default=list(BUDGETS))
    ft.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    ft.add_argument("--threads", type=int, default=None, help="torch threads per run")
    ft.add_argument("--accept-new-weights", action="store_true",
                    help="continue with pretrained networks other than the pinned ones "
                         "(checkpoints.json; RESULTS.md must say so)")  # fmt: skip
    sub.add_parser("report")
    ex = sub.add_parser("explore")
    ex.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ex.add_argument("--seeds", nargs="+", type=int, default=[0])
    ex.add_argument("--recipe", choices=("scratch", "pretrained"), required=True)
    ex.add_argument("--threads", type=int, default=None, help="torch threads per run")
    fig = sub.add_parser("figure")
    fig.add_argument(
        "--seed",
        type=int,
        default=None,
        help="the seed whose predictions to show (default: the last complete one)",
    )
    fig.add_argument("--case", default=None, help="the test slice (default: the middle one)")
    args = ap.parse_args()
    commands = {"prepare": cmd_prepare, "pretrain": cmd_pretrain, "probe": cmd_probe,
                "finetune": cmd_finetune, "report": cmd_report, "figure": cmd_figure,
                "explore": cmd_explore}  # fmt: skip
    commands[args.cmd](args)


if __name__ == "__main__":
    main()
