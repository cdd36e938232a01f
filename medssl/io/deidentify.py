"""De-identification of derived DICOM objects: the DICOM PS3.15 Basic Profile.

:class:`Deidentifier` applies the Basic Application Level Confidentiality Profile (DICOM
PS3.15 Annex E, Table E.1-1) to a pydicom dataset, with these choices where the profile
leaves one:

* **Patient.** PatientName and PatientID become one stable pseudonym, a keyed hash
  (HMAC-SHA256 with the user's salt) of the original PatientID: the same patient gets the
  same pseudonym in every output made with the same salt, and nobody without the salt can
  link the pseudonym to the patient. Every other patient attribute of the profile (birth
  date, sex, age, size, weight, address, other IDs, ...) is emptied or removed.
* **UIDs** (study, series, instance, frame of reference, referenced instances, and any UID
  outside the DICOM standard's own registry) are replaced by ``2.25.<n>`` with ``n`` the first
  128 bits of HMAC-SHA256(salt, original UID): deterministic, so the series of one study stay
  one study and share their frame of reference across separate runs with the same salt.
* **Dates.** ``dates="shift"`` (default) moves every date (VR DA, and the date part of DT) back
  by one offset per patient, 1 to 3652 days, derived from the salt and the original PatientID,
  so intervals between a patient's studies are kept (the profile's Retain Longitudinal
  Temporal Information with Modified Dates Option); times of day are kept. ``dates="remove"``
  empties or removes every date and time. The birth date is always emptied.
* **Removed**: private elements, curve and overlay groups, free text (descriptions, comments,
  protocol names), names and identifiers of physicians, operators, institutions and devices;
  person names and free text the table does not list are removed too (PN emptied; LT, ST, UT
  and UN elements removed).
* **Marked**: PatientIdentityRemoved ``YES``, DeidentificationMethod, the
  DeidentificationMethodCodeSequence (DCM 113100 Basic Application Confidentiality Profile,
  plus 113107 when dates are shifted) and LongitudinalTemporalInformationModified.

Pixel data is not examined: the profile's Clean Pixel Data Option is not claimed (a source
that declares BurnedInAnnotation ``YES`` is refused by the writers).

The salt is a secret the user keeps (at least 16 bytes): from a file
(``--deidentify-salt-file``) or the ``MEDSSL_DEID_SALT`` environment variable, see
:meth:`Deidentifier.from_env_or_file`. It is never printed or written.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from medssl.errors import InputError

__all__ = ["BASIC_PROFILE", "DEID_SALT_ENV", "MIN_SALT_BYTES", "Action", "Deidentifier"]

#: Environment variable that may hold the salt (text, used as UTF-8 bytes).
DEID_SALT_ENV = "MEDSSL_DEID_SALT"
#: Shortest salt accepted: a short salt could be guessed by trying salts against known UIDs.
MIN_SALT_BYTES = 16
#: Largest date shift, in days (10 years).
MAX_SHIFT_DAYS = 3652

#: A profile action (PS3.15 Table E.1-1): ``D`` replace with a dummy value, ``Z`` replace with
#: an empty value, ``X`` remove, ``K`` keep (sequences: keep and clean their items), ``U``
#: replace the UID by a consistently mapped one.
Action = Literal["D", "Z", "X", "K", "U"]

_PROFILE: dict[str, Action] = {
    # -- Patient (Patient, Patient Demographic, Patient Medical modules) --------------------
    "PatientName": "D",  # the pseudonym
    "PatientID": "D",  # the pseudonym
    "IssuerOfPatientID": "X",
    "IssuerOfPatientIDQualifiersSequence": "X",
    "TypeOfPatientID": "X",
    "OtherPatientIDs": "X",
    "OtherPatientIDsSequence": "X",
    "OtherPatientNames": "X",
    "PatientBirthName": "X",
    "PatientMotherBirthName": "X",
    "PatientBirthDate": "Z",
    "PatientBirthTime": "X",
    "PatientSex": "Z",
    "PatientAge": "X",
    "PatientSize": "X",
    "PatientWeight": "X",
    "PatientAddress": "X",
    "PatientTelephoneNumbers": "X",
    "PatientTelecomInformation": "X",
    "PatientInsurancePlanCodeSequence": "X",
    "PatientPrimaryLanguageCodeSequence": "X",
    "PatientPrimaryLanguageModifierCodeSequence": "X",
    "PatientReligiousPreference": "X",
    "PatientSexNeutered": "X",
    "PatientComments": "X",
    "PatientState": "X",
    "PatientInstitutionResidence": "X",
    "ReferencedPatientSequence": "X",
    "ReferencedPatientAliasSequence": "X",
    "ReferencedPatientPhotoSequence": "X",
    "MilitaryRank": "X",
    "BranchOfService": "X",
    "MedicalRecordLocator": "X",
    "MedicalAlerts": "X",
    "Allergies": "X",
    "CountryOfResidence": "X",
    "RegionOfResidence": "X",
    "EthnicGroup": "X",
    "Occupation": "X",
    "SmokingStatus": "X",
    "AdditionalPatientHistory": "X",
    "PregnancyStatus": "X",
    "LastMenstrualDate": "X",
    "SpecialNeeds": "X",
    "ResponsiblePerson": "X",
    "ResponsiblePersonRole": "X",
    "ResponsibleOrganization": "X",
    "PersonName": "D",
    "PersonAddress": "X",
    "PersonTelephoneNumbers": "X",
    "PersonTelecomInformation": "X",
    "PersonIdentificationCodeSequence": "X",
    # -- Study (General Study, Patient Study, visit and request attributes) ------------------
    "StudyInstanceUID": "U",
    "StudyDate": "Z",
    "StudyTime": "Z",
    "StudyID": "Z",
    "AccessionNumber": "Z",
    "IssuerOfAccessionNumberSequence": "X",
    "StudyDescription": "X",
    "StudyComments": "X",
    "ReferringPhysicianName": "Z",
    "ReferringPhysicianAddress": "X",
    "ReferringPhysicianTelephoneNumbers": "X",
    "ReferringPhysicianIdentificationSequence": "X",
    "ConsultingPhysicianName": "X",
    "ConsultingPhysicianIdentificationSequence": "X",
    "PhysiciansOfRecord": "X",
    "PhysiciansOfRecordIdentificationSequence": "X",
    "NameOfPhysiciansReadingStudy": "X",
    "PhysiciansReadingStudyIdentificationSequence": "X",
    "RequestingPhysician": "X",
    "RequestingPhysicianIdentificationSequence": "X",
    "RequestingService": "X",
    "ReferencedStudySequence": "X",
    "AdmittingDiagnosesDescription": "X",
    "AdmittingDiagnosesCodeSequence": "X",
    "AdmissionID": "X",
    "IssuerOfAdmissionIDSequence": "X",
    "DischargeDiagnosisDescription": "X",
    "ServiceEpisodeID": "X",
    "ServiceEpisodeDescription": "X",
    "IssuerOfServiceEpisodeIDSequence": "X",
    "CurrentPatientLocation": "X",
    "VisitComments": "X",
    "ReasonForStudy": "X",
    "RequestedProcedureDescription": "X",
    "RequestedProcedureID": "X",
    "RequestedProcedureComments": "X",
    "RequestedProcedureLocation": "X",
    "ReasonForTheRequestedProcedure": "X",
    "ReasonForRequestedProcedureCodeSequence": "X",
    "RequestAttributesSequence": "X",
    "ImagingServiceRequestComments": "X",
    "PlacerOrderNumberImagingServiceRequest": "X",
    "FillerOrderNumberImagingServiceRequest": "X",
    "OrderEnteredBy": "X",
    "OrderEntererLocation": "X",
    "OrderCallbackPhoneNumber": "X",
    "OrderCallbackTelecomInformation": "X",
    "NamesOfIntendedRecipientsOfResults": "X",
    "IntendedRecipientsOfResultsIdentificationSequence": "X",
    # -- Series and procedure steps -----------------------------------------------------------
    "SeriesInstanceUID": "U",
    "SeriesDescription": "X",
    "ProtocolName": "X",
    "PerformingPhysicianName": "X",
    "PerformingPhysicianIdentificationSequence": "X",
    "OperatorsName": "X",
    "OperatorIdentificationSequence": "X",
    "PerformedProcedureStepID": "X",
    "PerformedProcedureStepDescription": "X",
    "CommentsOnThePerformedProcedureStep": "X",
    "PerformedLocation": "X",
    "PerformedStationName": "X",
    "PerformedStationAETitle": "X",
    "PerformedStationNameCodeSequence": "X",
    "ReferencedPerformedProcedureStepSequence": "X",
    "ScheduledProcedureStepDescription": "X",
    "ScheduledProcedureStepID": "X",
    "ScheduledProcedureStepLocation": "X",
    "ScheduledPerformingPhysicianName": "X",
    "ScheduledPerformingPhysicianIdentificationSequence": "X",
    "ScheduledStationName": "X",
    "ScheduledStationAETitle": "X",
    "ScheduledPatientInstitutionResidence": "X",
    "AcquisitionComments": "X",
    "ContrastBolusAgent": "X",
    # -- Equipment ---------------------------------------------------------------------------
    "InstitutionName": "X",
    "InstitutionAddress": "X",
    "InstitutionalDepartmentName": "X",
    "InstitutionalDepartmentTypeCodeSequence": "X",
    "InstitutionCodeSequence": "X",
    "StationName": "X",
    "DeviceSerialNumber": "X",
    "DeviceUID": "U",
    "DeviceDescription": "X",
    "DetectorID": "X",
    "GantryID": "X",
    "PlateID": "X",
    "CassetteID": "X",
    "GeneratorID": "X",
    "SourceSerialNumber": "X",
    "UniqueDeviceIdentifier": "X",
    # -- Image, instance and references --------------------------------------------------------
    "SOPInstanceUID": "U",
    "MediaStorageSOPInstanceUID": "U",
    "FrameOfReferenceUID": "U",
    "SynchronizationFrameOfReferenceUID": "U",
    "ReferencedFrameOfReferenceUID": "U",
    "RelatedFrameOfReferenceUID": "U",
    "ReferencedSOPInstanceUID": "U",
    "InstanceCreatorUID": "U",
    "IrradiationEventUID": "U",
    "ConcatenationUID": "U",
    "DimensionOrganizationUID": "U",
    "StorageMediaFileSetUID": "U",
    "SourceImageSequence": "K",  # kept; its UIDs are mapped (the profile's X/Z/U*)
    "ReferencedImageSequence": "K",
    "ImageComments": "X",
    "FrameComments": "X",
    "DerivationDescription": "X",
    "IdentifyingComments": "X",
    "TextComments": "X",
    "TextString": "X",
    "ContentCreatorName": "Z",
    "ContentCreatorIdentificationCodeSequence": "X",
    "VerifyingObserverName": "D",
    "VerifyingObserverIdentificationCodeSequence": "Z",
    "VerifyingOrganization": "X",
    "AuthorObserverSequence": "X",
    "ParticipantSequence": "X",
    "CustodialOrganizationSequence": "X",
    "IconImageSequence": "X",
    "ModifiedAttributesSequence": "X",
    "OriginalAttributesSequence": "X",
    "DigitalSignaturesSequence": "X",
    "DataSetTrailingPadding": "X",
    # -- Dates and times (with dates="shift", DA and DT values are shifted instead) -------------
    "InstanceCreationDate": "X",
    "InstanceCreationTime": "X",
    "SeriesDate": "X",
    "SeriesTime": "X",
    "AcquisitionDate": "X",
    "AcquisitionTime": "X",
    "AcquisitionDateTime": "X",
    "ContentDate": "Z",
    "ContentTime": "Z",
    "PerformedProcedureStepStartDate": "X",
    "PerformedProcedureStepStartTime": "X",
    "PerformedProcedureStepEndDate": "X",
    "PerformedProcedureStepEndTime": "X",
    "ScheduledProcedureStepStartDate": "X",
    "ScheduledProcedureStepStartTime": "X",
    "ScheduledProcedureStepEndDate": "X",
    "ScheduledProcedureStepEndTime": "X",
    "AdmittingDate": "X",
    "AdmittingTime": "X",
}

#: The Basic Profile as applied here: DICOM keyword -> action (see :data:`Action`).
BASIC_PROFILE: Mapping[str, Action] = MappingProxyType(_PROFILE)

_DATE_VRS = {"DA", "DT", "TM"}
_NEVER_SHIFTED = {"PatientBirthDate", "PatientBirthTime", "LastMenstrualDate"}
_UNLISTED_REMOVED_VRS = {"LT", "ST", "UT", "UN"}
_DUMMY = {"PN": "ANONYMOUS", "DA": "19000101", "TM": "000000", "DT": "19000101000000"}
_CODES = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "shifted": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
}


def _salt_error(message: str, *, path: str | Path | None = None) -> InputError:
    return InputError(
        message,
        path=path,
        hint=f"create a salt once and keep it secret (the same salt gives the same pseudonyms "
        f"and UIDs): python -c 'import secrets; print(secrets.token_hex(32))' > deid-salt.txt; "
        f"chmod 600 deid-salt.txt; then pass --deidentify-salt-file deid-salt.txt or set "
        f"{DEID_SALT_ENV}",
    )


@dataclass(frozen=True)
class Deidentifier:
    """The Basic Profile with a user's salt (see the module docstring).

    Args:
        salt: The secret key of the pseudonyms, UID mapping and date offsets (at least
            :data:`MIN_SALT_BYTES` bytes). Not shown in ``repr``.
        dates: ``"shift"`` (one offset per patient) or ``"remove"``.

    Raises:
        InputError: Salt too short, or an unknown ``dates``.
    """

    salt: bytes = field(repr=False)
    dates: Literal["shift", "remove"] = "shift"

    def __post_init__(self) -> None:
        if not isinstance(self.salt, bytes) or len(self.salt) < MIN_SALT_BYTES:
            raise _salt_error(f"the de-identification salt must be at least {MIN_SALT_BYTES} bytes")
        if self.dates not in ("shift", "remove"):
            raise InputError(
                f"unknown date handling {self.dates!r}", hint="use 'shift' or 'remove'"
            )

    @classmethod
    def from_env_or_file(
        cls,
        salt_file: str | Path | None = None,
        *,
        dates: Literal["shift", "remove"] = "shift",
        environ: Mapping[str, str] | None = None,
    ) -> Deidentifier:
        """The de-identifier for ``--deidentify``: the salt from ``salt_file`` (its bytes,
        trailing whitespace stripped) or else from ``$MEDSSL_DEID_SALT``.

        Args:
            salt_file: File holding the salt; takes precedence over the environment.
            dates: See :class:`Deidentifier`.
            environ: The environment (default ``os.environ``).

        Raises:
            InputError: No salt given, the file is unreadable, or the salt is too short. The
                message never contains the salt.
        """
        env = os.environ if environ is None else environ
        if salt_file is not None:
            path = Path(salt_file)
            try:
                salt = path.read_bytes().rstrip()
            except OSError as exc:
                raise _salt_error(
                    f"cannot read the de-identification salt file ({exc.strerror or exc})",
                    path=path,
                ) from None
            if len(salt) < MIN_SALT_BYTES:
                raise _salt_error(
                    f"the salt file holds {len(salt)} bytes; at least {MIN_SALT_BYTES} needed",
                    path=path,
                )
            return cls(salt, dates)
        text = env.get(DEID_SALT_ENV, "").strip()
        if not text:
            raise _salt_error(
                f"--deidentify needs a secret salt: pass --deidentify-salt-file FILE or set "
                f"{DEID_SALT_ENV}"
            )
        salt = text.encode("utf-8")
        if len(salt) < MIN_SALT_BYTES:
            raise _salt_error(
                f"{DEID_SALT_ENV} holds {len(salt)} bytes; at least {MIN_SALT_BYTES} needed"
            )
        return cls(salt, dates)

    # ---- the keyed mappings --------------------------------------------------------------------
    def _mac(self, domain: str, value: str) -> bytes:
        message = domain.encode() + b"\x00" + value.encode("utf-8", errors="surrogateescape")
        return hmac.new(self.salt, message, hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """The replacement of a UID: ``2.25.`` + the first 128 bits of HMAC-SHA256(salt, UID)
        as a decimal integer (at most 44 characters)."""
        n = int.from_bytes(self._mac("uid", str(original).strip()), "big") >> 128
        return f"2.25.{n}"

    def pseudonym(self, patient_id: str) -> str:
        """The PatientID (and PatientName family name) that replaces ``patient_id``: ``ANON-``
        and 20 hex digits of HMAC-SHA256(salt, PatientID)."""
        return "ANON-" + self._mac("patient", str(patient_id).strip()).hex()[:20].upper()

    def date_offset_days(self, patient_id: str) -> int:
        """The patient's date shift: minus 1 to :data:`MAX_SHIFT_DAYS` days."""
        n = int.from_bytes(self._mac("date-offset", str(patient_id).strip())[:8], "big")
        return -(1 + n % MAX_SHIFT_DAYS)

    # ---- the profile ---------------------------------------------------------------------------
    def apply(self, ds: Any) -> Any:
        """De-identify a pydicom dataset in place (and its ``file_meta``); returns it.

        The patient is keyed by the original PatientID (or, when that is empty, the
        PatientName). Nested sequences are cleaned with the same rules.
        """
        from pydicom.dataset import Dataset

        patient = str(ds.get("PatientID", "") or "").strip() or str(ds.get("PatientName", "") or "")
        offset = self.date_offset_days(patient) if self.dates == "shift" else None
        self._clean(ds, offset)
        meta = getattr(ds, "file_meta", None)
        if meta is not None and "MediaStorageSOPInstanceUID" in meta:
            meta.MediaStorageSOPInstanceUID = self.uid(meta.MediaStorageSOPInstanceUID)
        pseudonym = self.pseudonym(patient)
        ds.PatientName = pseudonym + "^"  # the family name (a PN without ^ is a retired form)
        ds.PatientID = pseudonym
        ds.PatientIdentityRemoved = "YES"
        method = ["DICOM PS3.15 E.1 Basic Profile (medssl)"]
        method.append("dates shifted per patient" if offset is not None else "dates removed")
        ds.DeidentificationMethod = method
        items = []
        for key in ("basic", "shifted") if offset is not None else ("basic",):
            item = Dataset()
            item.CodeValue, item.CodeMeaning = _CODES[key]
            item.CodingSchemeDesignator = "DCM"
            items.append(item)
        ds.DeidentificationMethodCodeSequence = items
        ds.LongitudinalTemporalInformationModified = "MODIFIED" if offset is not None else "REMOVED"
        return ds

    def _clean(self, ds: Any, offset: int | None) -> None:
        from pydicom.uid import UID_dictionary

        for elem in list(ds):
            tag = elem.tag
            group = tag.group
            if (
                tag.is_private
                or tag.element == 0  # group lengths
                or 0x5000 <= group <= 0x50FF  # curves
                or 0x6000 <= group <= 0x60FF  # overlays
            ):
                del ds[tag]
                continue
            keyword, vr = elem.keyword, elem.VR
            action = _PROFILE.get(keyword)
            if vr in _DATE_VRS and keyword not in _NEVER_SHIFTED:
                if offset is None:
                    action = "Z" if action == "Z" else "X"
                elif vr == "TM":
                    continue  # whole-day shifts keep the time of day
                else:
                    elem.value = _shift_value(elem.value, vr, offset)
                    continue
            if action is None:
                if vr == "UI":
                    action = "K" if _all_registered(elem.value, UID_dictionary) else "U"
                elif vr == "PN":
                    action = "Z"
                elif vr in _UNLISTED_REMOVED_VRS:
                    action = "X"
                else:
                    action = "K"
            if action == "X":
                del ds[tag]
            elif action == "Z":
                elem.value = [] if vr == "SQ" else ""
            elif action == "D":
                elem.value = [] if vr == "SQ" else _DUMMY.get(vr, "ANONYMOUS")
            elif action == "U":
                elem.value = _map_values(elem.value, self.uid)
            elif vr == "SQ":  # K
                for item in elem.value or []:
                    self._clean(item, offset)


