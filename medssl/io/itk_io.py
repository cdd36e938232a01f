"""NIfTI, NRRD and MetaImage (MHA/MHD) through SimpleITK.

SimpleITK works in LPS, as :class:`~medssl.io.Volume` does (it converts NIfTI's RAS on read
and write); only the axis order differs: ITK orders spacing, size and direction columns
``(x, y, z)``, the Volume ``(z, y, x)``.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medssl.errors import InputError, OutputError
from medssl.io.atomic import atomic_file
from medssl.io.limits import DEFLATE_MAX_RATIO, check_image_size
from medssl.io.volume import Volume, count_nonfinite, nonfinite_warning

__all__ = ["ITK_SUFFIXES", "from_sitk", "itk_suffix", "read_itk", "to_sitk", "write_itk"]

#: File endings read and written through SimpleITK.
ITK_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def _itk_reason(exc: RuntimeError) -> str:
    """The useful part of an ITK exception: its ``ERROR:`` message and most specific cause,
    without ITK's source paths and object addresses (at most 200 characters)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("Exception thrown") and ".cxx:" not in ln]
    parts = []
    for ln in lines:
        if "ERROR:" in ln:
            ln = ln.split("ERROR:", 1)[1]
            ln = re.sub(r"^\s*\w+\(0x[0-9a-f]+\):\s*", "", ln)
            parts.append(ln.strip())
    causes = [ln for ln in lines if ln.startswith("[")]
    if causes:
        parts.append(re.sub(r"^\[\w+\]\s*\w+:\s*", "", causes[-1]))
    return "; ".join(p for p in parts if p)[:200]


def itk_suffix(path: str | Path) -> str | None:
    """The ITK file ending of ``path`` (``".nii.gz"``, ``".nrrd"``, ...) or ``None``."""
    name = Path(path).name.lower()
    for suffix in ITK_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return None


def from_sitk(image, *, modality: str = "OT", meta: dict | None = None) -> Volume:  # type: ignore[no-untyped-def]
    """Convert a 2D or 3D scalar ``SimpleITK.Image`` to a :class:`Volume`."""
    import SimpleITK as sitk

    dim = image.GetDimension()
    arr = np.asarray(sitk.GetArrayFromImage(image))  # (z, y, x) or (y, x)
    spacing = list(image.GetSpacing())
    origin = list(image.GetOrigin())
    direction_itk = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)
    if dim == 2:
        arr = arr[None]
        spacing = [*spacing, 1.0]
        origin = [*origin, 0.0]
        d3 = np.eye(3)
        d3[:2, :2] = direction_itk
        direction_itk = d3
    return Volume(
        array=arr,
        spacing=tuple(spacing[::-1]),  # type: ignore[arg-type]
        origin=tuple(origin),  # type: ignore[arg-type]
        direction=direction_itk[:, ::-1],
        modality=modality,
        meta=dict(meta or {}),
    )


def to_sitk(volume: Volume, dtype: type | np.dtype | None = None):  # type: ignore[no-untyped-def]
    """Convert a :class:`Volume` to a 3D ``SimpleITK.Image`` (float32 unless ``dtype``)."""
    import SimpleITK as sitk

    arr = volume.array if dtype is None else volume.array.astype(dtype)
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing(tuple(float(s) for s in volume.spacing[::-1]))
    image.SetOrigin(tuple(float(o) for o in volume.origin))
    image.SetDirection(tuple(float(v) for v in volume.direction[:, ::-1].reshape(-1)))
    return image


# ---- what a header claims, checked before ITK allocates --------------------------------------
_HEADER_LIMIT = 1 << 20  # text headers (NRRD, MetaImage) longer than 1 MiB are not parsed
_CHUNK = 1 << 22


@dataclass(frozen=True)
class _Extent:
    """What the file can hold: its size, an upper bound on its image bytes (``None``: no bound
    known) and how the bound was found (for the message)."""

    file_bytes: int | None
    available: int | None = None
    text: str | None = None


@dataclass(frozen=True)
class _NiftiLayout:
    offset: int
    dtype: np.dtype
    n_items: int
    slope: float
    inter: float


