"""`medssl convert IN OUT`: any supported format to any, including a derived DICOM series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer
from rich.markup import escape

from medssl.cli._console import err, out
from medssl.cli._deid import (
    DATES_OPTION,
    DEIDENTIFY_OPTION,
    SALT_OPTION,
    deidentifier_from_options,
)
from medssl.errors import InputError
from medssl.io import check_not_input, output_format, read_volume, write_volume

__all__ = ["convert"]

_DTYPES = {"float32": np.float32, "int16": np.int16, "uint8": np.uint8, "uint16": np.uint16}


def convert(
    src: Path = typer.Argument(..., help="Input: DICOM file or folder, NIfTI, NRRD, MHA/MHD."),
    dst: Path = typer.Argument(
        ...,
        help="Output: a .nii/.nii.gz/.nrrd/.mha/.mhd file, or a folder for a DICOM series.",
    ),
    series: str | None = typer.Option(
        None, "--series", "-s", help="For a folder with several series: which one (N or KEY)."
    ),
    modality: str | None = typer.Option(
        None,
        "--modality",
        help="Modality of a DICOM series written from a non-DICOM image (default CT; the "
        "values must then look like HU).",
    ),
    dtype: str | None = typer.Option(
        None, "--dtype", help=f"Voxel type of a NIfTI/NRRD/MHA output: {', '.join(_DTYPES)}."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    deidentify: bool = DEIDENTIFY_OPTION,
    salt_file: Path | None = SALT_OPTION,
    deid_dates: str = DATES_OPTION,
) -> None:
    """Convert an image between DICOM, NIfTI, NRRD and MetaImage.

    A DICOM output is a derived series (new UIDs, ImageType DERIVED\\SECONDARY); from a DICOM
    source it keeps the patient, study and frame of reference, unless --deidentify is given.
    """
    if dtype is not None and dtype not in _DTYPES:
        raise InputError(f"unknown --dtype {dtype!r}", hint=f"use one of {', '.join(_DTYPES)}")
    deidentifier = deidentifier_from_options(deidentify, salt_file, deid_dates)
    check_not_input(dst, [src])
    volume = read_volume(src, series=series)
    for warning in volume.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    written = write_volume(
        volume,
        dst,
        overwrite=overwrite,
        dtype=None if dtype is None else _DTYPES[dtype],
        settings={"operation": "convert"},
        derivation="format conversion by medssl (values unchanged up to int16 quantisation)",
        modality=modality,
        deidentify=deidentifier,
    )
    kind = "DICOM series" if output_format(written) == "dicom" else "image"
    out.print(f"wrote {kind} {written} ({' x '.join(map(str, volume.shape[::-1]))} voxels)")
