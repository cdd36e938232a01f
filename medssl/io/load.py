"""Format-independent entry points: :func:`read_volume` and :func:`write_volume`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medssl.errors import InputError
from medssl.io.atomic import prepare_output
from medssl.io.deidentify import Deidentifier
from medssl.io.dicom_read import is_dicom_file, read_dicom
from medssl.io.dicom_write import write_dicom_series
from medssl.io.itk_io import ITK_SUFFIXES, itk_suffix, read_itk, write_itk
from medssl.io.volume import Volume

__all__ = ["Format", "detect_format", "output_format", "read_volume", "write_volume"]

Format = Literal["dicom", "itk"]


def detect_format(path: str | Path) -> Format:
    """Which reader handles ``path``: a folder or a DICOM file → ``"dicom"``; NIfTI, NRRD,
    MHA/MHD → ``"itk"``.

    Raises:
        InputError: Missing path or unknown file type.
    """
    p = Path(path)
    if not p.exists():
        raise InputError("no such file or folder", path=p, hint="check the path")
    if p.is_dir():
        return "dicom"
    if itk_suffix(p) is not None:
        return "itk"
    if (
        is_dicom_file(p)
        or p.suffix.lower() in (".dcm", ".dicom", ".ima", "")
        or (p.name.upper() == "DICOMDIR")
    ):
        return "dicom"
    if p.suffix.lower() in (".gz", ".bz2", ".xz", ".zip"):
        raise InputError(
            f"a compressed archive ({p.suffix}); medssl reads .nii.gz but not other compressed "
            "files",
            path=p,
            hint="decompress it first (e.g. gunzip) and pass the extracted file",
        )
    raise InputError(
        f"unknown file type {p.suffix!r}",
        path=p,
        hint=f"medssl reads DICOM files or folders and {', '.join(ITK_SUFFIXES)} images",
    )


def read_volume(path: str | Path, *, series: str | None = None) -> Volume:
    """Read any supported image as a :class:`Volume` (CT in HU, axes ``(z, y, x)``, LPS).

    Args:
        path: DICOM file or series folder, or a NIfTI/NRRD/MHA/MHD file.
        series: For a folder holding several DICOM series, which one (see
            :func:`medssl.io.read_dicom`).
    """
    fmt = detect_format(path)
    if fmt == "dicom":
        return read_dicom(path, series=series)
    if series is not None:
        raise InputError(
            "--series applies to DICOM folders only", path=path, hint="drop the --series option"
        )
    return read_itk(path)


def output_format(path: str | Path) -> Format:
    """The writer chosen by the output path: a known image ending → ``"itk"``, anything else
    (a folder name) → a DICOM series."""
    return "itk" if itk_suffix(path) is not None else "dicom"


def write_volume(
    volume: Volume,
    path: str | Path,
    *,
    overwrite: bool = False,
    dtype: type | np.dtype | None = None,
    settings: Mapping[str, Any] | None = None,
    derivation: str = "converted by medssl",
    series_description: str | None = None,
    modality: str | None = None,
    deidentify: Deidentifier | None = None,
) -> Path:
    """Write ``volume`` in the format the path names, atomically.

    ``*.nii[.gz]``, ``*.nrrd``, ``*.mha``/``*.mhd`` are written through SimpleITK (``dtype``
    chooses the voxel type); any other path is a folder that receives a derived DICOM series
    (``settings``, ``derivation``, ``series_description``, ``modality`` and ``deidentify``
    apply; see :func:`medssl.io.write_dicom_series`).

    NIfTI, NRRD and MetaImage files carry no text from the source (nothing of
    ``volume.meta`` is written, only the voxels and the geometry), so they need no
    de-identification: ``deidentify`` changes nothing for them.

    Returns:
        The written file or folder.
    """
    out = prepare_output(path, overwrite=overwrite)
    if output_format(out) == "itk":
        return write_itk(volume, out, dtype=dtype)
    if out.exists() and not out.is_dir():
        raise InputError(
            "a DICOM series is written to a folder, but this path is a file",
            path=out,
            hint="name a folder, or use an image ending such as .nii.gz",
        )
    write_dicom_series(
        volume,
        out,
        settings=settings,
        derivation=derivation,
        series_description=series_description,
        modality=modality,
        overwrite=overwrite,
        deidentify=deidentify,
    )
    return out
