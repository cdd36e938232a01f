"""Pipelines: a YAML file naming stages with their configs, validated whole before anything runs.

Stages run in a fixed order, each at most once: ``load`` (inputs: folders, files or
``sample:NAME[/FILE]``), ``denoise`` (batch Filter2Noise, one output per series), ``pretrain``,
``export`` (nnU-Net weights), ``finetune`` (nnU-Net v2, Dice), ``predict`` (new images with the
fine-tuned model) and ``report`` (one self-contained HTML file). Example::

    output: runs/ct-denoise          # relative paths: to the current folder
    stages:
      load: {input: [sample:lung1]}
      denoise: {preset: medssl, seed: 0, format: dicom}
      report: {}

``OUTPUT/pipeline.json`` records each finished stage (its config, what it produced, its time);
a re-run skips stages whose config is unchanged, ``force`` reruns one (and the stages after
it). Every stage writes under ``OUTPUT/<stage>/`` and logs to ``OUTPUT/logs/<stage>.log``.

The output folder and its stage folders are medssl's (a ``.medssl-owned`` marker): a run
refuses an existing non-empty output folder without it, a stage that starts afresh removes
only its own marked folder, and an output that is, holds or lies inside an input (or the
reverse) is refused before anything runs (``pipeline check`` reports it too).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from medssl.denoise.settings import DenoiseSettings
from medssl.errors import InputError
from medssl.finetune.settings import FinetuneSettings
from medssl.io import (
    Deidentifier,
    check_not_input,
    claim_folder,
    clean_stale_temps,
    remove_owned,
    write_json,
)
from medssl.ssl.settings import PretrainSettings

__all__ = [
    "OUTPUTS",
    "STAGES",
    "DenoiseOutputs",
    "ExportOutputs",
    "FinetuneOutputs",
    "LoadOutputs",
    "PipelineSpec",
    "PredictOutputs",
    "PretrainOutputs",
    "ReportOutputs",
    "StageOutputs",
    "check_pipeline",
    "load_pipeline",
    "run_pipeline",
    "stage_outputs",
]

log = logging.getLogger(__name__)
STAGES = ("load", "denoise", "pretrain", "export", "finetune", "predict", "report")


class _Stage(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoadStage(_Stage):
    """Inputs: folders of series (any nesting), image files, or ``sample:NAME[/FILE]``."""

    input: list[str] = Field(min_length=1)


class DenoiseStage(DenoiseSettings):
    """Batch Filter2Noise: :class:`~medssl.denoise.settings.DenoiseSettings` (the keys
    ``preset``, ``mode``, ``seed``, ``steps``, ``format`` (default ``dicom`` here),
    ``threads``, ``device``) and ``shard``. The single-scan settings (``strength``, ``roi``,
    ``roi_factor``, ``replace_nonfinite``) are not offered, and ``deidentify`` is the
    pipeline's top-level one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: the keys of the stage (its record's digest is made from these, as before it embedded
    #: the settings model)
    KEYS: ClassVar[tuple[str, ...]] = (
        "preset", "mode", "seed", "steps", "format", "threads", "device", "shard",
    )  # fmt: skip

    format: Literal["dicom", "nifti", "auto"] = "dicom"
    shard: str | None = None

    @model_validator(mode="after")
    def _batch_keys_only(self) -> DenoiseStage:
        extra = sorted(set(self.model_fields_set) - set(self.KEYS))
        if extra:
            raise ValueError(
                f"{', '.join(extra)}: not a key of the denoise stage (single-scan settings are "
                "not offered; deidentify is the pipeline's top-level key)"
            )
        return self

    def settings(self, deidentify: DeidentifySpec | None) -> DenoiseSettings:
        """The run's :class:`DenoiseSettings` (the pipeline's date rule when it
        de-identifies)."""
        values = self.model_dump(include=set(DenoiseSettings.model_fields))
        values["deidentify"] = deidentify.dates if deidentify is not None else None
        return DenoiseSettings(**values)