def _printable(text: str, limit: int = 80) -> str:
    """A header value made safe to print: control characters replaced, length limited."""
    return "".join(c if c.isprintable() else "?" for c in text)[:limit]


def _itemsize(reader: Any) -> int:
    """Bytes per voxel (all channels) of the pixel type ITK found in the header."""
    import SimpleITK as sitk

    name = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    bits = re.search(r"(\d+)-bit", name)
    size = int(bits.group(1)) // 8 if bits else 1
    if "complex" in name:
        size *= 2
    return size * max(1, int(reader.GetNumberOfComponents()))


def _deflate_extent(file_bytes: int, data_bytes: int, what: str, skip: int = 0) -> _Extent:
    """The bound for ``data_bytes`` of deflate (gzip, zlib) data whose first ``skip``
    decompressed bytes are header, not image."""
    bound = DEFLATE_MAX_RATIO * max(data_bytes, 0)
    return _Extent(
        file_bytes,
        bound - skip,
        f"{what} of {data_bytes:,} bytes decompresses to at most {bound:,} bytes "
        f"({DEFLATE_MAX_RATIO}x, the most deflate can expand)",
    )


def _nifti_layout(path: Path) -> _NiftiLayout:
    import nibabel as nib

    try:
        image: Any = nib.load(str(path))  # reads the header only
        proxy = image.dataobj
        shape = proxy.shape
        dtype = proxy.dtype
        offset = int(proxy.offset)
        slope, inter = proxy.slope, proxy.inter
    except Exception as exc:  # nibabel raises several types for broken headers
        raise InputError(
            f"the NIfTI header is truncated or corrupt ({type(exc).__name__})",
            path=path,
            hint="check that the file was copied completely",
        ) from None
    slope = 1.0 if slope is None or not np.isfinite(slope) or slope == 0 else float(slope)
    inter = 0.0 if inter is None or not np.isfinite(inter) else float(inter)
    n_items = math.prod(int(d) for d in shape)
    return _NiftiLayout(offset, np.dtype(dtype), n_items, slope, inter)


def _nifti_extent(path: Path, layout: _NiftiLayout) -> _Extent:
    size = path.stat().st_size
    if path.name.lower().endswith(".gz"):
        return _deflate_extent(size, size, "its gzip data", skip=layout.offset)
    return _Extent(size, size - layout.offset)


def _text_header(path: Path) -> tuple[bytes, int | None]:
    """The first bytes of a text header and the offset where its blank line ends (if found)."""
    with path.open("rb") as f:
        head = f.read(_HEADER_LIMIT)
    for sep in (b"\n\n", b"\r\n\r\n"):
        at = head.find(sep)
        if at >= 0:
            return head[:at], at + len(sep)
    return head, None


def _data_file(header: Path, name: str) -> Path | None:
    """The single detached data file a header names, or ``None`` for lists and patterns."""
    name = name.strip()
    if not name or "%" in name or name.split()[0].upper() == "LIST" or len(name.split()) > 1:
        return None
    p = Path(name)
    return p if p.is_absolute() else header.parent / p


def _missing_data_file(header: Path, data: Path) -> InputError:
    return InputError(
        f"the data file the header names ({_printable(data.name)}) does not exist",
        path=header,
        hint="keep the header and its data file together in one folder",
    )


