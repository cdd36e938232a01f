"""Medical volume I/O: the :class:`Volume`, DICOM, NIfTI, NRRD and MetaImage readers and
writers, the derived-DICOM writer and atomic outputs.

This subpackage imports nothing else of medssl but :mod:`medssl.errors` (the user-facing
errors, re-exported here).
"""

from medssl.errors import InputError, MedsslError, MultipleSeriesError, OutputError
from medssl.io.atomic import (
    OWNER_MARKER,
    atomic_dir,
    atomic_file,
    check_not_input,
    check_writable,
    claim_folder,
    clean_stale_temps,
    is_owned,
    output_group,
    prepare_output,
    remove_owned,
    write_json,
    write_text,
)
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
from medssl.io.itk_io import ITK_SUFFIXES, from_sitk, read_itk, to_sitk, write_itk
from medssl.io.limits import MAX_VOXELS_ENV, check_image_size, max_voxels
from medssl.io.load import detect_format, output_format, read_volume, write_volume
from medssl.io.paths import list_files
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
    "OWNER_MARKER",
    "SAFE_KEYWORDS",
    "Deidentifier",
    "DicomSource",
    "InputError",
    "MedsslError",
    "MultipleSeriesError",
    "NonFiniteCount",
    "OutputError",
    "SeriesInfo",
    "Volume",
    "atomic_dir",
    "atomic_file",
    "canonical_settings",
    "check_image_size",
    "check_not_input",
    "check_writable",
    "claim_folder",
    "clean_stale_temps",
    "count_nonfinite",
    "derive_uid",
    "detect_format",
    "find_series",
    "from_sitk",
    "is_dicom_file",
    "is_owned",
    "list_files",
    "load_tensors_file",
    "max_voxels",
    "orientation_code",
    "output_format",
    "output_group",
    "prepare_output",
    "printable",
    "quantise_int16",
    "quiet_pydicom",
    "read_dicom",
    "read_free_text",
    "read_itk",
    "read_volume",
    "remove_owned",
    "replace_nonfinite",
    "require_finite",
    "safe_metadata",
    "series_key",
    "to_sitk",
    "write_dicom_series",
    "write_itk",
    "write_json",
    "write_text",
    "write_volume",
]
