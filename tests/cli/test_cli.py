"""The `medssl` command: exit codes, messages, no tracebacks for bad input."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from medssl import __version__
from medssl.io import read_volume
from tests.io.dicom_factory import small_ct, write_series


def test_version_and_help(medssl):
    r = medssl("--version")
    assert r.code == 0 and __version__ in r.stdout
    r = medssl("--help")
    assert r.code == 0
    for command in ("info", "convert", "data", "demo"):
        assert command in r.stdout


def _bad(r, *needles):
    assert r.code == 2, r.output
    assert "Traceback" not in r.output
    for needle in needles:
        assert needle in r.output, r.output


def test_info_on_missing_path(medssl, tmp_path):
    _bad(medssl("info", tmp_path / "nope.dcm"), "nope.dcm", "no such file")


def test_info_on_empty_folder(medssl, tmp_path):
    (tmp_path / "empty").mkdir()
    _bad(medssl("info", tmp_path / "empty"), "empty", "no DICOM image series")


def test_info_on_non_image_file(medssl, tmp_path):
    (tmp_path / "notes.dcm").write_text("this is not DICOM\n" * 20)
    _bad(medssl("info", tmp_path / "notes.dcm"), "notes.dcm", "not a readable DICOM file")
    (tmp_path / "notes.txt").write_text("hello")
    _bad(medssl("info", tmp_path / "notes.txt"), "notes.txt", "unknown file type")


def test_info_on_truncated_file(medssl, sample, tmp_path):
    data = sample("ct_small").read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) // 2])
    _bad(medssl("info", tmp_path / "cut.dcm"), "cut.dcm", "What to do")


def test_info_on_structure_set(medssl, sample):
    rtss = sample("chest_ct").parent / "rtss.dcm"
    _bad(medssl("info", rtss), "rtss.dcm", "no pixel data")


def test_info_on_ct_file_and_json(medssl, sample):
    r = medssl("info", sample("ct_small"))
    assert r.code == 0, r.output
    assert "128 x 128 x 1" in r.stdout and "CT" in r.stdout and "LPS" in r.stdout
    r = medssl("info", "--json", sample("ct_small"))
    summary = json.loads(r.stdout)
    assert summary["shape_zyx"] == [1, 128, 128] and summary["modality"] == "CT"


def test_info_lists_series_of_a_folder(medssl, tmp_path):
    write_series(small_ct(seed=1), tmp_path / "d" / "a", series_uid="1.2.3.4.1", description="one")
    write_series(small_ct(seed=2), tmp_path / "d" / "b", series_uid="1.2.3.4.2", description="two")
    r = medssl("info", tmp_path / "d")
    assert r.code == 0 and "2 DICOM series" in r.stdout
    assert "'one'" not in r.stdout and "'two'" not in r.stdout  # free text: only on request
    assert "[1] key=" in r.stdout and "[2] key=" in r.stdout
    r = medssl("info", tmp_path / "d", "--show-descriptions")
    assert r.code == 0 and "'one'" in r.stdout and "'two'" in r.stdout
    r = medssl("info", tmp_path / "d", "--series", "2")
    assert r.code == 0 and "20 x 24 x 6" in r.stdout


def test_convert_round_trip_and_refusals(medssl, tmp_path):
    write_series(small_ct(), tmp_path / "src")
    r = medssl("convert", tmp_path / "src", tmp_path / "out.nii.gz")
    assert r.code == 0, r.output
    np.testing.assert_array_equal(read_volume(tmp_path / "out.nii.gz").array, small_ct().array)
    # existing output without --overwrite
    _bad(medssl("convert", tmp_path / "src", tmp_path / "out.nii.gz"), "already exists")
    # output inside the input
    _bad(medssl("convert", tmp_path / "src", tmp_path / "src" / "x.nii.gz"), "input")
    assert not (tmp_path / "src" / "x.nii.gz").exists()
    # unknown dtype
    _bad(medssl("convert", "--dtype", "int7", tmp_path / "src", tmp_path / "o.nrrd"), "dtype")
    # a non-HU image to a CT series: refused, nothing written
    r = medssl("convert", tmp_path / "out.nii.gz", tmp_path / "scaled.nii.gz")
    vol = read_volume(tmp_path / "out.nii.gz")
    from medssl.io import write_volume

    write_volume(vol.with_array(vol.array / 4000 + 0.5), tmp_path / "unit.nii.gz")
    _bad(medssl("convert", tmp_path / "unit.nii.gz", tmp_path / "unit_dcm"), "Hounsfield")
    assert not (tmp_path / "unit_dcm").exists()
    r = medssl("convert", "--modality", "MR", tmp_path / "unit.nii.gz", tmp_path / "unit_dcm")
    assert r.code == 0, r.output
    assert len(list((tmp_path / "unit_dcm").glob("*.dcm"))) == 6


def test_usage_error_exits_2(medssl):
    r = medssl("info")
    assert r.code == 2 and "Traceback" not in r.output
    r = medssl("no-such-command")
    assert r.code == 2


def test_unknown_sample(medssl):
    _bad(medssl("data", "fetch", "nope"), "unknown sample", "lung1")


def test_console_script_runs():
    exe = Path(sys.executable).with_name("medssl")
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and __version__ in proc.stdout


def test_the_denoise_options_default_to_the_settings_model():
    """`medssl denoise`'s option defaults are :class:`DenoiseSettings`' own, which the demo
    and the library use (a hand-copied dict of the defaults in the demo missed new options
    and the demo stopped with a typer object as a value)."""
    from medssl.cli.denoise import denoise
    from medssl.denoise.settings import DenoiseSettings

    params = inspect.signature(denoise).parameters
    option = {"preset": "preset_name", "replace_nonfinite": "replace_nonfinite_value"}
    defaults = DenoiseSettings()
    for name in DenoiseSettings.model_fields:
        if name in ("format", "deidentify"):  # batch-only, and the --deidentify flag's rule
            continue
        assert params[option.get(name, name)].default.default == getattr(defaults, name), name
