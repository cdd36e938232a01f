"""No code from any file medssl reads.

A ``.pt``/``.pth`` file is a pickle: unpickling it can call any function it names. Every entry
point that reads a model or checkpoint (``export-nnunet``, ``finetune --pretrained``,
``pretrain --resume``, ``denoise --model``, the pipeline's pretrain and export stages) is given
a real-looking checkpoint whose pickle would create a marker file when unpickled: each must
exit 2 naming the file, and the marker must never appear. What medssl itself writes still
loads and resumes exactly, with nothing but tensors and plain values inside.
"""

from __future__ import annotations

import copy
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from medssl.cli.app import main
from medssl.io import InputError, Volume, load_tensors_file, write_volume
from medssl.ssl.engine import EngineConfig, fit, load_checkpoint
from medssl.ssl.pretrain import pretrain
from tests.denoise.phantom import phantom
from tests.ssl.volumes import TINY_CONFIG, write_collection

REFUSED = "refused: the file holds Python objects other than tensors and plain values"


class _Touch:
    """Unpickling this calls ``Path.touch(marker)``: the stand-in for a hostile payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _poison(path: Path, marker: Path, content: dict | None = None) -> Path:
    """A ``torch.save`` zip like a real checkpoint whose pickle would create ``marker``."""
    payload = {"model": {"w": torch.zeros(2)}, **(content or {})}
    payload["medssl"] = {"plans": _Touch(marker), "configuration": "3d_fullres"}
    torch.save(payload, path)
    return path


def _cli(capsys, *args) -> tuple[int, str]:
    """Run ``medssl ARGS`` in this process: its exit code and stderr."""
    with pytest.raises(SystemExit) as exited:
        main([str(a) for a in args])
    return exited.value.code, capsys.readouterr().err


def _assert_refused(code: int, err: str, bad: Path, marker: Path) -> None:
    assert not marker.exists(), "the payload ran"
    assert code == 2, err
    assert REFUSED in err and str(bad) in err, err
    assert "Traceback" not in err


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "payload-ran"


def test_the_payload_is_live(tmp_path, marker):
    """The fixture is a real threat: an unrestricted ``torch.load`` runs it."""
    bad = _poison(tmp_path / "bad.pt", marker)
    torch.load(bad, weights_only=False)
    assert marker.exists()


def test_the_reader_refuses_a_payload_and_names_what_it_asks_for(tmp_path, marker):
    bad = _poison(tmp_path / "bad.pt", marker)
    for numpy_scalars in (False, True):
        with pytest.raises(InputError, match=REFUSED) as refused:
            load_tensors_file(bad, numpy_scalars=numpy_scalars)
        assert refused.value.exit_code == 2 and refused.value.path == str(bad)
        assert "it asks for getattr" in str(refused.value)  # Path.touch = getattr(Path, ...)
    with pytest.raises(InputError, match=REFUSED):
        load_checkpoint(bad)
    legacy = tmp_path / "legacy.pt"  # torch's pre-1.6 format: a bare pickle stream
    torch.save({"plans": _Touch(marker)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(InputError, match=REFUSED):
        load_tensors_file(legacy)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_a_torchscript_archive_is_refused(tmp_path):
    """TorchScript holds code of its own: not a file of tensors and plain values."""
    scripted = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(nn.Linear(2, 2)), scripted)
    with pytest.raises(InputError, match=REFUSED):
        load_tensors_file(scripted)


def test_a_damaged_or_foreign_file_is_not_readable_rather_than_refused(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(3)}, good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:200])
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    junk = tmp_path / "junk.pt"  # a pickle header, then an opcode that does not exist
    junk.write_bytes(b"\x80\x02\xff\x00")
    for path in (cut, text, junk):
        with pytest.raises(InputError, match="not a readable PyTorch checkpoint") as caught:
            load_tensors_file(path)
        assert REFUSED not in str(caught.value)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(InputError, match="holds a list, not the dictionary"):
        load_tensors_file(tmp_path / "list.pt")


def test_nnunet_checkpoints_numpy_scalars_are_read_as_numbers_and_nothing_else(tmp_path):
    """nnU-Net's training checkpoints log NumPy scalars: read as numbers where asked for, while
    arrays and structured values stay refused."""
    nnunet = {
        "network_weights": {"w": torch.ones(2)},
        "logging": {"ema_fg_dice": [np.float64(0.25), np.float32(1.5)], "n": [np.int64(-3)]},
        "_best_ema": np.float64(0.5),
        "init_args": {"device": torch.device("cpu"), "fold": 0},
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }
    path = tmp_path / "checkpoint_final.pth"
    torch.save(nnunet, path)
    with pytest.raises(InputError, match=REFUSED):
        load_tensors_file(path)  # not asked for: refused
    obj = load_tensors_file(path, numpy_scalars=True)
    assert obj["logging"] == {"ema_fg_dice": [0.25, 1.5], "n": [-3]}
    assert type(obj["_best_ema"]) is float and obj["_best_ema"] == 0.5
    assert torch.equal(obj["network_weights"]["w"], torch.ones(2))
    structured = np.zeros(1, dtype=[("a", "f8"), ("b", "O")])[0]
    for value in (np.zeros(3), structured, np.datetime64("2001-02-03"), np.void(b"abcd")):
        torch.save({"v": value}, tmp_path / "other.pth")
        with pytest.raises(InputError, match=REFUSED):
            load_tensors_file(tmp_path / "other.pth", numpy_scalars=True)


def test_finetune_still_takes_an_nnunet_training_checkpoint(tmp_path):
    """``finetune --pretrained`` reads nnU-Net's own checkpoints (NumPy scalars in its log)."""
    from medssl.finetune.nnunet.run import _load_weights

    state = {"encoder.w": torch.arange(4.0)}
    path = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": state, "_best_ema": np.float64(0.5)}, path)
    weights, _ = _load_weights(path, tmp_path)
    assert torch.equal(weights["encoder.w"], state["encoder.w"])
    again = torch.load(tmp_path / "pretrained.pth", weights_only=True)  # plain for nnU-Net
    assert torch.equal(again["network_weights"]["encoder.w"], state["encoder.w"])


