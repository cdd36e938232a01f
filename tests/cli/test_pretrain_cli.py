import copy

import pytest
import torch
import yaml

from tests.ssl.volumes import TINY_CONFIG, write_collection


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    return write_collection(tmp_path_factory.mktemp("vols"))


@pytest.fixture
def config(tmp_path):
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["data"]["cache_dir"] = str(tmp_path / "cache")
    cfg["train"]["steps"] = 2
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_pretrain_then_export_from_the_command_line(medssl, tmp_path, collection, config):
    run = tmp_path / "run"
    r = medssl("pretrain", "--method", "s3d", "-c", config, "-d", collection, "-o", run)
    assert r.code == 0, r.output
    assert "finished at step 2" in r.stdout
    r = medssl("export-nnunet", run / "checkpoint_final.pt", "-o", tmp_path / "w.pth")
    assert r.code == 0, r.output
    assert "network_weights" in torch.load(tmp_path / "w.pth", weights_only=True)
    r = medssl("export-nnunet", run / "checkpoint_final.pt", "-o", tmp_path / "w.pth")
    assert r.code == 2 and "exists" in r.stderr


def test_stop_and_resume_from_the_command_line(medssl, tmp_path, collection, config):
    run = tmp_path / "run"
    r = medssl(
        "pretrain", "-m", "mae", "-c", config, "-d", collection, "-o", run, "--stop-after", "1"
    )
    assert r.code == 0 and "stopped" in r.stdout, r.output
    r = medssl("pretrain", "-m", "mae", "-o", run)
    assert r.code == 2 and "--resume" in r.stderr
    r = medssl("pretrain", "-m", "mae", "-o", run, "--resume")
    assert r.code == 0 and "finished at step 2" in r.stdout, r.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", "vae"], "--method must be one of mae, s3d"),
        (["-m", "mae", "-d", "/no/such/folder"], "no such file or folder"),
        (["-m", "mae", "-d", "DATA", "-c", "/no/such.yaml"], "no such config file"),
        (["-m", "mae", "-d", "DATA", "-c", "BAD"], "train.stepz: unknown key"),
        (["-m", "mae", "-d", "DATA", "-c", "PATCH"], "multiple of mae.block_size"),
    ],
)
def test_bad_input_is_a_clear_error_and_writes_nothing(medssl, tmp_path, collection, args, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  stepz: 3\n")
    patch = tmp_path / "patch.yaml"
    patch.write_text("model: {plans: tiny, patch_size: [40, 40, 40]}\nmae: {block_size: 16}\n")
    args = [{"DATA": str(collection), "BAD": str(bad), "PATCH": str(patch)}.get(a, a) for a in args]
    r = medssl("pretrain", *args, "-o", tmp_path / "run")
    assert r.code == 2, r.output
    assert message in r.stderr
    assert "Traceback" not in r.output
    assert not (tmp_path / "run").exists()


def test_steps_replaces_the_recipes_steps_and_cannot_change_a_resumed_run(
    medssl, tmp_path, collection, config
):
    run = tmp_path / "run"
    r = medssl("pretrain", "-m", "mae", "-c", config, "-d", collection, "-o", run, "--steps", "1")
    assert r.code == 0 and "finished at step 1" in r.stdout, r.output
    recorded = yaml.safe_load((run / "config.yaml").read_text())
    assert recorded["train"]["steps"] == 1  # the recipe file says 2
    assert yaml.safe_load(config.read_text())["train"]["steps"] == 2
    r = medssl("pretrain", "-m", "mae", "-o", run, "--resume", "--steps", "3")
    assert r.code == 2 and "--steps cannot change a resumed run" in r.stderr, r.output
