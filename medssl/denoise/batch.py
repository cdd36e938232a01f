"""Batch denoising: a folder of many series in, one output folder per series out.

Jobs are the image series found under a folder at any nesting (DICOM series by
SeriesInstanceUID, and NIfTI/NRRD/MHA files), in a stable order. Each job writes
``OUTDIR/<job key>/`` where the key is a hash of the SeriesInstanceUID (of the file path
relative to the input folder for non-DICOM files), never patient data. A job is one series in,
one folder out: written into a temporary folder and renamed when complete, with ``job.json``
recording the settings and results. Re-running skips jobs whose output exists with the same
settings, so a killed run resumes where it stopped; ``shard=(i, n)`` runs the jobs whose key
hashes to ``i`` modulo ``n``, so ``n`` scheduler tasks (a Slurm job array) split a folder with
no coordination and together write exactly what one run writes.

A series that cannot be denoised (not a CT, unreadable, a failing fit) does not stop the
batch: it is skipped, recorded in ``OUTDIR/skipped/<key>.json`` with the reason and listed in
the result; a later run retries it. The output folder is medssl's (a ``.medssl-owned``
marker): an existing non-empty folder without it is refused, and so is an output folder that
is, holds or lies inside the input. Temporary folders left by killed runs are removed by the
next run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medssl.data.volumes import DEFAULT_EXCLUDE, _excluded, _is_volume_file
from medssl.io import (
    OWNER_MARKER,
    Deidentifier,
    InputError,
    MedsslError,
    atomic_dir,
    check_not_input,
    claim_folder,
    clean_stale_temps,
    find_series,
    is_dicom_file,
    list_files,
    read_volume,
    require_finite,
    write_json,
    write_volume,
)

__all__ = [
    "BatchResult",
    "DenoiseJob",
    "batch_input_root",
    "find_jobs",
    "parse_shard",
    "run_batch",
    "shard_jobs",
]

log = logging.getLogger(__name__)
JOB_RECORD = "job.json"
SKIPPED_FOLDER = "skipped"


@dataclass(frozen=True)
class DenoiseJob:
    """One series to denoise: ``path`` (folder or file), ``series`` (DICOM key) and ``key``
    (the output folder's name: a hash of the SeriesInstanceUID or the relative file path)."""

    key: str
    path: str
    series: str | None


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def batch_input_root(folder: str | Path) -> Path:
    """What a batch input really reads: a DICOM file stands for its whole folder."""
    root = Path(folder)
    return root.parent if root.is_file() and is_dicom_file(root) else root


def find_jobs(folder: str | Path, *, deidentify: Deidentifier | None = None) -> list[DenoiseJob]:
    """The series under ``folder`` (any nesting), sorted by key.

    A DICOM file stands for the series of its folder; file links that lead out of the folder
    are not followed. With ``deidentify`` the keys hash the salted UID (or path), so an
    output folder's name cannot be linked to its source without the salt.

    Raises:
        InputError: ``folder`` is not a folder or holds no image series.
    """
    root = batch_input_root(folder)

    def key(kind: str, text: str) -> str:
        return _hash(kind + (deidentify.uid(text) if deidentify else text))

    if root.is_file():  # one image file
        return [DenoiseJob(key("file:", root.name), str(root), None)]
    if not root.is_dir():
        raise InputError("no such folder of series", path=root)
    jobs: dict[str, DenoiseJob] = {}
    series, _ = find_series(root)
    for s in series:
        parent = Path(os.path.commonpath([str(f.parent) for f in s.files]))
        k = key("uid:", s.uid)
        jobs[k] = DenoiseJob(k, str(parent), s.key)
    for p in list_files(root):
        if _is_volume_file(p) and not _excluded(p, DEFAULT_EXCLUDE):
            k = key("file:", p.relative_to(root).as_posix())
            jobs[k] = DenoiseJob(k, str(p), None)
    if not jobs:
        raise InputError(
            "no image series found", path=root, hint="give a folder holding DICOM series or images"
        )
    return [jobs[k] for k in sorted(jobs)]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``."""
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise InputError(f"--shard takes i/n (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise InputError(f"--shard i/n needs 0 <= i < n, got {text!r}")
    return i, n


def shard_jobs(jobs: list[DenoiseJob], shard: tuple[int, int] | None) -> list[DenoiseJob]:
    """The jobs of shard ``(i, n)``: those whose key is ``i`` modulo ``n`` (a job keeps its
    shard when other series are added to the folder)."""
    if shard is None:
        return list(jobs)
    i, n = shard
    return [j for j in jobs if int(j.key, 16) % n == i]


def _done(out: Path, settings: dict[str, Any]) -> bool:
    record = out / JOB_RECORD
    if not record.is_file():
        return False
    try:
        return json.loads(record.read_text()).get("settings") == settings
    except (OSError, json.JSONDecodeError):
        return False


def _png(image01: np.ndarray, path: Path) -> None:
    """An 8-bit grey PNG of values in [0, 1]."""
    from PIL import Image

    Image.fromarray((np.clip(image01, 0, 1) * 255).astype(np.uint8)).save(path)


def denoise_job(
    job: DenoiseJob,
    out: Path,
    settings: dict[str, Any],
    *,
    device: str = "cpu",
    threads: int | None = None,
    deidentify: Deidentifier | None = None,
) -> dict[str, Any]:
    """Denoise one series into ``out`` (atomically); returns its record."""
    import torch

    from medssl.denoise.filter2noise import apply_denoiser, fit_denoiser, preset, save_sigma_maps
    from medssl.denoise.metrics import SOFT_TISSUE_WINDOW, window
    from medssl.denoise.noise import noise_std_hu
    from medssl.denoise.physics import quality_report

    t0 = time.perf_counter()
    volume = read_volume(job.path, series=job.series)
    require_finite(volume, hint="fix the image, or denoise it alone with --replace-nonfinite")
    if volume.modality not in ("CT", "OT") or not volume.looks_like_ct():
        raise InputError(
            f"not a CT in Hounsfield units (modality {volume.modality})",
            hint="batch denoising takes CT series only; move other series out of the folder",
        )
    config = preset(settings["preset"])
    if settings.get("mode") == "3d":
        config = config.with_model(nd=3)
    if settings.get("steps"):
        config = config.with_fit(steps=int(settings["steps"]), scale_steps=False)
    if threads:
        torch.set_num_threads(threads)
    denoiser = fit_denoiser(volume, config, seed=int(settings["seed"]), device=device)
    result, maps = apply_denoiser(denoiser, volume, device=device)
    fmt = settings.get("format", "auto")
    dicom = fmt == "dicom" or (fmt == "auto" and job.series is not None)
    name = "denoised" if dicom else "denoised.nii.gz"
    # one job belongs to one shard: its folder is written by one process; the folder and
    # everything in it appear together (an older output with other settings is replaced)
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / OWNER_MARKER).write_text('{"made_by": "medssl", "kind": "batch-job"}\n')
        write_volume(
            result,
            tmp / name,
            settings={"method": "filter2noise", **settings},
            derivation=f"Filter2Noise denoising by medssl ({config.name})",
            modality="CT",
            deidentify=deidentify,
        )
        save_sigma_maps(
            maps,
            volume,
            tmp / "sigma_maps",
            guides=denoiser.model.guide_sigmas,
            noise_model=denoiser.meta.get("noise_model"),
        )
        mid = volume.shape[0] // 2
        previews = tmp / "preview"
        previews.mkdir()
        _png(window(volume.array[mid], SOFT_TISSUE_WINDOW), previews / "noisy.png")
        _png(window(result.array[mid], SOFT_TISSUE_WINDOW), previews / "denoised.png")
        sigma_r = maps[-1][mid, -1]
        span = max(float(sigma_r.max() - sigma_r.min()), 1e-6)
        _png((sigma_r - sigma_r.min()) / span, previews / "sigma_r.png")
        record = {
            "key": job.key,
            "settings": settings,
            "output": name,
            "shape": list(volume.shape),
            "noise_hu_before": round(noise_std_hu(volume.array), 2),
            "noise_hu_after": round(noise_std_hu(result.array), 2),
            # noise SD, NPS and edge width in the same patches and edges of input and output
            "quality": quality_report(
                volume.array, result.array, (volume.spacing[1], volume.spacing[2])
            ).to_dict(),
            "seconds": round(time.perf_counter() - t0, 1),
        }
        (tmp / JOB_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    return record


@dataclass
class BatchResult:
    """What a batch run did: ``done`` holds the records of the finished series (run now or
    before), ``skipped`` one ``{"key", "input", "reason"}`` per series that was skipped."""

    done: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)


def _skip(out_root: Path, job: DenoiseJob, root: Path, reason: str) -> dict[str, Any]:
    where = Path(job.path)
    rel = where.relative_to(root).as_posix() if root in where.parents else where.name
    record = {"key": job.key, "input": rel or ".", "reason": reason}
    write_json(out_root / SKIPPED_FOLDER / f"{job.key}.json", record)
    return record


def run_batch(
    folder: str | Path,
    outdir: str | Path,
    settings: dict[str, Any],
    *,
    shard: tuple[int, int] | None = None,
    device: str = "cpu",
    threads: int | None = None,
    progress: Callable[[str, DenoiseJob, dict | None], None] | None = None,
    deidentify: Deidentifier | None = None,
) -> BatchResult:
    """Denoise every series of ``folder`` (or of one shard) into ``outdir/<key>/``.

    Args:
        folder: Input folder (read only), or one image file, or a DICOM file (its folder's
            series).
        outdir: Output folder: new, empty, or made by medssl; jobs already there with the
            same settings are skipped.
        settings: ``preset``, ``seed``, ``mode``, ``steps`` (they enter the derived UIDs and
            ``job.json``).
        shard: ``(i, n)`` to run one of ``n`` disjoint parts.
        device: Torch device.
        threads: CPU threads per process.
        progress: Called with ``("skip"|"done"|"failed", job, record)``.
        deidentify: Write DICOM outputs under the PS3.15 Basic Profile (and name the job
            folders by salted hashes); ``settings`` should say so (``"deidentify"``).

    Returns:
        The records of this shard's finished series (skipped ones read back from
        ``job.json``) and of the series that could not be denoised, with the reason.

    Raises:
        InputError: The output overlaps the input, or is a folder medssl did not make.
    """
    root = batch_input_root(folder)
    check_not_input(outdir, [root])
    jobs = shard_jobs(find_jobs(folder, deidentify=deidentify), shard)
    out_root = claim_folder(outdir, "batch")
    for stale in clean_stale_temps(out_root):
        log.info("removed %s, left by a killed run", stale.name)
    result = BatchResult()
    for job in jobs:
        out = out_root / job.key
        if _done(out, settings):
            record = json.loads((out / JOB_RECORD).read_text())
            log.info("series %s: done before, skipped", job.key)
            if progress:
                progress("skip", job, record)
            result.done.append(record)
            continue
        log.info("series %s: denoising", job.key)
        try:
            record = denoise_job(
                job, out, settings, device=device, threads=threads, deidentify=deidentify
            )
        except (MedsslError, RuntimeError, ValueError, OSError, MemoryError) as exc:
            reason = exc.message if isinstance(exc, MedsslError) else type(exc).__name__
            failed = _skip(out_root, job, root, reason)
            log.warning("series %s: skipped (%s)", job.key, reason)
            if progress:
                progress("failed", job, failed)
            result.skipped.append(failed)
            continue
        (out_root / SKIPPED_FOLDER / f"{job.key}.json").unlink(missing_ok=True)
        log.info(
            "series %s: noise %.1f -> %.1f HU in %.0f s",
            job.key,
            record["noise_hu_before"],
            record["noise_hu_after"],
            record["seconds"],
        )
        if progress:
            progress("done", job, record)
        result.done.append(record)
    return result
