"""``medssl finetune``: nnU-Net v2 fine-tuning of a pretrained checkpoint, scored by Dice.

A thin wrapper: the options are the fields of :class:`medssl.finetune.settings.FinetuneSettings`
(their defaults and help texts come from there), and the work is
:func:`medssl.finetune.nnunet.run.finetune`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from medssl.cli._console import out
from medssl.cli._deid import (
    DATES_OPTION,
    DEIDENTIFY_OPTION,
    SALT_OPTION,
    deidentifier_from_options,
)
from medssl.errors import InputError
from medssl.finetune.settings import FinetuneSettings, parse_settings

__all__ = ["finetune"]

_S = FinetuneSettings
_FIELD_DEFAULT: Any = object()


def _folds(text: str) -> list[int]:
    try:
        folds = sorted({int(f) for f in text.replace(" ", "").split(",") if f != ""})
    except ValueError:
        raise InputError(f"--folds takes fold numbers like 0 or 0,1,2; got {text!r}") from None
    if not folds or min(folds) < 0:
        raise InputError(f"--folds takes fold numbers like 0 or 0,1,2; got {text!r}")
    return folds


def _option(name: str, *flags: str, default: Any = _FIELD_DEFAULT, help: str | None = None) -> Any:
    """The typer option of settings field ``name``, with the field's default and help text
    (``default``/``help``: where the option's form differs from the field's)."""
    value = _S.default(name) if default is _FIELD_DEFAULT else default
    return typer.Option(value, *flags, help=help or _S.help(name))


def finetune(
    data: list[Path] = _option("data", "--data", "-d"),
    labels: list[Path] = _option("labels", "--labels", "-l"),
    pretrained: Path | None = _option("pretrained", "--pretrained", "-w"),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Run folder (re-run the same command to resume)."
    ),
    scratch: bool = _option("scratch", "--scratch"),
    trainer: str = _option("trainer", "--trainer"),
    folds: str = _option(
        "folds",
        "--folds",
        default=",".join(map(str, _S.default("folds"))),
        help=_S.help("folds") + " For example 0 or 0,1,2,3,4.",
    ),
    splits: Path | None = _option("splits", "--splits"),
    test_data: list[Path] | None = _option("test_data", "--test-data"),
    test_labels: list[Path] | None = _option("test_labels", "--test-labels"),
    label_names: str | None = _option(
        "label_names", "--label-names", help="Comma-separated: " + _S.help("label_names")
    ),
    modality: str | None = _option("modality", "--modality"),
    spacing: str = _option("spacing", "--spacing"),
    epochs: int | None = _option("epochs", "--epochs"),
    iterations: int | None = _option("iterations", "--iterations"),
    val_iterations: int | None = _option("val_iterations", "--val-iterations"),
    lr: float | None = _option("lr", "--lr"),
    warmup: float | None = _option("warmup", "--warmup"),
    load: str = _option("load", "--load"),
    deep_supervision: bool | None = _option(
        "deep_supervision", "--deep-supervision/--no-deep-supervision"
    ),
    seed: int = _option("seed", "--seed"),
    device: str = _option("device", "--device"),
    dataset_id: int = _option("dataset_id", "--dataset-id"),
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

    from medssl.finetune.nnunet.run import finetune as run_finetune

    # each step of the run (nnU-Net commands, their logs) is shown: training takes long
    logging.getLogger("medssl.finetune").setLevel(logging.INFO)
    deidentifier = deidentifier_from_options(deidentify, salt_file, deid_dates)
    settings = parse_settings(
        data=[str(p.resolve()) for p in data],
        labels=[str(p.resolve()) for p in labels],
        pretrained=str(pretrained.resolve()) if pretrained else None,
        scratch=scratch,
        trainer=trainer,
        folds=_folds(folds),
        dataset_id=dataset_id,
        modality=modality,
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
        load=load,
        deep_supervision=deep_supervision,
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
