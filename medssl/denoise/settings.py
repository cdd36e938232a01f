"""What a Filter2Noise denoising run is asked to do: one typed, frozen settings model.

:class:`DenoiseSettings` is filled by ``medssl denoise`` (its options), embedded by the
pipeline's ``denoise`` stage (its YAML keys), passed on by the batch runner and used with its
defaults by ``medssl demo``; :func:`medssl.denoise.run.denoise_file` and
:func:`medssl.denoise.batch.run_batch` take it.

The settings digest
-------------------
:meth:`DenoiseSettings.output_settings` is the one list of what changes the denoised image
(:data:`OUTPUT_FIELDS`); it enters the derived DICOM UIDs (through
:func:`medssl.io.write_volume`'s ``settings``) and the batch's job records, and
:meth:`DenoiseSettings.digest` hashes it. A series denoised with the same output settings gets
the same derived SeriesInstanceUID whether it went through ``medssl denoise`` (one series),
``medssl denoise --batch`` or a pipeline, and a batch or pipeline skips a job finished by the
other.

Left out of the digest, on purpose:

* ``format``: the same pixels written as DICOM are the same series whether the run asked for
  ``dicom`` or ``auto``. The job record keeps the *resolved* format (``dicom`` or ``nifti``)
  and a job counts as done only when the digest and the resolved format both match, so a
  folder denoised to NIfTI is not taken for one denoised to DICOM.
* ``device`` and ``threads``: where and how fast the run computes (their effect on the last
  float bit aside); shards run on different machines write one result.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from medssl.errors import InputError
from medssl.io import canonical_settings

if TYPE_CHECKING:
    from medssl.denoise.filter2noise import F2NConfig

__all__ = [
    "OUTPUT_FIELDS",
    "PRESET_NAMES",
    "DenoiseSettings",
    "is_roi_box",
    "parse_settings",
    "roi_identity",
]

_BOX = re.compile(r"^\s*(-?\d*:-?\d*)\s*(,\s*-?\d*:-?\d*\s*){2}$")


def is_roi_box(spec: str) -> bool:
    """Whether a ``roi`` is a box of voxel ranges ``"z0:z1,y0:y1,x0:x1"`` (a file of that name
    wins)."""
    return bool(_BOX.match(spec)) and not Path(spec).exists()


def roi_identity(spec: str) -> str:
    """What a ``roi`` contributes to the output settings: a box as written; a mask file or
    folder by its content (``"mask sha256:<16 hex>"``, over the files' relative names and
    bytes), so the same mask under another path gives the same UIDs, another mask under the
    same path different ones, and no path enters a record. A path that does not exist (the
    run refuses it) stays as written."""
    path = Path(spec)
    if not path.exists():  # a box, or a missing file
        return spec
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(f.relative_to(path).as_posix().encode() if f != path else b"")
        h.update(b"\0")
        with f.open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return f"mask sha256:{h.hexdigest()[:16]}"


#: The presets of :func:`medssl.denoise.filter2noise.preset` (kept here so that validating
#: settings needs no torch; a test checks the two agree).
PRESET_NAMES = ("medssl", "bilateral", "published", "global", "nlm")
PresetName = Literal["medssl", "bilateral", "published", "global", "nlm"]

#: Bumped when a preset's output changes for the same settings, so that batch records and
#: derived UIDs made with the old model are not taken for the new one's (medssl in 2D: 2 = the
#: non-local means last stage, 4 December 2026; before it the ``bilateral`` preset's model).
PRESET_REVISIONS = {("medssl", "2d"): 2}

#: The settings that change the denoised image: the derived UIDs and the job records use
#: these (and the method's name), nothing else.
OUTPUT_FIELDS = (
    "preset",
    "mode",
    "seed",
    "steps",
    "strength",
    "roi",
    "roi_factor",
    "replace_nonfinite",
    "deidentify",
)


class DenoiseSettings(BaseModel):
    """Settings of a Filter2Noise run (frozen; the defaults are ``medssl denoise``'s).

    Attributes:
        preset: ``medssl`` (default: a non-local means last stage in 2D, bilateral in 3D),
            ``bilateral`` (the default before 4 December 2026: bilateral in 2D as well),
            ``published``, ``global`` or ``nlm`` (the non-local means last stage asked for
            explicitly; 2D only).
        mode: ``2d`` (fit on a sample of slices, filter in-plane) or ``3d`` (sigma_z too).
        seed: Seed of the weights and the crops: same seed, same output.
        steps: Fitting steps (``None``: the preset's, scaled down for slices under 512²).
        format: Batch output per series: ``auto`` (DICOM for a DICOM series, NIfTI for an
            image file), ``dicom`` or ``nifti``. A single-series run writes what its output
            path names (``auto``, or the format that path names).
        threads: CPU threads (``None``: torch's default).
        device: Torch device, e.g. ``cpu`` or ``cuda``.
        strength: Factor on every sigma map (0 returns the input).
        roi: Region edited by ``roi_factor``: a mask image on the scan's grid or voxel ranges
            ``"z0:z1,y0:y1,x0:x1"``.
        roi_factor: Factor on the sigmas inside ``roi`` (on top of ``strength``).
        replace_nonfinite: Replace NaN and infinite voxels with this HU value (``None``: an
            image holding any is refused).
        deidentify: The date rule (``shift`` or ``remove``) when DICOM outputs are written
            de-identified, else ``None``; the salt is never part of the settings.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # the first seven are the pipeline stage's keys, in the order its record hashes them
    preset: PresetName = "medssl"
    mode: Literal["2d", "3d"] = "2d"
    seed: int = 0
    steps: int | None = Field(None, ge=1)
    format: Literal["dicom", "nifti", "auto"] = "auto"
    threads: int | None = Field(None, ge=1)
    device: str = "cpu"
    strength: float = Field(1.0, ge=0)
    roi: str | None = None
    roi_factor: float = Field(2.0, ge=0)
    replace_nonfinite: float | None = None
    deidentify: Literal["shift", "remove"] | None = None

    @model_validator(mode="after")
    def _nlm_is_2d(self) -> DenoiseSettings:
        if self.preset == "nlm" and self.mode == "3d":
            raise ValueError("preset nlm is 2D only (its non-local means stage): use mode 2d")
        return self

    METHOD: ClassVar[str] = "filter2noise"

    def output_settings(self) -> dict[str, Any]:
        """The settings that change the output (:data:`OUTPUT_FIELDS`) and the method's name:
        what the derived UIDs and the job records are made from. ``roi_factor`` counts only
        with a ``roi``; a mask file counts by its content (:func:`roi_identity`)."""
        values = {name: getattr(self, name) for name in OUTPUT_FIELDS}
        revision = PRESET_REVISIONS.get((self.preset, self.mode))
        if revision is not None:
            values["preset_revision"] = revision
        if self.roi is None:
            values["roi_factor"] = None
        else:
            values["roi"] = roi_identity(self.roi)
        return {"method": self.METHOD, **values}

    def digest(self) -> str:
        """16 hex digits of SHA-256 over :meth:`output_settings` (canonical JSON)."""
        text = canonical_settings(self.output_settings())
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def resolved_format(self, dicom_source: bool) -> Literal["dicom", "nifti"]:
        """The batch output format for a DICOM series (``dicom_source``) or an image file."""
        if self.format == "auto":
            return "dicom" if dicom_source else "nifti"
        return self.format

    def f2n_config(self) -> F2NConfig:
        """The Filter2Noise configuration: the preset, in 3D for ``mode="3d"``, with the
        ``steps`` override (not scaled by the slice size)."""
        from medssl.denoise.filter2noise import preset

        config = preset(self.preset)
        if self.mode == "3d":
            config = config.with_model(nd=3)
        if self.steps is not None:
            config = config.with_fit(steps=self.steps, scale_steps=False)
        return config

    @classmethod
    def from_record(cls, settings: dict[str, Any]) -> DenoiseSettings | None:
        """The settings a job record's ``settings`` describe (``None`` if they do not
        validate); keys that are not settings (``method``) are ignored."""
        known = {k: v for k, v in settings.items() if k in cls.model_fields}
        try:
            return cls.model_validate(known)
        except ValidationError:
            return None


def _message(error: dict[str, Any]) -> str:
    """A short message for one pydantic error of :func:`parse_settings`."""
    ctx = error.get("ctx") or {}
    if error["type"] == "greater_than_equal":
        return f"must be >= {ctx.get('ge')}"
    if error["type"] == "literal_error":
        return f"must be one of {ctx.get('expected')}, got {error.get('input')!r}"
    return str(error["msg"])


def parse_settings(**values: Any) -> DenoiseSettings:
    """:class:`DenoiseSettings` from command-line values, with the problems named by option.

    Raises:
        InputError: Every invalid value, e.g. ``--mode must be 2d or 3d, got '4d'``.
    """
    try:
        return DenoiseSettings(**values)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            if not e["loc"]:  # a rule across settings: its message names the options
                problems.append(str(e["msg"]).removeprefix("Value error, "))
                continue
            name = str(e["loc"][0])
            option = "--" + name.replace("_", "-")
            if name == "preset" and e["type"] == "literal_error":
                problems.append(
                    f"unknown preset {e.get('input')!r}; choose one of {', '.join(PRESET_NAMES)}"
                )
            elif name == "mode" and e["type"] == "literal_error":
                problems.append(f"{option} must be 2d or 3d, got {e.get('input')!r}")
            else:
                problems.append(f"{option} {_message(e)}")
        raise InputError("; ".join(problems)) from None
