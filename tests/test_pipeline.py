"""Pipelines: validation before anything runs (with line numbers), stages, re-runs that do no
work, ``--force``, the HTML report, and the shipped pipeline files."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from medssl.io import read_volume, write_dicom_series
from tests.denoise.phantom import phantom

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    root = tmp_path_factory.mktemp("studies")
    for i, rel in enumerate(["a/ct", "b/deeper/ct"]):
        vol, _ = phantom((3, 80, 88), seed=i)  # big enough for homogeneous noise patches
        write_dicom_series(vol, root / rel)
    return root


def _write(path: Path, spec: dict) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _denoise_spec(studies: Path, out: Path) -> dict:
    return {
        "name": "test",
        "output": str(out),
        "stages": {
            "load": {"input": [str(studies)]},
            "denoise": {"steps": 10, "threads": 1, "format": "dicom"},
            "report": {"title": "test report"},
        },
    }


@pytest.mark.parametrize("name", ["ct-denoise.yaml", "pretrain-finetune.yaml"])
def test_shipped_pipelines_are_valid(medssl, name):
    r = medssl("pipeline", "check", ROOT / "pipelines" / name)
    assert r.code == 0, r.stderr
    assert "valid" in r.stdout


def test_an_invalid_pipeline_is_refused_with_line_numbers_before_anything_runs(
    medssl, studies, tmp_path
):
    out = tmp_path / "out"
    text = f"""output: {out}
stages:
  load:
    input: [{studies}, {tmp_path / "missing"}]
  denoise:
    steps: many
    colour: blue
  export: {{}}
  report: {{}}
