"""Contrastive and graph-matching pretraining end to end (tiny network, synthetic volumes),
and their nnU-Net export: only the trained parts are listed as pretrained."""

import copy

import pytest
import torch
import yaml

from medssl.errors import InputError
from medssl.finetune.nnunet import export_nnunet, read_export
from medssl.models import build_network
from medssl.ssl.engine import load_checkpoint
from medssl.ssl.pretrain import pretrain
from tests.ssl.volumes import TINY_CONFIG, write_collection


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    return write_collection(tmp_path_factory.mktemp("vols"), n=3)


def _config(tmp_path, **sections):
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["data"]["cache_dir"] = str(tmp_path / "cache")
    cfg["train"].update(steps=2, batch_size=4, checkpoint_every=1)
    for k, v in sections.items():
        cfg[k] = v
    return cfg


def _nnunet_load(weights_file, plans):
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans)
    net = nnUNetTrainer.build_network_architecture(
        pm, pm.get_configuration("3d_fullres"), 1, 2, True
    )
    load_pretrained_weights(net, str(weights_file))
    return net


def test_contrastive_runs_both_stages_and_exports_encoder_and_first_decoder_blocks(
    tmp_path, collection
):
    cfg = _config(tmp_path, contrastive={"partitions": 2, "local_steps": 2})
    result = pretrain("contrastive", collection, tmp_path / "run", config=cfg, verbose=False)
    assert result.finished
    run = tmp_path / "run"
    for stage in ("stage1_global", "stage2_local"):
        assert (run / stage / "checkpoint_final.pt").is_file()
    g = load_checkpoint(run / "stage1_global" / "checkpoint_final.pt")["model"]
    final = load_checkpoint(run / "checkpoint_final.pt")
    assert final["medssl"]["stage"] == "local"
    key = "network.encoder.stem.convs.0.conv.weight"
    assert torch.equal(g[key], final["model"][key])  # stage 2 keeps the encoder frozen
    init = build_network("tiny", seed=0).state_dict()
    assert not torch.equal(init[key[len("network.") :]], g[key])  # stage 1 trained it

    out = export_nnunet(run / "checkpoint_final.pt", tmp_path / "w.pth")
    weights, meta = read_export(out)
    pretrained = set(meta["pretrained_keys"])
    assert "encoder.stem.convs.0.conv.weight" in pretrained
    assert "decoder.stages.0.convs.0.conv.weight" in pretrained
    assert "decoder.stages.1.convs.0.conv.weight" not in pretrained
    # parts not pretrained keep nnU-Net's seeded initialisation
    k = "decoder.stages.1.convs.0.conv.weight"
    assert torch.equal(weights[k], init[k])
    net = _nnunet_load(out, meta["plans"])
    assert torch.equal(net.state_dict()["encoder.stem.convs.0.conv.weight"], weights[key[8:]])


def test_contrastive_resumes_in_either_stage(tmp_path, collection):
    cfg = _config(tmp_path, contrastive={"partitions": 2, "local_steps": 3})
    cfg["train"]["grad_clip"] = 0.05  # clipping active: stale stage-1 gradients would show
    straight = pretrain("contrastive", collection, tmp_path / "a", config=cfg, verbose=False)
    run = tmp_path / "b"
    first = pretrain("contrastive", collection, run, config=cfg, stop_after=1, verbose=False)
    assert not first.finished  # in stage 1
    second = pretrain("contrastive", None, run, resume=True, stop_after=2, verbose=False)
    assert not second.finished  # stage 1 done, stopped at step 2 of stage 2
    assert (run / "stage1_global" / "checkpoint_final.pt").is_file()
    assert not (run / "checkpoint_final.pt").exists()  # only a finished run has a result
    third = pretrain("contrastive", None, run, resume=True, verbose=False)
    assert third.finished
    a = load_checkpoint(straight.checkpoint)["model"]
    b = load_checkpoint(third.checkpoint)["model"]
    for k in a:
        assert torch.equal(a[k], b[k]), k
    with pytest.raises(InputError, match="differs from the volumes"):
        pretrain("contrastive", tmp_path, run, resume=True, verbose=False)


def test_batch_must_hold_whole_partition_groups(tmp_path, collection):
    cfg = _config(tmp_path, contrastive={"partitions": 3})
    with pytest.raises(InputError, match=r"multiple of contrastive\.partitions"):
        pretrain("contrastive", collection, tmp_path / "run", config=cfg, verbose=False)


