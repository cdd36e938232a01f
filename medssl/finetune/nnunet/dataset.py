"""Images and label maps to nnU-Net v2's raw dataset format, with the checks nnU-Net leaves to
a failed run.

``DatasetXXX_Name/imagesTr/{case}_0000.nii.gz``, ``labelsTr/{case}.nii.gz`` and a
``dataset.json`` (channel names, labels, ``numTraining``, ``file_ending``), plus
``imagesTs/`` for cases to predict. Images can be anything :func:`medssl.io.read_volume`
reads (NIfTI, NRRD, MHA, DICOM series); they are written as NIfTI with their geometry.
Case IDs come from file names (never from DICOM headers: for a DICOM series the folder name
is used), so nothing identifying reaches nnU-Net's folders.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medssl.data.volumes import VolumeRef, discover_volumes
from medssl.errors import InputError
from medssl.io import ITK_SUFFIXES, Volume, read_volume, write_itk
from medssl.io.atomic import atomic_dir

__all__ = [
    "CHANNEL_NAMES",
    "Case",
    "check_label",
    "dataset_folder_name",
    "export_dataset",
    "pair_cases",
]

#: nnU-Net picks the normalisation from the channel name: "CT" -> CTNormalization, any
#: other name -> ZScoreNormalization.
CHANNEL_NAMES = {"CTNormalization": "CT", "ZScoreNormalization": "MRI"}
_ROLE_SUFFIXES = ("_image", "_img", "_label", "_labels", "_seg", "_mask", "_0000", "_ct", "_t1")
_CASE_CHARS = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Case:
    """One training (or test) case: an image and, for training, its label map."""

    case_id: str
    image: VolumeRef
    label: VolumeRef | None = None


def _key(ref: VolumeRef, several_series: bool = False) -> str:
    p = Path(ref.path)
    if ref.series is not None or p.is_dir():
        # a DICOM series: its folder's name (plus the series' hash when the folder holds more)
        name = p.name + (f"_{ref.series}" if ref.series and several_series else "")
    else:
        name = p.name
        for suffix in sorted(ITK_SUFFIXES, key=len, reverse=True):
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
    name = name.lower()
    changed = True
    while changed:
        changed = False
        for suffix in _ROLE_SUFFIXES:
            if name.endswith(suffix) and len(name) > len(suffix):
                name = name[: -len(suffix)]
                changed = True
    return _CASE_CHARS.sub("-", name).strip("-") or "case"


def pair_cases(
    images: str | Path | Sequence[str | Path], labels: str | Path | Sequence[str | Path] | None
) -> list[Case]:
    """Pair images with label maps by name, in a stable order.

    A label matches an image when their names agree once the format ending and role suffixes
    (``_image``, ``_label``, ``_seg``, ``_mask``, ``_0000``, ...) are removed: ``brain1_image.nrrd``
    pairs with ``brain1_label.nrrd``, ``case7.nii.gz`` with ``case7.nii.gz`` in another folder.

    Args:
        images: Folder, list file or volumes (label maps in it are left out by name).
        labels: Folder, list file or volumes of label maps, or ``None`` for test cases.

    Raises:
        InputError: Two images give the same case ID, an image has no label or a label no
            image (names them).
    """
    refs = discover_volumes(images)
    per_path = Counter(r.path for r in refs)
    by_key: dict[str, VolumeRef] = {}
    for ref in refs:
        key = _key(ref, per_path[ref.path] > 1)
        if key in by_key:
            raise InputError(
                f"two images give the same case ID {key!r}: {by_key[key].path} and {ref.path}",
                hint="rename one of them",
            )
        by_key[key] = ref
    if labels is None:
        return [Case(k, r) for k, r in sorted(by_key.items())]
    found = discover_volumes(labels, exclude=())
    label_per_path = Counter(r.path for r in found)
    label_refs = {_key(r, label_per_path[r.path] > 1): r for r in found}
    missing = sorted(set(by_key) - set(label_refs))
    extra = sorted(set(label_refs) - set(by_key))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"images without a label map: {', '.join(missing[:5])}")
        if extra:
            parts.append(f"label maps without an image: {', '.join(extra[:5])}")
        raise InputError(
            "images and label maps do not pair up: " + "; ".join(parts),
            path=labels if isinstance(labels, str | Path) else None,
            hint="name each label map like its image (e.g. case1_image.nrrd / case1_label.nrrd "
            "or the same file name in the labels folder)",
        )
    return [Case(k, by_key[k], label_refs[k]) for k in sorted(by_key)]


def check_label(image: Volume, label: Volume, where: str) -> np.ndarray:
    """The label map as ``uint8`` after checking it fits the image.

    Raises:
        InputError: Different grid (shape, spacing, origin, direction), non-integer or
            negative values, or more than 255 labels.
    """
    if not image.same_grid(label):
        raise InputError(
            "the label map's geometry differs from the image's: image "
            f"shape {image.shape} spacing {tuple(round(s, 4) for s in image.spacing)} origin "
            f"{tuple(round(o, 3) for o in image.origin)}, label shape {label.shape} spacing "
            f"{tuple(round(s, 4) for s in label.spacing)} origin "
            f"{tuple(round(o, 3) for o in label.origin)}",
            path=where,
            hint="resample the label map onto the image grid (nearest neighbour)",
        )
    values = label.array
    if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
        raise InputError(
            "the label map has non-integer values",
            path=where,
            hint="label maps hold integer class indices (0 = background)",
        )
    if values.min() < 0 or values.max() > 255:
        raise InputError(
            f"label values must lie in 0..255, found {int(values.min())}..{int(values.max())}",
            path=where,
        )
    return values.astype(np.uint8)


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """nnU-Net's ``DatasetXXX_Name``."""
    if not 1 <= dataset_id <= 999:
        raise InputError(f"an nnU-Net dataset ID lies in 1..999, got {dataset_id}")
    if not re.fullmatch(r"[A-Za-z0-9]+", name):
        raise InputError(f"dataset name must be letters and digits only, got {name!r}")
    return f"Dataset{dataset_id:03d}_{name}"


