"""``medssl pretrain`` and ``medssl export-nnunet``."""

from __future__ import annotations

from pathlib import Path

import typer

from medssl.cli._console import out
from medssl.errors import InputError
from medssl.ssl.registry import describe, method_names

__all__ = ["export_nnunet_cmd", "pretrain"]


def pretrain(
    method: str = typer.Option(
        ...,
        "--method",
        "-m",
        help=f"{describe()}.",
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Recipe YAML (see configs/); defaults apply when omitted."
    ),
    data: list[Path] | None = typer.Option(
        None,
        "--data",
        "-d",
        help="Training volumes: a folder (NIfTI/NRRD/MHA, DICOM series), a list file, or a "
        "volume; repeat for several.",
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Run folder."),
    val: list[Path] | None = typer.Option(
        None, "--val", help="Held-out volumes whose reconstruction loss is logged."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --output."),
    steps: int | None = typer.Option(None, "--steps", min=1, help="Override train.steps."),
    stop_after: int | None = typer.Option(
        None, "--stop-after", min=1, help="Stop at this step with a checkpoint (resume later)."
    ),
) -> None:
    """Pretrain an nnU-Net ResEnc U-Net on unlabelled volumes (3D MAE, S3D, contrastive, graph
    matching).

    Runs under torchrun for DDP (the batch in the config is the global batch).
    """
    from medssl.ssl.pretrain import pretrain as run_pretrain
    from medssl.ssl.settings import PretrainSettings

    if method not in method_names():
        raise InputError(f"--method must be one of {', '.join(method_names())}, got {method!r}")
    if resume and config is None and steps is not None:
        raise InputError("--steps cannot change a resumed run", hint="drop --steps")
    settings = PretrainSettings.from_options(method, config, steps)
    result = run_pretrain(
        settings,
        list(data) if data else None,
        output,
        resume=resume,
        val_data=list(val) if val else None,
        stop_after=stop_after,
    )
    state = "finished" if result.finished else "stopped (resume with --resume)"
    out.print(f"{state} at step {result.step}, loss {result.last_loss:.4g}: {result.checkpoint}")


def export_nnunet_cmd(
    checkpoint: Path = typer.Argument(..., help="checkpoint_final.pt of medssl pretrain."),
    output: Path = typer.Option(..., "--output", "-o", help="nnU-Net weights file to write."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file."),
) -> None:
    """Write a pretrained checkpoint as nnU-Net v2 -pretrained_weights (loads on a CPU)."""
    from medssl.finetune.nnunet import export_nnunet

    path = export_nnunet(checkpoint, output, overwrite=overwrite)
    out.print(f"wrote {path} (nnUNetv2_train ... -pretrained_weights {path})")
