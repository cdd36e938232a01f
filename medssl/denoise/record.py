"""The batch job record (``OUTDIR/<key>/job.json``): a typed, versioned contract between the
batch writer (:mod:`medssl.denoise.batch`) and its readers (the batch's resume check, the
pipeline, :mod:`medssl.report`).

Version 2 (this one) adds ``version``, ``digest`` (:meth:`DenoiseSettings.digest`),
``format`` (the resolved output format) and ``previews`` (preview name -> file). Version 1
records (no ``version`` key; medssl before the settings model) are read too: their digest is
recomputed from their ``settings``, their format from the output's name and their previews
are the fixed names they were written under.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["JOB_RECORD", "PREVIEWS", "RECORD_VERSION", "JobRecord"]

#: The record's file name in a job folder.
JOB_RECORD = "job.json"
#: The record format written now.
RECORD_VERSION = 2
#: The previews of a job (name -> file in the job folder), middle slice: the input and the
#: denoised image (soft-tissue window) and the last stage's range sigma.
PREVIEWS = {
    "noisy": "preview/noisy.png",
    "denoised": "preview/denoised.png",
    "sigma_r": "preview/sigma_r.png",
}


@dataclass(frozen=True)
class JobRecord:
    """What one batch job did.

    Attributes:
        key: The job's key (its folder's name: a hash, never patient data).
        settings: :meth:`DenoiseSettings.output_settings` of the run.
        digest: :meth:`DenoiseSettings.digest` of the run (``None``: unknown).
        format: The written format, ``dicom`` or ``nifti`` (``None``: unknown).
        output: The output's name in the job folder (``denoised`` or ``denoised.nii.gz``).
        shape: The volume's ``(Z, Y, X)``.
        noise_hu_before: Pixel-pair noise estimate of the input (HU).
        noise_hu_after: The same of the output (HU).
        quality: :meth:`medssl.denoise.physics.QualityReport.to_dict` (``None`` in records
            written before it existed).
        seconds: Wall time of the job.
        previews: Preview name -> file relative to the job folder.
        version: The record format (:data:`RECORD_VERSION`).
    """

    key: str
    settings: dict[str, Any] = field(default_factory=dict)
    digest: str | None = None
    format: Literal["dicom", "nifti"] | None = None
    output: str = ""
    shape: list[int] = field(default_factory=list)
    noise_hu_before: float = float("nan")
    noise_hu_after: float = float("nan")
    quality: dict[str, Any] | None = None
    seconds: float = float("nan")
    previews: dict[str, str] = field(default_factory=lambda: dict(PREVIEWS))
    version: int = RECORD_VERSION

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready record."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        """Read a record of any version (unknown keys are ignored)."""
        from medssl.denoise.settings import DenoiseSettings

        version = int(data.get("version", 1))
        settings = data.get("settings") if isinstance(data.get("settings"), dict) else {}
        digest, fmt = data.get("digest"), data.get("format")
        if version < 2:
            known = DenoiseSettings.from_record(settings) if settings else None
            digest = known.digest() if known is not None else None
            output = data.get("output")
            fmt = {"denoised": "dicom", "denoised.nii.gz": "nifti"}.get(output) if output else None
        quality = data.get("quality")

        def number(key: str) -> float:
            value = data.get(key)
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            return float(value) if ok else float("nan")

        return cls(
            key=str(data.get("key", "")),
            settings=dict(settings),
            digest=digest,
            format=fmt if fmt in ("dicom", "nifti") else None,
            output=str(data.get("output", "")),
            shape=[int(v) for v in data.get("shape") or []],
            noise_hu_before=number("noise_hu_before"),
            noise_hu_after=number("noise_hu_after"),
            quality=quality if isinstance(quality, dict) else None,
            seconds=number("seconds"),
            previews=dict(data.get("previews") or PREVIEWS),
            version=version,
        )

    @classmethod
    def read(cls, job_dir: str | Path) -> JobRecord:
        """The record of a job folder.

        Raises:
            OSError: No readable record.
            ValueError: The record is not JSON (``json.JSONDecodeError``) or not a mapping.
        """
        data = json.loads((Path(job_dir) / JOB_RECORD).read_text())
        if not isinstance(data, dict):
            raise ValueError("a job record is a JSON mapping")
        return cls.from_dict(data)

    def done_with(self, digest: str, fmt: str) -> bool:
        """Whether this job finished with these output settings and this output format."""
        return self.digest == digest and self.format == fmt

    def preview(self, job_dir: str | Path, name: str) -> Path | None:
        """The file of preview ``name`` in ``job_dir``, if the record has it and it exists."""
        rel = self.previews.get(name)
        if not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
            return None  # a record names files inside its own folder only
        path = Path(job_dir) / rel
        return path if path.is_file() else None
