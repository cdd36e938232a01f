"""`medssl info PATH`: what an image is, without identifying values.

Every header value is printed through :func:`medssl.io.printable` (no control characters or
terminal escape sequences); free-text descriptions only with ``--show-descriptions``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from medssl.cli._console import err, out
from medssl.errors import InputError
from medssl.io import Volume, detect_format, find_series, printable, read_free_text, read_volume

__all__ = ["info"]


def _fmt(values: tuple[float, ...] | list[float], digits: int = 4) -> str:
    return " x ".join(f"{v:.{digits}g}" for v in values)


def _descriptions(volume: Volume) -> dict[str, str]:
    """The free-text descriptions of the volume's first source file (DICOM only)."""
    if volume.source is None or not volume.source.files:
        return {}
    return read_free_text(volume.source.files[0])


def _volume_table(path: Path, volume: Volume, descriptions: dict[str, str] | None = None) -> Table:
    s = volume.summary()
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()

    def row(key: str, value: str) -> None:
        # Text: no markup parsing; printable: no control characters or escape sequences
        table.add_row(key, Text(printable(value, None)))

    z, y, x = volume.shape
    row("path", str(path))
    row("format", str(volume.meta.get("format", "?")))
    if "TransferSyntax" in volume.meta:
        row("transfer syntax", str(volume.meta["TransferSyntax"]))
    modality = printable(volume.modality, 16)
    if modality == "OT" and volume.looks_like_ct():
        modality = "unknown (values look like CT in HU)"
    row("modality", modality)
    row("size (x, y, z)", f"{x} x {y} x {z} voxels")
    row("spacing (x, y, z)", f"{_fmt(volume.spacing[::-1])} mm")
    row("origin (LPS)", f"({', '.join(f'{v:.2f}' for v in volume.origin)}) mm")
    row("orientation", f"{volume.orientation} (x, y, z axes point towards these)")
    d = np.round(volume.direction[:, ::-1], 4)
    row("direction (x, y, z columns)", str(d.tolist()))
    if s["min"] is None:
        row("intensity", "no finite values")
    else:
        row("intensity", f"min {s['min']:.6g}, max {s['max']:.6g}, mean {s['mean']:.6g}")
    for key in ("series_key", "n_files", "Manufacturer", "SliceThickness"):
        if key in volume.meta:
            row(key.replace("_", " "), printable(volume.meta[key]))
    for key, text in (descriptions or {}).items():
        row(key, text)
    return table


def info(
    path: Path = typer.Argument(..., help="DICOM file or folder, NIfTI, NRRD or MHA/MHD image."),
    series: str | None = typer.Option(
        None, "--series", "-s", help="For a folder with several series: which one (N or KEY)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object instead of a table."),
    show_descriptions: bool = typer.Option(
        False,
        "--show-descriptions",
        help="Also print the free-text descriptions (SeriesDescription, StudyDescription, "
        "ProtocolName, ImageComments, ...). They often hold names or record numbers: off by "
        "default.",
    ),
) -> None:
    """Describe an image (size, spacing, orientation, modality, intensities, series).

    Prints no patient-identifying values, and no free-text descriptions unless
    --show-descriptions is given.
    """
    if detect_format(path) == "dicom" and path.is_dir() and series is None:
        found, _ = find_series(path)
        if len(found) > 1:
            listing = [s.label(i + 1, description=show_descriptions) for i, s in enumerate(found)]
            if as_json:
                out.print_json(json.dumps({"path": str(path), "series": listing}))
            else:
                out.print(f"{path}: {len(found)} DICOM series found")
                for line in listing:
                    out.print("  " + line)
                out.print("Describe one with: medssl info PATH --series N")
            return
        if not found:
            raise InputError(
                "no DICOM image series found",
                path=path,
                hint="point medssl at a folder holding the .dcm files of an image series",
            )
    volume = read_volume(path, series=series)
    descriptions = _descriptions(volume) if show_descriptions else {}
    if as_json:
        summary = volume.summary()
        summary["path"] = str(path)
        if show_descriptions:
            summary["descriptions"] = descriptions
        out.print_json(json.dumps(summary))
        return
    out.print(_volume_table(path, volume, descriptions))
    for warning in volume.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(warning)}")
