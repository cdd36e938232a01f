"""The medical volume that every part of medssl passes around.

Conventions (the same everywhere in medssl):

* ``array`` is float32 with axes ``(z, y, x)`` = (slice, row, column). A 2D image is a volume
  with one slice, shape ``(1, H, W)``.
* Physical space is **LPS** (DICOM/ITK patient coordinates, millimetres): +x towards the
  patient's left, +y posterior, +z superior.
* ``spacing`` is in the array's axis order, ``(dz, dy, dx)`` in mm.
* ``origin`` is the LPS position ``(x, y, z)`` of the centre of voxel ``[0, 0, 0]``.
* ``direction`` is a 3×3 matrix whose column ``k`` is the LPS unit vector along array axis
  ``k`` (column 0: slice axis z, column 1: row axis y, column 2: column axis x). For a DICOM
  axial series column 2 is the first triplet of ImageOrientationPatient, column 1 the second,
  and column 0 the slice normal in the direction of increasing slice index. The default,
  :data:`AXIAL`, is the standard axial orientation: x → patient left, y → posterior,
  z → superior (ITK's identity direction).

So the LPS position of index ``(k, j, i)`` is ``origin + direction @ (spacing * (k, j, i))``.
ITK orders the same quantities ``(x, y, z)``; :mod:`medssl.io.itk_io` converts.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from os import PathLike
from typing import Any, NamedTuple

import numpy as np

from medssl.errors import InputError

__all__ = [
    "AXIAL",
    "DicomSource",
    "NonFiniteCount",
    "Volume",
    "count_nonfinite",
    "nonfinite_warning",
    "orientation_code",
    "replace_nonfinite",
    "require_finite",
]

#: Direction of a standard axial volume in :class:`Volume`'s convention (columns z, y, x):
#: z → superior (0, 0, 1), y → posterior (0, 1, 0), x → left (1, 0, 0).
AXIAL = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])

_LPS_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))  # (towards -axis, towards +axis)


@dataclass(frozen=True)
class DicomSource:
    """Where a volume read from DICOM came from (used by the derived-DICOM writer).

    Holds file paths and frame numbers only, never header values.

    Attributes:
        files: The DICOM files of the series.
        frames: Per slice of the volume (in slice order), ``(file index, frame index)``; the
            frame index is ``None`` for single-frame files.
        series_key: A short non-identifying hash of the SeriesInstanceUID.
    """

    files: tuple[str, ...]
    frames: tuple[tuple[int, int | None], ...]
    series_key: str


def orientation_code(direction: np.ndarray) -> str:
    """Three letters naming the LPS direction each of the x, y, z axes points towards.

    A standard axial DICOM series (rows left→right of the patient's left, columns
    anterior→posterior, slices inferior→superior) is ``"LPS"``; nibabel's ``aff2axcodes``
    gives the same letters.

    Args:
        direction: ``(3, 3)`` direction matrix in :class:`Volume`'s convention.
    """
    letters = []
    for axis in (2, 1, 0):  # report in (x, y, z) order, as radiologists read it
        col = direction[:, axis]
        dominant = int(np.argmax(np.abs(col)))
        letters.append(_LPS_LETTERS[dominant][1 if col[dominant] > 0 else 0])
    return "".join(letters)


@dataclass(eq=False, repr=False)
class Volume:
    """A single-channel image on a physical grid.

    Args:
        array: Image values, shape ``(Z, Y, X)`` (a ``(Y, X)`` array becomes ``(1, Y, X)``);
            stored as C-contiguous float32. CT is in Hounsfield units.
        spacing: Voxel size in mm, ``(dz, dy, dx)``.
        origin: LPS position in mm of the centre of voxel ``[0, 0, 0]``, ``(x, y, z)``.
        direction: ``(3, 3)``; column ``k`` is the LPS unit vector of array axis ``k``
            (default :data:`AXIAL`).
        modality: DICOM modality (``"CT"``, ``"MR"``, ...) or ``"OT"`` when unknown.
        meta: Non-identifying metadata only (see :mod:`medssl.io.safe_meta`).
        warnings: Problems found while reading (irregular spacing, missing slices, ...).
        source: Provenance of a volume read from DICOM, for derived-series writing.

    Shape:
        array: ``(Z, Y, X)``.
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: AXIAL.copy())
    modality: str = "OT"
    meta: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    source: DicomSource | None = None

    def __post_init__(self) -> None:
        arr = np.asarray(self.array)
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            raise ValueError(f"Volume array must be (Z, Y, X) or (Y, X), got shape {arr.shape}")
        if min(arr.shape) < 1:
            raise ValueError(f"Volume array must not be empty, got shape {arr.shape}")
        self.array = np.ascontiguousarray(arr, dtype=np.float32)
        spacing = tuple(float(s) for s in self.spacing)
        if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise ValueError(f"spacing must be three positive finite numbers, got {spacing}")
        self.spacing = spacing  # type: ignore[assignment]
        origin = tuple(float(o) for o in self.origin)
        if len(origin) != 3 or not all(np.isfinite(o) for o in origin):
            raise ValueError(f"origin must be three finite numbers, got {origin}")
        self.origin = origin  # type: ignore[assignment]
        direction = np.asarray(self.direction, dtype=np.float64)
        if direction.shape != (3, 3) or not np.all(np.isfinite(direction)):
            raise ValueError(f"direction must be a finite 3x3 matrix, got {direction!r}")
        if abs(np.linalg.det(direction)) < 1e-6:
            raise ValueError(f"direction matrix is singular: {direction.tolist()}")
        self.direction = direction
        self.modality = str(self.modality or "OT").upper()

    # ---- geometry -------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """``(Z, Y, X)``."""
        return self.array.shape  # type: ignore[return-value]

    @property
    def affine(self) -> np.ndarray:
        """``(4, 4)`` matrix mapping homogeneous indices ``(k, j, i, 1)`` to LPS mm."""
        m = np.eye(4)
        m[:3, :3] = self.direction * np.asarray(self.spacing)[None, :]
        m[:3, 3] = self.origin
        return m

    def index_to_physical(self, index: np.ndarray) -> np.ndarray:
        """LPS positions (mm) of voxel indices.

        Shape:
            index: ``(..., 3)`` in ``(k, j, i)`` = ``(z, y, x)`` order; output ``(..., 3)`` LPS.
        """
        idx = np.asarray(index, dtype=np.float64)
        return idx @ self.affine[:3, :3].T + self.affine[:3, 3]

    def physical_to_index(self, point: np.ndarray) -> np.ndarray:
        """Continuous voxel indices ``(k, j, i)`` of LPS positions.

        Shape:
            point: ``(..., 3)`` LPS mm; output ``(..., 3)``.
        """
        p = np.asarray(point, dtype=np.float64) - self.affine[:3, 3]
        return p @ np.linalg.inv(self.affine[:3, :3]).T

    @property
    def orientation(self) -> str:
        """Orientation letters of the x, y, z axes, e.g. ``"LPS"`` (:func:`orientation_code`)."""
        return orientation_code(self.direction)

    def same_grid(self, other: Volume, *, tol: float = 1e-4) -> bool:
        """Whether ``other`` has the same shape, spacing, origin and direction."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=tol, rtol=tol)
            and np.allclose(self.origin, other.origin, atol=1e-3)
            and np.allclose(self.direction, other.direction, atol=tol)
        )

    # ---- convenience ----------------------------------------------------------------------
    def with_array(self, array: np.ndarray, **changes: Any) -> Volume:
        """A new volume on the same grid with other values (and optionally other fields)."""
        arr = np.asarray(array)
        if arr.shape != self.shape:
            raise ValueError(f"new array has shape {arr.shape}, the volume is {self.shape}")
        return dataclasses.replace(
            self,
            array=arr,
            meta=dict(self.meta),
            warnings=list(self.warnings),
            **changes,
        )

    def content_hash(self) -> str:
        """SHA-256 (hex) over the values and the geometry: identifies the image, not the patient."""
        h = hashlib.sha256()
        h.update(str(self.shape).encode())
        h.update(np.ascontiguousarray(self.array).tobytes())
        h.update(np.round(np.asarray(self.spacing), 6).tobytes())
        h.update(np.round(np.asarray(self.origin), 4).tobytes())
        h.update(np.round(self.direction, 6).tobytes())
        return h.hexdigest()

    def looks_like_ct(self) -> bool:
        """Heuristic: do the values look like CT Hounsfield units?

        True when the values stay within [-3100, 32767], the low percentile sits near air or
        below water and the high percentile above fat: what any CT of a body with air around
        it gives. A min-max scaled image ([0, 1]) or an MR image fails it. Only finite values
        are judged: NaN and infinite voxels are a separate problem (:func:`require_finite`).
        """
        a = self.array
        step = max(1, a.size // 2_000_000)
        sample = a.reshape(-1)[::step]
        sample = sample[np.isfinite(sample)]  # NaN/Inf are reported apart (count_nonfinite)
        if sample.size == 0:
            return False
        lo, hi = float(sample.min()), float(sample.max())
        if lo < -3100 or hi > 32767:
            return False
        p1, p99 = np.percentile(sample, [1, 99])
        return bool(p1 <= -200 and p99 >= -50 and (hi - lo) >= 300)

    def summary(self) -> dict[str, Any]:
        """A non-identifying description (what ``medssl info`` prints)."""
        a = self.array
        finite = a[np.isfinite(a)]
        return {
            "shape_zyx": list(self.shape),
            "spacing_zyx_mm": [round(s, 6) for s in self.spacing],
            "origin_lps_mm": [round(o, 4) for o in self.origin],
            "direction": np.round(self.direction, 6).tolist(),
            "orientation": self.orientation,
            "modality": self.modality,
            "min": float(finite.min()) if finite.size else None,
            "max": float(finite.max()) if finite.size else None,
            "mean": float(finite.mean()) if finite.size else None,
            "nonfinite": count_nonfinite(a)._asdict(),
            "meta": dict(self.meta),
            "warnings": list(self.warnings),
        }

    def __repr__(self) -> str:
        return (
            f"Volume(shape={self.shape}, spacing={tuple(round(s, 4) for s in self.spacing)}, "
            f"orientation={self.orientation}, modality={self.modality})"
        )


class NonFiniteCount(NamedTuple):
    """How many voxels of an image are not finite numbers.

    Attributes:
        nan: NaN voxels.
        posinf: ``+inf`` voxels.
        neginf: ``-inf`` voxels.
    """

    nan: int
    posinf: int
    neginf: int

    @property
    def inf(self) -> int:
        """Infinite voxels of either sign."""
        return self.posinf + self.neginf

    @property
    def total(self) -> int:
        """All non-finite voxels."""
        return self.nan + self.inf

    def __str__(self) -> str:
        return f"{self.nan} NaN and {self.inf} infinite voxels"


def count_nonfinite(values: Volume | np.ndarray) -> NonFiniteCount:
    """Count the NaN, ``+inf`` and ``-inf`` voxels of a volume or array."""
    a = np.asarray(values.array if isinstance(values, Volume) else values)
    if a.dtype.kind not in "fc":
        return NonFiniteCount(0, 0, 0)
    bad = a[~np.isfinite(a)]  # usually empty: counting it costs nothing
    if bad.dtype.kind == "c":
        nan = int(np.count_nonzero(np.isnan(bad)))
        return NonFiniteCount(nan, bad.size - nan, 0)
    return NonFiniteCount(
        int(np.count_nonzero(np.isnan(bad))),
        int(np.count_nonzero(bad == np.inf)),
        int(np.count_nonzero(bad == -np.inf)),
    )


def nonfinite_warning(count: NonFiniteCount, n_voxels: int) -> str:
    """The :attr:`Volume.warnings` line the readers record for non-finite voxels."""
    return f"the image holds {count} (of {n_voxels:,} voxels)"


def require_finite(
    volume: Volume,
    *,
    path: str | PathLike[str] | None = None,
    hint: str | None = None,
) -> None:
    """Refuse an image that holds NaN or infinite voxels.

    Args:
        volume: The image.
        path: Its file, for the message.
        hint: What the user can do (default: mentions ``--replace-nonfinite VALUE``).

    Raises:
        InputError: With the counts, e.g. "the image holds 12 NaN and 3 infinite voxels".
    """
    count = count_nonfinite(volume)
    if count.total:
        raise InputError(
            f"the image holds {count} (of {volume.array.size:,}); they would spread through "
            "every computation",
            path=path,
            hint=hint
            or "replace them with a value of your choice (--replace-nonfinite VALUE, e.g. -1024 "
            "for air in CT), or fix the image where it was made",
        )


def replace_nonfinite(volume: Volume, value: float) -> Volume:
    """A copy of ``volume`` with every NaN and infinite voxel set to ``value``.

    The copy's warnings say how many were replaced and with what (the reader's warning about
    them is dropped).

    Args:
        volume: The image.
        value: A finite replacement value (in the image's units, e.g. -1024 HU for air).

    Raises:
        ValueError: ``value`` is not finite.
    """
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"the replacement value must be finite, got {value}")
    count = count_nonfinite(volume)
    if not count.total:
        return volume.with_array(volume.array.copy())
    array = np.where(np.isfinite(volume.array), volume.array, np.float32(value))
    stale = nonfinite_warning(count, volume.array.size)
    new = volume.with_array(array)
    new.warnings = [w for w in new.warnings if w != stale]
    new.warnings.append(f"{count} replaced with {value:g}")
    return new
