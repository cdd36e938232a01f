"""The denoise settings model and the job record: one digest over the settings that change
the output, option errors named by option, and job records of every version readable."""

from __future__ import annotations

import hashlib
import json

import pytest
from pydantic import ValidationError

from medssl.denoise.record import PREVIEWS, RECORD_VERSION, JobRecord
from medssl.denoise.settings import (
    OUTPUT_FIELDS,
    PRESET_NAMES,
    DenoiseSettings,
    parse_settings,
)
from medssl.errors import InputError


def test_the_preset_names_are_filter2noise_s():
    from medssl.denoise.filter2noise import PRESETS

    assert tuple(PRESETS) == PRESET_NAMES


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("preset", "global"),
        ("mode", "3d"),
        ("seed", 1),
        ("steps", 7),
        ("strength", 0.5),
        ("roi", "0:1,0:5,0:5"),
        ("replace_nonfinite", -1024.0),
        ("deidentify", "shift"),
    ],
)
def test_every_output_setting_changes_the_digest(field, value):
    assert field in OUTPUT_FIELDS
    base = DenoiseSettings()
    assert base.model_copy(update={field: value}).digest() != base.digest()


def test_format_device_and_threads_do_not_change_the_digest():
    """The same pixels written as DICOM are the same series whether asked for as ``dicom``
    or ``auto``; where and how fast a run computes changes nothing it writes."""
    base = DenoiseSettings()
    for update in ({"format": "dicom"}, {"format": "nifti"}, {"device": "cuda"}, {"threads": 3}):
        assert base.model_copy(update=update).digest() == base.digest()
    # the roi factor counts only with a roi
    assert DenoiseSettings(roi_factor=0.0).digest() == base.digest()
    with_roi = DenoiseSettings(roi="0:1,0:5,0:5")
    assert with_roi.model_copy(update={"roi_factor": 0.0}).digest() != with_roi.digest()
    assert base.resolved_format(True) == "dicom" and base.resolved_format(False) == "nifti"
    assert DenoiseSettings(format="dicom").resolved_format(False) == "dicom"


def test_settings_are_frozen_and_refuse_unknown_keys():
    s = DenoiseSettings()
    with pytest.raises(ValidationError, match="frozen"):
        s.seed = 3  # type: ignore[misc]
    with pytest.raises(ValidationError, match="colour"):
        DenoiseSettings(colour="blue")  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"mode": "4d"}, "--mode must be 2d or 3d"),
        ({"preset": "fast"}, "unknown preset 'fast'"),
        ({"strength": -1.0}, "--strength must be >= 0"),
        ({"roi_factor": -1.0}, "--roi-factor must be >= 0"),
        ({"steps": 0}, "--steps must be >= 1"),
        ({"threads": 0}, "--threads must be >= 1"),
    ],
)
def test_parse_settings_names_the_option(values, needle):
    with pytest.raises(InputError) as info:
        parse_settings(**values)
    assert needle in info.value.message


def test_the_job_record_round_trips_and_reads_version_1_records(tmp_path):
    settings = DenoiseSettings(steps=10, format="dicom")
    record = JobRecord(
        key="abc",
        settings=settings.output_settings(),
        digest=settings.digest(),
        format="dicom",
        output="denoised",
        shape=[3, 40, 44],
        noise_hu_before=30.0,
        noise_hu_after=12.0,
        quality={"noise_sd_before_hu": 30.0},
        seconds=4.0,
    )
    data = json.loads(json.dumps(record.to_dict()))
    assert data["version"] == RECORD_VERSION
    assert JobRecord.from_dict(data) == record
    # version 1: the CLI's batch wrote (preset, mode, seed, steps), the pipeline's also format
    v1_cli = {
        "key": "abc",
        "settings": {"preset": "medssl", "mode": "2d", "seed": 0, "steps": 10},
        "output": "denoised",
        "shape": [3, 40, 44],
        "noise_hu_before": 30.0,
        "noise_hu_after": 12.0,
        "seconds": 4.0,
    }
    v1_pipeline = {**v1_cli, "settings": {**v1_cli["settings"], "format": "dicom"}}
    for old in (v1_cli, v1_pipeline):
        read = JobRecord.from_dict(old)
        assert read.version == 1 and read.done_with(settings.digest(), "dicom")
        assert not read.done_with(settings.digest(), "nifti")
        assert read.previews == PREVIEWS
    nifti = JobRecord.from_dict({**v1_cli, "output": "denoised.nii.gz"})
    assert nifti.format == "nifti"
    # a record naming a preview outside its folder names nothing
    (tmp_path / "job" / "preview").mkdir(parents=True)
    (tmp_path / "outside.png").write_bytes(b"png")
    odd = JobRecord.from_dict({**data, "previews": {"noisy": "../outside.png"}})
    assert odd.preview(tmp_path / "job", "noisy") is None


