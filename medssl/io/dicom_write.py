"""Derived DICOM series writer.

Writes a :class:`~medssl.io.Volume` as a classic single-frame DICOM series (CT Image Storage
for CT, MR Image Storage for MR from a classic MR source, whose acquisition attributes it keeps,
Secondary Capture otherwise) that any PACS or viewer reads and ``dciodvfy`` accepts:

* new SeriesInstanceUID and SOPInstanceUIDs, derived deterministically
  (:func:`medssl.io.uids.derive_uid`) from the source UID, the medssl version and the
  operation's settings, so a re-run or a parallel shard writes the same UIDs;
* ImageType ``DERIVED\\SECONDARY``, a DerivationDescription and, when each output slice has
  one source image, a SourceImageSequence;
* patient, study and frame-of-reference attributes copied from the source series (the output
  is the same patient's study, in the same frame of reference), geometry from the volume;
* pixel data int16 with a RescaleSlope/RescaleIntercept that maps it back to the volume's
  values (CT: slope 1, intercept 0, i.e. stored values are HU rounded to the nearest integer).

From a non-DICOM source (NIfTI, NRRD, ...) the study and frame-of-reference UIDs come from the
image's content hash, the series and instance UIDs from the content hash plus version and
settings, and the patient is a non-identifying placeholder.

With a :class:`~medssl.io.deidentify.Deidentifier` the written objects follow the DICOM PS3.15
Basic Profile instead: pseudonymous patient, mapped UIDs, shifted or removed dates, no free
text from the source (the SeriesDescription and DerivationDescription are medssl's own).

The DICOM libraries' warnings and log messages, which can quote header values, are kept off
the console and out of the logs while the source is re-read and the series written.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from medssl.errors import InputError
from medssl.io.atomic import atomic_dir
from medssl.io.deidentify import Deidentifier
from medssl.io.dicom_read import quiet_pydicom
from medssl.io.uids import canonical_settings, derive_uid
from medssl.io.volume import Volume

__all__ = ["CT_DISPLAY_WINDOW", "is_medssl_series", "quantise_int16", "write_dicom_series"]

_SOP_CLASS = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
}
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
#: The display window (level, width in HU) written into CT series: the soft-tissue window
#: (W 400 L 40) of :data:`medssl.transforms.windows.SOFT_TISSUE` (io imports no other medssl
#: package; a test checks that the two agree).
CT_DISPLAY_WINDOW = (40.0, 400.0)

# Patient, study, frame-of-reference and general equipment attributes kept from the source.
_COPIED = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
    "FrameOfReferenceUID",
    "PositionReferenceIndicator",
    "Manufacturer",
    "InstitutionName",
    "ManufacturerModelName",
    "BodyPartExamined",
    "Laterality",
    "ImageLaterality",
    "PatientPosition",
    "KVP",
    "ConvolutionKernel",
)
# Type 2 attributes that must be present (possibly empty) in a CT/MR image.
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "PositionReferenceIndicator",
    "Manufacturer",
)
# The MR Image module's acquisition attributes, kept from a classic MR source (Type 2 ones are
# written empty when the source lacks them).
_MR_COPIED = (
    "ScanningSequence",
    "SequenceVariant",
    "ScanOptions",
    "MRAcquisitionType",
    "SequenceName",
    "RepetitionTime",
    "EchoTime",
    "InversionTime",
    "EchoTrainLength",
    "MagneticFieldStrength",
    "ImagedNucleus",
    "ImagingFrequency",
    "FlipAngle",
)
_MR_TYPE2 = ("ScanOptions", "MRAcquisitionType", "RepetitionTime", "EchoTime", "EchoTrainLength")


def _medssl_version() -> str:
    try:
        return version("medssl")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def _ds_str(x: float) -> str:
    """A DICOM decimal string (at most 16 characters)."""
    for digits in range(12, 3, -1):
        s = f"{x:.{digits}g}"
        if len(s) <= 16:
            return s
    return f"{x:.3e}"


def _patient_orientation(row_cos: np.ndarray, col_cos: np.ndarray) -> list[str]:
    """PatientOrientation: the LPS letters of the row and column directions, main one first."""
    values = []
    for v in (row_cos, col_cos):
        letters = ""
        for axis in np.argsort(-np.abs(v)):
            if abs(v[axis]) > 1e-3:
                letters += ("LR", "PA", "HF")[axis][0 if v[axis] > 0 else 1]
        values.append(letters)
    return values


def quantise_int16(array: np.ndarray, modality: str) -> tuple[np.ndarray, float, float]:
    """Choose a rescale and quantise values to int16.

    CT, and any integer-valued image within the int16 range, keeps slope 1 and intercept 0
    (stored value = value rounded to the nearest integer); anything else is mapped linearly onto
    the int16 range. The slope and intercept are rounded to DICOM decimal strings before the
    quantisation, so the written rescale reproduces the values within half a step.

    Returns:
        ``(stored int16 array, slope, intercept)`` with ``value ≈ stored * slope + intercept``.
    """
    lo, hi = float(np.min(array)), float(np.max(array))
    integral = bool(np.all(array == np.rint(array)))
    if lo >= -32768 and hi <= 32767 and (integral or modality == "CT"):
        slope, intercept = 1.0, 0.0
    else:
        slope = float(_ds_str((hi - lo) / 65000.0)) if hi > lo else 1.0
        intercept = float(_ds_str((hi + lo) / 2.0))
    stored = np.rint((array.astype(np.float64) - intercept) / slope)
    stored = np.clip(stored, -32768, 32767).astype(np.int16)
    return stored, slope, intercept


def _read_template(volume: Volume) -> tuple[Any | None, list[Any]]:
    """The first source header and, per output slice, its source header (or an empty list)."""
    if volume.source is None:
        return None, []
    import pydicom

    headers = {}
    with quiet_pydicom():
        for i, f in enumerate(volume.source.files):
            try:
                headers[i] = pydicom.dcmread(f, stop_before_pixels=True, force=True)
            except Exception:
                raise InputError(
                    "cannot re-read the source DICOM file for the derived series",
                    path=f,
                    hint="the source must stay in place until the output is written",
                ) from None
    per_slice = []
    if len(volume.source.frames) == volume.shape[0]:
        per_slice = [headers[fi] for fi, _ in volume.source.frames]
    return headers[0], per_slice


def is_medssl_series(folder: Path) -> bool:
    """Whether ``folder`` holds only a derived series medssl wrote (every entry a DICOM file
    with medssl's ImplementationClassUID): only such a folder is replaced by ``overwrite``."""
    import pydicom

    impl_uid = derive_uid("medssl-implementation")
    entries = list(folder.iterdir())
    if not entries:
        return True
    for p in entries:
        if not p.is_file() or p.is_symlink():
            return False
        try:
            meta = pydicom.filereader.read_file_meta_info(p)
        except Exception:
            return False
        if str(meta.get("ImplementationClassUID", "")) != impl_uid:
            return False
    return True


def write_dicom_series(
    volume: Volume,
    out_dir: str | Path,
    *,
    settings: Mapping[str, Any] | None = None,
    derivation: str = "converted by medssl",
    series_description: str | None = None,
    modality: str | None = None,
    overwrite: bool = False,
    deidentify: Deidentifier | None = None,
) -> list[Path]:
    """Write ``volume`` as a derived DICOM series into the folder ``out_dir`` (atomically).

    Args:
        volume: The image; when it was read from DICOM (``volume.source``), the source
            series supplies the patient, study and frame-of-reference attributes.
        out_dir: Output folder (created; must not exist unless ``overwrite``).
        settings: The settings of the operation that made the image; they enter the UIDs.
        derivation: DerivationDescription text (what was done).
        series_description: SeriesDescription (default: the source's plus "medssl"; with
            ``deidentify``, "medssl"). Give medssl's own text, never a source value.
        modality: Modality for a non-DICOM source (default: the volume's, else ``"CT"``);
            CT is refused when the values do not look like Hounsfield units.
        overwrite: Replace an existing ``out_dir``.
        deidentify: Write under the DICOM PS3.15 Basic Profile with this salt (see
            :mod:`medssl.io.deidentify`); ``None`` keeps the source's patient and study.

    Returns:
        The written files, in slice order.

    Raises:
        InputError: Non-finite values; CT values that are not HU; with ``deidentify``, a source
            that declares burned-in annotation.
    """
    with quiet_pydicom():
        return _write_dicom_series(
            volume,
            Path(out_dir),
            settings=settings,
            derivation=derivation,
            series_description=series_description,
            modality=modality,
            overwrite=overwrite,
            deidentify=deidentify,
        )


def _write_dicom_series(
    volume: Volume,
    out_dir: Path,
    *,
    settings: Mapping[str, Any] | None,
    derivation: str,
    series_description: str | None,
    modality: str | None,
    overwrite: bool,
    deidentify: Deidentifier | None,
) -> list[Path]:
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    arr = volume.array
    if not np.all(np.isfinite(arr)):
        raise InputError(
            "the image holds NaN or infinite values, which DICOM cannot store",
            path=out_dir,
            hint="replace them (e.g. with the background value) before writing DICOM",
        )
    template, per_slice = _read_template(volume)
    if (
        deidentify is not None
        and template is not None
        and str(template.get("BurnedInAnnotation", "")).strip().upper() == "YES"
    ):
        raise InputError(
            "the source declares burned-in annotation (text in the pixels); de-identification "
            "does not clean pixel data",
            path=out_dir,
            hint="use a series without burned-in text, or write NIfTI and check the pixels",
        )
    version_str = _medssl_version()
    settings_text = canonical_settings(settings)

    if template is not None:
        mod = str(template.get("Modality") or volume.modality or "OT").upper()
        source_key = str(template.get("SeriesInstanceUID", "")) or volume.content_hash()
        study_uid = str(template.get("StudyInstanceUID", "")) or derive_uid("study", source_key)
        for_uid = str(template.get("FrameOfReferenceUID", "")) or derive_uid("for", study_uid)
    else:
        mod = (modality or (volume.modality if volume.modality != "OT" else "CT")).upper()
        if mod == "CT" and not volume.looks_like_ct():
            lo, hi = float(arr.min()), float(arr.max())
            raise InputError(
                f"the values ({lo:.4g} to {hi:.4g}) do not look like CT Hounsfield units",
                path=out_dir,
                hint="pass the right modality (e.g. --modality MR or --modality OT) or convert "
                "the image to HU first",
            )
        content = volume.content_hash()
        source_key = content
        study_uid = derive_uid("study", content)
        for_uid = derive_uid("frame-of-reference", content)

    series_uid = derive_uid(source_key, version_str, settings_text, "series")
    sop_class = _SOP_CLASS.get(mod, _SECONDARY_CAPTURE)
    # The MR Image IOD needs the acquisition's sequence attributes (an enhanced MR has them per
    # frame, a non-DICOM image not at all): without them the output is a Secondary Capture.
    mr_keys = ("ScanningSequence", "SequenceVariant")
    mr_source = template if template is not None and all(k in template for k in mr_keys) else None
    mr_image = sop_class == _SOP_CLASS["MR"] and mr_source is not None
    if sop_class == _SOP_CLASS["MR"] and not mr_image:
        sop_class = _SECONDARY_CAPTURE
    image_type = ["DERIVED", "SECONDARY"]
    if mod == "CT":
        image_type.append("AXIAL")
    elif mr_source is not None and mr_image:  # value 3 is required for MR: the source's
        image_type += list(mr_source.get("ImageType", []))[2:3] or ["OTHER"]
    stored, slope, intercept = quantise_int16(arr, mod)

    row_cos = volume.direction[:, 2]
    col_cos = volume.direction[:, 1]
    normal = np.cross(row_cos, col_cos)
    dz, dy, dx = volume.spacing
    if series_description is None:
        base = ""
        if template is not None and deidentify is None:
            base = str(template.get("SeriesDescription", ""))
        series_description = (base + " medssl").strip()
    series_number = 9000
    if template is not None and template.get("SeriesNumber") not in (None, ""):
        with contextlib.suppress(TypeError, ValueError):
            series_number = (int(template.SeriesNumber) + 1000) % 100000

    impl_uid = derive_uid("medssl-implementation")
    written: list[Path] = []
    with atomic_dir(out_dir, overwrite=overwrite, owned=is_medssl_series) as tmp:
        for k in range(volume.shape[0]):
            sop_uid = derive_uid(source_key, version_str, settings_text, "instance", str(k))
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = sop_class
            meta.MediaStorageSOPInstanceUID = sop_uid
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = impl_uid
            meta.ImplementationVersionName = f"MEDSSL_{version_str}"[:16]
            ds = Dataset()
            ds.file_meta = meta
            if template is not None:
                for kw in _COPIED:
                    if kw in template:
                        try:
                            ds[kw] = template[kw]
                        except Exception:
                            continue
            else:
                ds.PatientName = "MEDSSL^ANONYMOUS"
                ds.PatientID = f"MEDSSL-{content[:12]}"
                ds.PatientIdentityRemoved = "YES"
                ds.DeidentificationMethod = "medssl: made from a non-DICOM image, no patient data"
                ds.Manufacturer = "medssl"
            if mr_source is not None and mr_image:
                for kw in _MR_COPIED:
                    if kw in mr_source:
                        ds[kw] = mr_source[kw]
            for kw in _TYPE2 + (_MR_TYPE2 if mr_image else ()):
                if kw not in ds:
                    setattr(ds, kw, "")
            if not any(kw in ds for kw in ("Laterality", "ImageLaterality", "BodyPartExamined")):
                ds.Laterality = ""  # Type 2C, needed unless the body part is known to be unpaired
            if sop_class != _SECONDARY_CAPTURE and "PatientPosition" not in ds:
                ds.PatientPosition = ""
            ds.StudyInstanceUID = study_uid
            ds.FrameOfReferenceUID = for_uid
            ds.Modality = mod
            ds.SOPClassUID = sop_class
            ds.SOPInstanceUID = sop_uid
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = series_number
            ds.SeriesDescription = series_description[:64]
            ds.InstanceNumber = k + 1
            ds.ImageType = image_type
            ds.DerivationDescription = derivation[:1024]
            ds.SoftwareVersions = f"medssl {version_str}"
            if per_slice:
                src = per_slice[k]
                ref = Dataset()
                ref.ReferencedSOPClassUID = src.get("SOPClassUID", sop_class)
                ref.ReferencedSOPInstanceUID = src.get("SOPInstanceUID", "")
                if ref.ReferencedSOPInstanceUID:
                    ds.SourceImageSequence = [ref]
            if mod == "CT" and "KVP" not in ds:
                ds.KVP = ""
            if mod == "CT":
                ds.AcquisitionNumber = ""
            if sop_class == _SECONDARY_CAPTURE:
                ds.ConversionType = "WSD"  # made on a workstation
                ds.PatientOrientation = _patient_orientation(row_cos, col_cos)
            position = np.asarray(volume.origin) + volume.direction[:, 0] * dz * k
            ds.ImagePositionPatient = [_ds_str(float(v)) for v in position]
            ds.ImageOrientationPatient = [_ds_str(float(v)) for v in (*row_cos, *col_cos)]
            ds.PixelSpacing = [_ds_str(dy), _ds_str(dx)]
            ds.SliceThickness = _ds_str(dz)
            ds.SpacingBetweenSlices = _ds_str(dz)
            ds.SliceLocation = _ds_str(float(np.dot(position, normal)))
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows, ds.Columns = int(volume.shape[1]), int(volume.shape[2])
            ds.BitsAllocated = 16
            ds.BitsStored = 16
            ds.HighBit = 15
            ds.PixelRepresentation = 1
            if not mr_image or (slope, intercept) != (1.0, 0.0):  # not in the MR Image IOD
                ds.RescaleIntercept = _ds_str(intercept)
                ds.RescaleSlope = _ds_str(slope)
            if not mr_image:
                ds.RescaleType = "HU" if mod == "CT" else "US"
            if mod == "CT":
                ds.WindowCenter, ds.WindowWidth = (f"{v:g}" for v in CT_DISPLAY_WINDOW)
            ds.PixelData = np.ascontiguousarray(stored[k]).astype("<i2").tobytes()
            if deidentify is not None:
                deidentify.apply(ds)
                # medssl's own texts, not the source's; Type 2 attributes present (may be empty)
                ds.SeriesDescription = series_description[:64]
                ds.DerivationDescription = derivation[:1024]
                for kw in _TYPE2:
                    if kw not in ds:
                        setattr(ds, kw, "")
            path = tmp / f"{k + 1:05d}.dcm"
            pydicom.dcmwrite(path, ds, enforce_file_format=True)
            written.append(out_dir / path.name)
    return written