def test_graph_matching_trains_the_encoder_and_exports(tmp_path, collection):
    cfg = _config(tmp_path, graphmatch={"k": 2, "width": 16, "head_out": 16, "head_hidden": 32})
    result = pretrain("graphmatch", collection, tmp_path / "run", config=cfg, verbose=False)
    ckpt = load_checkpoint(result.checkpoint)
    key = "network.encoder.stem.convs.0.conv.weight"
    init = build_network("tiny", seed=0).state_dict()
    assert ckpt["medssl"]["method"] == "graphmatch"
    dec = "decoder.stages.0.convs.0.conv.weight"
    assert torch.equal(ckpt["model"]["network." + dec], init[dec])  # decoder untouched
    out = export_nnunet(result.checkpoint, tmp_path / "w.pth")
    _, meta = read_export(out)
    assert all(k.startswith("encoder.") for k in meta["pretrained_keys"])
    net = _nnunet_load(out, meta["plans"])
    assert torch.equal(net.state_dict()[key[8:]], ckpt["model"][key])
    assert not torch.equal(init[key[8:]], ckpt["model"][key])  # trained through I-MLE
    # a run started before graph_size existed trained another loss: it is not continued
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["graphmatch"]["graph_size"] == 16
    del saved["graphmatch"]["graph_size"], saved["graphmatch"]["edge_affinity"]
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(saved))
    with pytest.raises(InputError, match="earlier medssl whose loss differs"):
        pretrain("graphmatch", None, tmp_path / "run", resume=True, verbose=False)


@pytest.mark.parametrize("method", ["contrastive", "graphmatch"])
def test_2d_configuration(tmp_path, collection, method):
    cfg = _config(
        tmp_path,
        contrastive={"partitions": 2, "local_steps": 1},
        graphmatch={"k": 2, "width": 16, "head_out": 16, "head_hidden": 32},
    )
    cfg["model"] = {"plans": "tiny", "configuration": "2d", "patch_size": [32, 32]}
    result = pretrain(method, collection, tmp_path / "run", config=cfg, verbose=False)
    assert result.finished
    w = load_checkpoint(result.checkpoint)["model"]["network.encoder.stem.convs.0.conv.weight"]
    assert w.dim() == 4


def test_partition_strategies_fall_back_when_slice_axes_differ():
    from medssl.data.volumes import CachedVolume
    from medssl.ssl.config import load_config
    from medssl.ssl.contrastive.spec import partition_strategies as _partition_strategies

    def vol(code, modality="MR"):
        return CachedVolume("x.npy", "x_fg.npy", (8, 8, 8), "l", code, modality)

    cfg = load_config({"contrastive": {"global_strategy": "GD", "local_strategy": "LD"}})
    # RAS and LAS both stack axial slices from inferior to superior: partitions correspond
    assert _partition_strategies(cfg, [vol("RAS"), vol("LAS")]) == ("GD", "LD")
    assert _partition_strategies(cfg, [vol("RAS"), vol("LSA")]) == ("GR", "LR")  # coronal
    assert _partition_strategies(cfg, [vol("RAS"), vol("RAS", "CT")]) == ("GR", "LR")
    strict = load_config({"contrastive": {"fallback": False}})
    assert _partition_strategies(strict, [vol("RAS"), vol("LSA")]) == ("GD", "LD")


def test_the_stage_lines_are_progress_not_warnings(medssl, tmp_path, collection):
    """Contrastive announced its stages as "WARNING stage 1/2: global (...)"."""
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["data"]["cache_dir"] = str(tmp_path / "cache")
    cfg["train"].update(steps=1, batch_size=4)
    cfg["contrastive"] = {"partitions": 2, "local_steps": 1, "head_hidden": 16, "head_out": 8,
                          "local_head": 8}  # fmt: skip
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(cfg))
    res = medssl("pretrain", "-m", "contrastive", "-d", str(collection), "-c",
                 str(tmp_path / "r.yaml"), "-o", str(tmp_path / "run"))  # fmt: skip
    assert res.code == 0, res.stderr
    assert "stage 1/2: global (1 steps)" in res.stderr
    assert "WARNING  stage" not in res.stderr
