"""`medssl denoise INPUT -o OUTPUT`: Filter2Noise on one CT scan."""

from __future__ import annotations

import time
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
from medssl.io import (
    Deidentifier,
    InputError,
    check_not_input,
    check_writable,
    is_owned,
    output_format,
    output_group,
    prepare_output,
    read_volume,
    replace_nonfinite,
    require_finite,
    write_volume,
)

__all__ = ["SOME_SKIPPED", "denoise"]

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
        1.0, "--strength", help="Multiply every sigma map by this (0 returns the input)."
    ),
    roi: str | None = typer.Option(
        None,
        "--roi",
        help="Region edited by --roi-factor: a mask image on the scan's grid or voxel ranges "
        "'z0:z1,y0:y1,x0:x1'.",
    ),
    roi_factor: float = typer.Option(
        2.0, "--roi-factor", help="Factor on the sigmas inside --roi (on top of --strength)."
    ),
    sigma_maps: Path | None = typer.Option(
        None, "--sigma-maps", help="Folder for the sigma maps (NIfTI, in mm and HU) and PNGs."
    ),
    mode: str = typer.Option(
        "2d",
        "--mode",
        help="2d: fit on a sample of slices, filter in-plane; 3d: sigma_z too, reaching no "
        "further in mm than the in-plane sigmas (for thin slices; ~25x slower on CPU).",
    ),
    preset_name: str = typer.Option(
        "medssl", "--preset", help="Settings: medssl (default), published, global."
    ),
    steps: int | None = typer.Option(
        None,
        "--steps",
        help="Fitting steps (default: the preset's, scaled down for slices under 512²).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed (weights and crops): same seed, same output."),
    device: str = typer.Option("cpu", "--device", help="Torch device, e.g. cpu or cuda."),
    threads: int | None = typer.Option(
        None,
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
        None,
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
    import torch

    from medssl.denoise.filter2noise import (
        SigmaEdit,
        apply_denoiser,
        fit_denoiser,
        load_denoiser,
        parse_roi,
        preset,
        save_sigma_maps,
    )
    from medssl.denoise.physics import quality_report

    t0 = time.perf_counter()
    deidentifier = deidentifier_from_options(deidentify, salt_file, deid_dates)
    if mode not in ("2d", "3d"):
        raise InputError(f"--mode must be 2d or 3d, got {mode!r}")
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
        _batch(
            batch, output, preset_name, mode, steps, seed, device, threads, shard, t0, deidentifier
        )
        return
    if src is None:
        raise InputError("give an input scan, or --batch FOLDER", hint="see medssl denoise --help")
    if shard is not None:
        raise InputError("--shard applies to --batch only")
    if strength < 0 or roi_factor < 0:
        raise InputError("--strength and --roi-factor must be >= 0")
    try:
        config = preset(preset_name)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if mode == "3d":
        config = config.with_model(nd=3)
    if steps is not None:
        if steps < 1:
            raise InputError("--steps must be >= 1")
        config = config.with_fit(steps=steps, scale_steps=False)
    if threads is not None:
        if threads < 1:
            raise InputError("--threads must be >= 1")
        torch.set_num_threads(threads)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: no CUDA device here", hint="use --device cpu")

    inputs = [src] + [p for p in (model_path,) if p is not None]
    for target in (output, sigma_maps, save_model):
        if target is not None:
            check_not_input(target, inputs)
    # every output location is checked before any work: nothing is fitted for an output
    # that cannot be written
    prepare_output(output, overwrite=overwrite)
    if save_model is not None:
        prepare_output(save_model, overwrite=overwrite)
    if sigma_maps is not None:
        occupied = sigma_maps.exists() and (not sigma_maps.is_dir() or any(sigma_maps.iterdir()))
        if occupied and not (overwrite and is_owned(sigma_maps)):
            why = " medssl did not make it, so --overwrite does not replace it" if overwrite else ""
            raise InputError(
                f"the sigma-map folder exists and is not empty;{why}".rstrip(";"),
                path=sigma_maps,
                hint="choose a new folder" + ("" if overwrite else ", or pass --overwrite"),
            )
        check_writable(sigma_maps)

    volume = read_volume(src, series=series)
    if replace_nonfinite_value is None:
        require_finite(volume, path=src)
    else:
        volume = replace_nonfinite(volume, replace_nonfinite_value)
    for warning in volume.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    if volume.modality not in ("CT", "OT") or not volume.looks_like_ct():
        lo, hi = volume.summary()["min"], volume.summary()["max"]
        raise InputError(
            f"Filter2Noise denoises CT in Hounsfield units; this image (modality "
            f"{volume.modality}, values {lo:.4g} to {hi:.4g}) does not look like it",
            path=src,
            hint="pass a CT scan (DICOM CT, or NIfTI/NRRD in HU)",
        )
    edit = None
    if strength != 1.0 or roi is not None:
        mask = parse_roi(roi, volume) if roi is not None else None
        edit = SigmaEdit(strength, None if mask is None else torch.from_numpy(mask), roi_factor)

    z, y, x = volume.shape
    out.print(f"input: {x} x {y} x {z} voxels")
    if model_path is not None:
        denoiser = load_denoiser(model_path, device=device)
        out.print(f"model: {model_path} ({denoiser.config.name})")
    else:
        with Progress(
            TextColumn("fitting"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.4f}"),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        ) as bar:
            task = bar.add_task("fit", total=config.steps_for(*volume.shape[1:]), loss=0.0)
            denoiser = fit_denoiser(
                volume,
                config,
                seed=seed,
                device=device,
                progress=lambda s, n, loss: bar.update(task, completed=s, loss=loss),
            )
        out.print(
            f"fitted {config.name} ({config.model.stages} stages, "
            f"{denoiser.config.fit.steps} steps) in "
            f"{denoiser.report.seconds:.1f} s"  # type: ignore[union-attr]
        )
    nm = denoiser.meta.get("noise_model")
    if nm and not nm["patches"]:
        out.print("noise model: no homogeneous tissue found; the pixel-pair estimate was used")
    elif nm:
        out.print(
            f"noise model (homogeneous tissue, {nm['patches']} patches): SD {nm['sd_hu']:.1f} HU, "
            f"correlation length {nm['correlation_length_mm']:.2f} mm, NPS mean frequency "
            f"{nm['nps_mean_frequency_per_mm']:.3f} /mm"
        )
    result, maps = apply_denoiser(denoiser, volume, edit=edit, device=device)

    settings = {
        "method": "filter2noise",
        "preset": denoiser.config.name,
        "mode": mode,
        "seed": seed,
        "steps": denoiser.config.fit.steps,
        "strength": strength,
        "roi": roi,
        "roi_factor": roi_factor if roi else None,
        "deidentify": deidentifier.dates if deidentifier else None,
    }
    # the image, the sigma maps and the model appear together, or none of them does
    with output_group():
        written = write_volume(
            result,
            output,
            overwrite=overwrite,
            settings=settings,
            derivation=(
                f"Filter2Noise denoising by medssl ({denoiser.config.name}, strength {strength})"
            ),
            series_description=None,
            deidentify=deidentifier,
        )
        files = []
        if sigma_maps is not None:
            files = save_sigma_maps(
                maps,
                volume,
                sigma_maps,
                guides=denoiser.model.guide_sigmas,
                overwrite=overwrite,
                noise_model=denoiser.meta.get("noise_model"),
            )
        if save_model is not None:
            denoiser.save(save_model)
    kind = "DICOM series" if output_format(written) == "dicom" else "image"
    out.print(f"wrote {kind} {written}")
    quality = quality_report(volume.array, result.array, volume.spacing[1:]).to_dict()
    out.print(_quality_line(quality))
    if sigma_maps is not None:
        out.print(f"wrote {len(files)} sigma-map files to {sigma_maps}")
    if save_model is not None:
        out.print(f"saved the model to {save_model}")
    out.print(f"done in {time.perf_counter() - t0:.1f} s")


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
    preset_name: str,
    mode: str,
    steps: int | None,
    seed: int,
    device: str,
    threads: int | None,
    shard: str | None,
    t0: float,
    deidentifier: Deidentifier | None,
) -> None:
    from medssl.denoise.batch import DenoiseJob, parse_shard, run_batch
    from medssl.denoise.filter2noise import preset

    try:
        preset(preset_name)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    part = parse_shard(shard) if shard else None
    settings = {"preset": preset_name, "mode": mode, "seed": seed, "steps": steps}
    if deidentifier is not None:
        settings["deidentify"] = deidentifier.dates

    def report(state: str, job: DenoiseJob, record: dict | None) -> None:
        assert record is not None
        if state == "skip":
            out.print(f"{job.key}: already done")
        elif state == "failed":
            out.print(f"{job.key}: skipped: {record['reason']}")
        else:
            out.print(
                f"{job.key}: noise {record['noise_hu_before']:.0f} -> "
                f"{record['noise_hu_after']:.0f} HU in {record['seconds']:.0f} s"
            )

    result = run_batch(
        folder,
        output,
        settings,
        shard=part,
        device=device,
        threads=threads,
        progress=report,
        deidentify=deidentifier,
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
