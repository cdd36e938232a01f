import copy
import subprocess
import sys

import pytest
import torch

from medssl.errors import InputError
from medssl.finetune.nnunet import check_weights_fit, export_nnunet, read_export
from medssl.models import build_network, preset_plans
from medssl.ssl.engine import load_checkpoint
from medssl.ssl.pretrain import pretrain
from tests.ssl.volumes import TINY_CONFIG, write_collection


@pytest.fixture(scope="module")
def s3d_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("s3d")
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["data"]["cache_dir"] = str(root / "cache")
    cfg["train"]["steps"] = 2
    pretrain("s3d", write_collection(root / "vols"), root / "run", config=cfg, verbose=False)
    return root / "run"


def _nnunet_network(plans, num_classes):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans)
    return nnUNetTrainer.build_network_architecture(
        pm, pm.get_configuration("3d_fullres"), 1, num_classes, True
    )


def test_export_loads_with_nnunets_own_loader(s3d_run, tmp_path):
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

    out = export_nnunet(s3d_run / "checkpoint_final.pt", tmp_path / "pretrained.pth")
    weights, meta = read_export(out)
    assert meta["method"] == "s3d" and meta["patch_size"] == [32, 32, 32]
    assert not any("mask_token" in k for k in weights)
    assert all(v.device.type == "cpu" for v in weights.values())

    # the network nnU-Net builds for a 3-class fine-tuning task, deep supervision on
    network = _nnunet_network(meta["plans"], num_classes=3)
    load_pretrained_weights(network, str(out))
    trained = load_checkpoint(s3d_run / "checkpoint_final.pt")["model"]
    state = network.state_dict()
    for key, value in state.items():
        if ".seg_layers." in key:
            continue  # re-initialised by nnU-Net for the new labels
        assert torch.equal(value, trained["mae.network." + key]), key


def test_export_opens_with_plain_torch_load_on_a_cpu_only_process(s3d_run, tmp_path):
    out = export_nnunet(s3d_run / "checkpoint_final.pt", tmp_path / "w.pth")
    code = (
        "import torch, sys\n"
        "torch.cuda.is_available = lambda: False\n"
        f"d = torch.load({str(out)!r}, weights_only=False)\n"
        "assert 'network_weights' in d\n"
        f"d = torch.load({str(out)!r}, weights_only=True)\n"  # plain types only
        "print(len(d['network_weights']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) > 100


def test_export_refuses_to_overwrite_and_non_checkpoints(s3d_run, tmp_path):
    out = export_nnunet(s3d_run / "checkpoint_final.pt", tmp_path / "w.pth")
    with pytest.raises(InputError, match="exists"):
        export_nnunet(s3d_run / "checkpoint_final.pt", out)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a readable"):
        export_nnunet(junk, tmp_path / "x.pth")
    torch.save({"network_weights": {}}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a medssl pretraining checkpoint"):
        export_nnunet(tmp_path / "other.pt", tmp_path / "x.pth")
    assert not (tmp_path / "x.pth").exists()


def test_a_checkpoint_for_another_architecture_names_the_key_and_shapes():
    small = build_network(preset_plans("small"), seed=0)
    tiny = build_network("tiny", seed=0).state_dict()
    problems = check_weights_fit(tiny, small)
    assert problems
    assert "encoder.stem.convs.0.conv.weight" in problems[0]
    assert "(8, 1, 3, 3, 3)" in problems[0] and "(16, 1, 3, 3, 3)" in problems[0]


def test_a_checkpoint_written_before_metadata_versions_exports(tmp_path):
    # a contrastive objective's state (network + projection head) with the metadata of the
    # writer before versions, without "network_prefix": the writer's "network." is assumed
    # (the export used to assume "", took the head's keys and refused the checkpoint)
    network = build_network("tiny", seed=3).state_dict()
    model = {"network." + k: v for k, v in network.items()}
    model["head.0.weight"] = torch.zeros(4, 8)
    meta = {
        "format": "medssl-pretrain/1",
        "method": "contrastive",
        "plans": preset_plans("tiny"),
        "configuration": "3d_fullres",
        "patch_size": [32, 32, 32],
    }
    torch.save({"model": model, "medssl": meta, "step": 5}, tmp_path / "old.pt")
    weights, record = read_export(export_nnunet(tmp_path / "old.pt", tmp_path / "w.pth"))
    assert record["method"] == "contrastive" and record["step"] == 5
    assert all(torch.equal(weights[k], v) for k, v in network.items())


def test_a_checkpoint_of_a_newer_metadata_version_is_refused(tmp_path):
    meta = {"format": "medssl-pretrain/1", "version": 99, "plans": preset_plans("tiny")}
    torch.save({"model": {}, "medssl": {**meta, "configuration": "3d_fullres"}}, tmp_path / "n.pt")
    with pytest.raises(InputError, match="version 99"):
        export_nnunet(tmp_path / "n.pt", tmp_path / "w.pth")
    assert not (tmp_path / "w.pth").exists()