def export_dataset(
    cases: Sequence[Case],
    raw_root: str | Path,
    dataset_id: int,
    name: str,
    *,
    channel_name: str = "MRI",
    label_names: Sequence[str] | None = None,
    test_cases: Sequence[Case] = (),
    overwrite: bool = False,
) -> Path:
    """Write an nnU-Net v2 raw dataset, atomically (all of it or nothing).

    Args:
        cases: Training cases (each with a label map).
        raw_root: The ``nnUNet_raw`` folder.
        dataset_id: 1..999.
        name: Letters and digits.
        channel_name: ``"CT"`` (nnU-Net's CT normalisation) or a name such as ``"MRI"``
            (z-score).
        label_names: Names of labels ``0..K`` (``background`` first); default
            ``background, label_1, ...`` over the values found.
        test_cases: Cases written to ``imagesTs`` for prediction.
        overwrite: Replace an existing dataset folder.

    Returns:
        The dataset folder.

    Raises:
        InputError: Fewer than 2 cases, a label map that does not fit its image, label values
            missing from ``label_names`` or not consecutive.
    """
    if len(cases) < 2:
        raise InputError(
            f"nnU-Net needs at least 2 training cases (one to train on, one to validate), got "
            f"{len(cases)}"
        )
    target = Path(raw_root) / dataset_folder_name(dataset_id, name)
    found: set[int] = set()
    with atomic_dir(target, overwrite=overwrite) as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs"):
            (tmp / sub).mkdir()
        for case in cases:
            if case.label is None:
                raise InputError(f"training case {case.case_id} has no label map")
            image = read_volume(case.image.path, series=case.image.series)
            label = read_volume(case.label.path, series=case.label.series)
            values = check_label(image, label, case.label.path)
            found |= {int(v) for v in np.unique(values)}
            write_itk(image, tmp / "imagesTr" / f"{case.case_id}_0000.nii.gz")
            write_itk(
                Volume(values, image.spacing, image.origin, image.direction),
                tmp / "labelsTr" / f"{case.case_id}.nii.gz",
                dtype=np.uint8,
            )
        for case in test_cases:
            image = read_volume(case.image.path, series=case.image.series)
            write_itk(image, tmp / "imagesTs" / f"{case.case_id}_0000.nii.gz")
        top = max(found)
        names = (
            list(label_names)
            if label_names
            else ["background"] + [f"label_{v}" for v in range(1, top + 1)]
        )
        if top >= len(names):
            raise InputError(
                f"the label maps hold value {top} but only {len(names)} label names were given "
                f"({', '.join(names)})",
                hint="give one name per label value, background first",
            )
        absent = sorted(set(range(len(names))) - found)
        if absent:
            raise InputError(
                f"label values {absent} never occur in the label maps (found "
                f"{sorted(found)}); nnU-Net needs consecutive labels 0..K",
                hint="relabel the maps to consecutive values, or drop unused label names",
            )
        dataset = {
            "channel_names": {"0": channel_name},
            "labels": {n: i for i, n in enumerate(names)},
            "numTraining": len(cases),
            "file_ending": ".nii.gz",
            "name": name,
            "description": "exported by medssl",
        }
        (tmp / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n")
    return target