def test_the_pipeline_stage_embeds_the_settings_and_keeps_its_record_digest():
    """The stage's keys are the settings' batch keys plus ``shard``; its ``pipeline.json``
    digest is made from the same text as before it embedded the settings model (a pipeline
    finished before does not start its denoise stage afresh) unless its preset's model changed
    since (medssl in 2D: the NLM last stage, revision 2), and the settings it hands on have the
    digest of the same options given to ``medssl denoise --batch``."""
    from medssl.pipeline import DeidentifySpec, DenoiseStage, _digest

    def text(preset: str, mode: str) -> str:
        return (
            f'{{"preset":"{preset}","mode":"{mode}","seed":0,"steps":10,"format":"dicom",'
            '"threads":1,"device":"cpu","shard":null}'
        )

    def sha(t: str) -> str:
        return hashlib.sha256(t.encode()).hexdigest()[:16]

    for preset, mode in (("medssl", "3d"), ("published", "2d"), ("nlm", "2d")):
        stage = DenoiseStage(preset=preset, mode=mode, steps=10, threads=1)
        assert _digest(stage, None) == sha(text(preset, mode)), (preset, mode)
    stage = DenoiseStage(steps=10, threads=1)
    assert _digest(stage, None) == sha(text("medssl", "2d") + "revision 2")
    old = parse_settings(preset="bilateral").output_settings()
    assert "preset_revision" not in old
    assert parse_settings().output_settings()["preset_revision"] == 2
    cli = parse_settings(steps=10, threads=1, deidentify="remove")
    assert stage.settings(DeidentifySpec(dates="remove")).digest() == cli.digest()
    with pytest.raises(ValidationError, match="strength: not a key of the denoise stage"):
        DenoiseStage(strength=0.5)
    with pytest.raises(ValidationError, match="deidentify: not a key"):
        DenoiseStage(deidentify="shift")


def test_a_roi_mask_counts_by_its_content_not_its_path(tmp_path):
    """The same mask under two paths gives one digest; another mask under the same path another
    digest; no path enters the output settings."""
    a, b = tmp_path / "a" / "mask.nii.gz", tmp_path / "b" / "other.nii.gz"
    for p in (a, b):
        p.parent.mkdir()
        p.write_bytes(b"mask bytes")
    in_a, in_b = DenoiseSettings(roi=str(a)), DenoiseSettings(roi=str(b))
    assert in_a.digest() == in_b.digest()
    assert str(tmp_path) not in json.dumps(in_a.output_settings())
    assert in_a.output_settings()["roi"].startswith("mask sha256:")
    before = in_a.digest()
    a.write_bytes(b"another mask")
    assert DenoiseSettings(roi=str(a)).digest() != before
    # a mask given as a folder (a DICOM series) counts by its files
    series = tmp_path / "series"
    series.mkdir()
    (series / "1.dcm").write_bytes(b"one")
    first = DenoiseSettings(roi=str(series)).digest()
    (series / "2.dcm").write_bytes(b"two")
    assert DenoiseSettings(roi=str(series)).digest() != first
    # a box counts as written; a record's settings give back the same digest
    assert DenoiseSettings(roi="0:1,0:5,0:5").output_settings()["roi"] == "0:1,0:5,0:5"
    record = DenoiseSettings.from_record(in_b.output_settings())
    assert record is not None and record.digest() == in_b.digest()
