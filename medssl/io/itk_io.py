"""NIfTI, NRRD and MetaImage (MHA/MHD) through SimpleITK.

SimpleITK works in LPS, as :class:`~medssl.io.Volume` does (it converts NIfTI's RAS on read
and write); only the axis order differs: ITK orders spacing, size and direction columns
``(x, y, z)``, the Volume ``(z, y, x)``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from medssl.io.atomic import atomic_file
from medssl.io.errors import InputError
from medssl.io.volume import Volume

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


def _check_nifti_complete(path: Path) -> None:
    """ITK zero-fills a truncated NIfTI without an error; check the data length ourselves."""
    import gzip

    import nibabel as nib

    try:
        header = nib.load(str(path)).header
        shape = header.get_data_shape()
        nbytes = int(np.prod(shape)) * header.get_data_dtype().itemsize
        expected = int(header.get_data_offset()) + nbytes
        if path.name.lower().endswith(".gz"):
            size = 0
            with gzip.open(path, "rb") as f:
                while block := f.read(1 << 22):
                    size += len(block)
        else:
            size = path.stat().st_size
    except (EOFError, OSError, ValueError) as exc:
        raise InputError(
            f"the NIfTI file is truncated or corrupt ({type(exc).__name__})",
            path=path,
            hint="check that the file was copied completely",
        ) from None
    if size < expected:
        raise InputError(
            f"the NIfTI file is truncated: {size} bytes, {expected} expected",
            path=path,
            hint="check that the file was copied completely",
        )


def read_itk(path: str | Path) -> Volume:
    """Read a NIfTI, NRRD or MHA/MHD image as a :class:`Volume`.

    Raises:
        InputError: The file cannot be read, or is not a single-channel 2D/3D image.
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
    if itk_suffix(path) in (".nii", ".nii.gz"):
        _check_nifti_complete(path)
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
    suffix = itk_suffix(path) or path.suffix
    fmt = {".nii": "NIfTI", ".nii.gz": "NIfTI", ".nrrd": "NRRD", ".nhdr": "NRRD"}.get(
        suffix, "MetaImage"
    )
    pixel_type = image.GetPixelIDTypeAsString()
    volume = from_sitk(image, meta={"format": fmt, "stored_type": pixel_type})
    if not np.all(np.isfinite(volume.array)):
        volume.warnings.append("the image holds NaN or infinite values")
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
    with atomic_file(path) as tmp:
        sitk.WriteImage(image, str(tmp), useCompression=compress)
    return path