# ---- each entry point ------------------------------------------------------------------------


def test_export_nnunet_refuses_a_payload(tmp_path, marker, capsys):
    bad = _poison(tmp_path / "checkpoint_final.pt", marker)
    code, err = _cli(capsys, "export-nnunet", bad, "-o", tmp_path / "out.pth")
    _assert_refused(code, err, bad, marker)
    assert not (tmp_path / "out.pth").exists()


def test_finetune_refuses_a_payload_before_any_nnunet_work(tmp_path, marker, capsys):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    arr = np.zeros((8, 8, 8), np.float32)
    arr[2:6, 2:6, 2:6] = 1
    write_volume(Volume(arr * 100, spacing=(1.0, 1.0, 1.0), modality="MR"), images / "c0.nrrd")
    write_volume(Volume(arr, spacing=(1.0, 1.0, 1.0)), labels / "c0.nii.gz")
    bad = _poison(tmp_path / "pretrained.pth", marker, {"network_weights": {}})
    run = tmp_path / "run"
    args = ["finetune", "-d", images, "-l", labels, "--pretrained", bad, "-o", run]
    code, err = _cli(capsys, *args, "--device", "cpu")
    _assert_refused(code, err, bad, marker)
    assert not (run / "nnUNet_raw").exists() and not (run / "nnUNet_preprocessed").exists()


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory) -> Path:
    """A real MAE run stopped at step 1 of 2 (resumable)."""
    root = tmp_path_factory.mktemp("stopped")
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["data"]["cache_dir"] = str(root / "cache")
    cfg["train"]["steps"] = 2
    vols = write_collection(root / "vols", n=2)
    pretrain("mae", vols, root / "run", config=cfg, stop_after=1, verbose=False)
    return root / "run"


def test_pretrain_resume_refuses_a_payload(stopped_run, tmp_path, marker, capsys):
    run = shutil.copytree(stopped_run, tmp_path / "run")
    bad = _poison(run / "checkpoint_latest.pt", marker)
    code, err = _cli(capsys, "pretrain", "-m", "mae", "-o", run, "--resume")
    _assert_refused(code, err, bad, marker)
    assert not (run / "checkpoint_final.pt").exists()


def test_a_checkpoint_of_the_old_format_is_refused_with_what_to_do(stopped_run, tmp_path, capsys):
    """Earlier medssl stored NumPy's RNG state as a tuple holding an array: not read safely."""
    run = shutil.copytree(stopped_run, tmp_path / "run")
    ckpt = load_checkpoint(run / "checkpoint_latest.pt")
    ckpt["rng"][0]["numpy"] = np.random.get_state()  # what the old _rng_state saved
    torch.save(ckpt, run / "checkpoint_latest.pt")
    before = (run / "checkpoint_latest.pt").read_bytes()
    code, err = _cli(capsys, "pretrain", "-m", "mae", "-o", run, "--resume")
    assert code == 2 and REFUSED in err and str(run / "checkpoint_latest.pt") in err, err
    assert "earlier medssl builds" in err and "start a new run" in err
    assert (run / "checkpoint_latest.pt").read_bytes() == before


