import json

import numpy as np
import pytest
import torch

from medssl.data.patches import PatchDataset, StepBatchSampler, crop_with_padding
from medssl.data.volumes import Preprocessing, discover_volumes, load_manifest, preprocess
from medssl.errors import InputError
from tests.ssl.volumes import write_collection


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    return write_collection(tmp_path_factory.mktemp("vols"))


def test_folder_discovery_is_sorted_and_leaves_label_maps_out(collection):
    refs = discover_volumes(collection)
    assert [p.path.rsplit("/", 1)[-1] for p in refs] == [
        "case0.nii.gz",
        "case1.nii.gz",
        "case2.nii.gz",
    ]


def test_list_file_paths_are_relative_to_the_list(collection, tmp_path):
    lst = collection / "train.txt"
    lst.write_text("# training volumes\ncase2.nii.gz\n\ncase0.nii.gz  # first\n")
    refs = discover_volumes(lst)
    assert [p.path.rsplit("/", 1)[-1] for p in refs] == ["case2.nii.gz", "case0.nii.gz"]
    bad = tmp_path / "bad.txt"
    bad.write_text("nope.nii.gz\n")
    with pytest.raises(InputError, match="line 1"):
        discover_volumes(bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no volumes found"):
        discover_volumes(empty)


def test_preprocessing_resamples_normalises_and_reuses_its_cache(collection, tmp_path):
    refs = discover_volumes(collection)
    prep = Preprocessing((3.0, 2.4, 2.4), "ZScoreNormalization", dtype="float32")
    vols, used = preprocess(refs, tmp_path / "cache", prep, manifest=tmp_path / "m.json")
    assert vols[0].shape == (18, 20, 17)  # (36, 40, 34) at (1.5, 1.2, 1.2) mm -> half
    arr = np.load(vols[0].image)
    assert abs(arr.mean()) < 1e-3 and abs(arr.std() - 1) < 1e-3  # nnU-Net's z-score
    fg = np.load(vols[0].foreground)
    assert fg.shape[1] == 3 and len(fg) > 100
    assert (arr[tuple(fg.T)] > arr.mean()).mean() > 0.95  # foreground = the bright head
    stamp = (tmp_path / "cache" / vols[0].image.rsplit("/", 1)[-1]).stat().st_mtime_ns
    again, _ = preprocess(refs, tmp_path / "cache", prep)
    assert again == vols
    assert (tmp_path / "cache" / vols[0].image.rsplit("/", 1)[-1]).stat().st_mtime_ns == stamp
    back, back_prep = load_manifest(tmp_path / "m.json")
    assert back == vols and back_prep == used


def test_ct_normalisation_computes_dataset_intensity_properties(collection, tmp_path):
    refs = discover_volumes(collection)
    vols, used = preprocess(
        refs, tmp_path / "c", Preprocessing(None, "CTNormalization", dtype="float32")
    )
    props = used.intensity_properties
    assert props["percentile_00_5"] < props["mean"] < props["percentile_99_5"]
    arr = np.load(vols[0].image)
    hi = (props["percentile_99_5"] - props["mean"]) / props["std"]
    assert arr.max() <= hi + 1e-4  # clipped at the 99.5th percentile as nnU-Net does
    assert json.dumps(used.to_dict())  # recorded in checkpoints


def test_patches_are_a_function_of_the_sample_number(collection, tmp_path):
    vols, _ = preprocess(discover_volumes(collection), tmp_path / "c", Preprocessing(None))
    ds = PatchDataset(vols, (16, 16, 16), seed=3, foreground_prob=0.5)
    a = [ds[i] for i in (5, 6, 7)]
    b = [ds[i] for i in (7, 5)]
    assert torch.equal(a[0]["image"], b[1]["image"]) and torch.equal(a[2]["image"], b[0]["image"])
    assert a[0]["image"].shape == (1, 16, 16, 16) and a[0]["image"].dtype == torch.float32
    assert int(a[0]["seed"]) != int(a[1]["seed"])
    other = PatchDataset(vols, (16, 16, 16), seed=4)
    assert not torch.equal(other[5]["image"], a[0]["image"])
    ds2d = PatchDataset(vols, (24, 24), seed=0)
    assert ds2d[0]["image"].shape == (1, 24, 24)


def test_foreground_oversampling_centres_patches_on_the_head(collection, tmp_path):
    vols, _ = preprocess(discover_volumes(collection), tmp_path / "c", Preprocessing(None))
    fg = PatchDataset(vols, (8, 8, 8), seed=0, foreground_prob=1.0)
    assert np.mean([fg[i]["image"].mean().item() > 0 for i in range(30)]) > 0.9


def test_crop_with_padding_fills_outside_with_zero():
    arr = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    out = crop_with_padding(arr, (-1, 1, 2), (3, 3, 3))
    assert out.shape == (3, 3, 3)
    assert (out[0] == 0).all()
    np.testing.assert_array_equal(out[1:, :2, :1], arr[:2, 1:, 2:])
    assert (out[:, 2:] == 0).all() and (out[:, :, 1:] == 0).all()


def test_ranks_split_each_global_batch_without_overlap():
    single = list(StepBatchSampler(4, 3))
    r0 = list(StepBatchSampler(2, 3, rank=0, world_size=2))
    r1 = list(StepBatchSampler(2, 3, rank=1, world_size=2))
    for t in range(3):
        assert r0[t] + r1[t] == single[t]
    assert list(StepBatchSampler(4, 3, start_step=2)) == single[2:]
