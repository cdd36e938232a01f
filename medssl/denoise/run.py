"""How a scan is denoised: the one library entry point of the denoise workflow.

:func:`denoise_file` reads a CT scan (a DICOM series, a DICOM file or a NIfTI/NRRD/MHA
image), checks it (finite values, CT in Hounsfield units), fits Filter2Noise to it (or applies
a saved model), applies it with the sigma-map edits of the settings, and writes the denoised
image with its sigma maps and the fitted model as one group (all of them or none). ``medssl
denoise`` (one scan), the batch runner (:func:`medssl.denoise.batch.run_batch`, one call per
series), the pipeline's ``denoise`` stage (through the batch runner) and ``medssl demo`` call
it; what it reports on the way goes to a :class:`DenoiseListener`.

Every output location is checked before anything is read or fitted: nothing is computed for
an output that cannot be written.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medssl.denoise.settings import DenoiseSettings
from medssl.errors import InputError
from medssl.io import (
    Deidentifier,
    Volume,
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

if TYPE_CHECKING:
    from medssl.denoise.filter2noise import FittedDenoiser

__all__ = [
    "DenoiseListener",
    "DenoiseOutcome",
    "check_runtime",
    "denoise_file",
    "require_ct",
]

#: ``progress(step, steps, loss)`` of a fit.
Progress = Callable[[int, int, float], None]

CT_HINT = "pass a CT scan (DICOM CT, or NIfTI/NRRD in HU)"


class DenoiseListener:
    """What a run reports on its way; the default says nothing (the command prints)."""

    def message(self, text: str) -> None:
        """A line of the run's account (input size, fit, noise model)."""

    def warning(self, text: str) -> None:
        """A reading warning about the input (never patient data)."""

    @contextlib.contextmanager
    def fitting(self, steps: int) -> Iterator[Progress | None]:
        """Wraps the fit; yields the fit's ``progress`` callback (or ``None``)."""
        yield None


@dataclass
class DenoiseOutcome:
    """What :func:`denoise_file` did.

    Attributes:
        output: The written image file or DICOM series folder.
        volume: The input as denoised (after ``replace_nonfinite``), HU, ``(Z, Y, X)``.
        result: The denoised volume, same grid, HU.
        sigma_maps: Per stage ``(Z, nd + 1, Y, X)``: spatial sigmas, then the range sigma (HU).
        denoiser: The fitted (or loaded) model.
        quality: :meth:`medssl.denoise.physics.QualityReport.to_dict` of input and output.
        sigma_map_files: The sigma-map files written (none without ``sigma_maps``).
        model_file: Where the model was saved, if it was.
        uid_settings: The settings the derived UIDs were made from.
        seconds: Wall time.
    """

    output: Path
    volume: Volume
    result: Volume
    sigma_maps: list[np.ndarray]
    denoiser: FittedDenoiser
    quality: dict[str, Any]
    sigma_map_files: list[Path] = field(default_factory=list)
    model_file: Path | None = None
    uid_settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def check_runtime(settings: DenoiseSettings) -> None:
    """Apply ``settings.threads`` and check that ``settings.device`` exists here.

    Raises:
        InputError: A CUDA device is asked for on a machine without one.
    """
    import torch

    if settings.threads is not None:
        torch.set_num_threads(settings.threads)
    if settings.device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(
            f"--device {settings.device}: no CUDA device here", hint="use --device cpu"
        )


def check_deidentifier(settings: DenoiseSettings, deidentifier: Deidentifier | None) -> None:
    """The settings must name the de-identifier's date rule (they enter UIDs and records).

    Raises:
        ValueError: ``settings.deidentify`` and ``deidentifier`` disagree (a caller's mistake).
    """
    dates = deidentifier.dates if deidentifier is not None else None
    if settings.deidentify != dates:
        raise ValueError(
            f"settings.deidentify is {settings.deidentify!r} but the de-identifier's dates are "
            f"{dates!r}: build the settings with deidentify={dates!r}"
        )


def require_ct(volume: Volume, *, path: str | Path | None = None, hint: str = CT_HINT) -> None:
    """Refuse an image that is not a CT in Hounsfield units.

    Raises:
        InputError: Modality other than CT/OT, or values that do not look like HU.
    """
    if volume.modality in ("CT", "OT") and volume.looks_like_ct():
        return
    summary = volume.summary()
    raise InputError(
        f"not a CT in Hounsfield units, which Filter2Noise denoises: this image (modality "
        f"{volume.modality}, values {summary['min']:.4g} to {summary['max']:.4g}) does not "
        "look like one",
        path=path,
        hint=hint,
    )


