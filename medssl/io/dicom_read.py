"""DICOM reading: single files, series folders, enhanced multi-frame objects.

One series is one :class:`~medssl.io.Volume`. Series are grouped by SeriesInstanceUID and
their frames sorted by position along the slice normal (ImagePositionPatient projected on
the cross product of the ImageOrientationPatient cosines), never by InstanceNumber.
Localizers, frames of another orientation or size, irregular spacing, missing slices and
gantry tilt are detected and reported in :attr:`Volume.warnings`.

Values: the modality LUT is applied (RescaleSlope/RescaleIntercept, per frame from the
functional groups of enhanced objects), so CT comes out in HU; RT dose grids are scaled by
DoseGridScaling (Gy). Colour and palette images are refused: a Volume is single-channel.

Patient-identifying values are never put into messages: only paths, counts, shapes and the
allow-listed metadata of :mod:`medssl.io.safe_meta`.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medssl.errors import InputError, MultipleSeriesError
from medssl.io.limits import check_image_size
from medssl.io.paths import list_files
from medssl.io.safe_meta import IDENTIFYING_KEYWORDS, free_text, safe_metadata, series_key
from medssl.io.text import printable
from medssl.io.volume import DicomSource, Volume, count_nonfinite, nonfinite_warning

__all__ = [
    "SeriesInfo",
    "find_series",
    "is_dicom_file",
    "quiet_pydicom",
    "read_dicom",
    "read_free_text",
]

log = logging.getLogger(__name__)

_COLOUR = {"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420", "HSV"}
_POS_TOL_MM = 1e-3


#: Loggers of the DICOM libraries; their messages can quote element values (UIDs, names).
_DICOM_LOGGERS = ("pydicom", "highdicom")


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Keep the DICOM libraries' messages off the console and out of logs while reading or
    writing DICOM: they can quote header values (an invalid UID, a name that does not decode).

    Inside the block pydicom validates nothing on reading or writing (values are copied as
    they are), Python warnings are ignored, and the ``pydicom`` and ``highdicom`` loggers (and
    their children) neither emit nor pass records on to the application's handlers.
    """
    import pydicom.config

    settings = pydicom.config.settings
    old_modes = settings.reading_validation_mode, settings.writing_validation_mode
    loggers = [logging.getLogger(name) for name in _DICOM_LOGGERS]
    old_loggers = [(lg.level, lg.propagate) for lg in loggers]
    settings.reading_validation_mode = pydicom.config.IGNORE
    settings.writing_validation_mode = pydicom.config.IGNORE
    for lg in loggers:
        lg.setLevel(logging.CRITICAL + 1)
        lg.propagate = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        settings.reading_validation_mode, settings.writing_validation_mode = old_modes
        for lg, (level, propagate) in zip(loggers, old_loggers, strict=True):
            lg.setLevel(level)
            lg.propagate = propagate


_quiet_pydicom = quiet_pydicom  # the name used inside medssl.io


def _get(ds: Any, keyword: str, default: Any = None) -> Any:
    """A dataset value, or ``default`` when missing, empty or malformed."""
    try:
        value = ds.get(keyword, default)
    except Exception:
        return default
    if value is None or (isinstance(value, str | bytes) and not value):
        return default
    return value


def scrub(text: str, ds: Any) -> str:
    """Remove the dataset's identifying values (and the parts of person names) from ``text``.

    Used on messages that quote a third-party exception, which could echo an element value.
    """
    for kw in IDENTIFYING_KEYWORDS:
        value = _get(ds, kw)
        if value is None:
            continue
        value = str(value)
        parts = {value, *value.replace("=", "^").split("^")}
        for part in sorted(parts, key=len, reverse=True):
            part = part.strip()
            if len(part) >= 3:
                text = text.replace(part, "<redacted>")
    return text


def _floats(value: Any, n: int) -> np.ndarray | None:
    if value is None:
        return None
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.all(np.isfinite(arr)) else None


def _read(path: Path, *, header_only: bool) -> Any:
    """dcmread with a forced fallback for files without preamble/meta; raises on failure."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=header_only)
    except InvalidDicomError:
        ds = pydicom.dcmread(path, stop_before_pixels=header_only, force=True)
        # a forced read of a non-DICOM file yields an (almost) empty dataset
        if not any(k in ds for k in ("SOPClassUID", "Rows", "Modality", "StudyInstanceUID")):
            raise
        return ds


def is_dicom_file(path: str | Path) -> bool:
    """Whether ``path`` is a file with the DICOM preamble (``DICM`` at byte 128)."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