class PretrainStage(_Stage):
    """``medssl pretrain``'s settings as keys: ``method`` (the registered methods; a test
    checks this list against :mod:`medssl.ssl.registry`), ``config`` (a recipe file) and
    ``steps`` (replaces ``train.steps``)."""

    method: Literal["mae", "s3d", "contrastive", "graphmatch"] = "s3d"
    config: str | None = None
    steps: int | None = Field(None, ge=1)

    def settings(self) -> PretrainSettings:
        """The run's :class:`~medssl.ssl.settings.PretrainSettings` (the recipe loaded)."""
        return PretrainSettings.from_options(self.method, self.config, self.steps)


class ExportStage(_Stage):
    pass


class FinetuneStage(FinetuneSettings):
    """nnU-Net fine-tuning: :class:`~medssl.finetune.settings.FinetuneSettings`, except
    ``pretrained`` (the export stage's weights), ``deidentify`` (the pipeline's top-level
    key), ``test_data``/``test_labels`` (the predict stage) and ``dataset_name``. ``data``
    defaults to the load stage's inputs; ``data``, ``labels`` and ``splits`` may name
    ``sample:NAME[/FILE]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: the stage's keys before it embedded the settings model, in the order its record hashes
    #: them: an old pipeline file keeps its digest (and its finished fine-tuning)
    BASE_KEYS: ClassVar[tuple[str, ...]] = (
        "data", "labels", "scratch", "trainer", "folds", "epochs", "iterations", "seed",
        "splits", "label_names", "device",
    )  # fmt: skip
    #: the keys offered since: they enter the digest when the file sets them
    MORE_KEYS: ClassVar[tuple[str, ...]] = (
        "modality", "spacing", "val_iterations", "lr", "warmup", "dataset_id", "load",
        "deep_supervision",
    )  # fmt: skip

    data: tuple[str, ...] | None = None  # type: ignore[assignment]
    labels: tuple[str, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _stage_keys_only(self) -> FinetuneStage:
        extra = sorted(set(self.model_fields_set) - {*self.BASE_KEYS, *self.MORE_KEYS})
        if extra:
            raise ValueError(
                f"{', '.join(extra)}: not a key of the finetune stage (pretrained comes from "
                "the export stage, test images go to the predict stage, deidentify is the "
                "pipeline's top-level key)"
            )
        return self

    @property
    def KEYS(self) -> tuple[str, ...]:  # noqa: N802 (read by _digest like DenoiseStage.KEYS)
        """The keys the stage's record digest is made from: :attr:`BASE_KEYS` and those of
        :attr:`MORE_KEYS` the file sets."""
        return (*self.BASE_KEYS, *(k for k in self.MORE_KEYS if k in self.model_fields_set))

    def settings(
        self,
        data: list[Path],
        labels: list[Path],
        pretrained: str | None,
        deidentify: DeidentifySpec | None,
    ) -> FinetuneSettings:
        """The run's :class:`FinetuneSettings`: ``data``/``labels`` resolved (samples fetched),
        the export stage's weights, the pipeline's date rule when it de-identifies."""
        values = self.model_dump(include=set(FinetuneSettings.model_fields))
        values.update(
            data=[str(p.resolve()) for p in data],
            labels=[str(p.resolve()) for p in labels],
            splits=str(_resolve(self.splits).resolve()) if self.splits else None,
            pretrained=pretrained,
            deidentify=deidentify.dates if deidentify is not None else None,
        )
        return FinetuneSettings(**values)


class StageOutputs:
    """What a stage hands on to the stages after it: ``pipeline.json``'s ``outputs`` of the stage.

    Each stage has a frozen dataclass of this kind; :meth:`to_dict` writes the JSON record
    (tuples as lists) and :meth:`from_dict` reads a record of any version (unknown keys are
    ignored, missing optional ones take their defaults).
    """

    def to_dict(self) -> dict[str, Any]:
        """The JSON record of the outputs."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in fields(self)  # type: ignore[arg-type]
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Any:
        """The outputs of a ``pipeline.json`` record."""
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(
            **{k: tuple(v) if isinstance(v, list) else v for k, v in record.items() if k in known}
        )


