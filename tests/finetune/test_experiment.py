"""The pre-registered few-shot experiment's own arithmetic (benchmarks/pretrain-finetune/bench.py):
the paired interval its criterion reads, the paired training slices, the lobe classes, the
eligible slices and the weight digest that pins the pretrained networks."""

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "pretrain-finetune" / "bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("ptft_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(arm: str, budget: int, dice: list[float]) -> list[dict]:
    return [{"arm": arm, "budget": budget, "seed": s, "dice": d} for s, d in enumerate(dice)]


def test_paired_interval_matches_a_hand_computation(bench) -> None:
    rows = _rows("scratch", 2, [0.05, 0.08, 0.06, 0.05, 0.07])
    rows += _rows("s3d", 2, [0.00, 0.03, 0.00, 0.03, 0.02])
    rows += _rows("s3d", 5, [0.50] * 5) + _rows("contrastive", 2, [0.90] * 5)  # not paired
    # differences -0.05, -0.05, -0.06, -0.02, -0.05: mean -0.046, squared deviations sum 9.2e-4
    half = 2.7764451051977987 * math.sqrt(9.2e-4 / 4) / math.sqrt(5)  # t(0.975, 4) sd / sqrt n
    mean, low, high, n = bench._paired(rows, "s3d", 2)
    assert n == 5
    assert mean == pytest.approx(-0.046)
    assert (low, high) == (pytest.approx(-0.046 - half), pytest.approx(-0.046 + half))
    assert high < 0  # the interval the criterion reads lies below 0 here


def test_paired_interval_uses_only_seeds_both_arms_have(bench) -> None:
    rows = _rows("scratch", 2, [0.05, 0.08, 0.06])[1:]  # scratch lacks seed 0
    rows += _rows("graphmatch", 2, [0.90, 0.05, 0.04])
    mean, low, high, n = bench._paired(rows, "graphmatch", 2)
    assert n == 2 and mean == pytest.approx(-0.025)
    half = 12.706204736174698 * math.sqrt(2 * 0.005**2) / math.sqrt(2)  # t(0.975, 1)
    assert (low, high) == (pytest.approx(-0.025 - half), pytest.approx(-0.025 + half))
    assert math.isnan(bench._paired(rows[:3], "graphmatch", 2)[0])  # one pair: no interval


def test_training_slices_are_paired_and_nested(bench) -> None:
    candidates = list(range(40, 109))  # 69 eligible slices, as on Colin27
    seen = set()
    for seed in range(5):
        two = bench.train_slices(candidates, seed, 2)
        five = bench.train_slices(candidates, seed, 5)
        assert two == bench.train_slices(candidates, seed, 2)  # the same for every arm
        assert len(set(five)) == 5 and five == sorted(five) and set(five) <= set(candidates)
        assert set(two) <= set(five)  # the 2 slices of a seed are among its 5
        seen.add(tuple(two))
    assert len(seen) == 5  # each seed draws other slices


def test_lobe_classes_from_the_aal_names(bench, tmp_path: Path) -> None:
    names = tmp_path / "aal.nii.txt"
    names.write_text(
        "1 Precentral_L 2001\n2 Frontal_Sup_Orb_R 2112\n29 Insula_L 3001\n"
        "31 Cingulum_Ant_L 4001\n57 Postcentral_R 6002\n43 Calcarine_L 5001\n"
        "83 Temporal_Pole_Sup_L 8121\n91 Cerebelum_Crus1_L 9001\n5 Frontal_Mid\n\n"
    )
    cls = {name: i for i, name in enumerate(bench.CLASSES)}
    assert bench.lobe_lookup(names) == {
        1: cls["frontal_L"],
        2: cls["frontal_R"],
        29: 0,  # insula: background
        31: 0,  # cingulate: background
        57: cls["parietal_R"],
        43: cls["occipital_L"],
        83: cls["temporal_L"],
        91: 0,  # cerebellum: background
        5: 0,  # no hemisphere suffix
    }


def test_eligible_slices_show_enough_lobes(bench) -> None:
    labels = np.zeros((3, 4, 4), np.uint8)
    labels[0].flat[:6] = [1, 2, 3, 4, 5, 6]  # 6 lobes: eligible
    labels[1].flat[:6] = [1, 2, 3, 4, 5, 5]  # 5 lobes
    labels[2].flat[:9] = [0, 1, 2, 3, 4, 5, 6, 7, 8]  # all 8
    assert bench.eligible(labels) == [0, 2]


def test_weight_digest_follows_the_network_not_the_file(bench, tmp_path: Path) -> None:
    model = {"enc.w": torch.arange(6.0).reshape(2, 3), "enc.b": torch.zeros(2)}
    torch.save({"model": model, "step": 300}, tmp_path / "a.pt")
    other_run = {"model": dict(reversed(model.items())), "step": 7, "optimizer": {"lr": 0.1}}
    torch.save(other_run, tmp_path / "b.pt")
    changed = {**model, "enc.b": torch.tensor([0.0, 1e-7])}
    torch.save({"model": changed, "step": 300}, tmp_path / "c.pt")
    renamed = {"enc.w": model["enc.w"], "dec.b": model["enc.b"]}
    torch.save({"model": renamed, "step": 300}, tmp_path / "d.pt")
    digest = bench.weights_digest(tmp_path / "a.pt")
    assert len(digest) == 16
    assert bench.weights_digest(tmp_path / "b.pt") == digest
    assert bench.weights_digest(tmp_path / "c.pt") != digest
    assert bench.weights_digest(tmp_path / "d.pt") != digest
