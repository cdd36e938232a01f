"""Which DICOM values medssl may show: an allow-list.

Nothing outside :data:`SAFE_KEYWORDS` is copied into a :class:`~medssl.io.Volume`'s metadata,
so it cannot reach a log, an error message or a report; its text values pass through
:func:`medssl.io.text.printable`. Free-text descriptions (:data:`FREE_TEXT_KEYWORDS`: they
often hold names or record numbers) are never in the metadata; :func:`free_text` reads them
for a user who asks to see them. Series are named by :func:`series_key`, a short hash of the
SeriesInstanceUID, never by the UID itself.
"""

from __future__ import annotations

import hashlib
from typing import Any

from medssl.io.text import printable

__all__ = [
    "FREE_TEXT_KEYWORDS",
    "IDENTIFYING_KEYWORDS",
    "SAFE_KEYWORDS",
    "free_text",
    "safe_metadata",
    "series_key",
]

#: Acquisition and image-description attributes that do not identify a patient.
SAFE_KEYWORDS: tuple[str, ...] = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "BodyPartExamined",
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


#: Free-text attributes (VR LO, LT, ST, UT, and the SH/LO comment fields) that describe a
#: patient, a study, a series or an image in the operator's words, and so often carry names,
#: record numbers or findings. medssl prints them only when the user asks
#: (``medssl info --show-descriptions``), and :mod:`medssl.io.deidentify` removes them.
FREE_TEXT_KEYWORDS: tuple[str, ...] = (
    "StudyDescription",
    "SeriesDescription",
    "ProtocolName",
    "ImageComments",
    "FrameComments",
    "DerivationDescription",
    "AcquisitionComments",
    "PerformedProcedureStepDescription",
    "CommentsOnThePerformedProcedureStep",
    "ScheduledProcedureStepDescription",
    "RequestedProcedureDescription",
    "RequestedProcedureComments",
    "ReasonForTheRequestedProcedure",
    "ImagingServiceRequestComments",
    "ReasonForStudy",
    "StudyComments",
    "AdmittingDiagnosesDescription",
    "DischargeDiagnosisDescription",
    "AdditionalPatientHistory",
    "PatientComments",
    "PatientState",
    "MedicalAlerts",
    "Allergies",
    "Occupation",
    "SpecialNeeds",
    "VisitComments",
    "ServiceEpisodeDescription",
    "IdentifyingComments",
    "TextComments",
    "TextString",
    "ContentDescription",
    "ContrastBolusAgent",
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
        value = _plain(value)
        out[kw] = printable(value) if isinstance(value, str) else value
    return out


def free_text(ds: Any, *, max_len: int | None = 64) -> dict[str, str]:
    """The non-empty :data:`FREE_TEXT_KEYWORDS` values of a pydicom dataset, made printable.

    For display on request only (``medssl info --show-descriptions``): these values can
    identify a patient.

    Args:
        ds: A pydicom dataset.
        max_len: Longest value returned (see :func:`medssl.io.text.printable`).
    """
    out: dict[str, str] = {}
    for kw in FREE_TEXT_KEYWORDS:
        try:
            value = ds.get(kw)
        except Exception:  # malformed element: leave it out
            continue
        text = printable(value, max_len)
        if text:
            out[kw] = text
    return out