def test_denoise_refuses_a_payload_model(tmp_path, marker, capsys):
    vol, _ = phantom((2, 24, 28))
    src = write_volume(vol, tmp_path / "ct.nii.gz")
    bad = tmp_path / "model.pt"
    torch.save({"format": "medssl-filter2noise", "config": _Touch(marker)}, bad)
    out = tmp_path / "out.nii.gz"
    code, err = _cli(capsys, "denoise", src, "-o", out, "--model", bad, "--threads", "1")
    _assert_refused(code, err, bad, marker)
    assert not out.exists()


def _pipeline(tmp_path: Path, capsys) -> tuple[Path, Path]:
    """A finished load -> pretrain -> export pipeline; its YAML and its output folder."""
    recipe = copy.deepcopy(TINY_CONFIG)
    recipe["data"]["cache_dir"] = str(tmp_path / "cache")
    recipe["train"]["steps"] = 2
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    spec = {
        "output": str(tmp_path / "out"),
        "stages": {
            "load": {"input": [str(write_collection(tmp_path / "vols", n=2))]},
            "pretrain": {"method": "mae", "config": str(tmp_path / "recipe.yaml")},
            "export": {},
        },
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    code, err = _cli(capsys, "pipeline", "run", path)
    assert code == 0, err
    return path, tmp_path / "out"


def test_the_pipeline_export_stage_refuses_a_payload(tmp_path, marker, capsys):
    path, out = _pipeline(tmp_path, capsys)
    bad = _poison(out / "pretrain" / "checkpoint_final.pt", marker)
    code, err = _cli(capsys, "pipeline", "run", path, "--force", "export")
    _assert_refused(code, err, bad, marker)


def test_the_pipeline_pretrain_stage_refuses_to_resume_from_a_payload(tmp_path, marker, capsys):
    path, out = _pipeline(tmp_path, capsys)
    # an interrupted pretrain stage: run.json and a checkpoint_latest.pt, no record of it
    record = json.loads((out / "pipeline.json").read_text())
    for stage in ("pretrain", "export"):
        record["stages"].pop(stage)
    (out / "pipeline.json").write_text(json.dumps(record))
    (out / "pretrain" / "checkpoint_final.pt").unlink()
    assert (out / "pretrain" / "run.json").is_file()
    bad = _poison(out / "pretrain" / "checkpoint_latest.pt", marker)
    code, err = _cli(capsys, "pipeline", "run", path)
    _assert_refused(code, err, bad, marker)
    assert not (out / "pretrain" / "checkpoint_final.pt").exists()


# ---- what medssl writes still loads and resumes exactly ---------------------------------------


class _DrawsEveryRng(nn.Module):
    """A loss whose value depends on a draw from each RNG the engine restores."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(3))
        self.draws: list[tuple[float, ...]] = []

    def forward(self, batch: dict) -> dict:
        t, n, p = torch.rand(3), float(np.random.rand()), random.random()
        self.draws.append((*t.tolist(), n, p, float(np.random.randn())))
        return {"loss": (self.w * (t + n + p)).sum() * batch["x"].mean()}


def _fit(run: Path, **kw) -> _DrawsEveryRng:
    model = _DrawsEveryRng()
    cfg = EngineConfig(steps=4, checkpoint_every=2, log_every=1, warmup_steps=1, amp="off")

    def loader(start: int):
        return ({"x": torch.full((2,), float(s + 1))} for s in range(start, cfg.steps))

    fit(model, loader, cfg, run, verbose=False, **kw)
    return model


def test_a_resumed_run_continues_every_rng_exactly(tmp_path):
    straight = _fit(tmp_path / "a")
    _fit(tmp_path / "b", stop_after=2)
    np.random.seed(123)  # the resumed process starts from other states
    random.seed(123)
    torch.manual_seed(123)
    resumed = _fit(tmp_path / "b", resume=True)
    assert resumed.draws == straight.draws[2:]
    a = load_checkpoint(tmp_path / "a" / "checkpoint_final.pt")["model"]["w"]
    b = load_checkpoint(tmp_path / "b" / "checkpoint_final.pt")["model"]["w"]
    assert torch.equal(a, b)


def test_a_checkpoint_holds_only_tensors_and_plain_values(tmp_path):
    """Plain ``torch.load(weights_only=True)`` with no allow-list reads it."""
    _fit(tmp_path / "r", stop_after=2)
    ckpt = torch.load(tmp_path / "r" / "checkpoint_latest.pt", weights_only=True)
    rng = ckpt["rng"][0]
    assert rng["numpy"]["kind"] == "MT19937" and rng["numpy"]["keys"].shape == (624,)
    assert isinstance(rng["python"], tuple) and torch.is_tensor(rng["torch"])
    assert ckpt["step"] == 2
