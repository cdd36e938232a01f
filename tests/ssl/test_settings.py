"""One frozen settings model for pretraining: the recipe's sections (the loop's settings
declared once, in ``train``), PretrainSettings filled alike by the CLI and the pipeline, and
the engine's parts (the metrics log trimmed on resume)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from medssl.ssl import engine
from medssl.ssl.config import PretrainConfig, TrainSection, load_config
from medssl.ssl.settings import PretrainSettings


def test_the_recipe_is_frozen_and_changed_by_copy():
    cfg = load_config({"train": {"steps": 7}})
    with pytest.raises(ValidationError):
        cfg.train.steps = 3
    with pytest.raises(ValidationError):
        cfg.mae.block_size = 4
    with pytest.raises(ValidationError):
        cfg.train = TrainSection()
    changed = cfg.with_steps(3)
    assert changed.train.steps == 3 and cfg.train.steps == 7
    assert changed.train.lr == cfg.train.lr and changed.mae == cfg.mae
    assert cfg.with_steps(None) is cfg


def test_the_engine_takes_the_train_section():
    assert engine.EngineConfig is TrainSection
    t = TrainSection(warmup_steps=50)
    stage = t.for_stage(10)  # a short stage: the warm-up ends before it does
    assert (stage.steps, stage.warmup_steps, t.steps) == (10, 9, 1000)
    assert t.for_stage(1).warmup_steps == 0
    assert t.for_stage(200).warmup_steps == 50
    assert engine.lr_factor(0, stage) == pytest.approx(1 / 9)


def test_cli_and_pipeline_make_the_same_settings(tmp_path):
    from medssl.pipeline import PretrainStage

    recipe = tmp_path / "r.yaml"
    recipe.write_text("train: {steps: 9, lr: 0.001}\n")
    stage = PretrainStage(method="mae", config=str(recipe), steps=4)
    settings = stage.settings()
    assert settings == PretrainSettings.from_options("mae", recipe, 4)
    assert settings.recipe is not None
    assert (settings.recipe.train.steps, settings.recipe.train.lr) == (4, 0.001)
    # no recipe and no steps: none given (a new run's defaults, a resumed run's own)
    bare = PretrainStage(method="s3d").settings()
    assert bare.recipe is None and bare.resolved_recipe() == PretrainConfig()
    with pytest.raises(ValidationError):
        settings.method = "s3d"  # type: ignore[misc]


def test_unknown_methods_are_refused():
    from medssl.errors import InputError

    with pytest.raises(InputError, match="unknown method 'vae'; choose one of mae, s3d"):
        PretrainSettings.from_options("vae")
    with pytest.raises(ValidationError, match="unknown method"):
        PretrainSettings(method="vae")


def test_the_entry_point_takes_the_recipe_once(tmp_path):
    from medssl.ssl.pretrain import pretrain

    settings = PretrainSettings.from_options("mae")
    with pytest.raises(TypeError, match="not also as config"):
        pretrain(settings, tmp_path, tmp_path / "run", config={})


def test_the_metrics_log_drops_rows_past_the_checkpoint_on_resume(tmp_path):
    rows = [{"step": s, "train/loss": 1.0 / s} for s in (1, 2, 3, 4)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    log = engine.MetricsLog(tmp_path, start=2, resume=True, enabled=True)
    log.log(3, {"train/loss": 0.5})
    log.close()
    kept = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in kept] == [1, 2, 3]
    assert kept[-1]["train/loss"] == 0.5
    quiet = engine.MetricsLog(tmp_path / "other", start=0, resume=False, enabled=False)
    quiet.log(1, {"x": 1.0})  # other ranks log nothing
    quiet.close()
    assert not (tmp_path / "other").exists()


def test_the_augmentation_sections_become_the_augmentation_config():
    from dataclasses import asdict, fields

    from medssl.ssl.config import AugmentSection, ViewsSection
    from medssl.transforms.ssl import AugmentConfig

    defaults = asdict(AugmentConfig())
    patch = AugmentSection().augment_config()
    assert {k: defaults[k] for k in AugmentSection.model_fields} == AugmentSection().model_dump()
    assert asdict(patch) == defaults  # no gamma or noise on MAE patches
    views = ViewsSection(flip_prob=0.3, affine_prob=0.2, noise_prob=0.1)
    free, aligned = asdict(views.augment_config(False)), asdict(views.augment_config(True))
    assert {f.name for f in fields(AugmentConfig)} == set(ViewsSection.model_fields) - {"jitter"}
    assert free == views.model_dump(exclude={"jitter"})
    assert aligned == {**free, "flip_prob": 0.0, "affine_prob": 0.0}
