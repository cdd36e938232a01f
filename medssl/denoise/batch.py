"""Batch denoising: a folder of many series in, one output folder per series out.

Jobs are the image series found under a folder at any nesting (DICOM series by
SeriesInstanceUID, and NIfTI/NRRD/MHA files), in a stable order. Each job writes
``OUTDIR/<job key>/`` where the key is a hash of the SeriesInstanceUID (of the file path
relative to the input folder for non-DICOM files), never patient data. A job is one series in,
one folder out: written into a temporary folder and renamed when complete, with ``job.json``
(a :class:`~medssl.denoise.record.JobRecord`) recording the settings and results. Each job goes
through :func:`medssl.denoise.run.denoise_file`. Re-running skips jobs whose record has the
same settings digest (:meth:`~medssl.denoise.settings.DenoiseSettings.digest`) and output
format, whichever command or pipeline wrote it, so a killed run resumes where it stopped;
``shard=(i, n)`` runs the jobs whose key hashes to ``i`` modulo ``n``, so ``n`` scheduler tasks
(a Slurm job array) split a folder with no coordination and together write exactly what one
run writes.

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

import numpy as np

from medssl.data.volumes import volume_files
from medssl.denoise.record import JOB_RECORD, PREVIEWS, JobRecord
from medssl.denoise.settings import DenoiseSettings
from medssl.errors import InputError, MedsslError
from medssl.io import (
    OWNER_MARKER,
    Deidentifier,
    atomic_dir,
    check_not_input,
    claim_folder,
    clean_stale_temps,
    find_series,
    is_dicom_file,
    list_files,
    write_json,
)

__all__ = [
    "BatchResult",
    "DenoiseJob",
    "SkippedSeries",
    "batch_input_root",
    "denoise_job",
    "find_jobs",
    "parse_shard",
    "run_batch",
    "shard_jobs",
]

log = logging.getLogger(__name__)
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
    for p in volume_files(list_files(root)):  # image files, without label maps and masks
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


def _done(out: Path, digest: str, fmt: str) -> JobRecord | None:
    """The record of a job finished with these output settings and format, else ``None``."""
    try:
        record = JobRecord.read(out)
    except (OSError, ValueError):
        return None
    return record if record.done_with(digest, fmt) else None


def _png(image01: np.ndarray, path: Path) -> None:
    """An 8-bit grey PNG of values in [0, 1]."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(image01, 0, 1) * 255).astype(np.uint8)).save(path)


def denoise_job(
    job: DenoiseJob,
    out: Path,
    settings: DenoiseSettings,
    *,
    deidentify: Deidentifier | None = None,
) -> JobRecord:
    """Denoise one series into ``out`` (atomically) through
    :func:`medssl.denoise.run.denoise_file`; returns its record."""
    from medssl.denoise.noise import noise_std_hu
    from medssl.denoise.run import denoise_file
    from medssl.transforms.windows import SOFT_TISSUE, window

    t0 = time.perf_counter()
    fmt = settings.resolved_format(job.series is not None)
    name = "denoised" if fmt == "dicom" else "denoised.nii.gz"
    # one job belongs to one shard: its folder is written by one process; the folder and
    # everything in it appear together (an older output with other settings is replaced)
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / OWNER_MARKER).write_text('{"made_by": "medssl", "kind": "batch-job"}\n')
        done = denoise_file(
            job.path,
            tmp / name,
            settings.model_copy(update={"format": fmt}),
            series=job.series,
            sigma_maps=tmp / "sigma_maps",
            deidentifier=deidentify,
            nonfinite_hint="fix the image, or denoise it alone with --replace-nonfinite",
            ct_hint="batch denoising takes CT series only; move other series out of the folder",
        )
        volume, result, maps = done.volume, done.result, done.sigma_maps
        mid = volume.shape[0] // 2
        sigma_r = maps[-1][mid, -1]
        span = max(float(sigma_r.max() - sigma_r.min()), 1e-6)
        images = {
            "noisy": window(volume.array[mid], SOFT_TISSUE),
            "denoised": window(result.array[mid], SOFT_TISSUE),
            "sigma_r": (sigma_r - sigma_r.min()) / span,
        }
        for preview, rel in PREVIEWS.items():
            _png(images[preview], tmp / rel)
        record = JobRecord(
            key=job.key,
            settings=settings.output_settings(),
            digest=settings.digest(),
            format=fmt,
            output=name,
            shape=list(volume.shape),
            noise_hu_before=round(noise_std_hu(volume.array), 2),
            noise_hu_after=round(noise_std_hu(result.array), 2),
            # noise SD, NPS and edge width in the same patches and edges of input and output
            quality=done.quality,
            seconds=round(time.perf_counter() - t0, 1),
        )
        (tmp / JOB_RECORD).write_text(json.dumps(record.to_dict(), indent=2) + "\n")
    return record


