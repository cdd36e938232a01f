"""Predicted label maps as DICOM Segmentation objects (highdicom), for DICOM inputs.

The SEG references the source series instance by instance (so viewers overlay it), carries
one segment per foreground label (named as in ``dataset.json``) and is written atomically.
Its UIDs are derived from the source SOP instance UIDs and the predicted labels, so the same
prediction gives the same SEG. With a :class:`~medssl.io.Deidentifier` the SEG follows the
DICOM PS3.15 Basic Profile (pseudonymous patient, UIDs mapped with the salt, so it stays in the
study and frame of reference of the de-identified derived series made with the same salt).
The DICOM libraries' warnings and logs, which can quote header values, are kept quiet.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from medssl import __version__
from medssl.errors import InputError
from medssl.io import Deidentifier, Volume, derive_uid, quiet_pydicom
from medssl.io.atomic import atomic_file

__all__ = ["write_seg"]


def write_seg(
    image: Volume,
    prediction: np.ndarray,
    labels: dict[str, int],
    target: Path,
    *,
    deidentify: Deidentifier | None = None,
) -> Path:
    """Write ``prediction`` (on ``image``'s grid) as a DICOM SEG of ``image``'s source series.

    Args:
        image: A volume read from DICOM (``image.source`` set).
        prediction: Label map, shape ``(Z, Y, X)`` = ``image.shape``, values = ``labels``.
        labels: Label name -> value (0 = background, left out).
        target: The ``.dcm`` file to write.
        deidentify: Write the SEG under the DICOM PS3.15 Basic Profile with this salt;
            ``None`` keeps the source's patient and study.

    Raises:
        InputError: ``image`` was not read from DICOM, or the shapes differ.
    """
    with quiet_pydicom():
        return _write_seg(image, prediction, labels, target, deidentify)


def _write_seg(
    image: Volume,
    prediction: np.ndarray,
    labels: dict[str, int],
    target: Path,
    deidentify: Deidentifier | None,
) -> Path:
    import highdicom as hd
    import pydicom
    from pydicom.sr.codedict import codes

    if image.source is None:
        raise InputError("a DICOM SEG needs a DICOM source series", path=target)
    if prediction.shape != image.shape:
        raise InputError(
            f"prediction shape {prediction.shape} differs from the image's {image.shape}",
            path=target,
        )
    src = image.source
    datasets = [pydicom.dcmread(f) for f in src.files]
    if all(frame is None for _, frame in src.frames):
        sources = [datasets[i] for i, _ in src.frames]
        frames = prediction
    elif len(datasets) == 1:  # one multi-frame instance: SEG frames in the source's order
        sources = datasets
        order = np.argsort([int(frame or 0) for _, frame in src.frames])
        frames = prediction[order]
    else:
        raise InputError(
            "DICOM SEG output supports single-frame series or one multi-frame instance",
            path=target,
        )
    fg = {n: v for n, v in labels.items() if v != 0}
    algorithm = hd.AlgorithmIdentificationSequence(
        name="medssl nnU-Net fine-tuning",
        version=__version__,
        family=codes.cid7162.ArtificialIntelligence,
    )
    segments = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=name[:64],
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for i, name in enumerate(fg)
    ]
    # label map with segment numbers 1..K in the order of ``segments``
    remap = np.zeros(max(labels.values()) + 1, dtype=np.uint8)
    for i, value in enumerate(fg.values()):
        remap[value] = i + 1
    pixel = remap[frames.astype(np.int64)]
    digest = hashlib.sha256(pixel.tobytes()).hexdigest()
    base = [str(ds.SOPInstanceUID) for ds in datasets]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixel,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=derive_uid(*base, digest, "seg-series"),
        series_number=9001,
        sop_instance_uid=derive_uid(*base, digest, "seg-instance"),
        instance_number=1,
        manufacturer="medssl",
        manufacturer_model_name="medssl finetune (nnU-Net v2)",
        software_versions=__version__,
        device_serial_number="0",
        series_description="medssl nnU-Net segmentation",
        omit_empty_frames=False,
    )
    if deidentify is not None:
        deidentify.apply(seg)
        # medssl's own texts and Type 1 equipment attributes, not the source's
        seg.SeriesDescription = "medssl nnU-Net segmentation"
        seg.DeviceSerialNumber = "0"
    with atomic_file(target) as tmp:
        seg.save_as(tmp)
    return target
