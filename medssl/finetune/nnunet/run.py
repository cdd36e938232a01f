"""``medssl finetune``: from a pretrained checkpoint to Dice, through nnU-Net v2's own commands.

Every step runs an nnU-Net console command (found through its installed entry points) in a
child process whose environment points ``nnUNet_raw``, ``nnUNet_preprocessed``,
``nnUNet_results`` and ``nnUNet_extTrainer`` into the run folder, so runs never share or
clobber state, and nnU-Net's code does the planning, preprocessing, training, validation and
prediction. medssl adds the parts around it: the dataset export and its checks, the plans
transfer, the fit and normalisation checks, the fixed splits, the weights file re-saved on the
CPU (nnU-Net's loader has no ``map_location``), the resume logic (nnU-Net refuses ``--c`` with
``-pretrained_weights``), Dice per label, and DICOM SEG outputs.

Run folder::

    RUN/finetune.json          settings (a re-run with the same settings resumes)
    RUN/pretrained.pth         the weights nnU-Net loads (CPU tensors): the pretrained keys
                               chosen by --load, the rest initialised from --seed
    RUN/pretrained.json        what was loaded (--load, key counts, the seed)
    RUN/nnUNet_raw|nnUNet_preprocessed|nnUNet_results/...
    RUN/trainers/              the module nnU-Net finds medssl's trainers in
    RUN/logs/*.log             each nnU-Net command's output
    RUN/predictions/           test-case label maps (NIfTI) and DICOM SEG objects
    RUN/dice.json, dice.csv    Dice per label (validation folds, test cases)
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medssl.errors import InputError, MedsslError
from medssl.finetune.nnunet.checkpoint import _load, export_nnunet, read_export
from medssl.finetune.nnunet.dataset import (
    CHANNEL_NAMES,
    Case,
    dataset_folder_name,
    export_dataset,
    pair_cases,
)
from medssl.finetune.nnunet.plans import check_normalisation, check_pretrained_fits, transfer_plans
from medssl.finetune.settings import FinetuneSettings
from medssl.io import (
    OWNER_MARKER,
    Deidentifier,
    atomic_file,
    check_not_input,
    load_tensors_file,
    read_volume,
    write_json,
    write_text,
)

__all__ = [
    "FinetuneResult",
    "FinetuneSettings",
    "dice_per_label",
    "finetune",
    "nnunet_command",
    "predict_cases",
]

log = logging.getLogger(__name__)

_MEDSSL_PLANS = "medsslPlans"
_TRAINER_MODULE = (
    '"""Written by medssl finetune: lets nnU-Net find medssl\'s trainers (nnUNet_extTrainer)."""\n'
    "from medssl.finetune.nnunet.trainers import (  # noqa: F401\n"
    "    nnUNetTrainer_medssl,\n"
    "    nnUNetTrainer_medsslShort,\n"
    ")\n"
)


class NnunetCommandError(MedsslError):
    """An nnU-Net command failed (the message ends with the tail of its log)."""


@dataclass
class FinetuneResult:
    """Where things are and what came out."""

    run_dir: Path
    plans_name: str
    configuration: str
    dice: dict[str, Any]
    warnings: list[str]


def nnunet_command(name: str) -> list[str]:
    """``argv`` prefix running nnU-Net's console command ``name`` with this interpreter."""
    for ep in entry_points(group="console_scripts"):
        if ep.name == name and ep.value.startswith("nnunetv2."):
            module, func = ep.value.split(":")
            code = (
                f"import sys; sys.argv[0] = {name!r}; from {module} import {func}; "
                f"sys.exit({func}())"
            )
            return [sys.executable, "-c", code]
    raise MedsslError(f"nnU-Net's {name} command is not installed (is nnunetv2 installed?)")