def _nrrd_extent(path: Path, itemsize: int) -> _Extent:
    """Bound the image bytes of an NRRD file (attached data, or one detached data file)."""
    head, data_start = _text_header(path)
    fields: dict[str, str] = {}
    for line in head.decode("latin-1").splitlines()[1:]:
        if line.startswith("#") or ":=" in line or ":" not in line:
            continue
        key, value = line.split(":", 1)
        fields[key.strip().lower().replace(" ", "")] = value.strip()
    encoding = fields.get("encoding", "raw").lower()
    name = fields.get("datafile")
    if name is not None:
        data = _data_file(path, name)
        if data is None:
            return _Extent(None)
        if not data.is_file():
            raise _missing_data_file(path, data)
        file_bytes = data_bytes = data.stat().st_size
    else:
        if data_start is None:
            return _Extent(path.stat().st_size)
        file_bytes = path.stat().st_size
        data_bytes = file_bytes - data_start
    try:
        skip = max(0, int(fields.get("byteskip", "0")))
    except ValueError:
        skip = 0
    if encoding == "raw":
        return _Extent(file_bytes, data_bytes - skip)
    if encoding in ("gz", "gzip"):
        return _deflate_extent(file_bytes, data_bytes, "its gzip data")
    if encoding in ("txt", "text", "ascii"):  # a value takes one character and a separator
        values = (data_bytes + 1) // 2
        return _Extent(
            file_bytes,
            values * itemsize,
            f"its {data_bytes:,} characters of text hold at most {values:,} values",
        )
    if encoding == "hex":
        return _Extent(file_bytes, data_bytes // 2)
    return _Extent(file_bytes)  # bzip2: no useful bound; the voxel cap applies


def _metaimage_extent(path: Path) -> _Extent:
    """Bound the image bytes of an MHA/MHD file (local data, or one ElementDataFile)."""
    with path.open("rb") as f:
        head = f.read(_HEADER_LIMIT)
    fields: dict[str, str] = {}
    end = None
    pos = 0
    for raw in head.splitlines(keepends=True):
        pos += len(raw)
        line = raw.decode("latin-1")
        if "=" not in line:
            continue
        key, value = line.split("=", 1)
        key = key.strip().lower()
        fields[key] = value.strip()
        if key == "elementdatafile":  # always the last field
            end = pos
            break
    name = fields.get("elementdatafile")
    if name is None or end is None:
        return _Extent(path.stat().st_size)
    if name.upper() == "LOCAL":
        file_bytes = path.stat().st_size
        data_bytes = file_bytes - end
    else:
        data = _data_file(path, name)
        if data is None:
            return _Extent(None)
        if not data.is_file():
            raise _missing_data_file(path, data)
        file_bytes = data_bytes = data.stat().st_size
        with contextlib.suppress(ValueError):
            data_bytes -= max(0, int(fields.get("headersize", "0")))
    if fields.get("compresseddata", "false").lower() == "true":
        return _deflate_extent(file_bytes, data_bytes, "its compressed data")
    return _Extent(file_bytes, data_bytes)


def _stream(path: Path, offset: int) -> Iterator[bytes]:
    """The bytes of a (possibly gzipped) file from ``offset`` on, in chunks of 4 MiB."""
    import gzip

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        if offset:
            if opener is open:
                f.seek(offset)
            else:
                while offset > 0:
                    step = f.read(min(offset, _CHUNK))
                    if not step:
                        return
                    offset -= len(step)
        while block := f.read(_CHUNK):
            yield block


def _scan_nifti(
    path: Path, layout: _NiftiLayout, *, into: np.ndarray | None = None
) -> tuple[int, int]:
    """Read a NIfTI file's image data in chunks (never all at once).

    Counts the bytes present (up to the expected length) and the non-finite values of a float
    image; with ``into`` (the flat array ITK read), writes them there: ITK's NIfTI reader sets
    NaN and infinite values to 0 without a word.

    Returns:
        Bytes of image data found, non-finite values found.
    """
    expected = layout.n_items * layout.dtype.itemsize
    is_float = layout.dtype.kind == "f"
    found = bad_total = 0
    carry = b""
    try:
        for chunk in _stream(path, layout.offset):
            taken = chunk[: expected - found]  # what lies beyond the image is not read
            start = (found - len(carry)) // layout.dtype.itemsize  # first item in `block`
            found += len(taken)
            block = carry + taken
            usable = len(block) - len(block) % layout.dtype.itemsize
            carry = block[usable:]  # a value split between two chunks
            if is_float:
                values = np.frombuffer(block[:usable], dtype=layout.dtype)
                bad = np.flatnonzero(~np.isfinite(values))
                bad_total += bad.size
                if into is not None and bad.size:
                    scaled = values[bad].astype(np.float64) * layout.slope + layout.inter
                    into[start + bad] = scaled
            if found >= expected:
                break
    except (EOFError, OSError) as exc:
        raise InputError(
            f"the NIfTI file is truncated or corrupt: its image data breaks off after {found:,} "
            f"bytes, {expected:,} expected ({type(exc).__name__})",
            path=path,
            hint="check that the file was copied completely",
        ) from None
    return found, bad_total


def _check_nifti_complete(path: Path) -> None:
    """ITK zero-fills a truncated NIfTI without an error: check that all the data is there."""
    layout = _nifti_layout(path)
    expected = layout.n_items * layout.dtype.itemsize
    if path.name.lower().endswith(".gz"):
        found, _ = _scan_nifti(path, layout)
    else:
        found = path.stat().st_size - layout.offset
    if found < expected:
        raise InputError(
            f"the NIfTI file is truncated: {max(found, 0):,} bytes of image data, "
            f"{expected:,} expected",
            path=path,
            hint="check that the file was copied completely",
        )


def _check_claim(
    reader: Any, path: Path, suffix: str | None
) -> tuple[_NiftiLayout | None, int | None]:
    """Check the header's claimed size against the file and the voxel cap; for NIfTI also
    that the data is all there (ITK zero-fills a truncated NIfTI without an error).

    Returns:
        The NIfTI layout (``None`` for other formats) and, where the data was read (gzipped
        float NIfTI), how many of its values are not finite.
    """
    size = [int(s) for s in reader.GetSize()]
    layout = None
    nonfinite = None
    if suffix in (".nii", ".nii.gz"):
        layout = _nifti_layout(path)
        itemsize = layout.dtype.itemsize
        extent = _nifti_extent(path, layout)
    elif suffix in (".nrrd", ".nhdr"):
        itemsize = _itemsize(reader)
        extent = _nrrd_extent(path, itemsize)
    else:
        itemsize = _itemsize(reader)
        extent = _metaimage_extent(path)
    check_image_size(
        size,
        itemsize,
        path=path,
        axes="x, y, z" if len(size) == 3 else None,
        file_bytes=extent.file_bytes,
        available_bytes=extent.available,
        available_text=extent.text,
    )
    if layout is not None and suffix == ".nii.gz":  # the bound was loose: measure
        found, nonfinite = _scan_nifti(path, layout)
        check_image_size(
            size,
            itemsize,
            path=path,
            axes="x, y, z" if len(size) == 3 else None,
            file_bytes=extent.file_bytes,
            available_bytes=found,
            available_text=f"its gzip data decompresses to only {found:,} bytes of image data",
        )
    return layout, nonfinite


def read_itk(path: str | Path) -> Volume:
    """Read a NIfTI, NRRD or MHA/MHD image as a :class:`Volume`.

    The size the header claims is checked against the file and the voxel cap before anything
    is allocated (:func:`medssl.io.limits.check_image_size`). NaN and infinite voxels are kept
    (also from NIfTI, whose ITK reader would turn them into 0) and counted in
    :attr:`Volume.warnings`; :func:`medssl.io.require_finite` refuses them and
    :func:`medssl.io.replace_nonfinite` replaces them.

    Raises:
        InputError: The file cannot be read, claims more than it holds or than the voxel cap,
            or is not a single-channel 2D/3D image.
    """
    import SimpleITK as sitk

    path = Path(path)
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK prints its own errors to stderr
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        dim = reader.GetDimension()
        n_comp = reader.GetNumberOfComponents()
        size = reader.GetSize()
    except RuntimeError as exc:
        detail = _itk_reason(exc)
        raise InputError(
            "cannot read the image header" + (f" ({detail})" if detail else ""),
            path=path,
            hint="check that the file is a complete NIfTI, NRRD or MHA/MHD image",
        ) from None
    suffix = itk_suffix(path)
    layout, nonfinite = _check_claim(reader, path, suffix)
    if n_comp != 1:
        raise InputError(
            f"the image has {n_comp} components per voxel (colour or vector image); medssl "
            "volumes are single-channel",
            path=path,
            hint="split the channels into separate files",
        )
    if dim == 4 and size[3] == 1:
        dim = 3
    if dim not in (2, 3):
        raise InputError(
            f"the image is {dim}D (size {tuple(size)}); medssl reads 2D and 3D images",
            path=path,
            hint="split a 4D series into 3D volumes first",
        )
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        detail = _itk_reason(exc)
        raise InputError(
            "cannot read the image data (truncated or corrupt file?)"
            + (f" ({detail})" if detail else ""),
            path=path,
            hint="check that the file is complete",
        ) from None
    if image.GetDimension() == 4:
        image = image[:, :, :, 0]
    suffix = suffix or path.suffix
    fmt = {".nii": "NIfTI", ".nii.gz": "NIfTI", ".nrrd": "NRRD", ".nhdr": "NRRD"}.get(
        suffix, "MetaImage"
    )
    pixel_type = image.GetPixelIDTypeAsString()
    volume = from_sitk(image, meta={"format": fmt, "stored_type": pixel_type})
    if (
        layout is not None
        and layout.dtype.kind == "f"
        and layout.n_items == volume.array.size
        and nonfinite != 0
    ):  # put back the NaN and infinite values ITK's NIfTI reader set to 0
        _scan_nifti(path, layout, into=volume.array.reshape(-1))
    count = count_nonfinite(volume)
    if count.total:
        volume.warnings.append(nonfinite_warning(count, volume.array.size))
    return volume


def write_itk(
    volume: Volume,
    path: str | Path,
    *,
    dtype: type | np.dtype | None = None,
    compress: bool | None = None,
) -> Path:
    """Write a :class:`Volume` as NIfTI, NRRD or MHA/MHD (chosen by the file ending), atomically.

    Args:
        volume: The volume.
        path: Output file; its ending picks the format.
        dtype: Voxel type on disk (float32 by default; e.g. ``np.int16`` or ``np.uint8`` for
            label maps; values are rounded for integer types).
        compress: Compress the data (default: on for ``.nii.gz``, ``.nrrd`` and ``.mha``).
    """
    import SimpleITK as sitk

    path = Path(path)
    suffix = itk_suffix(path)
    if suffix is None:
        raise InputError(
            f"unknown image file ending; expected one of {', '.join(ITK_SUFFIXES)}",
            path=path,
            hint="use e.g. out.nii.gz, out.nrrd or out.mha, or a folder name for DICOM",
        )
    arr_dtype = None if dtype is None else np.dtype(dtype)
    if arr_dtype is not None and arr_dtype.kind in "iu":
        info = np.iinfo(arr_dtype)
        rounded = np.clip(np.rint(volume.array), info.min, info.max)
        volume = volume.with_array(rounded)
    image = to_sitk(volume, arr_dtype)
    if compress is None:
        compress = suffix in (".nii.gz", ".nrrd", ".mha")
    expected = tuple(int(v) for v in image.GetSize())
    try:
        with atomic_file(path, verify=lambda p: _verify_written(p, expected)) as tmp:
            sitk.WriteImage(image, str(tmp), useCompression=compress)
    except RuntimeError as exc:  # ITK's own write errors
        reason = _itk_reason(exc).split(":", 1)[0]  # without ITK's temporary path
        raise OutputError(
            f"cannot write the image ({reason}: disk full or I/O error?); nothing was written",
            path=path,
            hint="free space on that disk or write elsewhere",
        ) from None
    return path


def _verify_written(path: Path, size: tuple[int, ...]) -> None:
    """Read a just-written image back whole (ITK does not report a short write) and check
    its size."""
    import SimpleITK as sitk

    try:
        if itk_suffix(path) in (".nii", ".nii.gz"):
            _check_nifti_complete(path)
        image = sitk.ReadImage(str(path))
    except (InputError, RuntimeError):
        raise OutputError(
            "the image did not read back complete (disk full?); nothing was written",
            path=path,
            hint="free space on that disk or write elsewhere",
        ) from None
    if tuple(int(v) for v in image.GetSize()) != size:
        raise OutputError(
            f"the image read back with size {tuple(image.GetSize())}, {size} written",
            path=path,
        )
