import copy
import json

import pytest
import torch
import yaml

from medssl.errors import InputError, TrainingDivergedError
from medssl.ssl.config import TrainSection, load_config
from medssl.ssl.engine import fit, load_checkpoint, lr_factor
from medssl.ssl.pretrain import pretrain
from tests.ssl.volumes import TINY_CONFIG, write_collection


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    return write_collection(tmp_path_factory.mktemp("vols"))


def _config(tmp_path, **train):
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["data"]["cache_dir"] = str(tmp_path / "cache")
    cfg["train"].update(train)
    return cfg


def _weights(run):
    return load_checkpoint(run / "checkpoint_final.pt")["model"]


@pytest.mark.parametrize(("method", "amp"), [("mae", "off"), ("s3d", "off"), ("s3d", "bf16")])
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path, collection, method, amp):
    """Bit-identical weights for a run stopped and resumed, and (bf16) for the same run twice:
    ``amp: auto`` picks bf16 autocast where the CPU has native bf16, as this machine's."""
    cfg = _config(tmp_path, amp=amp)
    straight = pretrain(method, collection, tmp_path / "a", config=cfg, verbose=False)
    assert straight.finished and straight.step == 4
    if amp == "bf16":  # the report: two bf16 runs ended with 398 of 405 tensors different
        pretrain(method, collection, tmp_path / "a2", config=cfg, verbose=False)
        for k, v in _weights(tmp_path / "a").items():
            assert torch.equal(v, _weights(tmp_path / "a2")[k]), k

    cfg_workers = copy.deepcopy(cfg)
    cfg_workers["data"]["num_workers"] = 2  # the data order must not depend on the workers
    first = pretrain(
        method, collection, tmp_path / "b", config=cfg_workers, stop_after=3, verbose=False
    )
    assert not first.finished and first.step == 3
    assert not (tmp_path / "b" / "checkpoint_final.pt").exists()
    resumed = pretrain(method, None, tmp_path / "b", resume=True, verbose=False)
    assert resumed.finished and resumed.step == 4

    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "metrics.jsonl").open()]
    assert steps == [1, 2, 3, 4]


def test_checkpoint_records_what_fine_tuning_needs(tmp_path, collection):
    pretrain("mae", collection, tmp_path / "r", config=_config(tmp_path, steps=1), verbose=False)
    meta = load_checkpoint(tmp_path / "r" / "checkpoint_final.pt")["medssl"]
    assert meta["method"] == "mae" and meta["patch_size"] == [32, 32, 32]
    assert meta["preprocessing"]["normalization"] == "ZScoreNormalization"
    assert meta["plans"]["configurations"]["3d_fullres"]["architecture"]
    assert meta["data_volumes"] == 3  # the label map was left out


def test_a_run_folder_is_not_silently_restarted(tmp_path, collection):
    cfg = _config(tmp_path, steps=1)
    pretrain("mae", collection, tmp_path / "r", config=cfg, verbose=False)
    with pytest.raises(InputError, match="--resume"):
        pretrain("mae", collection, tmp_path / "r", config=cfg, verbose=False)
    with pytest.raises(InputError, match="method"):
        pretrain("s3d", None, tmp_path / "r", resume=True, verbose=False)
    other = _config(tmp_path, steps=9)
    with pytest.raises(InputError, match="differs"):
        pretrain("mae", None, tmp_path / "r", config=other, resume=True, verbose=False)


def test_bad_data_writes_nothing(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        pretrain("mae", tmp_path / "missing", tmp_path / "run", config=_config(tmp_path))
    assert not (tmp_path / "run").exists()


def test_validation_loss_is_logged(tmp_path, collection):
    cfg = _config(tmp_path, steps=2, val_every=1)
    pretrain("s3d", collection, tmp_path / "r", config=cfg, val_data=collection, verbose=False)
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").open()]
    vals = [r["val/loss"] for r in rows if "val/loss" in r]
    assert len(vals) == 3 and all(v > 0 for v in vals)  # steps 0, 1 and 2


def test_lr_schedule_warms_up_then_decays():
    cfg = TrainSection(steps=100, warmup_steps=10, schedule="cosine")
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(55, cfg) == pytest.approx(0.5)
    assert lr_factor(99, cfg) == pytest.approx(
        0.5 * (1 + torch.cos(torch.tensor(89 / 90 * 3.14159265)).item()), abs=1e-6
    )
    poly = TrainSection(steps=100, warmup_steps=0, schedule="poly")
    assert lr_factor(50, poly) == pytest.approx(0.5**0.9)


class _Diverging(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, batch):
        return {"loss": self.w * float("nan")}


def test_a_non_finite_loss_stops_with_a_clear_error(tmp_path):
    loader = lambda start: ({"x": torch.zeros(1)} for _ in range(3))  # noqa: E731
    with pytest.raises(TrainingDivergedError, match=r"nan \(not finite\) at step 1 \(") as err:
        fit(_Diverging(), loader, TrainSection(steps=3, amp="off"), tmp_path, verbose=False)
    assert "train.lr" in str(err.value) and "amp" not in err.value.hint


def test_a_diverging_pretraining_run_is_a_clear_error_at_the_cli(medssl, tmp_path, collection):
    """Not "internal error: FloatingPointError": the step, the precision, what to change."""
    cfg = _config(tmp_path, steps=3, lr=1e30, warmup_steps=0, amp="bf16")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(cfg))
    res = medssl(
        "pretrain", "-m", "mae", "-d", str(collection), "-c", str(tmp_path / "r.yaml"),
        "-o", str(tmp_path / "run"),
    )  # fmt: skip
    assert res.code == 1, res.stderr
    assert "internal error" not in res.stderr and "Traceback" not in res.stderr
    assert "not finite) at step 2 (bf16" in res.stderr
    assert 'train.amp: "off"' in res.stderr


@pytest.mark.parametrize(("written", "read"), [("off", "off"), ("no", "off"), ("on", "auto")])
def test_an_unquoted_yaml_amp_switch_is_read_as_meant(tmp_path, written, read):
    (tmp_path / "r.yaml").write_text(f"train:\n  amp: {written}\n")
    assert load_config(tmp_path / "r.yaml").train.amp == read


@pytest.mark.parametrize("method", ["mae", "s3d"])
def test_2d_configuration_pretrains_on_slices(tmp_path, collection, method):
    cfg = _config(tmp_path, steps=2)
    cfg["model"] = {"plans": "tiny", "configuration": "2d", "patch_size": [32, 32]}
    result = pretrain(method, collection, tmp_path / "r", config=cfg, verbose=False)
    meta = load_checkpoint(result.checkpoint)["medssl"]
    assert meta["configuration"] == "2d" and meta["patch_size"] == [32, 32]
    assert load_checkpoint(result.checkpoint)["model"][
        "mae.network.encoder.stem.convs.0.conv.weight"
    ].shape == (8, 1, 3, 3)
