"""Which DICOM values medssl may show: an allow-list.

Nothing outside :data:`SAFE_KEYWORDS` is copied into a :class:`~medssl.io.Volume`'s metadata,
so it cannot reach a log, an error message or a report. Series are named by
:func:`series_key`, a short hash of the SeriesInstanceUID, never by the UID itself.
"""

from __future__ import annotations

import hashlib
from typing import Any

__all__ = ["IDENTIFYING_KEYWORDS", "SAFE_KEYWORDS", "safe_metadata", "series_key"]

#: Acquisition and image-description attributes that do not identify a patient.
SAFE_KEYWORDS: tuple[str, ...] = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "BodyPartExamined",
    "SeriesDescription",
    "ImageType",
    "SliceThickness",
    "KVP",
    "XRayTubeCurrent",
    "Exposure",
    "ConvolutionKernel",
    "PhotometricInterpretation",
    "BitsStored",
    "PixelRepresentation",
    "RescaleType",
    "PatientPosition",
    "MagneticFieldStrength",
    "RepetitionTime",
    "EchoTime",
)

#: Attributes that identify a patient, a visit or a site. Listed for tests and for the
#: derived writer's checks; medssl never prints their values.
IDENTIFYING_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientAddress",
    "OtherPatientIDs",
    "OtherPatientNames",
    "AccessionNumber",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "StudyID",
    "StationName",
    "DeviceSerialNumber",
)


def series_key(series_uid: str | None) -> str:
    """A 10-hex-digit, non-identifying handle for a series (SHA-256 of its UID)."""
    return hashlib.sha256(str(series_uid or "").encode()).hexdigest()[:10]


def _plain(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    try:  # pydicom MultiValue and friends
        if isinstance(value, list | tuple) or hasattr(value, "__iter__"):
            items = [_plain(v) for v in value]
            return "\\".join(str(v) for v in items)
    except TypeError:
        pass
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def safe_metadata(ds: Any) -> dict[str, Any]:
    """Copy the allow-listed attributes of a pydicom dataset into a plain dict."""
    out: dict[str, Any] = {}
    for kw in SAFE_KEYWORDS:
        try:
            value = ds.get(kw)
        except Exception:  # malformed element: leave it out rather than fail the read
            continue
        if value is None or value == "":
            continue
        out[kw] = _plain(value)
    return out