@dataclass(frozen=True)
class LoadOutputs(StageOutputs):
    """The load stage's inputs, resolved.

    Attributes:
        inputs: The input folders and files (``sample:`` names resolved to their paths).
        series: How many series (or volume files) the inputs hold.
        credits: The attribution lines of the sample data used (for the report).
    """

    inputs: tuple[str, ...]
    series: int = 0
    credits: tuple[str, ...] = ()


@dataclass(frozen=True)
class DenoiseOutputs(StageOutputs):
    """The denoise stage's batch output.

    Attributes:
        folder: The batch output folder (one sub-folder per series key).
        studies: The keys of the series denoised.
        skipped: The keys of the series skipped (retried by the next run).
    """

    folder: str
    studies: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()


@dataclass(frozen=True)
class PretrainOutputs(StageOutputs):
    """The pretrain stage's result.

    Attributes:
        checkpoint: The last checkpoint (``last.pt``) of the run.
        step: The step it holds.
    """

    checkpoint: str
    step: int = 0


@dataclass(frozen=True)
class ExportOutputs(StageOutputs):
    """The export stage's nnU-Net weights file (``weights``)."""

    weights: str


@dataclass(frozen=True)
class FinetuneOutputs(StageOutputs):
    """The finetune stage's run.

    Attributes:
        run: The fine-tuning run folder (its ``finetune.json``, model and predictions).
        dice: Dice per set (``validation``, ``test``), per case and label, with means.
        warnings: The run's warnings (e.g. a normalisation that differs from pretraining).
    """

    run: str
    dice: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class PredictOutputs(StageOutputs):
    """The predict stage's predictions (``folder``) and their Dice where labels were given."""

    folder: str
    dice: dict[str, Any] | None = None


@dataclass(frozen=True)
class ReportOutputs(StageOutputs):
    """The report stage's HTML file (``report``)."""

    report: str


OUTPUTS: dict[str, type[StageOutputs]] = {
    "load": LoadOutputs,
    "denoise": DenoiseOutputs,
    "pretrain": PretrainOutputs,
    "export": ExportOutputs,
    "finetune": FinetuneOutputs,
    "predict": PredictOutputs,
    "report": ReportOutputs,
}


def stage_outputs(done: dict[str, Any], name: str) -> Any:
    """The typed outputs of stage ``name`` from ``pipeline.json``'s ``stages`` (None if absent)."""
    if name not in done:
        return None
    return OUTPUTS[name].from_dict(done[name]["outputs"])


class PredictStage(_Stage):
    input: list[str] = Field(min_length=1)
    labels: list[str] | None = None


class ReportStage(_Stage):
    title: str | None = None


class Stages(_Stage):
    load: LoadStage | None = None
    denoise: DenoiseStage | None = None
    pretrain: PretrainStage | None = None
    export: ExportStage | None = None
    finetune: FinetuneStage | None = None
    predict: PredictStage | None = None
    report: ReportStage | None = None


class DeidentifySpec(_Stage):
    """De-identify the DICOM outputs (derived series, SEGs) under the PS3.15 Basic Profile.

    The salt comes from ``salt_file`` or the ``MEDSSL_DEID_SALT`` environment variable; it is
    never written to ``pipeline.json`` or the logs.
    """

    salt_file: str | None = None
    dates: Literal["shift", "remove"] = "shift"


class PipelineSpec(_Stage):
    """A validated pipeline file."""

    name: str | None = None
    output: str
    deidentify: DeidentifySpec | None = None
    stages: Stages