@dataclass
class SeriesInfo:
    """A DICOM series found in a folder. Its fields are non-identifying, except ``uid``, which
    medssl uses internally and never prints, and ``description`` (free text), which is printed
    only on request.

    Attributes:
        key: Short hash of the SeriesInstanceUID (see :func:`medssl.io.safe_meta.series_key`).
        uid: The SeriesInstanceUID.
        modality: DICOM Modality (made printable).
        description: SeriesDescription, made printable (may be empty). Free text that can
            hold names or record numbers: not part of :meth:`label` unless asked for.
        files: The files of the series (sorted by path).
        n_frames: Number of image frames over all files.
        rows: Rows of the first image.
        columns: Columns of the first image.
        series_number: SeriesNumber, if any.
        is_image: Whether it holds pixel data.
    """

    key: str
    uid: str
    modality: str
    description: str
    files: list[Path] = field(default_factory=list)
    n_frames: int = 0
    rows: int = 0
    columns: int = 0
    series_number: int | None = None
    is_image: bool = True

    def label(self, index: int, *, description: bool = False) -> str:
        """One listing line, e.g. ``[1] key=3fa2c1d9e0  CT  series 3  48 images  512x512``.

        Args:
            index: The number shown in brackets (what ``--series N`` takes).
            description: Append the SeriesDescription in quotes (only when the user asked
                for descriptions: it is free text that can identify a patient).
        """
        number = f"  series {self.series_number}" if self.series_number is not None else ""
        desc = ""
        if description and self.description:
            desc = f"  '{printable(self.description)}'"
        return (
            f"[{index}] key={self.key}  {printable(self.modality, 16) or '??'}{number}  "
            f"{self.n_frames} images  {self.rows}x{self.columns}{desc}"
        )


def read_free_text(path: str | Path, *, max_len: int | None = 64) -> dict[str, str]:
    """The free-text descriptions of one DICOM file (SeriesDescription, StudyDescription,
    ProtocolName, ImageComments, ...; see :data:`medssl.io.safe_meta.FREE_TEXT_KEYWORDS`),
    made printable.

    For display when the user asks (``medssl info --show-descriptions``): these values can
    identify a patient and are never printed or logged otherwise.

    Raises:
        InputError: The file cannot be read as DICOM.
    """
    path = Path(path)
    with quiet_pydicom():
        try:
            ds = _read(path, header_only=True)
        except Exception as exc:
            raise InputError(
                f"not a readable DICOM file ({type(exc).__name__})",
                path=path,
                hint="the file may be truncated, corrupt or not DICOM",
            ) from None
        return free_text(ds, max_len=max_len)


def find_series(folder: str | Path) -> tuple[list[SeriesInfo], dict[str, int]]:
    """Scan a folder (recursively) for DICOM image series.

    Args:
        folder: Folder to scan.

    Returns:
        The image series in a stable order (SeriesNumber, then key) and counts of what was
        skipped: ``{"not_dicom": n, "not_image": n, "dicomdir": n}``.
    """
    folder = Path(folder)
    files = list_files(folder)  # links out of the folder are not followed
    groups: dict[str, SeriesInfo] = {}
    skipped = {"not_dicom": 0, "not_image": 0, "dicomdir": 0}
    with _quiet_pydicom():
        for f in files:
            try:
                ds = _read(f, header_only=True)
            except Exception:
                skipped["not_dicom"] += 1
                continue
            if "DirectoryRecordSequence" in ds:
                skipped["dicomdir"] += 1
                continue
            if _get(ds, "Rows") is None:
                skipped["not_image"] += 1
                continue
            uid = str(_get(ds, "SeriesInstanceUID", ""))
            info = groups.get(uid)
            if info is None:
                number = _get(ds, "SeriesNumber")
                try:
                    number = int(number) if number is not None else None
                except (TypeError, ValueError):
                    number = None
                info = SeriesInfo(
                    key=series_key(uid),
                    uid=uid,
                    modality=printable(_get(ds, "Modality", ""), 16),
                    description=printable(_get(ds, "SeriesDescription", ""), None),
                    rows=int(_get(ds, "Rows", 0) or 0),
                    columns=int(_get(ds, "Columns", 0) or 0),
                    series_number=number,
                )
                groups[uid] = info
            info.files.append(f)
            try:
                info.n_frames += int(_get(ds, "NumberOfFrames", 1) or 1)
            except (TypeError, ValueError):
                info.n_frames += 1
    series = sorted(
        groups.values(),
        key=lambda s: (s.series_number if s.series_number is not None else 1 << 30, s.key),
    )
    return series, skipped


