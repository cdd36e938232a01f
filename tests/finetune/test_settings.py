"""The fine-tuning settings model: one declaration that the CLI's options, the pipeline's
finetune stage and the run record use; typed finetune stage outputs (fast: no nnU-Net run)."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medssl.errors import InputError
from medssl.finetune.settings import FinetuneSettings, parse_settings
from medssl.pipeline import FinetuneOutputs, FinetuneStage, _digest


def test_the_finetune_options_default_to_the_settings_model():
    """`medssl finetune`'s options are the settings' fields, with their defaults and help
    texts (the command declared all 21 again, a third list beside the pipeline stage's)."""
    from medssl.cli.finetune import finetune

    params = inspect.signature(finetune).parameters
    cli_only = {"output", "deidentify", "salt_file", "deid_dates"}
    assert set(params) - cli_only == set(FinetuneSettings.model_fields) - {
        "dataset_name",  # not an option
        "deidentify",  # the --deidentify flag's date rule (--deidentify-dates)
    }
    for name, param in params.items():
        if name in cli_only:
            continue
        option = param.default
        default = FinetuneSettings.default(name)
        if name == "folds":  # typed as text, "0,1,2"
            assert option.default == ",".join(map(str, default))
        else:
            assert option.default == default, name
        assert FinetuneSettings.help(name) and FinetuneSettings.help(name) in option.help, name


def test_cli_values_are_checked_by_the_settings_with_options_named():
    with pytest.raises(InputError) as exc:
        parse_settings(data=["a"], labels=["b"], spacing="native", modality="pet", warmup=1.0)
    message = exc.value.message
    assert "--spacing must be one of 'pretrained' or 'target', got 'native'" in message
    assert "--modality must be one of 'CT' or 'MR', got 'PET'" in message
    assert "--warmup must be <= 0.9" in message
    with pytest.raises(InputError, match="--test-labels needs --test-data"):
        parse_settings(data=["a"], labels=["b"], test_labels=["c"])
    with pytest.raises(InputError, match="--trainer must name an nnU-Net trainer class"):
        parse_settings(data=["a"], labels=["b"], trainer="UNet")
    with pytest.raises(InputError, match="--folds takes fold numbers 0 or more"):
        parse_settings(data=["a"], labels=["b"], folds=[-1])
    assert parse_settings(data=["a"], labels=["b"], modality="mr").modality == "MR"


def test_cli_refuses_bad_values_before_any_work(medssl, tmp_path):
    r = medssl("finetune", "-d", tmp_path, "-l", tmp_path, "-o", tmp_path / "run", "--lr", "-1")
    assert r.code == 2 and "--lr must be >= 0.0" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


def test_settings_are_frozen_and_record_as_json():
    settings = FinetuneSettings(data=["a"], labels=["b"], folds=[0, 2])
    with pytest.raises(ValidationError, match="frozen"):
        settings.seed = 3  # type: ignore[misc]
    record = settings.record()
    assert record["folds"] == [0, 2] and json.loads(json.dumps(record)) == record
    assert FinetuneSettings.model_validate(record) == settings
    assert settings.changed_from(record) == []
    assert settings.changed_from({**record, "device": "cuda"}) == ["device"]


def test_a_run_record_written_before_the_settings_model_is_read():
    """``finetune.json`` of earlier runs (the dataclass's ``asdict``): predict reads it; a
    pretrained run of then resumes with its recipe spelled out (it loaded every pretrained key
    with deep supervision at lr 1e-2: today's defaults differ), a scratch run as it is."""
    old = {
        "data": ["/d"], "labels": ["/l"], "pretrained": "/w.pth", "scratch": False,
        "trainer": "nnUNetTrainer_medsslShort", "folds": [0], "dataset_id": 900,
        "dataset_name": "medssl", "modality": None, "label_names": ["background", "x"],
        "splits": None, "test_data": None, "test_labels": None, "spacing": "pretrained",
        "epochs": 2, "iterations": 2, "val_iterations": None, "lr": None, "warmup": None,
        "seed": 0, "device": "cpu", "deidentify": None,
    }  # fmt: skip
    settings = FinetuneSettings.model_validate(old)
    assert {k: v for k, v in settings.record().items() if k in old} == old
    # it ran every pretrained key, deep supervision, lr 1e-2: today's defaults differ ...
    assert settings.changed_from(old) == ["deep_supervision", "load", "lr"]
    # ... and the same recipe spelled out resumes it
    same = settings.model_copy(update={"load": "all", "deep_supervision": True, "lr": 0.01})
    assert same.changed_from(old) == []
    # a scratch run of then is a scratch run of now
    scratch = {**old, "pretrained": None, "scratch": True}
    assert FinetuneSettings.model_validate(scratch).changed_from(scratch) == []


class _OldFinetuneStage(BaseModel):
    """The pipeline's finetune stage as it was declared before it embedded the settings."""

    model_config = ConfigDict(extra="forbid")
    data: list[str] | None = None
    labels: list[str] = Field(min_length=1)
    scratch: bool = False
    trainer: str = "nnUNetTrainer_medssl"
    folds: list[int] = [0]
    epochs: int | None = Field(None, ge=1)
    iterations: int | None = Field(None, ge=1)
    seed: int = 0
    splits: str | None = None
    label_names: list[str] | None = None
    device: str = "auto"
    KEYS: ClassVar = None


@pytest.mark.parametrize(
    "keys",
    [
        {"labels": ["sample:brain1/brain1_label.nrrd"]},
        {
            "data": ["sample:brain1", "sample:brain2"],
            "labels": ["/x/l1.nrrd", "/x/l2.nrrd"],
            "label_names": ["background", "lesion"],
            "trainer": "nnUNetTrainer_medsslShort",
            "epochs": 2,
            "iterations": 5,
            "folds": [1, 0],
            "seed": 3,
            "scratch": True,
            "splits": "/x/splits.json",
            "device": "cpu",
        },
    ],
)
def test_the_finetune_stage_keeps_the_digest_of_old_pipeline_files(keys: dict[str, Any]):
    """An old pipeline file's finetune stage gets the digest its record holds: a re-run does
    not start nnU-Net again. Keys offered since (``lr``, ...) change it when set."""
    stage = FinetuneStage(**keys)
    old = _OldFinetuneStage(**keys)
    assert _digest(stage, None) == _digest(old, None)
    assert _digest(FinetuneStage(**keys, lr=0.01), None) != _digest(stage, None)
    assert _digest(FinetuneStage(**keys, lr=0.02), None) != _digest(
        FinetuneStage(**keys, lr=0.01), None
    )


def test_the_finetune_stage_refuses_keys_of_other_stages():
    for key, value in (("pretrained", "/w.pth"), ("test_data", ["/t"]), ("deidentify", "shift")):
        with pytest.raises(ValueError, match=f"{key}: not a key of the finetune stage"):
            FinetuneStage(labels=["/l"], **{key: value})


def test_the_finetune_stage_fills_the_run_settings(tmp_path):
    stage = FinetuneStage(labels=["ignored"], lr=0.01, folds=[0, 1], splits=str(tmp_path / "s"))
    settings = stage.settings([tmp_path / "d"], [tmp_path / "l"], "/w.pth", None)
    assert type(settings) is FinetuneSettings
    assert settings.data == (str(tmp_path / "d"),) and settings.labels == (str(tmp_path / "l"),)
    assert settings.pretrained == "/w.pth" and settings.lr == 0.01 and settings.folds == (0, 1)
    assert settings.splits == str(tmp_path / "s") and settings.deidentify is None


def test_finetune_outputs_round_trip_and_old_records_load():
    outputs = FinetuneOutputs("/run", {"validation": {"cases": {}, "mean": {}}}, ("w",))
    assert FinetuneOutputs.from_dict(json.loads(json.dumps(outputs.to_dict()))) == outputs
    old = {"run": "/run", "dice": {"validation": {}}, "warnings": []}  # pipeline.json before
    assert FinetuneOutputs.from_dict(old).to_dict() == old
    assert Path(FinetuneOutputs.from_dict(old).run) == Path("/run")


def test_a_pipeline_with_bad_finetune_values_is_refused_before_anything_runs(medssl, tmp_path):
    """The stage's values are checked with the pipeline file (line numbers), not when the
    stage starts after hours of pretraining: the stage had its own copy of the keys, with no
    check of the trainer, the device or the folds."""
    (tmp_path / "img").mkdir()
    (tmp_path / "lab").mkdir()
    path = tmp_path / "p.yaml"
    path.write_text(
        f"output: {tmp_path / 'out'}\n"
        "stages:\n"
        "  finetune:\n"
        f"    data: [{tmp_path / 'img'}]\n"
        f"    labels: [{tmp_path / 'lab'}]\n"
        "    scratch: true\n"
        "    trainer: UNetTrainer\n"
        "    device: gpu\n"
        "    folds: [-1]\n"
    )
    r = medssl("pipeline", "check", path)
    assert r.code == 2, r.output
    assert "line 7: stages.finetune.trainer" in r.stderr and "nnU-Net trainer" in r.stderr
    assert "line 8: stages.finetune.device" in r.stderr
    assert "line 9: stages.finetune.folds" in r.stderr
    assert not (tmp_path / "out").exists()


def test_the_settings_and_the_command_module_load_no_torch():
    """``medssl finetune``'s module and the settings are imported by every ``medssl`` call:
    torch and nnU-Net are loaded only when a run starts (``medssl.finetune.finetune`` too)."""
    code = (
        "import sys, medssl.finetune, medssl.finetune.settings, medssl.cli.finetune\n"
        "print(sorted(m for m in ('torch', 'nnunetv2') if m in sys.modules))\n"
        "from medssl.finetune import finetune\n"
        "from medssl.finetune.nnunet.run import finetune as entry\n"
        "print(finetune is entry)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[]", "True"]
