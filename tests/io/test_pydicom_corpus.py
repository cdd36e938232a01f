"""Every file of pydicom's test corpus loads or is refused with medssl's own clear error.

The expected outcome of each file is committed in ``pydicom_corpus.tsv`` (file, expect,
match, why). For a file that loads, the Volume must equal pydicom's own pixel array with the
modality rescale applied (per frame, from the functional groups, for multi-frame files),
computed here independently of medssl's reader; for a refused file, the error must be an
:class:`~medssl.io.InputError` naming the file, and pydicom itself must be unable to give a
single-channel image of it (so nothing that pydicom can decode is refused).
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut

from medssl.io import InputError, read_volume

TABLE = Path(__file__).with_name("pydicom_corpus.tsv")
ROWS = list(csv.DictReader(TABLE.open(), delimiter="\t"))


@pytest.fixture(scope="module")
def corpus(sample) -> Path:
    return sample("pydicom_corpus")


def test_table_covers_the_whole_corpus(corpus):
    on_disk = {p.relative_to(corpus).as_posix() for p in corpus.rglob("*") if p.is_file()}
    assert on_disk == {r["file"] for r in ROWS}


def _expected_frames(path: Path) -> np.ndarray:
    """pydicom's pixel array with the modality rescale, frames ordered along the slice normal."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, force=True)
        pixels = ds.pixel_array
    n = int(ds.get("NumberOfFrames", 1) or 1)
    frames = pixels.reshape(n, *pixels.shape[-2:])
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]

    def macro(i: int, name: str):
        for group in ([per_frame[i]] if per_frame else []) + ([shared] if shared else []):
            if name in group:
                return group[name][0]
        return None

    out, z = [], []
    for i in range(n):
        pvt = macro(i, "PixelValueTransformationSequence") if per_frame else None
        if pvt is not None:
            value = frames[i] * float(pvt.RescaleSlope) + float(pvt.RescaleIntercept)
        elif ds.get("Modality") == "RTDOSE" and "DoseGridScaling" in ds:
            value = frames[i] * float(ds.DoseGridScaling)
        else:
            value = apply_modality_lut(frames[i], ds)
        out.append(np.asarray(value, dtype=np.float64))
        pos = macro(i, "PlanePositionSequence") if per_frame else None
        if pos is not None:
            ori = np.asarray(macro(i, "PlaneOrientationSequence").ImageOrientationPatient, float)
            z.append(
                float(
                    np.dot(np.asarray(pos.ImagePositionPatient, float), np.cross(ori[:3], ori[3:]))
                )
            )
        elif "GridFrameOffsetVector" in ds and n > 1:
            z.append(float(ds.GridFrameOffsetVector[i]))
        else:
            z.append(float(i))
    return np.stack(out)[np.argsort(z, kind="stable")]


@pytest.mark.parametrize("row", ROWS, ids=[r["file"] for r in ROWS])
def test_corpus_file(corpus, row):
    path = corpus / row["file"]
    if row["expect"] == "load":
        volume = read_volume(path)
        assert "x".join(map(str, volume.shape)) == row["match"]
        expected = _expected_frames(path)
        np.testing.assert_allclose(volume.array, expected, rtol=1e-6, atol=1e-6)
        return
    with pytest.raises(InputError) as info:
        read_volume(path)
    message = str(info.value)
    assert row["match"] in message, message
    assert str(path) in message  # names the file
    assert "What to do" in message  # says what to do
    # refusing is justified: pydicom cannot give a single-channel image either
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True)
            pixels = ds.pixel_array
    except Exception:
        return
    colour = int(ds.get("SamplesPerPixel", 1)) > 1 or ds.get("PhotometricInterpretation") == (
        "PALETTE COLOR"
    )
    assert colour, f"pydicom decodes {row['file']} as a single-channel image {pixels.shape}"