def _select_series(folder: Path, series: list[SeriesInfo], choice: str | None) -> SeriesInfo:
    listing = [s.label(i + 1) for i, s in enumerate(series)]
    if choice is None:
        if len(series) == 1:
            return series[0]
        raise MultipleSeriesError(
            f"the folder holds {len(series)} DICOM series; medssl works on one series at a "
            "time:\n    " + "\n    ".join(listing),
            series=listing,
            path=folder,
            hint="choose one with --series N (its number in this list) or --series KEY; "
            "`medssl info FOLDER --show-descriptions` adds their descriptions",
        )
    c = choice.strip()
    if c.isdigit() and 1 <= int(c) <= len(series) and len(c) <= 4:
        return series[int(c) - 1]
    matches = [s for s in series if s.uid == c or (len(c) >= 4 and s.key.startswith(c.lower()))]
    if len(matches) == 1:
        return matches[0]
    raise InputError(
        f"--series {c!r} matches {len(matches)} of the {len(series)} series in the folder:\n    "
        + "\n    ".join(listing),
        path=folder,
        hint="pass the number shown in brackets, a unique key prefix (4+ characters) or the "
        "full SeriesInstanceUID",
    )


# ---- per-frame attributes --------------------------------------------------------------------
def _fg_item(ds: Any, frame: int | None, sequence: str) -> Any:
    """First item of a functional-group macro for ``frame`` (per-frame, then shared)."""
    if frame is not None:
        per_frame = _get(ds, "PerFrameFunctionalGroupsSequence")
        if per_frame is not None and frame < len(per_frame):
            seq = _get(per_frame[frame], sequence)
            if seq:
                return seq[0]
    shared = _get(ds, "SharedFunctionalGroupsSequence")
    if shared:
        seq = _get(shared[0], sequence)
        if seq:
            return seq[0]
    return None


@dataclass
class _Frame:
    file_index: int
    frame: int | None
    values: np.ndarray  # (Y, X) float32, modality LUT applied
    position: np.ndarray | None
    orientation: np.ndarray | None
    pixel_spacing: np.ndarray | None  # (row spacing dy, column spacing dx)
    thickness: float | None
    instance: int
    localizer: bool


def _rescale(raw: np.ndarray, ds: Any, frame: int | None) -> np.ndarray:
    """Apply the modality LUT (or rescale) for one frame; returns float32."""
    from pydicom.pixels import apply_modality_lut

    item = _fg_item(ds, frame, "PixelValueTransformationSequence") if frame is not None else None
    if item is not None and _get(item, "RescaleSlope") is not None:
        slope = float(_get(item, "RescaleSlope", 1.0))
        intercept = float(_get(item, "RescaleIntercept", 0.0))
        return (raw.astype(np.float64) * slope + intercept).astype(np.float32)
    if _get(ds, "DoseGridScaling") is not None and str(_get(ds, "Modality")) == "RTDOSE":
        return (raw.astype(np.float64) * float(ds.DoseGridScaling)).astype(np.float32)
    out = apply_modality_lut(raw, ds)
    return np.asarray(out, dtype=np.float32)


def _int(ds: Any, keyword: str, default: int) -> int:
    """An integer element, or ``default`` when missing or malformed."""
    try:
        return int(_get(ds, keyword, default))
    except (TypeError, ValueError):
        return default


