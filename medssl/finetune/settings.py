"""What an nnU-Net fine-tuning run is asked to do: one typed, frozen settings model.

:class:`FinetuneSettings` is filled by ``medssl finetune`` (its options take their defaults
and help texts from the fields here), embedded by the pipeline's ``finetune`` stage (its YAML
keys) and taken by the one entry point, :func:`medssl.finetune.nnunet.run.finetune` (also
``medssl.finetune.finetune``). Importing this module needs no torch and no nnU-Net.

The run record
--------------
A fine-tuning run writes no settings digest into UIDs: its DICOM SEGs take their UIDs from
the source images and the predicted pixels (:func:`medssl.finetune.nnunet.seg.write_seg`).
What it does record is :meth:`FinetuneSettings.record` (every field, as JSON values) in
``RUN/finetune.json``; a re-run in the same folder resumes only when that record is equal,
field by field (:meth:`FinetuneSettings.changed_from` names the fields that differ), and
``device`` counts: nnU-Net's checkpoints of a CPU run are not continued on a GPU by accident.
Paths (``data``, ``labels``, ``pretrained``, ``splits``, ``test_data``, ``test_labels``) are
recorded as the caller gives them: the CLI and the pipeline resolve them to absolute paths
first, so the same files named from another folder resume the same run.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from medssl.errors import InputError

__all__ = [
    "DEVICES",
    "PRETRAINED_LR",
    "SCRATCH_LR",
    "SPACINGS",
    "FinetuneSettings",
    "legacy_record",
    "parse_settings",
]

#: The ``device`` values (``auto``: CUDA when there is one, else the CPU).
DEVICES = ("auto", "cpu", "cuda", "mps")
#: The ``spacing`` values: the pretraining's voxel size, or nnU-Net's planned target spacing.
SPACINGS = ("pretrained", "target")
#: Default peak learning rates: pretrained weights (nnssl's fine-tuning), scratch (nnU-Net's).
PRETRAINED_LR = 1e-3
SCRATCH_LR = 1e-2


class FinetuneSettings(BaseModel):
    """Settings of one ``medssl finetune`` run (frozen; the defaults are the command's).

    Each field's ``description`` is the help text of its ``medssl finetune`` option. Sequences
    are tuples (lists are accepted). The first eleven fields are the keys the pipeline's
    ``finetune`` stage had before it embedded this model, in the order its record hashed them
    (the stage's digest of an old pipeline file is unchanged).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: tuple[str, ...] = Field(
        description="Training images: folder, list file or volume (repeatable)."
    )
    labels: tuple[str, ...] = Field(
        description="Label maps, paired with the images by name (repeatable)."
    )
    scratch: bool = Field(
        False,
        description="Random initialisation, same budget (with pretrained weights: that "
        "network's plans).",
    )
    trainer: str = Field(
        "nnUNetTrainer_medssl",
        description="nnUNetTrainer_medssl (nnU-Net's budget, lr warm-up), "
        "nnUNetTrainer_medsslShort (10x25 iterations), or any nnU-Net trainer class.",
    )
    folds: tuple[int, ...] = Field((0,), min_length=1, description="Folds to train.")
    epochs: int | None = Field(None, ge=1, description="Override the epochs.")
    iterations: int | None = Field(None, ge=1, description="Override iterations per epoch.")
    seed: int | None = Field(0, description="Seed of initialisation, sampling, augmentation.")
    splits: str | None = Field(
        None, description="Your own splits_final.json (list of {train: [...], val: [...]})."
    )
    label_names: tuple[str, ...] | None = Field(
        None, description="Names of labels 0..K, background first."
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description="auto, cpu or cuda.")
    # not keys of the pipeline stage before it embedded the model
    pretrained: str | None = Field(
        None,
        description="medssl pretraining checkpoint, export-nnunet file or nnU-Net checkpoint.",
    )
    dataset_id: int = Field(900, ge=1, le=999, description="nnU-Net dataset ID (1..999).")
    dataset_name: str = Field(
        "medssl", pattern=r"^[A-Za-z0-9]+$", description="nnU-Net dataset name (letters, digits)."
    )
    modality: Literal["CT", "MR"] | None = Field(
        None,
        description="CT (nnU-Net's CT normalisation) or MR (z-score); default: as pretrained.",
    )
    test_data: tuple[str, ...] | None = Field(
        None, description="Images to predict (DICOM series also get a DICOM SEG)."
    )
    test_labels: tuple[str, ...] | None = Field(
        None, description="Label maps of the test data, for Dice."
    )
    spacing: Literal["pretrained", "target"] = Field(
        "pretrained", description="pretrained (the pretraining's voxel size) or target."
    )
    val_iterations: int | None = Field(
        None, ge=1, description="Override validation iterations per epoch."
    )
    lr: float | None = Field(
        None,
        ge=0.0,
        description="Peak learning rate (default: 1e-3 with pretrained weights, as nnssl; 1e-2 "
        "from scratch, as nnU-Net).",
    )
    warmup: float | None = Field(
        None, ge=0.0, le=0.9, description="Warm-up fraction of all iterations."
    )
    load: Literal["encoder", "all"] = Field(
        "encoder",
        description="Pretrained parts to load: encoder (as nnssl) or all (every part "
        "pretraining trained); the rest is initialised from --seed.",
    )
    deep_supervision: bool | None = Field(
        None,
        description="nnU-Net's deep supervision (default: off with pretrained weights, as "
        "nnssl; on from scratch, as nnU-Net).",
    )
    deidentify: Literal["shift", "remove"] | None = Field(
        None,
        description="The date rule when the DICOM SEGs are written de-identified, else None "
        "(the salt is never part of the settings).",
    )

    @field_validator("modality", mode="before")
    @classmethod
    def _upper_modality(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("folds")
    @classmethod
    def _folds_not_negative(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if min(value) < 0:
            raise ValueError(f"takes fold numbers 0 or more, got {list(value)}")
        return value

    @field_validator("trainer")
    @classmethod
    def _an_nnunet_trainer(cls, value: str) -> str:
        if not value.startswith("nnUNetTrainer"):
            raise ValueError(f"must name an nnU-Net trainer class, got {value!r}")
        return value

    @model_validator(mode="after")
    def _test_labels_need_test_data(self) -> FinetuneSettings:
        if self.test_labels and not self.test_data:
            raise ValueError("test_labels needs test_data")
        return self

    @property
    def pretrained_run(self) -> bool:
        """Whether the network starts from pretrained weights (``pretrained`` without
        ``scratch``)."""
        return self.pretrained is not None and not self.scratch

    def peak_lr(self) -> float:
        """``lr``, or the arm's default: 1e-3 for a pretrained run (nnssl fine-tunes
        pretrained weights at 1e-3), 1e-2 from scratch (nnU-Net's)."""
        if self.lr is not None:
            return self.lr
        return PRETRAINED_LR if self.pretrained_run else SCRATCH_LR

    def uses_deep_supervision(self) -> bool:
        """``deep_supervision``, or the arm's default: off for a pretrained run (as nnssl),
        on from scratch (as nnU-Net)."""
        if self.deep_supervision is not None:
            return self.deep_supervision
        return not self.pretrained_run

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of field ``name`` (``data`` and ``labels`` have none: ``...``)."""
        field = cls.model_fields[name]
        return ... if field.is_required() else field.get_default(call_default_factory=True)

    @classmethod
    def help(cls, name: str) -> str:
        """The help text of field ``name`` (its description)."""
        return cls.model_fields[name].description or ""

    def record(self) -> dict[str, Any]:
        """Every field as JSON values: what ``RUN/finetune.json`` keeps under ``settings``."""
        return self.model_dump(mode="json")

    def changed_from(self, recorded: dict[str, Any]) -> list[str]:
        """The fields whose value differs from a recorded :meth:`record` (sorted).

        A record written before ``load`` and ``deep_supervision`` existed is read as the
        recipe it ran: a pretrained run loaded every pretrained key (``load: all``) with deep
        supervision at nnU-Net's lr 1e-2 (:func:`legacy_record`); a scratch run is unchanged.
        """
        now = self.record()
        recorded = legacy_record(recorded)
        return sorted(k for k in {*now, *recorded} if now.get(k) != recorded.get(k))


def legacy_record(recorded: dict[str, Any]) -> dict[str, Any]:
    """``recorded`` with the recipe of runs from before ``load``/``deep_supervision`` spelled
    out (unchanged when it has them). Such a pretrained run loaded every key with deep
    supervision at lr 1e-2; for a scratch run the new fields change nothing."""
    if "load" in recorded:
        return recorded
    pretrained = recorded.get("pretrained") is not None and not recorded.get("scratch")
    if not pretrained:
        return {**recorded, "load": "encoder", "deep_supervision": None}
    lr = recorded.get("lr")
    return {
        **recorded,
        "load": "all",
        "deep_supervision": True,
        "lr": SCRATCH_LR if lr is None else lr,
    }


def _message(error: ErrorDetails) -> str:
    """A short message for one pydantic error of :func:`parse_settings`."""
    ctx = error.get("ctx") or {}
    if error["type"] == "greater_than_equal":
        return f"must be >= {ctx.get('ge')}"
    if error["type"] == "less_than_equal":
        return f"must be <= {ctx.get('le')}"
    if error["type"] == "literal_error":
        return f"must be one of {ctx.get('expected')}, got {error.get('input')!r}"
    return str(error["msg"]).removeprefix("Value error, ")


def parse_settings(**values: Any) -> FinetuneSettings:
    """:class:`FinetuneSettings` from command-line values, with the problems named by option.

    Raises:
        InputError: Every invalid value, e.g. ``--spacing must be one of 'pretrained' or
            'target', got 'native'``.
    """
    try:
        return FinetuneSettings(**values)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            name = str(e["loc"][0]) if e["loc"] else ""
            if name:
                problems.append(f"--{name.replace('_', '-')} {_message(e)}")
            else:  # a check of several fields
                message = _message(e).replace("test_labels", "--test-labels")
                problems.append(message.replace("test_data", "--test-data"))
        raise InputError("; ".join(problems)) from None