"""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    r = medssl("pipeline", "run", path)
    assert r.code == 2
    assert "line 6: stages.denoise.steps" in r.stderr
    assert "line 7: stages.denoise.colour: unknown key" in r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists()
    # types fine, but a missing input and a stage without the stage it needs
    path.write_text(text.replace("steps: many\n    colour: blue", "steps: 5"))
    r = medssl("pipeline", "check", path)
    assert r.code == 2
    assert "line 7: stages.export needs a pretrain stage" in r.stderr  # one line less now
    assert re.search(r"line 4: stages.load.input: no such .*missing", r.stderr)
    assert not out.exists()


def test_denoise_pipeline_runs_once_and_reruns_only_what_is_forced(medssl, studies, tmp_path):
    out = tmp_path / "out"
    path = _write(tmp_path / "p.yaml", _denoise_spec(studies, out))
    r = medssl("pipeline", "run", path)
    assert r.code == 0, r.stderr
    record = json.loads((out / "pipeline.json").read_text())
    keys = record["stages"]["denoise"]["outputs"]["studies"]
    assert len(keys) == 2
    for key in keys:  # a derived DICOM series, sigma maps and previews per series
        assert len(list((out / "denoise" / key / "denoised").glob("*.dcm"))) == 3
        assert (out / "denoise" / key / "sigma_maps").is_dir()
    derived = read_volume(out / "denoise" / keys[0] / "denoised")
    assert derived.shape == (3, 80, 88) and derived.modality == "CT"
    report = (out / "report" / "report.html").read_text()
    assert all(k in report for k in keys)
    assert report.count("data:image/png;base64,") == 6  # noisy, denoised, sigma x 2 studies
    # per study: noise SD, NPS mean frequency and edge width before/after, and the NPS plot
    assert report.count('class="quality"') == 2 and report.count("NPS denoised") == 2
    quality = json.loads((out / "denoise" / keys[0] / "job.json").read_text())["quality"]
    assert quality["noise_sd_after_hu"] < quality["noise_sd_before_hu"]
    assert f"{quality['noise_sd_before_hu']:.1f}</td>" in report
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", report)  # nothing fetched
    assert (out / "logs" / "denoise.log").read_text().count("noise") >= 2
    # a re-run does no work
    stamp = (out / "denoise" / keys[0] / "job.json").stat().st_mtime_ns
    r = medssl("pipeline", "run", path)
    assert r.code == 0 and r.stdout.count("skipped") == 3
    # --force report reruns the report only; the series stay
    r = medssl("pipeline", "run", path, "--force", "report")
    assert r.code == 0 and r.stdout.count("skipped") == 2
    assert (out / "denoise" / keys[0] / "job.json").stat().st_mtime_ns == stamp
    # --force denoise redoes the series (from an empty stage folder) and the report after it
    r = medssl("pipeline", "run", path, "--force", "denoise")
    assert r.code == 0 and r.stdout.count("skipped") == 1
    assert (out / "denoise" / keys[0] / "job.json").stat().st_mtime_ns != stamp
    # changed settings: the stage starts afresh, no series of the old settings is left
    spec = _denoise_spec(studies, out)
    spec["stages"]["denoise"]["seed"] = 1
    _write(path, spec)
    r = medssl("pipeline", "run", path)
    assert r.code == 0 and r.stdout.count("skipped") == 1
    seeds = {json.loads(p.read_text())["settings"]["seed"] for p in out.glob("denoise/*/job.json")}
    assert seeds == {1}
    r = medssl("pipeline", "run", path, "--force", "finetune")
    assert r.code == 2 and "no such stage" in r.stderr


@pytest.mark.slow  # nnU-Net end to end again (the finetune tests cover it by default): ~55 s
def test_pretrain_export_finetune_predict_report_pipeline(medssl, tmp_path):
    from tests.finetune.test_finetune import _labelled
    from tests.ssl.volumes import TINY_CONFIG, write_collection

    vols = write_collection(tmp_path / "vols")
    img, lab = _labelled(tmp_path / "lab")
    recipe = copy.deepcopy(TINY_CONFIG)
    recipe["data"]["cache_dir"] = str(tmp_path / "cache")
    recipe["train"]["steps"] = 2
    _write(tmp_path / "recipe.yaml", recipe)
    test_img = tmp_path / "test_img"
    test_img.mkdir()
    shutil.copy(img / "c3_image.nrrd", test_img)
    test_lab = tmp_path / "test_lab"
    test_lab.mkdir()
    shutil.copy(lab / "c3_label.nii.gz", test_lab)
    spec = {
        "output": str(tmp_path / "out"),
        "stages": {
            "load": {"input": [str(vols)]},
            "pretrain": {"method": "mae", "config": str(tmp_path / "recipe.yaml")},
            "export": {},
            "finetune": {
                "data": [str(img)],
                "labels": [str(lab)],
                "trainer": "nnUNetTrainer_medsslShort",
                "epochs": 1,
                "iterations": 2,
                "device": "cpu",
            },
            "predict": {"input": [str(test_img)], "labels": [str(test_lab)]},
            "report": {},
        },
    }
    path = _write(tmp_path / "p.yaml", spec)
    r = medssl("pipeline", "run", path, timeout=900)
    assert r.code == 0, r.stderr[-3000:]
    record = json.loads((tmp_path / "out" / "pipeline.json").read_text())["stages"]
    assert record["pretrain"]["outputs"]["step"] == 2
    dice = record["predict"]["outputs"]["dice"]
    assert set(dice["cases"]) == {"c3"} and 0 <= dice["mean"]["mean"] <= 1
    assert (tmp_path / "out" / "predict" / "c3.nii.gz").is_file()
    report = (tmp_path / "out" / "report" / "report.html").read_text()
    assert "<svg" in report and "Dice per label" in report


@pytest.mark.slow
def test_the_report_renders_in_headless_chromium(medssl, studies, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("Chromium is needed: apt-get install chromium")
    out = tmp_path / "out"
    path = _write(tmp_path / "p.yaml", _denoise_spec(studies, out))
    assert medssl("pipeline", "run", path).code == 0
    shot = tmp_path / "shot.png"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1100,900"]
    cmd += [f"--screenshot={shot}", (out / "report" / "report.html").as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.shape == (900, 1100)
    assert pixels.std() > 20  # text and images, not a blank page
    assert (pixels < 30).mean() > 0.05  # the CT previews drew (dark air around the body)


def test_each_stage_hands_on_typed_outputs_that_read_back_from_json():
    from medssl.pipeline import (
        OUTPUTS,
        STAGES,
        DenoiseOutputs,
        ExportOutputs,
        FinetuneOutputs,
        LoadOutputs,
        PredictOutputs,
        PretrainOutputs,
        ReportOutputs,
        stage_outputs,
    )

    examples = [
        LoadOutputs(("/in/a", "/in/b"), 3, ("credit",)),
        DenoiseOutputs("/out/denoise", ("a", "b"), ("c",)),
        PretrainOutputs("/out/pretrain/last.pt", 2),
        ExportOutputs("/out/export/pretrained.pth"),
        FinetuneOutputs("/out/finetune", {"validation": {"mean": {"x": 0.5}}}, ("w",)),
        PredictOutputs("/out/predict", {"cases": {}}),
        ReportOutputs("/out/report/report.html"),
    ]
    assert [OUTPUTS[name] for name in STAGES] == [type(e) for e in examples]
    done = {}
    for name, outputs in zip(STAGES, examples, strict=True):
        record = json.loads(json.dumps(outputs.to_dict()))
        assert all(not isinstance(v, tuple) for v in outputs.to_dict().values())
        done[name] = {"outputs": {**record, "added_later": 1}}  # unknown keys are ignored
        assert stage_outputs(done, name) == outputs
    # the keys pipeline.json held before the stages had types
    assert DenoiseOutputs("/o", ("a",), ()).to_dict() == {
        "folder": "/o",
        "studies": ["a"],
        "skipped": [],
    }
    assert LoadOutputs.from_dict({"inputs": ["/in"], "series": 1}).credits == ()
    assert stage_outputs({}, "export") is None