# ---- loading and validation ----------------------------------------------------------------


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """The 1-based line of the YAML node at pydantic's error location ``loc``."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if k.value == part), None)
            if nxt is None:  # an unknown or missing key: point at the key or the mapping
                key = next((k for k, _ in node.value if k.value == part), None)
                return key.start_mark.line + 1 if key is not None else line
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


def _resolve(item: str) -> Path:
    """A path, or ``sample:NAME[/FILE]`` fetched into medssl's cache."""
    if item.startswith("sample:"):
        from medssl.data import SAMPLES, fetch

        name, _, member = item[len("sample:") :].partition("/")
        if name not in SAMPLES:
            raise InputError(f"unknown sample {name!r} (see medssl data list)")
        main = fetch(name)
        return (main if main.is_dir() else main.parent) / member if member else main
    return Path(item).expanduser()


def load_pipeline(path: str | Path) -> PipelineSpec:
    """Read and validate a pipeline file (types, unknown keys, stage dependencies, inputs).

    Raises:
        InputError: Every problem found, each with its line number.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError("no such pipeline file", path=path, hint="see the files in pipelines/")
    text = path.read_text()
    try:
        node = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"not valid YAML: {exc}", path=path) from None
    if not isinstance(raw, dict):
        raise InputError("a pipeline is a mapping with output: and stages:", path=path)
    try:
        spec = PipelineSpec.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            where = ".".join(str(p) for p in e["loc"])
            line = _line_of(node, e["loc"])
            msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
            problems.append(f"line {line}: {where}: {msg}")
        raise InputError("invalid pipeline:\n  " + "\n  ".join(problems), path=path) from None
    problems = []

    def at(*loc: Any) -> str:
        return f"line {_line_of(node, ('stages', *loc))}"

    st = spec.stages
    present = [s for s in STAGES if getattr(st, s) is not None]
    if not present:
        problems.append("stages: no stage given")
    needs = {
        "denoise": ("load",),
        "pretrain": ("load",),
        "export": ("pretrain",),
        "predict": ("finetune",),
    }
    for stage, required in needs.items():
        for r in required:
            if getattr(st, stage) is not None and getattr(st, r) is None:
                problems.append(f"{at(stage)}: stages.{stage} needs a {r} stage")
    if st.finetune is not None:
        if st.finetune.data is None and st.load is None:
            problems.append(f"{at('finetune')}: stages.finetune needs data: or a load stage")
        if st.export is None and not st.finetune.scratch:
            problems.append(
                f"{at('finetune')}: stages.finetune needs an export stage (or scratch: true)"
            )
    if st.denoise is not None and st.denoise.shard is not None:
        from medssl.denoise.batch import parse_shard

        try:
            parse_shard(st.denoise.shard)
        except InputError as exc:
            problems.append(f"{at('denoise', 'shard')}: {exc.message}")
    # inputs that must exist (samples are checked by name, fetched when run)
    checks: list[tuple[tuple, list[str] | str | None]] = [
        (("load", "input"), st.load.input if st.load else None),
        (("pretrain", "config"), st.pretrain.config if st.pretrain else None),
        (("finetune", "data"), list(st.finetune.data or []) if st.finetune else None),
        (("finetune", "labels"), list(st.finetune.labels) if st.finetune else None),
        (("finetune", "splits"), st.finetune.splits if st.finetune else None),
        (("predict", "input"), st.predict.input if st.predict else None),
        (("predict", "labels"), st.predict.labels if st.predict else None),
    ]
    for loc, value in checks:
        items = [value] if isinstance(value, str) else value or []
        for i, item in enumerate(items):
            sub = loc if isinstance(value, str) else (*loc, i)
            if item.startswith("sample:"):
                from medssl.data import SAMPLES

                name = item[len("sample:") :].partition("/")[0]
                if name not in SAMPLES:
                    problems.append(f"{at(*sub)}: unknown sample {name!r} (medssl data list)")
            elif not Path(item).expanduser().exists():
                problems.append(f"{at(*sub)}: stages.{'.'.join(map(str, loc))}: no such {item}")
    for item in _input_paths(spec, resolve_samples=False):
        try:
            check_not_input(spec.output, [item])
        except InputError:
            problems.append(
                f"line {_line_of(node, ('output',))}: output {spec.output} and input {item} "
                "overlap (one is or lies inside the other): medssl never writes inside its inputs"
            )
    if problems:
        raise InputError("invalid pipeline:\n  " + "\n  ".join(problems), path=path)
    return spec


def _input_paths(spec: PipelineSpec, *, resolve_samples: bool) -> list[Path]:
    """Every file or folder the pipeline reads (samples only when ``resolve_samples``)."""
    st = spec.stages
    items: list[str] = []
    if st.load:
        items += st.load.input
    if st.pretrain and st.pretrain.config:
        items.append(st.pretrain.config)
    if st.finetune:
        items += [*(st.finetune.data or []), *st.finetune.labels]
        items += [st.finetune.splits] if st.finetune.splits else []
    if st.predict:
        items += [*st.predict.input, *(st.predict.labels or [])]
    paths = []
    for item in items:
        if item.startswith("sample:"):
            if resolve_samples:
                paths.append(_resolve(item))
        else:
            paths.append(Path(item).expanduser())
    return paths


def check_pipeline(path: str | Path) -> PipelineSpec:
    """Validate a pipeline file (and a pretraining recipe it names) without running it."""
    spec = load_pipeline(path)
    if spec.stages.pretrain is not None and spec.stages.pretrain.config:
        from medssl.ssl.config import load_config

        load_config(spec.stages.pretrain.config)
    return spec


# ---- running -------------------------------------------------------------------------------


def _digest(config: BaseModel, deidentify: DeidentifySpec | None) -> str:
    keys = getattr(config, "KEYS", None)  # a stage embedding a settings model: its own keys
    text = config.model_dump_json(include=set(keys) if keys else None)
    text += deidentify.dates if deidentify else ""
    if isinstance(config, DenoiseStage):  # a preset whose model changed since: a new digest
        revision = config.settings(deidentify).output_settings().get("preset_revision")
        text += f"revision {revision}" if revision is not None else ""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _deidentifier(spec: PipelineSpec) -> Deidentifier | None:
    if spec.deidentify is None:
        return None
    salt = Path(spec.deidentify.salt_file) if spec.deidentify.salt_file else None
    return Deidentifier.from_env_or_file(salt, dates=spec.deidentify.dates)


class _StageLog:
    """Routes medssl's log records to ``OUTPUT/logs/<stage>.log`` while a stage runs."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handler = logging.FileHandler(path)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.logger = logging.getLogger("medssl")

    def __enter__(self) -> None:
        # the file gets INFO; the console handlers keep the verbosity they had
        self.level = self.logger.level
        self.quiet = [h for h in self.logger.handlers if h.level == logging.NOTSET]
        for h in self.quiet:
            h.setLevel(self.level)
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.INFO)

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)
        for h in self.quiet:
            h.setLevel(logging.NOTSET)
        self.handler.close()