def _values(value: Any) -> list[Any]:
    """A DICOM value as a list of its values (a multi-valued element holds several)."""
    if value is None:
        return []
    if isinstance(value, str | bytes):
        return [value]
    if isinstance(value, Sequence):  # list, pydicom's MultiValue
        return list(value)
    return [value]


def _all_registered(value: Any, registry: Mapping[str, Any]) -> bool:
    """Whether every UID in ``value`` is one of the standard's own (SOP classes, syntaxes)."""
    return all(str(v) in registry for v in _values(value) if str(v))


def _map_values(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value) if value else value
    return [fn(str(v)) if str(v) else "" for v in _values(value)]


def _shift_date(text: str, days: int) -> str | None:
    """Shift a DA value (``YYYYMMDD``; the old ``YYYY.MM.DD`` is accepted) by ``days``."""
    digits = text.strip().replace(".", "")
    if len(digits) != 8 or not digits.isdigit():
        return None
    try:
        day = _dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:])) + _dt.timedelta(days)
    except (ValueError, OverflowError):
        return None
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


def _shift_one(text: str, vr: str, days: int) -> str:
    """One DA (or range ``A-B``) or DT value shifted; ``""`` when it is not a full date."""
    text = str(text).strip()
    if not text:
        return ""
    if vr == "DA":
        parts = [_shift_date(p, days) if p else "" for p in text.split("-")]
        return "" if any(p is None for p in parts) else "-".join(parts)  # type: ignore[arg-type]
    shifted = _shift_date(text[:8], days)  # DT: YYYYMMDD then time and zone, kept
    return "" if shifted is None else shifted + text[8:]


def _shift_value(value: Any, vr: str, days: int) -> Any:
    if isinstance(value, str):
        return _shift_one(value, vr, days)
    if isinstance(value, bytes):
        return _shift_one(value.decode("ascii", "replace"), vr, days)
    return [_shift_one(str(v), vr, days) for v in _values(value)]