def _check_claimed_size(ds: Any, path: Path, earlier_voxels: int) -> int:
    """Check the size the header claims before the pixel data is decoded.

    For uncompressed transfer syntaxes, Columns x Rows x NumberOfFrames x SamplesPerPixel x
    BitsAllocated must fit in the pixel data element; for every syntax the voxels (with
    ``earlier_voxels`` of the files already read in the series) must stay under the voxel cap.

    Returns:
        The voxels this file claims.
    """
    rows, columns = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
    frames, samples = _int(ds, "NumberOfFrames", 1), _int(ds, "SamplesPerPixel", 1)
    if "PixelData" in ds:
        keyword, bits = "PixelData", _int(ds, "BitsAllocated", 0)
    elif "FloatPixelData" in ds:
        keyword, bits = "FloatPixelData", 32
    else:
        keyword, bits = "DoubleFloatPixelData", 64
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    native = not getattr(syntax, "is_encapsulated", False)
    photometric = str(_get(ds, "PhotometricInterpretation", "")).upper()
    checkable = native and bits > 0 and bits % 8 == 0 and photometric != "YBR_FULL_422"
    try:
        stored = len(ds[keyword].value or b"") if checkable else None
    except Exception:  # a malformed element: the decoder will say so
        stored = None
    shape = (columns, rows, frames) + ((samples,) if samples != 1 else ())
    axes = "columns x rows x frames" + (" x samples" if samples != 1 else "")
    voxels = check_image_size(
        shape,
        bits // 8 if stored is not None else None,
        path=path,
        axes=axes,
        file_bytes=path.stat().st_size,
        available_bytes=stored,
        available_text=None if stored is None else f"the pixel data holds only {stored:,} bytes",
    )
    if earlier_voxels:
        check_image_size(
            (earlier_voxels + voxels,),
            None,
            path=path,
            axes="in this and the earlier files of the series",
        )
    return voxels


