"""``medssl pipeline run|check FILE``."""

from __future__ import annotations

from pathlib import Path

import typer

from medssl.cli._console import err, out

__all__ = ["pipeline_app"]

pipeline_app = typer.Typer(
    help="Run or check a pipeline file (stages: load, denoise, pretrain, export, finetune, "
    "predict, report; see pipelines/).",
    no_args_is_help=True,
)


@pipeline_app.command("check")
def check(file: Path = typer.Argument(..., help="Pipeline YAML file.")) -> None:
    """Validate a pipeline file (types, unknown keys, stage order, inputs) without running it."""
    from medssl.pipeline import STAGES, check_pipeline

    spec = check_pipeline(file)
    stages = [s for s in STAGES if getattr(spec.stages, s) is not None]
    out.print(f"{file}: valid; stages {', '.join(stages)}; output {spec.output}")


@pipeline_app.command("run")
def run(
    file: Path = typer.Argument(..., help="Pipeline YAML file."),
    force: list[str] | None = typer.Option(
        None, "--force", help="Rerun this stage (and the stages after it); repeatable."
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Output folder (default: the file's output:)."
    ),
) -> None:
    """Validate the whole file, then run the stages not done yet (a re-run does no work)."""
    from medssl.cli.denoise import SOME_SKIPPED
    from medssl.pipeline import run_pipeline

    record = run_pipeline(file, force=force, output=output, echo=out.print)
    report = record["stages"].get("report", {}).get("outputs", {}).get("report")
    if report:
        out.print(f"report: {report}")
    skipped = record["stages"].get("denoise", {}).get("outputs", {}).get("skipped") or []
    if skipped:
        err.print(
            f"[yellow]{len(skipped)} series skipped[/yellow] by the denoise stage (reasons in "
            f"its log and its skipped/ folder); a re-run retries them; exit code {SOME_SKIPPED}"
        )
        raise typer.Exit(SOME_SKIPPED)