class _Nnunet:
    """Runs nnU-Net commands with the environment of one run folder."""

    def __init__(self, run_dir: Path, settings: FinetuneSettings, device: str) -> None:
        self.run_dir = run_dir
        self.logs = run_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
            env[var] = str(run_dir / var)
            (run_dir / var).mkdir(exist_ok=True)
        env["nnUNet_extTrainer"] = str(run_dir / "trainers")
        env.setdefault("nnUNet_compile", "f" if device == "cpu" else "t")
        # data augmentation in the training process itself: repeatable given the seed (set
        # for training only: nnU-Net's planner calls torch.set_num_threads with this number)
        self.single_process_da = device == "cpu" or settings.seed is not None
        for key, value in (
            ("MEDSSL_FT_EPOCHS", settings.epochs),
            ("MEDSSL_FT_ITERS", settings.iterations),
            ("MEDSSL_FT_VAL_ITERS", settings.val_iterations),
            ("MEDSSL_FT_LR", settings.peak_lr()),
            ("MEDSSL_FT_DEEP_SUPERVISION", int(settings.uses_deep_supervision())),
            ("MEDSSL_FT_WARMUP", settings.warmup),
            ("MEDSSL_FT_SEED", settings.seed),
        ):
            if value is None:
                env.pop(key, None)
            else:
                env[key] = str(value)
        self.env = env

    def __call__(self, name: str, args: Sequence[str], log_name: str) -> None:
        logfile = self.logs / f"{log_name}.log"
        env = dict(self.env)
        if name == "nnUNetv2_train" and self.single_process_da:
            env["nnUNet_n_proc_DA"] = "0"
        log.info("%s %s (log: %s)", name, " ".join(args), logfile)
        t0 = time.perf_counter()
        with logfile.open("a") as f:
            f.write(f"\n$ {name} {' '.join(args)}\n")
            f.flush()
            proc = subprocess.run(
                [*nnunet_command(name), *args],
                env=env,
                stdout=f,
                stderr=subprocess.STDOUT,
                cwd=self.run_dir,
                check=False,
            )
        if proc.returncode != 0:
            tail = logfile.read_text(errors="replace").splitlines()[-12:]
            raise NnunetCommandError(
                f"{name} failed (exit {proc.returncode}); the end of its log:\n    "
                + "\n    ".join(tail),
                path=logfile,
                hint="read the log; fix the cause and run the same command again to resume",
            )
        log.info("%s done in %.1f s", name, time.perf_counter() - t0)


def _device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available", hint="use --device cpu")
    return requested


def _read_pretrained(path: Path) -> dict[str, Any]:
    """The ``--pretrained`` file's content, read before any work: tensors and plain values only
    (a file that holds other Python objects is refused and nothing in it runs); nnU-Net's own
    checkpoints add NumPy scalars, read as numbers. On the CPU, whatever device saved it."""
    return _load(path, numpy_scalars=True)