def _inputs(items: list[str]) -> list[Path]:
    return [_resolve(i) for i in items]


def _stage_load(spec: PipelineSpec, out: Path, done: dict) -> LoadOutputs:
    from medssl.denoise.batch import find_jobs

    assert spec.stages.load is not None
    paths = _inputs(spec.stages.load.input)
    counts = {}
    for p in paths:
        if not p.exists():
            raise InputError("no such input", path=p)
        counts[str(p)] = len(find_jobs(p))
    from medssl.data import SAMPLES

    names = {i[len("sample:") :].partition("/")[0] for i in spec.stages.load.input}
    credits = sorted({SAMPLES[n].attribution for n in names if n in SAMPLES})
    return LoadOutputs(tuple(str(p) for p in paths), sum(counts.values()), tuple(credits))


def _stage_denoise(spec: PipelineSpec, out: Path, done: dict) -> DenoiseOutputs:
    from medssl.denoise.batch import SkippedSeries, parse_shard, run_batch
    from medssl.denoise.record import JobRecord

    cfg = spec.stages.denoise
    assert cfg is not None
    settings = cfg.settings(spec.deidentify)
    deid = _deidentifier(spec)
    shard = parse_shard(cfg.shard) if cfg.shard else None
    records: list[JobRecord] = []
    skipped: list[SkippedSeries] = []
    for source in stage_outputs(done, "load").inputs:
        result = run_batch(source, out, settings, shard=shard, deidentify=deid)
        records += result.done
        skipped += result.skipped
    for s in skipped:
        log.warning("series %s skipped: %s", s.key, s.reason)
    return DenoiseOutputs(
        str(out), tuple(sorted(r.key for r in records)), tuple(sorted(s.key for s in skipped))
    )