def _check_outputs(
    source: Path,
    output: Path,
    *,
    sigma_maps: Path | None,
    save_model: Path | None,
    model: Path | None,
    overwrite: bool,
) -> None:
    inputs = [source] + [p for p in (model,) if p is not None]
    for target in (output, sigma_maps, save_model):
        if target is not None:
            check_not_input(target, inputs)
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


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def denoise_file(
    source: str | Path,
    output: str | Path,
    settings: DenoiseSettings | None = None,
    *,
    series: str | None = None,
    sigma_maps: str | Path | None = None,
    save_model: str | Path | None = None,
    model: str | Path | None = None,
    overwrite: bool = False,
    deidentifier: Deidentifier | None = None,
    listener: DenoiseListener | None = None,
    nonfinite_hint: str | None = None,
    ct_hint: str = CT_HINT,
) -> DenoiseOutcome:
    """Denoise one CT scan with Filter2Noise and write the result.

    Args:
        source: A DICOM file or series folder, or a NIfTI/NRRD/MHA image, in HU.
        output: An image file (``.nii.gz``, ``.nrrd``, ``.mha``, ...) or a folder that receives
            a derived DICOM series (same patient and study as a DICOM source).
        settings: What to do (default: :class:`DenoiseSettings`'s defaults). The derived UIDs
            are made from :meth:`DenoiseSettings.output_settings` (and, with ``model``, the
            model file's content).
        series: For a folder of several DICOM series: which one (number or key).
        sigma_maps: Folder for the sigma maps (NIfTI in mm and HU, PNG overlays).
        save_model: Save the fitted model here (``.pt``).
        model: Apply this saved model instead of fitting.
        overwrite: Replace existing outputs (a folder only if medssl made it).
        deidentifier: Write DICOM outputs de-identified; ``settings.deidentify`` must name
            its date rule.
        listener: Receives the run's account (default: silent).
        nonfinite_hint: Hint of the error for an image with NaN or infinite values.
        ct_hint: Hint of the error for an image that is not a CT in HU.

    Returns:
        The outcome: output path, input and denoised volumes, sigma maps, model, quality.

    Raises:
        InputError: Bad settings for this output, an unusable output location, an input that
            cannot be read, is not finite (without ``replace_nonfinite``) or not a CT in HU, a
            bad ROI, or no CUDA device.
    """
    import torch

    from medssl.denoise.filter2noise import (
        SigmaEdit,
        apply_denoiser,
        fit_denoiser,
        load_denoiser,
        parse_roi,
        save_sigma_maps,
    )
    from medssl.denoise.physics import quality_report

    t0 = time.perf_counter()
    settings = settings or DenoiseSettings()
    listener = listener or DenoiseListener()
    source, output = Path(source), Path(output)
    sigma_maps = Path(sigma_maps) if sigma_maps is not None else None
    save_model = Path(save_model) if save_model is not None else None
    model = Path(model) if model is not None else None
    check_deidentifier(settings, deidentifier)
    check_runtime(settings)
    written_format = "dicom" if output_format(output) == "dicom" else "nifti"
    if settings.format != "auto" and settings.format != written_format:
        raise InputError(
            f"the settings ask for {settings.format} but the output path names "
            f"{'a DICOM folder' if written_format == 'dicom' else 'an image file'}",
            path=output,
        )
    _check_outputs(
        source, output, sigma_maps=sigma_maps, save_model=save_model, model=model,
        overwrite=overwrite,
    )  # fmt: skip

    volume = read_volume(source, series=series)
    if settings.replace_nonfinite is None:
        require_finite(volume, path=source, **({"hint": nonfinite_hint} if nonfinite_hint else {}))
    else:
        volume = replace_nonfinite(volume, settings.replace_nonfinite)
    for warning in volume.warnings:
        listener.warning(warning)
    require_ct(volume, path=source, hint=ct_hint)
    edit = None
    if settings.strength != 1.0 or settings.roi is not None:
        mask = parse_roi(settings.roi, volume) if settings.roi is not None else None
        roi = None if mask is None else torch.from_numpy(mask)
        edit = SigmaEdit(settings.strength, roi, settings.roi_factor)

    z, y, x = volume.shape
    listener.message(f"input: {x} x {y} x {z} voxels")
    uid_settings = settings.output_settings()
    if model is not None:
        denoiser = load_denoiser(model, device=settings.device)
        listener.message(f"model: {model} ({denoiser.config.name})")
        uid_settings["model"] = _file_digest(model)  # a saved model is an input, like the scan
    else:
        config = settings.f2n_config()
        with listener.fitting(config.steps_for(*volume.shape[1:])) as progress:
            denoiser = fit_denoiser(
                volume, config, seed=settings.seed, device=settings.device, progress=progress
            )
        seconds = denoiser.report.seconds if denoiser.report is not None else 0.0
        listener.message(
            f"fitted {config.name} ({config.model.stages} stages, "
            f"{denoiser.config.fit.steps} steps) in {seconds:.1f} s"
        )
    nm = denoiser.meta.get("noise_model")
    if nm and not nm["patches"]:
        listener.message(
            "noise model: no homogeneous tissue found; the pixel-pair estimate was used"
        )
    elif nm:
        listener.message(
            f"noise model (homogeneous tissue, {nm['patches']} patches): SD {nm['sd_hu']:.1f} HU, "
            f"correlation length {nm['correlation_length_mm']:.2f} mm, NPS mean frequency "
            f"{nm['nps_mean_frequency_per_mm']:.3f} /mm"
        )
    result, maps = apply_denoiser(denoiser, volume, edit=edit, device=settings.device)

    # the image, the sigma maps and the model appear together, or none of them does
    files: list[Path] = []
    with output_group():
        written = write_volume(
            result,
            output,
            overwrite=overwrite,
            settings=uid_settings,
            derivation=(
                f"Filter2Noise denoising by medssl ({denoiser.config.name}, "
                f"strength {settings.strength})"
            ),
            series_description=None,
            modality="CT",
            deidentify=deidentifier,
        )
        if sigma_maps is not None:
            files = save_sigma_maps(
                maps,
                volume,
                sigma_maps,
                guides=denoiser.model.guide_sigmas,
                kinds=denoiser.model.stage_kinds,
                overwrite=overwrite,
                noise_model=denoiser.meta.get("noise_model"),
            )
        if save_model is not None:
            denoiser.save(save_model)
    quality = quality_report(volume.array, result.array, volume.spacing[1:]).to_dict()
    return DenoiseOutcome(
        output=written,
        volume=volume,
        result=result,
        sigma_maps=maps,
        denoiser=denoiser,
        quality=quality,
        sigma_map_files=files,
        model_file=save_model,
        uid_settings=uid_settings,
        seconds=time.perf_counter() - t0,
    )
