"""``medssl finetune``: nnU-Net v2 fine-tuning of a pretrained checkpoint, scored by Dice."""

from __future__ import annotations

from pathlib import Path

import typer

from medssl.cli._console import out
from medssl.cli._deid import (
    DATES_OPTION,
    DEIDENTIFY_OPTION,
    SALT_OPTION,
    deidentifier_from_options,
)
from medssl.errors import InputError

__all__ = ["finetune"]


def _folds(text: str) -> list[int]:
    try:
        folds = sorted({int(f) for f in text.replace(" ", "").split(",") if f != ""})
    except ValueError:
        raise InputError(f"--folds takes fold numbers like 0 or 0,1,2; got {text!r}") from None
    if not folds or min(folds) < 0:
        raise InputError(f"--folds takes fold numbers like 0 or 0,1,2; got {text!r}")
    return folds


def finetune(
    data: list[Path] = typer.Option(
        ..., "--data", "-d", help="Training images: folder, list file or volume (repeatable)."
    ),
    labels: list[Path] = typer.Option(
        ..., "--labels", "-l", help="Label maps, paired with the images by name (repeatable)."
    ),
    pretrained: Path | None = typer.Option(
        None,
        "--pretrained",
        "-w",
        help="medssl pretraining checkpoint, export-nnunet file or nnU-Net checkpoint.",
    ),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Run folder (re-run the same command to resume)."
    ),
    scratch: bool = typer.Option(
        False,
        "--scratch",
        help="Random initialisation, same budget (with --pretrained: that network's plans).",
    ),
    trainer: str = typer.Option(
        "nnUNetTrainer_medssl",
        "--trainer",
        help="nnUNetTrainer_medssl (nnU-Net's budget, lr warm-up), nnUNetTrainer_medsslShort "
        "(10x25 iterations), or any nnU-Net trainer class.",
    ),
    folds: str = typer.Option("0", "--folds", help="Folds to train, e.g. 0 or 0,1,2,3,4."),
    splits: Path | None = typer.Option(
        None, "--splits", help="Your own splits_final.json (list of {train: [...], val: [...]})."
    ),
    test_data: list[Path] | None = typer.Option(
        None, "--test-data", help="Images to predict (DICOM series also get a DICOM SEG)."
    ),
    test_labels: list[Path] | None = typer.Option(
        None, "--test-labels", help="Label maps of --test-data, for Dice."
    ),
    label_names: str | None = typer.Option(
        None, "--label-names", help="Comma-separated names of labels 0..K, background first."
    ),
    modality: str | None = typer.Option(
        None,
        "--modality",
        help="CT (nnU-Net's CT normalisation) or MR (z-score); default: as pretrained.",
    ),
    spacing: str = typer.Option(
        "pretrained", "--spacing", help="pretrained (the pretraining's voxel size) or target."
    ),
    epochs: int | None = typer.Option(None, "--epochs", min=1, help="Override the epochs."),
    iterations: int | None = typer.Option(
        None, "--iterations", min=1, help="Override iterations per epoch."
    ),
    val_iterations: int | None = typer.Option(
        None, "--val-iterations", min=1, help="Override validation iterations per epoch."
    ),
    lr: float | None = typer.Option(None, "--lr", min=0.0, help="Peak learning rate."),
    warmup: float | None = typer.Option(
        None, "--warmup", min=0.0, max=0.9, help="Warm-up fraction of all iterations."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of initialisation, sampling, augmentation."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    dataset_id: int = typer.Option(900, "--dataset-id", help="nnU-Net dataset ID (1..999)."),
    deidentify: bool = DEIDENTIFY_OPTION,
    salt_file: Path | None = SALT_OPTION,
    deid_dates: str = DATES_OPTION,
) -> None:
    """Fine-tune with nnU-Net v2 (its own planning, training and prediction) and report Dice.

    Exports the data to nnU-Net's raw format, plans it, puts the pretrained network into the
    plans, checks the weights fit and the normalisation matches, trains with a learning-rate
    warm-up, predicts, and writes dice.json/dice.csv in the run folder.
    """
    import logging

    from medssl.finetune.nnunet.run import FinetuneSettings
    from medssl.finetune.nnunet.run import finetune as run_finetune

    # each step of the run (nnU-Net commands, their logs) is shown: training takes long
    logging.getLogger("medssl.finetune").setLevel(logging.INFO)
    deidentifier = deidentifier_from_options(deidentify, salt_file, deid_dates)
    if test_labels and not test_data:
        raise InputError("--test-labels needs --test-data")
    if spacing not in ("pretrained", "target"):
        raise InputError(f"--spacing must be pretrained or target, got {spacing!r}")
    if modality is not None and modality.upper() not in ("CT", "MR"):
        raise InputError(f"--modality must be CT or MR, got {modality!r}")
    settings = FinetuneSettings(
        data=[str(p.resolve()) for p in data],
        labels=[str(p.resolve()) for p in labels],
        pretrained=str(pretrained.resolve()) if pretrained else None,
        scratch=scratch,
        trainer=trainer,
        folds=_folds(folds),
        dataset_id=dataset_id,
        modality=modality.upper() if modality else None,
        label_names=[n.strip() for n in label_names.split(",")] if label_names else None,
        splits=str(splits.resolve()) if splits else None,
        test_data=[str(p.resolve()) for p in test_data] if test_data else None,
        test_labels=[str(p.resolve()) for p in test_labels] if test_labels else None,
        spacing=spacing,
        epochs=epochs,
        iterations=iterations,
        val_iterations=val_iterations,
        lr=lr,
        warmup=warmup,
        seed=seed,
        device=device,
        deidentify=deidentifier.dates if deidentifier else None,
    )
    result = run_finetune(settings, output, deidentify=deidentifier)
    for warning in result.warnings:
        out.print(f"warning: {warning}")
    for part, block in result.dice.items():
        scores = ", ".join(f"{k} {v:.4f}" for k, v in block["mean"].items())
        out.print(f"Dice ({part}, {len(block['cases'])} cases): {scores}")
    out.print(f"results: {result.run_dir / 'dice.csv'}")
