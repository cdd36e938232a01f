"""Build small DICOM series on disk for the reader tests, with planted identifying values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from medssl.io import Volume, write_dicom_series

#: Made-up identifying values planted into test series; no output may ever contain them.
PLANTED = {
    "PatientName": "Zyxwvuts^Plantedname",
    "PatientID": "PID-PLANTED-7391",
    "PatientBirthDate": "19230417",
    "AccessionNumber": "ACCPLANT9917",
    "InstitutionName": "Plantedville Memorial Hospital",
    "ReferringPhysicianName": "Qwertyref^Doctor",
    "StudyID": "STPLANT42",
}


def small_ct(shape: tuple[int, int, int] = (6, 24, 20), seed: int = 0) -> Volume:
    """A synthetic CT-like volume: air around a noisy water disc, axial LPS, 0.7x0.6x2.5 mm."""
    rng = np.random.default_rng(seed)
    z, y, x = shape
    yy, xx = np.mgrid[:y, :x]
    disc = ((yy - y / 2) ** 2 + (xx - x / 2) ** 2) < (min(y, x) / 2.5) ** 2
    arr = np.where(disc, 40.0, -1000.0)[None].repeat(z, 0)
    arr = arr + rng.normal(0, 20, size=shape)
    arr[:, 2, 3] = 1500.0  # a bright marker
    return Volume(
        np.rint(arr),
        spacing=(2.5, 0.6, 0.7),
        origin=(-10.0, 20.0, -50.0),
        modality="CT",
    )


def write_series(
    volume: Volume,
    folder: Path,
    *,
    plant: bool = True,
    series_uid: str | None = None,
    description: str = "test series",
) -> list[Path]:
    """Write ``volume`` as a DICOM series and plant identifying values into every file."""
    files = write_dicom_series(volume, folder, modality="CT", settings={"test": description})
    for f in files:
        ds = pydicom.dcmread(f)
        if plant:
            for kw, value in PLANTED.items():
                setattr(ds, kw, value)
        if series_uid is not None:
            ds.SeriesInstanceUID = series_uid
        ds.SeriesDescription = description
        ds.save_as(f)
    return files
