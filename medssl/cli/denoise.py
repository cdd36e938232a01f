"""`medssl denoise INPUT -o OUTPUT`: Filter2Noise on one CT scan."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from medssl.cli._console import err, out
from medssl.cli._deid import (
    DATES_OPTION,
    DEIDENTIFY_OPTION,
    SALT_OPTION,
    deidentifier_from_options,
)
from medssl.denoise.record import JobRecord
from medssl.denoise.run import DenoiseListener, DenoiseOutcome, denoise_file
from medssl.denoise.settings import DenoiseSettings, parse_settings
from medssl.errors import InputError
from medssl.io import Deidentifier, output_format

__all__ = ["SOME_SKIPPED", "ConsoleListener", "denoise", "denoise_and_print"]

#: The defaults of the options (the command's defaults are the library's).
DEFAULTS = DenoiseSettings()

#: Exit code of a batch that finished with some series skipped.
SOME_SKIPPED = 3


def denoise(
    src: Path | None = typer.Argument(
        None, help="A DICOM file or series folder, or a NIfTI/NRRD/MHA image, in HU."
    ),
    output: Path = typer.Option(
        ...,
        "--output",
        "-o",
        help="Output image (.nii.gz, .nrrd, .mha, ...) or a folder for a derived DICOM series; "
        "with --batch, the folder receiving one sub-folder per series.",
    ),
    batch: Path | None = typer.Option(
        None,
        "--batch",
        help="Denoise every CT series under this folder (any nesting), one output folder per "
        "series named by a hash of its UID; re-runs skip finished series.",
    ),
    shard: str | None = typer.Option(
        None, "--shard", help="With --batch: run part i of n (i/n, e.g. $SLURM_ARRAY_TASK_ID/8)."
    ),
    series: str | None = typer.Option(
        None, "--series", "-s", help="For a folder with several series: which one (N or KEY)."
    ),
    strength: float = typer.Option(
        DEFAULTS.strength,
        "--strength",
        help="Multiply every sigma map by this (0 returns the input).",
    ),
    roi: str | None = typer.Option(
        DEFAULTS.roi,
        "--roi",
        help="Region edited by --roi-factor: a mask image on the scan's grid or voxel ranges "
        "'z0:z1,y0:y1,x0:x1'.",
    ),
    roi_factor: float = typer.Option(
        DEFAULTS.roi_factor,
        "--roi-factor",
        help="Factor on the sigmas inside --roi (on top of --strength).",
    ),
    sigma_maps: Path | None = typer.Option(
        None, "--sigma-maps", help="Folder for the sigma maps (NIfTI, in mm and HU) and PNGs."
    ),
    mode: str = typer.Option(
        DEFAULTS.mode,
        "--mode",
        help="2d: fit on a sample of slices, filter in-plane; 3d: sigma_z too, reaching no "
        "further in mm than the in-plane sigmas (for thin slices; ~25x slower on CPU).",
    ),
    preset_name: str = typer.Option(
        DEFAULTS.preset,
        "--preset",
        help="Settings: medssl (default; a non-local means last stage in 2D, bilateral in "
        "3D), bilateral (the default before 2026-12-04), published, global, nlm (the "
        "non-local means stage asked for explicitly; 2D only).",
    ),
    steps: int | None = typer.Option(
        DEFAULTS.steps,
        "--steps",
        help="Fitting steps (default: the preset's, scaled down for slices under 512²).",
    ),
    seed: int = typer.Option(
        DEFAULTS.seed, "--seed", help="Seed (weights and crops): same seed, same output."
    ),
    device: str = typer.Option(DEFAULTS.device, "--device", help="Torch device, e.g. cpu or cuda."),
    threads: int | None = typer.Option(
        DEFAULTS.threads,
        "--threads",
        help="CPU threads (default: torch's, one per core). When several medssl processes "
        "share a machine, give each cores / processes: oversubscribed threads run many "
        "times slower.",
    ),
    save_model: Path | None = typer.Option(
        None, "--save-model", help="Save the fitted model (.pt) to re-apply it later."
    ),
    model_path: Path | None = typer.Option(
        None, "--model", help="Apply a saved model instead of fitting."
    ),
    replace_nonfinite_value: float | None = typer.Option(
        DEFAULTS.replace_nonfinite,
        "--replace-nonfinite",
        help="Replace NaN and infinite voxels with this value in HU (e.g. -1024); without it "
        "an image holding any is refused.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    deidentify: bool = DEIDENTIFY_OPTION,
    salt_file: Path | None = SALT_OPTION,
    deid_dates: str = DATES_OPTION,
) -> None:
    """Denoise one low-dose CT scan with Filter2Noise (self-supervised, fitted to the scan).

    The output has the input's grid, in HU. A DICOM input written to a folder gives a derived
    DICOM series of the same patient and study.
    """
    t0 = time.perf_counter()
    deidentifier = deidentifier_from_options(deidentify, salt_file, deid_dates)
    settings = parse_settings(
        preset=preset_name,
        mode=mode,
        seed=seed,
        steps=steps,
        threads=threads,
        device=device,
        strength=strength,
        roi=roi,
        roi_factor=roi_factor,
        replace_nonfinite=replace_nonfinite_value,
        deidentify=deidentifier.dates if deidentifier is not None else None,
    )
    if batch is not None:
        if src is not None:
            raise InputError("give either an input or --batch FOLDER, not both")
        unsupported = {
            "--series": series,
            "--roi": roi,
            "--sigma-maps": sigma_maps,
            "--save-model": save_model,
            "--model": model_path,
        }
        given = [k for k, v in unsupported.items() if v is not None] + (
            ["--strength"] if strength != 1.0 else []
        )
        if given:
            raise InputError(f"{', '.join(given)} cannot be used with --batch")
        if replace_nonfinite_value is not None:
            raise InputError("--replace-nonfinite applies to a single scan, not to --batch")
        _batch(batch, output, settings, shard, t0, deidentifier)
        return
    if src is None:
        raise InputError("give an input scan, or --batch FOLDER", hint="see medssl denoise --help")
    if shard is not None:
        raise InputError("--shard applies to --batch only")
    denoise_and_print(
        src,
        output,
        settings,
        series=series,
        sigma_maps=sigma_maps,
        save_model=save_model,
        model=model_path,
        overwrite=overwrite,
        deidentifier=deidentifier,
        t0=t0,
    )


class ConsoleListener(DenoiseListener):
    """Prints a run's account: lines to stdout, warnings and the fit's progress bar to stderr."""

    def message(self, text: str) -> None:
        out.print(text)

    def warning(self, text: str) -> None:
        err.print(f"[yellow]warning:[/yellow] {escape(text)}")

    @contextlib.contextmanager
    def fitting(self, steps: int) -> Iterator[Callable[[int, int, float], None]]:
        with Progress(
            TextColumn("fitting"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.4f}"),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task("fit", total=steps, loss=0.0)
            yield lambda s, n, loss: bar.update(task, completed=s, loss=loss)


def denoise_and_print(
    src: Path,
    output: Path,
    settings: DenoiseSettings,
    *,
    series: str | None = None,
    sigma_maps: Path | None = None,
    save_model: Path | None = None,
    model: Path | None = None,
    overwrite: bool = False,
    deidentifier: Deidentifier | None = None,
    t0: float | None = None,
) -> DenoiseOutcome:
    """:func:`medssl.denoise.run.denoise_file` with the command's console account (also
    used by ``medssl demo``)."""
    t0 = time.perf_counter() if t0 is None else t0
    done = denoise_file(
        src,
        output,
        settings,
        series=series,
        sigma_maps=sigma_maps,
        save_model=save_model,
        model=model,
        overwrite=overwrite,
        deidentifier=deidentifier,
        listener=ConsoleListener(),
    )
    kind = "DICOM series" if output_format(done.output) == "dicom" else "image"
    out.print(f"wrote {kind} {done.output}")
    out.print(_quality_line(done.quality))
    if sigma_maps is not None:
        out.print(f"wrote {len(done.sigma_map_files)} sigma-map files to {sigma_maps}")
    if save_model is not None:
        out.print(f"saved the model to {save_model}")
    out.print(f"done in {time.perf_counter() - t0:.1f} s")
    return done


def _quality_line(q: dict) -> str:
    """The physicist's summary of a run: noise SD and NPS mean frequency in the same
    homogeneous patches, and the edge width at the same edges, before -> after."""

    def pct(key: str) -> str:
        return "n/a" if q.get(key) is None else f"{100 * q[key]:+.0f} %"

    if q.get("noise_sd_before_hu") is None:
        return "quality: no homogeneous tissue found to measure the noise in"
    before, after = q["noise_sd_before_hu"], q["noise_sd_after_hu"]
    text = (
        f"noise SD in homogeneous tissue {before:.1f} -> {after:.1f} HU, "
        f"NPS mean frequency {pct('nps_mean_frequency_shift')}"
    )
    if q.get("edge_width_before_mm") is not None:
        text += f", edge width {pct('edge_width_growth')}"
    return text


def _batch(
    folder: Path,
    output: Path,
    settings: DenoiseSettings,
    shard: str | None,
    t0: float,
    deidentifier: Deidentifier | None,
) -> None:
    from medssl.denoise.batch import DenoiseJob, SkippedSeries, parse_shard, run_batch

    part = parse_shard(shard) if shard else None

    def report(state: str, job: DenoiseJob, record: JobRecord | SkippedSeries) -> None:
        if isinstance(record, SkippedSeries):
            out.print(f"{job.key}: skipped: {record.reason}")
        elif state == "skip":
            out.print(f"{job.key}: already done")
        else:
            out.print(
                f"{job.key}: noise {record.noise_hu_before:.0f} -> "
                f"{record.noise_hu_after:.0f} HU in {record.seconds:.0f} s"
            )

    result = run_batch(
        folder, output, settings, shard=part, progress=report, deidentify=deidentifier
    )
    label = f" (shard {shard})" if shard else ""
    seconds = time.perf_counter() - t0
    out.print(f"{len(result.done)} series{label} in {output}; done in {seconds:.1f} s")
    if result.skipped:
        err.print(
            f"[yellow]{len(result.skipped)} series skipped[/yellow] (reasons above and in "
            f"{escape(str(output / 'skipped'))}); exit code {SOME_SKIPPED}"
        )
        raise typer.Exit(SOME_SKIPPED)
