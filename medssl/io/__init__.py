"""Medical volume I/O: the :class:`Volume`, DICOM, NIfTI, NRRD and MetaImage readers and
writers, the derived-DICOM writer and atomic outputs.

This subpackage imports nothing else of medssl.
"""

from medssl.io.atomic import atomic_dir, atomic_file, check_not_input, prepare_output
from medssl.io.deidentify import DEID_SALT_ENV, Deidentifier
from medssl.io.dicom_read import (
    SeriesInfo,
    find_series,
    is_dicom_file,
    quiet_pydicom,
    read_dicom,
    read_free_text,
)
from medssl.io.dicom_write import quantise_int16, write_dicom_series
from medssl.io.errors import InputError, MedsslError, MultipleSeriesError
from medssl.io.itk_io import ITK_SUFFIXES, from_sitk, read_itk, to_sitk, write_itk
from medssl.io.limits import MAX_VOXELS_ENV, check_image_size, max_voxels
from medssl.io.load import detect_format, output_format, read_volume, write_volume
from medssl.io.safe_meta import (
    FREE_TEXT_KEYWORDS,
    IDENTIFYING_KEYWORDS,
    SAFE_KEYWORDS,
    safe_metadata,
    series_key,
)
from medssl.io.text import printable
from medssl.io.torchfile import load_tensors_file
from medssl.io.uids import canonical_settings, derive_uid
from medssl.io.volume import (
    AXIAL,
    DicomSource,
    NonFiniteCount,
    Volume,
    count_nonfinite,
    orientation_code,
    replace_nonfinite,
    require_finite,
)

__all__ = [
    "AXIAL",
    "DEID_SALT_ENV",
    "FREE_TEXT_KEYWORDS",
    "IDENTIFYING_KEYWORDS",
    "ITK_SUFFIXES",
    "MAX_VOXELS_ENV",
    "SAFE_KEYWORDS",
    "Deidentifier",
    "DicomSource",
    "InputError",
    "MedsslError",
    "MultipleSeriesError",
    "NonFiniteCount",
    "SeriesInfo",
    "Volume",
    "atomic_dir",
    "atomic_file",
    "canonical_settings",
    "check_image_size",
    "check_not_input",
    "count_nonfinite",
    "derive_uid",
    "detect_format",
    "find_series",
    "from_sitk",
    "is_dicom_file",
    "load_tensors_file",
    "max_voxels",
    "orientation_code",
    "output_format",
    "prepare_output",
    "printable",
    "quantise_int16",
    "quiet_pydicom",
    "read_dicom",
    "read_free_text",
    "read_itk",
    "read_volume",
    "replace_nonfinite",
    "require_finite",
    "safe_metadata",
    "series_key",
    "to_sitk",
    "write_dicom_series",
    "write_itk",
    "write_volume",
]
