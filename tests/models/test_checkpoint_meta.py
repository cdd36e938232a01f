"""The pretraining checkpoint's metadata contract: versions, defaults, round trip."""

from __future__ import annotations

import pytest

from medssl.errors import InputError
from medssl.models import CHECKPOINT_FORMAT, META_VERSION, PretrainMeta, preset_plans


def _v0_contrastive_local() -> dict:
    """The "medssl" entry of a contrastive local-stage checkpoint as the writer made it before
    the metadata had a version (medssl at 66f0a92)."""
    return {
        "format": "medssl-pretrain/1",
        "medssl_version": "0.1.0",
        "method": "contrastive",
        "plans": preset_plans("tiny"),
        "configuration": "3d_fullres",
        "input_channels": 1,
        "network_prefix": "network.",
        "patch_size": [32, 32, 32],
        "preprocessing": {"normalization": "ZScoreNormalization"},
        "data_volumes": 3,
        "stage": "local",
        "strategy": ["GR", "LR"],
        "contrastive": {"partitions": 2, "local_steps": 2},
        "pretrained_keys": ["encoder.stem.convs.0.conv.weight"],
    }


def test_a_checkpoint_written_before_versions_reads_as_version_0():
    meta = PretrainMeta.from_dict(_v0_contrastive_local())
    assert meta.version == 0
    assert meta.method == "contrastive" and meta.configuration == "3d_fullres"
    assert meta.network_prefix == "network."
    assert meta.patch_size == (32, 32, 32)
    assert meta.strategy == ("GR", "LR") and meta.stage == "local"
    assert meta.pretrained_keys == ("encoder.stem.convs.0.conv.weight",)
    assert meta.settings == {"contrastive": {"partitions": 2, "local_steps": 2}}
    assert meta.medssl_version == "0.1.0"


def test_version_0_missing_keys_take_the_writers_defaults():
    old = _v0_contrastive_local()
    for key in ("network_prefix", "input_channels", "format", "patch_size", "stage"):
        del old[key]
    meta = PretrainMeta.from_dict(old)
    # the writer always used "network." (one reader defaulted to "": drift fixed here)
    assert meta.network_prefix == "network."
    assert meta.input_channels == 1
    assert meta.patch_size is None and meta.stage is None


def test_round_trip():
    meta = PretrainMeta(
        method="mae",
        plans=preset_plans("tiny"),
        configuration="2d",
        network_prefix="mae.network.",
        patch_size=(32, 32),
        preprocessing={"normalization": "CTNormalization"},
        data_volumes=2,
        settings={"mask": {"mask_ratio": 0.6}},
    )
    d = meta.to_dict()
    assert d["version"] == META_VERSION and d["format"] == CHECKPOINT_FORMAT
    assert d["patch_size"] == [32, 32] and d["mask"] == {"mask_ratio": 0.6}
    assert "stage" not in d and "pretrained_keys" not in d  # unset: left out, as before
    assert PretrainMeta.from_dict(d) == meta
    assert PretrainMeta.from_dict(d).to_dict() == d
    # an old dictionary keeps its keys and values through a read and a write
    old = _v0_contrastive_local()
    assert {k: v for k, v in PretrainMeta.from_dict(old).to_dict().items() if k != "version"} == old


@pytest.mark.parametrize("version", [META_VERSION + 1, -1, "1", True, None])
def test_a_version_this_medssl_does_not_read_is_refused(version):
    d = {**_v0_contrastive_local(), "version": version}
    with pytest.raises(InputError, match="version") as info:
        PretrainMeta.from_dict(d, path="ckpt.pt")
    assert "ckpt.pt" in str(info.value)
    if version == META_VERSION + 1:
        assert "newer medssl" in str(info.value) and f"0 to {META_VERSION}" in str(info.value)


@pytest.mark.parametrize(
    "meta",
    [
        None,
        {},
        {"format": "medssl-nnunet-export/1", "plans": {}, "configuration": "3d_fullres"},
        {**_v0_contrastive_local(), "plans": None},
        {**_v0_contrastive_local(), "patch_size": ["a"]},
    ],
)
def test_other_metadata_is_refused_with_an_input_error(meta):
    with pytest.raises(InputError, match=r"pretraining checkpoint|format|malformed"):
        PretrainMeta.from_dict(meta)


def test_a_checkpoint_without_a_model_is_refused():
    with pytest.raises(InputError, match="no model or plans"):
        PretrainMeta.from_checkpoint({"network_weights": {}, "medssl": _v0_contrastive_local()})
    meta = PretrainMeta.from_checkpoint({"model": {}, "medssl": _v0_contrastive_local()})
    assert meta.method == "contrastive"


def test_settings_may_not_shadow_the_metadata_keys():
    with pytest.raises(ValueError, match="own keys"):
        PretrainMeta("mae", {}, "3d_fullres", settings={"network_prefix": "x"})