def _stage_pretrain(spec: PipelineSpec, out: Path, done: dict) -> PretrainOutputs:
    from medssl.ssl.pretrain import pretrain

    stage = spec.stages.pretrain
    assert stage is not None
    settings = stage.settings()
    resume = (out / "run.json").is_file()
    if resume:  # the run goes on with its own recipe
        settings = settings.model_copy(update={"recipe": None})
    data = None if resume else list(stage_outputs(done, "load").inputs)
    result = pretrain(settings, data, out, resume=resume, verbose=False)
    return PretrainOutputs(str(result.checkpoint), result.step)


def _stage_export(spec: PipelineSpec, out: Path, done: dict) -> ExportOutputs:
    from medssl.finetune.nnunet import export_nnunet

    target = out / "pretrained.pth"
    export_nnunet(stage_outputs(done, "pretrain").checkpoint, target, overwrite=True)
    return ExportOutputs(str(target))


def _stage_finetune(spec: PipelineSpec, out: Path, done: dict) -> FinetuneOutputs:
    from medssl.finetune.nnunet.run import finetune

    cfg = spec.stages.finetune
    assert cfg is not None
    data = cfg.data or stage_outputs(done, "load").inputs
    export = stage_outputs(done, "export")
    pretrained = export.weights if export is not None else None
    settings = cfg.settings(
        _inputs(list(data)), _inputs(list(cfg.labels)), pretrained, spec.deidentify
    )
    result = finetune(settings, out, deidentify=_deidentifier(spec))
    return FinetuneOutputs(str(out), result.dice, tuple(result.warnings))


def _stage_predict(spec: PipelineSpec, out: Path, done: dict) -> PredictOutputs:
    from medssl.finetune.nnunet.run import predict_cases

    cfg = spec.stages.predict
    assert cfg is not None
    images = [str(p.resolve()) for p in _inputs(cfg.input)]
    labels = [str(p.resolve()) for p in _inputs(cfg.labels)] if cfg.labels else None
    run = Path(stage_outputs(done, "finetune").run)
    dice = predict_cases(run, images, labels, out, deidentify=_deidentifier(spec))
    return PredictOutputs(str(out), dice)


def _stage_report(spec: PipelineSpec, out: Path, done: dict) -> ReportOutputs:
    from medssl.report import denoise_section, finetune_section, pretrain_section, write_report

    sections = []
    if (denoised := stage_outputs(done, "denoise")) is not None:
        folder = Path(denoised.folder)
        sections.append(denoise_section([folder / k for k in denoised.studies]))
    if (pretrained := stage_outputs(done, "pretrain")) is not None:
        sections.append(pretrain_section(Path(pretrained.checkpoint).parent))
    if (finetuned := stage_outputs(done, "finetune")) is not None:
        sections.append(finetune_section(finetuned.dice))
    if (predicted := stage_outputs(done, "predict")) is not None and predicted.dice:
        dice = {"new images": predicted.dice}
        sections.append(finetune_section(dice, "Prediction (nnU-Net v2): Dice per label"))
    title = (spec.stages.report.title if spec.stages.report else None) or (
        f"medssl pipeline {spec.name or ''}".strip()
    )
    loaded = stage_outputs(done, "load")
    credits = list(loaded.credits) if loaded is not None else []
    path = write_report(out / "report.html", title, sections, credits=credits)
    return ReportOutputs(str(path))