@dataclass(frozen=True)
class SkippedSeries:
    """A series the batch could not denoise (recorded in ``OUTDIR/skipped/<key>.json``):
    its job ``key``, its ``input`` relative to the batch's folder and the ``reason``."""

    key: str
    input: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"key": self.key, "input": self.input, "reason": self.reason}


@dataclass
class BatchResult:
    """What a batch run did: ``done`` holds the records of the finished series (run now or
    before), ``skipped`` the series that could not be denoised."""

    done: list[JobRecord] = field(default_factory=list)
    skipped: list[SkippedSeries] = field(default_factory=list)


def _skip(out_root: Path, job: DenoiseJob, root: Path, reason: str) -> SkippedSeries:
    where = Path(job.path)
    rel = where.relative_to(root).as_posix() if root in where.parents else where.name
    skipped = SkippedSeries(job.key, rel or ".", reason)
    write_json(out_root / SKIPPED_FOLDER / f"{job.key}.json", skipped.to_dict())
    return skipped


def run_batch(
    folder: str | Path,
    outdir: str | Path,
    settings: DenoiseSettings,
    *,
    shard: tuple[int, int] | None = None,
    progress: Callable[[str, DenoiseJob, JobRecord | SkippedSeries], None] | None = None,
    deidentify: Deidentifier | None = None,
) -> BatchResult:
    """Denoise every series of ``folder`` (or of one shard) into ``outdir/<key>/``.

    Args:
        folder: Input folder (read only), or one image file, or a DICOM file (its folder's
            series).
        outdir: Output folder: new, empty, or made by medssl; jobs already there with the
            same output settings (:meth:`DenoiseSettings.digest`) and output format are
            skipped, whichever command wrote them.
        settings: What to do; ``format`` chooses the output per series, ``device`` and
            ``threads`` where it runs.
        shard: ``(i, n)`` to run one of ``n`` disjoint parts.
        progress: Called with ``("skip"|"done", job, record)`` or ``("failed", job,
            skipped)``.
        deidentify: Write DICOM outputs under the PS3.15 Basic Profile (and name the job
            folders by salted hashes); ``settings.deidentify`` must name its date rule.

    Returns:
        The records of this shard's finished series (skipped ones read back from
        ``job.json``) and the series that could not be denoised, with the reason.

    Raises:
        InputError: The output overlaps the input, or is a folder medssl did not make; no
            CUDA device for ``settings.device``.
    """
    from medssl.denoise.run import check_deidentifier, check_runtime

    check_deidentifier(settings, deidentify)
    check_runtime(settings)
    root = batch_input_root(folder)
    check_not_input(outdir, [root])
    jobs = shard_jobs(find_jobs(folder, deidentify=deidentify), shard)
    out_root = claim_folder(outdir, "batch")
    for stale in clean_stale_temps(out_root):
        log.info("removed %s, left by a killed run", stale.name)
    result = BatchResult()
    digest = settings.digest()
    for job in jobs:
        out = out_root / job.key
        fmt = settings.resolved_format(job.series is not None)
        record = _done(out, digest, fmt)
        if record is not None:
            log.info("series %s: done before, skipped", job.key)
            if progress:
                progress("skip", job, record)
            result.done.append(record)
            continue
        log.info("series %s: denoising", job.key)
        try:
            record = denoise_job(job, out, settings, deidentify=deidentify)
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
            record.noise_hu_before,
            record.noise_hu_after,
            record.seconds,
        )
        if progress:
            progress("done", job, record)
        result.done.append(record)
    return result
