import json

import pytest
import torch
from torch import nn

from medssl.errors import InputError
from medssl.io import write_json
from medssl.models import build_network, configuration_dim, load_plans, preset_plans


def _nnunet_network(plans: dict, configuration: str, out_channels: int, ds: bool) -> nn.Module:
    """The network exactly as nnU-Net's trainer builds it for fine-tuning."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans)
    cm = pm.get_configuration(configuration)
    return nnUNetTrainer.build_network_architecture(pm, cm, 1, out_channels, ds)


@pytest.mark.parametrize(("preset", "configuration"), [("tiny", "3d_fullres"), ("small", "2d")])
def test_plans_built_network_is_the_one_nnunet_builds(tmp_path, preset, configuration):
    path = tmp_path / "plans.json"
    write_json(path, preset_plans(preset))
    plans = json.loads(path.read_text())
    ours = build_network(path, configuration, output_channels=3, deep_supervision=True, seed=7)
    torch.manual_seed(7)
    theirs = _nnunet_network(plans, configuration, 3, True)
    assert type(ours) is type(theirs)
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k  # same seed, same initialisation order
    conv = nn.Conv3d if configuration == "3d_fullres" else nn.Conv2d
    assert any(isinstance(m, conv) for m in ours.modules())
    assert configuration_dim(plans, configuration) == (3 if configuration == "3d_fullres" else 2)


def test_resenc_l_preset_matches_nnunets_resenc_l_layout():
    plans = preset_plans("resenc-l")
    arch = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    assert arch["features_per_stage"] == [32, 64, 128, 256, 320, 320]
    assert arch["n_blocks_per_stage"] == [1, 3, 4, 6, 6, 6]
    net = build_network(plans, seed=0)
    n = sum(p.numel() for p in net.parameters())
    assert 100e6 < n < 105e6  # ResEnc-L: ~102 M parameters


def test_seeded_build_leaves_the_global_rng_alone():
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    build_network("tiny", seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_bad_plans_give_clear_errors(tmp_path):
    with pytest.raises(InputError, match="preset"):
        load_plans("no-such-preset")
    bad = tmp_path / "p.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="configurations"):
        load_plans(bad)
    with pytest.raises(ValueError, match="3d_lowres"):
        build_network("tiny", "3d_lowres")