def _load_weights(
    path: Path, run_dir: Path, obj: dict[str, Any] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a medssl export, a medssl pretraining checkpoint or an nnU-Net weights file on the
    CPU (``obj``: its content, already read by :func:`_read_pretrained`), and write its CPU
    copy to ``run_dir/pretrained.pth`` (which a pretrained run then replaces with its start
    weights, :func:`_write_start_weights`)."""
    target = run_dir / "pretrained.pth"
    obj = _read_pretrained(path) if obj is None else obj
    if "network_weights" not in obj and "model" in obj:
        # a medssl pretraining checkpoint: export it (strips S3D's wrappers, checks the fit)
        export_nnunet(path, target, overwrite=True)
        return read_export(target)
    if not isinstance(obj.get("network_weights"), dict):
        raise InputError(
            "no network_weights inside: not an nnU-Net weights file",
            path=path,
            hint="give a file written by medssl export-nnunet, a medssl pretraining "
            "checkpoint, or an nnU-Net checkpoint",
        )
    weights = {
        k: v.detach().to("cpu").contiguous()
        for k, v in obj["network_weights"].items()
        if isinstance(v, torch.Tensor)
    }
    meta = obj.get("medssl") or {}
    with atomic_file(target, verify=lambda p: load_tensors_file(p, numpy_scalars=True)) as tmp:
        torch.save({"network_weights": weights, "medssl": meta}, tmp)
    return weights, meta


def loaded_keys(
    weights: Mapping[str, torch.Tensor], meta: Mapping[str, Any], load: str
) -> list[str]:
    """The keys of ``weights`` a fine-tuning run takes from pretraining: those pretraining
    trained (``meta["pretrained_keys"]``; every key when the file does not say), only the
    encoder's with ``load="encoder"``; never nnU-Net's output layers."""
    trained = meta.get("pretrained_keys") or list(weights)
    keys = [k for k in trained if k in weights and ".seg_layers." not in k]
    if load == "encoder":
        keys = [k for k in keys if k.startswith("encoder.")]
    return sorted(keys)


def _write_start_weights(
    run_dir: Path,
    settings: FinetuneSettings,
    weights: dict[str, torch.Tensor],
    meta: dict[str, Any],
    plans: dict,
    configuration: str,
    labels: dict,
) -> None:
    """Write ``run_dir/pretrained.pth``, the weights nnU-Net's ``-pretrained_weights`` loads:
    the keys of :func:`loaded_keys` from pretraining, every other key from nnU-Net's own
    initialisation drawn with the run's seed (nnU-Net's loader wants every key, so without
    this the parts pretraining did not train would start from the same weights in every
    seed). What was loaded is recorded in ``run_dir/pretrained.json``."""
    from medssl.models.unet import build_network

    seed = 0 if settings.seed is None else settings.seed
    network = build_network(
        plans,
        configuration,
        input_channels=1,
        output_channels=len(labels),
        deep_supervision=True,
        seed=seed,
    )
    keys = loaded_keys(weights, meta, settings.load)
    if not keys:
        raise InputError(
            f"the pretrained weights hold no {settings.load} keys to load",
            path=settings.pretrained,
            hint="use --load all, or give weights of a pretraining that trained the encoder",
        )
    # into the network, not the dict: nnU-Net's decoder holds the encoder too, so its
    # parameters appear twice in the state dict (encoder.* and decoder.encoder.*), and the
    # loader would let the second, untouched copy win
    network.load_state_dict({k: weights[k] for k in keys}, strict=False)
    tensors = network.state_dict(keep_vars=True)
    given = {tensors[k].data_ptr() for k in keys}
    state = {k: v.detach().to("cpu").clone().contiguous() for k, v in tensors.items()}
    with atomic_file(
        run_dir / "pretrained.pth", verify=lambda p: load_tensors_file(p, numpy_scalars=True)
    ) as tmp:
        torch.save({"network_weights": state, "medssl": meta}, tmp)
    record = {
        "load": settings.load,
        "loaded_keys": len(keys),
        "initialised_keys": sum(t.data_ptr() not in given for t in tensors.values()),
        "init_seed": seed,
    }
    write_json(run_dir / "pretrained.json", record)
    log.info(
        "start weights: %d tensors from pretraining (%s), %d initialised with seed %d",
        record["loaded_keys"],
        settings.load,
        record["initialised_keys"],
        seed,
    )


def _read_splits(settings: FinetuneSettings, cases: Sequence[Case]) -> list[dict] | None:
    """The user's splits (checked against the cases), medssl's leave-one-out folds for fewer
    than 5 cases, or ``None`` for nnU-Net's own 5-fold split."""
    ids = [c.case_id for c in cases]
    if settings.splits:
        try:
            splits = json.loads(Path(settings.splits).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise InputError(f"cannot read the splits file ({err})", path=settings.splits) from None
        ok = isinstance(splits, list) and all(
            isinstance(s, dict) and set(s) >= {"train", "val"} for s in splits
        )
        if not ok:
            raise InputError(
                'a splits file is a list of {"train": [case IDs], "val": [case IDs]}',
                path=settings.splits,
            )
        unknown = sorted({c for s in splits for c in s["train"] + s["val"]} - set(ids))
        if unknown:
            raise InputError(
                f"the splits name unknown cases {unknown[:5]} (the cases are {ids[:8]}...)",
                path=settings.splits,
            )
    elif len(ids) < 5:
        # nnU-Net's 5-fold split needs 5 cases: one fold per case, each case validated once
        splits = [{"train": [c for c in ids if c != v], "val": [v]} for v in ids]
    else:
        return None
    for fold in settings.folds:
        if fold >= len(splits):
            raise InputError(f"fold {fold} does not exist: the split has {len(splits)} folds")
    return splits


def dice_per_label(
    prediction: np.ndarray, reference: np.ndarray, labels: dict[str, int]
) -> dict[str, float]:
    """Dice of every foreground label (NaN where both are empty)."""
    out = {}
    for name, value in labels.items():
        if value == 0:
            continue
        p, r = prediction == value, reference == value
        denom = int(p.sum()) + int(r.sum())
        out[name] = 2.0 * int((p & r).sum()) / denom if denom else float("nan")
    return out


def _score(
    pred_dir: Path, refs: Mapping[str, tuple[str | Path, str | None]], labels: dict[str, int]
) -> dict[str, dict[str, float]]:
    """Dice per label of ``pred_dir/{case}.nii.gz`` against each case's reference
    ``(path, DICOM series or None)``."""
    scores = {}
    for case, (ref, series) in refs.items():
        pred = pred_dir / f"{case}.nii.gz"
        if not pred.is_file():
            raise MedsslError(f"nnU-Net wrote no prediction for case {case}", path=pred_dir)
        p = read_volume(pred).array.astype(np.int32)
        r = read_volume(ref, series=series).array.astype(np.int32)
        scores[case] = dice_per_label(p, r, labels)
    return scores


def _summary(scores: dict[str, dict[str, float]]) -> dict[str, float]:
    names = list(dict.fromkeys(n for s in scores.values() for n in s))  # label order
    mean = {n: float(np.nanmean([s[n] for s in scores.values()])) for n in names}
    mean["mean"] = float(np.nanmean(list(mean.values()))) if names else float("nan")
    return mean


def _check_settings(run_dir: Path, settings: FinetuneSettings) -> bool:
    """True when ``run_dir`` holds this run already (resume)."""
    record = run_dir / "finetune.json"
    if not record.is_file():
        if run_dir.exists() and any(p.name != OWNER_MARKER for p in run_dir.iterdir()):
            raise InputError(
                "the run folder is not empty and holds no medssl finetune run",
                path=run_dir,
                hint="choose a new or empty folder",
            )
        return False
    recorded = json.loads(record.read_text())["settings"]
    changed = settings.changed_from(recorded)
    if changed:
        hint = "re-run with the same options to resume, or choose a new folder"
        if "load" not in recorded and {"load", "deep_supervision", "lr"} & set(changed):
            hint = (
                "this run predates --load and --deep-supervision: it loaded every pretrained "
                "key with deep supervision at lr 0.01; resume it with --load all "
                "--deep-supervision --lr 0.01, or choose a new folder"
            )
        raise InputError(
            f"the run folder holds a run with other settings ({', '.join(changed)} differ)",
            path=run_dir,
            hint=hint,
        )
    return True


def finetune(
    settings: FinetuneSettings,
    run_dir: str | Path,
    *,
    deidentify: Deidentifier | None = None,
) -> FinetuneResult:
    """Fine-tune (or train from scratch) with nnU-Net v2, then score; resumable.

    Steps, each skipped when already done: dataset export, fingerprint and planning, plans
    transfer and checks, preprocessing, splits, training per fold (a fold with
    ``checkpoint_latest.pth`` continues with ``--c``), validation predictions, test
    predictions (and DICOM SEG for DICOM test series), Dice.

    With ``deidentify`` (and ``settings.deidentify`` set to its dates mode) the DICOM SEGs
    are written under the PS3.15 Basic Profile and named by a salted hash of the case.

    Raises:
        InputError: Bad inputs or a checkpoint that does not fit (names the key and shapes).
        NnunetCommandError: An nnU-Net command failed (its log is named).
    """
    run_dir = Path(run_dir)
    if (deidentify is None) != (settings.deidentify is None):
        raise InputError("settings.deidentify and the deidentify argument go together")
    if settings.pretrained is None and not settings.scratch:
        raise InputError("give --pretrained CKPT, or --scratch to train from random weights")
    inputs = [*settings.data, *settings.labels, *(settings.test_data or [])]
    inputs += [*(settings.test_labels or [])] + (
        [settings.pretrained] if settings.pretrained else []
    )
    check_not_input(run_dir, inputs)
    resumed = _check_settings(run_dir, settings)
    device = _device(settings.device)
    pretrained = _read_pretrained(Path(settings.pretrained)) if settings.pretrained else None
    if device == "cpu" and settings.trainer == "nnUNetTrainer_medssl" and not settings.epochs:
        log.warning(
            "nnU-Net's full budget (1000 epochs x 250 iterations) takes days on a CPU; for a "
            "trial use --trainer nnUNetTrainer_medsslShort or --epochs/--iterations"
        )
    cases = pair_cases(settings.data, settings.labels)
    test_cases = pair_cases(settings.test_data, settings.test_labels) if settings.test_data else []
    splits = _read_splits(settings, cases)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = run_dir / "finetune.json"
    if not resumed:
        write_json(record, {"settings": settings.record()})
    warnings: list[str] = []

    weights: dict[str, torch.Tensor] = {}
    meta: dict[str, Any] = {}
    if settings.pretrained is not None:
        weights, meta = _load_weights(Path(settings.pretrained), run_dir, pretrained)
    modality = settings.modality
    if modality is None:
        norm = (meta.get("preprocessing") or {}).get("normalization", "ZScoreNormalization")
        channel = CHANNEL_NAMES.get(norm, "MRI")
    else:
        channel = {"CT": "CT", "MR": "MRI"}.get(modality.upper()) or modality

    nnunet = _Nnunet(run_dir, settings, device)
    (run_dir / "trainers").mkdir(exist_ok=True)
    write_text(run_dir / "trainers" / "medssl_nnunet_trainers.py", _TRAINER_MODULE)
    ds_name = dataset_folder_name(settings.dataset_id, settings.dataset_name)
    raw = run_dir / "nnUNet_raw" / ds_name
    if not (raw / "dataset.json").is_file():
        log.info("exporting %d training cases to %s", len(cases), raw)
        export_dataset(
            cases,
            run_dir / "nnUNet_raw",
            settings.dataset_id,
            settings.dataset_name,
            channel_name=channel,
            label_names=settings.label_names,
            test_cases=test_cases,
            overwrite=True,
        )
    labels = json.loads((raw / "dataset.json").read_text())["labels"]
    pre_dir = run_dir / "nnUNet_preprocessed" / ds_name
    did = str(settings.dataset_id)
    if not (pre_dir / "nnUNetPlans.json").is_file():
        nnunet("nnUNetv2_extract_fingerprint", ["-d", did, "-np", "2"], "plan")
        nnunet("nnUNetv2_plan_experiment", ["-d", did], "plan")
    nnunet_plans = json.loads((pre_dir / "nnUNetPlans.json").read_text())

    configuration = meta.get("configuration", "3d_fullres")
    plans_name = "nnUNetPlans"
    if meta.get("plans"):
        plans_name = _MEDSSL_PLANS
        plans, notes = transfer_plans(nnunet_plans, meta, plans_name, spacing=settings.spacing)
        for note in notes:
            log.info("plans: %s", note)
        write_json(pre_dir / f"{plans_name}.json", plans)
        warnings += check_normalisation(plans, configuration, meta)
    else:
        plans = nnunet_plans
        if configuration not in plans["configurations"]:
            raise InputError(f"nnU-Net planned no {configuration} configuration for this data")
    if weights:
        check_pretrained_fits(
            weights,
            plans,
            configuration,
            input_channels=1,
            num_labels=len(labels),
        )
        if settings.pretrained_run:
            _write_start_weights(run_dir, settings, weights, meta, plans, configuration, labels)
            if not settings.trainer.startswith("nnUNetTrainer_medssl"):
                log.warning(
                    "%s is not one of medssl's trainers: the pretrained run's lr %g and deep "
                    "supervision %s are not applied (nnU-Net's trainer uses its own)",
                    settings.trainer,
                    settings.peak_lr(),
                    "on" if settings.uses_deep_supervision() else "off",
                )
    for w in warnings:
        log.warning("%s", w)

    data_id = plans["configurations"][configuration].get("data_identifier", "")
    if not (pre_dir / data_id).is_dir() or not (pre_dir / f".{data_id}.done").is_file():
        nnunet(
            "nnUNetv2_preprocess",
            ["-d", did, "-plans_name", plans_name, "-c", configuration, "-np", "1"],
            "preprocess",
        )
        write_text(pre_dir / f".{data_id}.done", "done\n")
    if splits is None:
        split_source = "nnU-Net's own 5-fold split"
    else:
        write_json(pre_dir / "splits_final.json", splits)
        split_source = (
            f"from {settings.splits}" if settings.splits else f"{len(splits)} leave-one-out folds"
        )
    log.info("split: %s", split_source)

    results = (
        run_dir / "nnUNet_results" / ds_name / f"{settings.trainer}__{plans_name}__{configuration}"
    )
    val_scores: dict[str, dict[str, float]] = {}
    for fold in settings.folds:
        fold_dir = results / f"fold_{fold}"
        train = [did, configuration, str(fold), "-tr", settings.trainer, "-p", plans_name]
        train += ["-device", device]
        if not (fold_dir / "checkpoint_final.pth").is_file():
            if (fold_dir / "checkpoint_latest.pth").is_file():
                log.info("fold %d: continuing from nnU-Net's checkpoint_latest.pth", fold)
                nnunet("nnUNetv2_train", [*train, "--c"], f"train_fold{fold}")
            elif weights and not settings.scratch:
                nnunet(
                    "nnUNetv2_train",
                    [*train, "-pretrained_weights", str(run_dir / "pretrained.pth")],
                    f"train_fold{fold}",
                )
            else:
                nnunet("nnUNetv2_train", train, f"train_fold{fold}")
        if not (fold_dir / "validation" / "summary.json").is_file():
            nnunet("nnUNetv2_train", [*train, "--val"], f"train_fold{fold}")
        splits = json.loads((pre_dir / "splits_final.json").read_text())
        val_cases = splits[fold]["val"]
        val_scores.update(
            _score(
                fold_dir / "validation",
                {c: (raw / "labelsTr" / f"{c}.nii.gz", None) for c in val_cases},
                labels,
            )
        )
    dice: dict[str, Any] = {"validation": {"cases": val_scores, "mean": _summary(val_scores)}}

    if test_cases:
        ctx = _Predictor(
            nnunet, did, configuration, plans_name, settings, device, labels, deidentify
        )
        test_dice = ctx.run(test_cases, raw / "imagesTs", run_dir / "predictions")
        if test_dice is not None:
            dice["test"] = test_dice

    _write_dice(run_dir, dice)
    info = json.loads(record.read_text())
    info.update(
        {
            "plans_name": plans_name,
            "configuration": configuration,
            "split": split_source,
            "warnings": warnings,
            "dice": dice,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
    )
    write_json(record, info)
    return FinetuneResult(run_dir, plans_name, configuration, dice, warnings)


@dataclass
class _Predictor:
    """``nnUNetv2_predict`` with a finished run's model, then DICOM SEGs and Dice."""

    nnunet: _Nnunet
    dataset_id: str
    configuration: str
    plans_name: str
    settings: FinetuneSettings
    device: str
    labels: dict[str, int]
    deidentify: Deidentifier | None = None

    def run(self, cases: Sequence[Case], images: Path, pred_dir: Path) -> dict[str, Any] | None:
        expected = [pred_dir / f"{c.case_id}.nii.gz" for c in cases]
        if not all(p.is_file() for p in expected):
            folds = [str(f) for f in self.settings.folds]
            self.nnunet(
                "nnUNetv2_predict",
                [
                    *("-i", str(images), "-o", str(pred_dir), "-d", self.dataset_id),
                    *("-c", self.configuration, "-p", self.plans_name),
                    *("-tr", self.settings.trainer, "-f", *folds, "-device", self.device),
                    *("-npp", "1", "-nps", "1"),
                ],
                "predict",
            )
        _write_segs(cases, pred_dir, self.labels, self.deidentify)
        if any(c.label is None for c in cases):
            return None
        refs = {c.case_id: (c.label.path, c.label.series) for c in cases if c.label}
        scores = _score(pred_dir, refs, self.labels)
        return {"cases": scores, "mean": _summary(scores)}


def predict_cases(
    run_dir: str | Path,
    images: Sequence[str | Path],
    labels: Sequence[str | Path] | None,
    out_dir: str | Path,
    *,
    deidentify: Deidentifier | None = None,
) -> dict[str, Any] | None:
    """Predict new images with the model of a finished ``medssl finetune`` run.

    Args:
        run_dir: The fine-tuning run folder.
        images: Images (folders, list files or volumes; DICOM series also get a DICOM SEG).
        labels: Their label maps for Dice, or ``None``.
        out_dir: Receives ``{case}.nii.gz`` (and ``{case}_seg.dcm``) and ``input/``.
        deidentify: Write the DICOM SEGs under the PS3.15 Basic Profile.

    Returns:
        Dice per case and label with means, when ``labels`` are given.
    """
    from medssl.io import write_itk

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    record = run_dir / "finetune.json"
    if not record.is_file() or "finished" not in json.loads(record.read_text()):
        raise InputError("not a finished medssl finetune run", path=run_dir)
    info = json.loads(record.read_text())
    settings = FinetuneSettings.model_validate(info["settings"])
    cases = pair_cases(list(images), list(labels) if labels else None)
    ds_name = dataset_folder_name(settings.dataset_id, settings.dataset_name)
    dataset = json.loads((run_dir / "nnUNet_raw" / ds_name / "dataset.json").read_text())
    inputs = out_dir / "input"
    inputs.mkdir(parents=True, exist_ok=True)
    for case in cases:
        target = inputs / f"{case.case_id}_0000.nii.gz"
        if not target.is_file():
            write_itk(read_volume(case.image.path, series=case.image.series), target)
    device = _device(settings.device)
    ctx = _Predictor(
        _Nnunet(run_dir, settings, device),
        str(settings.dataset_id),
        info["configuration"],
        info["plans_name"],
        settings,
        device,
        dataset["labels"],
        deidentify,
    )
    return ctx.run(cases, inputs, out_dir)


def seg_name(case_id: str, deidentify: Deidentifier | None = None) -> str:
    """The DICOM SEG file of a case: named by the case, or by a salted hash of it when
    de-identified (case names often come from folders named after the patient)."""
    if deidentify is None:
        return f"{case_id}_seg.dcm"
    return f"{hashlib.sha256(deidentify.uid(case_id).encode()).hexdigest()[:16]}_seg.dcm"


def _write_segs(
    test_cases: Sequence[Case],
    pred_dir: Path,
    labels: dict[str, int],
    deidentify: Deidentifier | None = None,
) -> None:
    from medssl.finetune.nnunet.seg import write_seg

    for case in test_cases:
        source = Path(case.image.path)
        if case.image.series is None and not source.is_dir():
            continue
        target = pred_dir / seg_name(case.case_id, deidentify)
        if target.is_file():
            continue
        image = read_volume(source, series=case.image.series)
        pred = read_volume(pred_dir / f"{case.case_id}.nii.gz").array.astype(np.uint8)
        write_seg(image, pred, labels, target, deidentify=deidentify)


def _write_dice(run_dir: Path, dice: dict[str, Any]) -> None:
    write_json(run_dir / "dice.json", dice)
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["set", "case", "label", "dice"])
    for part, block in dice.items():
        for case, scores in block["cases"].items():
            for name, value in scores.items():
                writer.writerow([part, case, name, f"{value:.4f}"])
        for name, value in block["mean"].items():
            writer.writerow([part, "MEAN", name, f"{value:.4f}"])
    write_text(run_dir / "dice.csv", table.getvalue())