_RUNNERS: dict[str, Callable[[PipelineSpec, Path, dict], StageOutputs]] = {
    "load": _stage_load,
    "denoise": _stage_denoise,
    "pretrain": _stage_pretrain,
    "export": _stage_export,
    "finetune": _stage_finetune,
    "predict": _stage_predict,
    "report": _stage_report,
}


def _save_record(path: Path, record: dict[str, Any]) -> None:
    write_json(path, record)


def run_pipeline(
    path: str | Path,
    *,
    force: list[str] | None = None,
    output: str | Path | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Validate, then run the stages not yet done (``force``: rerun these and what follows).

    Returns:
        The ``pipeline.json`` record: per stage its config digest, outputs and seconds.
    """
    spec = check_pipeline(path)
    _deidentifier(spec)  # no salt: refused before any stage runs
    for name in force or []:
        if name not in STAGES or getattr(spec.stages, name) is None:
            raise InputError(f"--force {name}: the pipeline has no such stage")
    root = Path(output or spec.output)
    for item in _input_paths(spec, resolve_samples=True):
        check_not_input(root, [item])
    root = claim_folder(root, "pipeline")
    clean_stale_temps(root)
    record_path = root / "pipeline.json"
    record: dict[str, Any] = {"stages": {}}
    if record_path.is_file():
        record = json.loads(record_path.read_text())
    done: dict[str, Any] = record["stages"]
    rerun = False
    for name in STAGES:
        cfg = getattr(spec.stages, name)
        if cfg is None:
            continue
        digest = _digest(cfg, spec.deidentify)
        prior = done.get(name)
        incomplete = bool(prior and getattr(stage_outputs(done, name), "skipped", ()))
        if (
            not rerun
            and name not in (force or [])
            and prior
            and prior["config"] == digest
            and not incomplete  # skipped series are retried
        ):
            echo(f"[{name}] done before ({prior['seconds']:.0f} s): skipped")
            continue
        # A stage starts from an empty folder when it is forced, when an earlier stage ran
        # now, or when its settings changed; it continues in its folder (pretraining and
        # fine-tuning resume, batch denoising skips finished series) only when an earlier
        # attempt with the same settings was interrupted.
        out = root / name
        marker = root / ".started" / f"{name}.json"  # outside: stages may want an empty folder
        started = json.loads(marker.read_text())["config"] if marker.is_file() else None
        fresh = rerun or name in (force or []) or (started not in (None, digest))
        fresh = fresh or bool(prior and prior["config"] != digest)
        if fresh or name in ("export", "report", "load"):
            remove_owned(out)  # refuses a folder medssl did not make
        rerun = True  # everything after a stage that runs depends on it
        done.pop(name, None)
        _save_record(record_path, record)
        claim_folder(out, f"stage:{name}")
        write_json(marker, {"config": digest})
        echo(f"[{name}] running (log: {root / 'logs' / f'{name}.log'})")
        t0 = time.perf_counter()
        with _StageLog(root / "logs" / f"{name}.log"):
            outputs = _RUNNERS[name](spec, out, done)
        done[name] = {
            "config": digest,
            "outputs": outputs.to_dict(),
            "seconds": round(time.perf_counter() - t0, 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        _save_record(record_path, record)
        echo(f"[{name}] done in {done[name]['seconds']:.1f} s")
    return record