def _frames_of(ds: Any, file_index: int, path: Path) -> list[_Frame]:
    photometric = str(_get(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    samples = int(_get(ds, "SamplesPerPixel", 1) or 1)
    if samples != 1 or photometric in _COLOUR or photometric == "PALETTE COLOR":
        kind = "a palette-colour" if photometric == "PALETTE COLOR" else "a colour"
        raise InputError(
            f"{kind} image ({printable(photometric, 32)}, {samples} samples per pixel); medssl "
            "volumes are single-channel (CT, MR, PET, ...)",
            path=path,
            hint="convert it to greyscale first, or use a greyscale series",
        )
    try:
        pixels = np.asarray(ds.pixel_array)
    except Exception as exc:  # decoder messages name syntaxes and plugins, not patient data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        syntax_name = printable(getattr(syntax, "name", "unknown transfer syntax"))
        detail = printable(scrub(f"{type(exc).__name__}: {exc}", ds), 300)
        raise InputError(
            f"cannot decode the pixel data ({syntax_name}): {detail}",
            path=path,
            hint="the file may be truncated or corrupt; if it is compressed, check that the "
            "pydicom pixel-data plugins (pylibjpeg, pylibjpeg-libjpeg, pylibjpeg-openjpeg, "
            "pylibjpeg-rle, pyjpegls) are installed",
        ) from None
    n_frames = int(_get(ds, "NumberOfFrames", 1) or 1)
    if n_frames == 1 and pixels.ndim == 2:
        pixels = pixels[None]
    if pixels.ndim != 3 or pixels.shape[0] != n_frames:
        raise InputError(
            f"unexpected pixel array shape {pixels.shape} for {n_frames} frame(s)",
            path=path,
            hint="the image is not a single-channel image medssl can read",
        )
    image_type = [str(v).upper() for v in (_get(ds, "ImageType", []) or [])]
    localizer = "LOCALIZER" in image_type
    instance = _get(ds, "InstanceNumber", 0)
    try:
        instance = int(instance)
    except (TypeError, ValueError):
        instance = 0

    top_pos = _floats(_get(ds, "ImagePositionPatient"), 3)
    top_ori = _floats(_get(ds, "ImageOrientationPatient"), 6)
    top_spacing = _floats(_get(ds, "PixelSpacing"), 2)
    top_thick = _get(ds, "SliceThickness")
    offsets = _floats(_get(ds, "GridFrameOffsetVector"), n_frames) if n_frames > 1 else None

    frames = []
    multi = n_frames > 1 or _get(ds, "PerFrameFunctionalGroupsSequence") is not None
    for f in range(n_frames):
        frame_id = f if multi else None
        pos, ori, spacing, thick = top_pos, top_ori, top_spacing, top_thick
        if multi:
            item = _fg_item(ds, f, "PlanePositionSequence")
            if item is not None:
                pos = _floats(_get(item, "ImagePositionPatient"), 3)
            item = _fg_item(ds, f, "PlaneOrientationSequence")
            if item is not None:
                ori = _floats(_get(item, "ImageOrientationPatient"), 6)
            item = _fg_item(ds, f, "PixelMeasuresSequence")
            if item is not None:
                spacing = _floats(_get(item, "PixelSpacing"), 2)
                thick = _get(item, "SliceThickness", thick)
            if offsets is not None and top_pos is not None and top_ori is not None:
                normal = np.cross(top_ori[:3], top_ori[3:])
                pos = top_pos + offsets[f] * normal
        try:
            thick_f = float(thick) if thick is not None else None
        except (TypeError, ValueError):
            thick_f = None
        frames.append(
            _Frame(
                file_index=file_index,
                frame=frame_id,
                values=_rescale(pixels[f], ds, frame_id),
                position=pos,
                orientation=ori,
                pixel_spacing=spacing,
                thickness=thick_f,
                instance=instance,
                localizer=localizer,
            )
        )
    return frames


def _majority(keys: list[Any]) -> Any:
    counts: dict[Any, int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    return max(counts.items(), key=lambda kv: kv[1])[0]


def _assemble(frames: list[_Frame], path: Path, warn: list[str]) -> tuple[list[_Frame], dict]:
    """Filter, sort and check frames; return them and the grid (spacing, origin, direction)."""
    if len(frames) > 1:
        non_loc = [f for f in frames if not f.localizer]
        if non_loc and len(non_loc) < len(frames):
            warn.append(f"{len(frames) - len(non_loc)} localizer image(s) excluded")
            frames = non_loc
        sizes = [f.values.shape for f in frames]
        main_size = _majority(sizes)
        if any(s != main_size for s in sizes):
            n_off = sum(s != main_size for s in sizes)
            warn.append(f"{n_off} image(s) of another size than {main_size} excluded")
            frames = [f for f in frames if f.values.shape == main_size]
        oris = [
            None if f.orientation is None else tuple(np.round(f.orientation, 3)) for f in frames
        ]
        main_ori = _majority(oris)
        if any(o != main_ori for o in oris):
            n_off = sum(o != main_ori for o in oris)
            warn.append(f"{n_off} image(s) with another orientation excluded (localizers?)")
            frames = [f for f, o in zip(frames, oris, strict=True) if o == main_ori]

    first = frames[0]
    ori = first.orientation
    if ori is None:
        ori = np.array([1.0, 0, 0, 0, 1.0, 0])
        warn.append("no ImageOrientationPatient: axial LPS orientation assumed")
    row_cos, col_cos = ori[:3], ori[3:]
    row_cos = row_cos / np.linalg.norm(row_cos)
    col_cos = col_cos / np.linalg.norm(col_cos)
    normal = np.cross(row_cos, col_cos)
    normal /= np.linalg.norm(normal)

    have_pos = all(f.position is not None for f in frames)
    if len(frames) > 1 and have_pos:
        frames = sorted(frames, key=lambda f: float(np.dot(f.position, normal)))
        first = frames[0]
        z = np.array([float(np.dot(f.position, normal)) for f in frames])
        dz = np.diff(z)
        if np.any(dz < _POS_TOL_MM):
            n_unique = len(np.unique(np.round(z / _POS_TOL_MM)))
            raise InputError(
                f"the series holds {len(frames)} images at only {n_unique} distinct slice "
                "positions (several phases, echoes, b-values or repeats?); medssl reads one 3D "
                "volume per series",
                path=path,
                hint="export one phase or echo as its own series, or point medssl at one file",
            )
        spacing_z = float(np.median(dz))
        if np.max(np.abs(dz - spacing_z)) > 0.01 * spacing_z + 1e-3:
            gaps = int(np.sum(np.round(dz / spacing_z) - 1).clip(0))
            if gaps > 0:
                warn.append(
                    f"missing slices: {gaps} gap(s) in the slice positions (spacing "
                    f"{spacing_z:.4g} mm, largest step {dz.max():.4g} mm); the volume uses the "
                    "median spacing, so anatomy after a gap is displaced"
                )
            else:
                warn.append(
                    f"irregular slice spacing: steps from {dz.min():.4g} to {dz.max():.4g} mm; "
                    f"the volume uses the median {spacing_z:.4g} mm"
                )
        step = frames[-1].position - frames[0].position
        along = step / (np.linalg.norm(step) + 1e-12)
        if float(np.dot(along, normal)) < 0.9999:
            angle = float(np.degrees(np.arccos(np.clip(np.dot(along, normal), -1, 1))))
            warn.append(
                f"slices are offset at {angle:.2f} degrees from the slice normal (gantry tilt); "
                "the volume's geometry follows the slice normal"
            )
    else:
        if len(frames) > 1:
            warn.append("no per-image positions: images stacked in file/frame order")
        thick = first.thickness
        spacing_z = float(thick) if thick and thick > 0 else 1.0

    ps = first.pixel_spacing
    if ps is None or np.any(ps <= 0):
        ps = np.array([1.0, 1.0])
        warn.append("no PixelSpacing: 1 mm pixels assumed")
    direction = np.stack([normal, col_cos, row_cos], axis=1)
    origin = first.position if first.position is not None else np.zeros(3)
    grid = {
        "spacing": (spacing_z, float(ps[0]), float(ps[1])),
        "origin": tuple(float(v) for v in origin),
        "direction": direction,
    }
    return frames, grid


def read_dicom(path: str | Path, *, series: str | None = None) -> Volume:
    """Read a DICOM file or one series of a folder as a :class:`Volume`.

    Args:
        path: A DICOM file (single- or multi-frame) or a folder holding one or more series
            (searched recursively).
        series: Which series of a folder to read: its number in the listing, a key prefix or
            the SeriesInstanceUID. Required when the folder holds several.

    Returns:
        The volume, ``(Z, Y, X)`` float32 with the modality LUT applied (CT in HU).

    Raises:
        InputError: Unreadable, non-image, colour, or ambiguous input (message says why).
        MultipleSeriesError: Several series and ``series`` not given.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or folder", path=path, hint="check the path")
    warn: list[str] = []
    with _quiet_pydicom():
        if path.is_dir():
            found, skipped = find_series(path)
            if not found:
                what = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in skipped.items() if v)
                raise InputError(
                    "no DICOM image series found" + (f" ({what} file(s))" if what else " (empty)"),
                    path=path,
                    hint="point medssl at a folder holding the .dcm files of one image series",
                )
            info = _select_series(path, found, series)
            check_image_size(  # before any pixel data is read
                (info.columns, info.rows, info.n_frames),
                None,
                path=path,
                axes="columns x rows x images of the series",
            )
            files = list(info.files)
            if skipped["not_image"]:
                warn.append(f"{skipped['not_image']} non-image DICOM object(s) ignored")
        else:
            files = [path]
        frames: list[_Frame] = []
        first_ds = None
        claimed = 0
        for i, f in enumerate(files):
            try:
                ds = _read(f, header_only=False)
            except Exception as exc:
                raise InputError(
                    f"not a readable DICOM file ({type(exc).__name__})",
                    path=f,
                    hint="the file may be truncated, corrupt or not DICOM",
                ) from None
            if "DirectoryRecordSequence" in ds:
                raise InputError(
                    "this is a DICOMDIR (a media index), not an image",
                    path=f,
                    hint="point medssl at the folder that holds the image files of one series",
                )
            if (
                "PixelData" not in ds
                and "FloatPixelData" not in ds
                and ("DoubleFloatPixelData" not in ds)
            ):
                sop = _get(ds, "SOPClassUID")
                kind = printable(getattr(sop, "name", None)) or None
                raise InputError(
                    "no pixel data: "
                    + (f"this {kind} object holds no image" if kind else "not an image object"),
                    path=f,
                    hint="point medssl at an image file or series",
                )
            claimed += _check_claimed_size(ds, f, claimed)
            frames.extend(_frames_of(ds, i, f))
            if first_ds is None:
                first_ds = ds
        frames, grid = _assemble(frames, path, warn)
        array = np.stack([f.values for f in frames])  # (Z, Y, X)
        nonfinite = count_nonfinite(array)
        if nonfinite.total:
            warn.append(nonfinite_warning(nonfinite, array.size))
        meta = safe_metadata(first_ds)
        syntax = getattr(getattr(first_ds, "file_meta", None), "TransferSyntaxUID", None)
        meta["format"] = "DICOM"
        if syntax is not None:
            meta["TransferSyntax"] = printable(getattr(syntax, "name", str(syntax)))
        uid = str(_get(first_ds, "SeriesInstanceUID", ""))
        meta["series_key"] = series_key(uid)
        meta["n_files"] = len({f.file_index for f in frames})
    for w in warn:
        log.info("%s: %s", path, w)
    return Volume(
        array=array,
        spacing=grid["spacing"],
        origin=grid["origin"],
        direction=grid["direction"],
        modality=printable(_get(first_ds, "Modality", "OT"), 16) or "OT",
        meta=meta,
        warnings=warn,
        source=DicomSource(
            files=tuple(str(f) for f in files),
            frames=tuple((f.file_index, f.frame) for f in frames),
            series_key=meta["series_key"],
        ),
    )
