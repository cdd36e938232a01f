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
    row = {"method": args.method, "wall_s": round(time.perf_counter() - t, 1),
           "date": time.strftime("%Y-%m-%d"),
           "machine": f"{platform.machine()}, {os.cpu_count()} cores"}  # fmt: skip
    with (HERE / "pretrain.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("prepare")
    pre = sub.add_parser("pretrain")
    pre.add_argument("--method", choices=list(STEPS), required=True)
    args = ap.parse_args()
    {"prepare": cmd_prepare, "pretrain": cmd_pretrain}[args.cmd](args)


if __name__ == "__main__":
    main()
