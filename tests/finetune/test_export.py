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
