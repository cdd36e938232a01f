"""``medssl finetune``: dataset export checks, plans transfer, the warm-up trainer, and nnU-Net
v2 end to end on tiny volumes (its own fingerprint, planning, preprocessing, training,
validation and prediction commands, on the CPU)."""

import copy
import json
import os
import signal
import subprocess
import sys
import time
from itertools import pairwise

import highdicom as hd
import numpy as np
import pytest
import torch

from medssl.finetune.nnunet import (
    check_normalisation,
    export_dataset,
    pair_cases,
    transfer_plans,
)
from medssl.finetune.nnunet.run import (
    FinetuneSettings,
    _load_weights,
    _write_start_weights,
    dice_per_label,
    finetune,
    loaded_keys,
    seg_name,
)
from medssl.finetune.nnunet.trainers import WarmupPolyLR
from medssl.io import (
    Deidentifier,
    InputError,
    Volume,
    read_volume,
    write_dicom_series,
    write_volume,
)
from medssl.models import build_network, preset_plans
from medssl.ssl.pretrain import pretrain
from tests.io.test_deidentify import SALT, STUDY_UID, find_needles, write_planted_series
from tests.ssl.volumes import TINY_CONFIG, head_phantom, write_collection

SHAPE = (36, 40, 34)
SHORT = ["--trainer", "nnUNetTrainer_medsslShort", "--epochs", "2", "--iterations", "2"]


def _labelled(folder, n=4, seed=10):
    """``n`` phantoms with 2-class label maps (named like the pyradiomics samples)."""
    img, lab = folder / "images", folder / "labels"
    img.mkdir(parents=True)
    lab.mkdir()
    for i in range(n):
        a = head_phantom(SHAPE, seed + i)
        write_volume(Volume(a, spacing=(1.5, 1.2, 1.2), modality="MR"), img / f"c{i}_image.nrrd")
        label = (a > 120).astype(np.float32) + (a > 200)
        write_volume(Volume(label, spacing=(1.5, 1.2, 1.2)), lab / f"c{i}_label.nii.gz")
    return img, lab


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pre")
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["data"]["cache_dir"] = str(root / "cache")
    cfg["data"]["target_spacing"] = [1.5, 1.2, 1.2]
    cfg["train"]["steps"] = 2
    pretrain("mae", write_collection(root / "vols"), root / "run", config=cfg, verbose=False)
    return root / "run" / "checkpoint_final.pt"


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    return _labelled(tmp_path_factory.mktemp("lab"))


# ---- dataset export ------------------------------------------------------------------------


def test_cases_pair_by_name_and_export_to_nnunets_raw_format(labelled, tmp_path):
    img, lab = labelled
    cases = pair_cases(img, lab)
    assert [c.case_id for c in cases] == ["c0", "c1", "c2", "c3"]
    ds = export_dataset(cases, tmp_path, 7, "Tiny", channel_name="MRI")
    assert ds.name == "Dataset007_Tiny"
    meta = json.loads((ds / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "label_1": 1, "label_2": 2}
    assert meta["numTraining"] == 4 and meta["file_ending"] == ".nii.gz"
    assert meta["channel_names"] == {"0": "MRI"}
    image = read_volume(ds / "imagesTr" / "c2_0000.nii.gz")
    label = read_volume(ds / "labelsTr" / "c2.nii.gz")
    assert image.same_grid(label) and image.spacing == pytest.approx((1.5, 1.2, 1.2))
    assert set(np.unique(label.array)) == {0, 1, 2}


def test_bad_datasets_are_refused_with_the_file_named(labelled, tmp_path):
    img, lab = labelled
    # an image without a label map
    extra = tmp_path / "img"
    extra.mkdir()
    for p in img.iterdir():
        (extra / p.name).write_bytes(p.read_bytes())
    write_volume(Volume(np.zeros(SHAPE)), extra / "lonely_image.nii.gz")
    with pytest.raises(InputError, match="images without a label map: lonely"):
        pair_cases(extra, lab)
    # a label map on another grid, and one with fractional values
    for name, vol in {
        "shift": Volume(np.zeros(SHAPE), spacing=(1.5, 1.2, 1.2), origin=(5, 0, 0)),
        "frac": Volume(np.full(SHAPE, 0.5), spacing=(1.5, 1.2, 1.2)),
    }.items():
        bad = tmp_path / name
        bad.mkdir()
        for p in lab.iterdir():
            (bad / p.name).write_bytes(p.read_bytes())
        write_volume(vol, bad / "c1_label.nii.gz", overwrite=True)
        match = "geometry differs" if name == "shift" else "non-integer"
        with pytest.raises(InputError, match=match) as info:
            export_dataset(pair_cases(img, bad), tmp_path / "raw", 1, "X")
        assert "c1_label.nii.gz" in str(info.value)
    # labels 0 and 2 only: nnU-Net needs consecutive labels
    gap = tmp_path / "gap"
    gap.mkdir()
    for i in range(4):
        a = read_volume(lab / f"c{i}_label.nii.gz").array
        write_volume(Volume(2 * (a > 0), spacing=(1.5, 1.2, 1.2)), gap / f"c{i}_label.nii.gz")
    with pytest.raises(InputError, match=r"label values \[1\] never occur"):
        export_dataset(pair_cases(img, gap), tmp_path / "raw", 1, "X")
    assert not (tmp_path / "raw" / "Dataset001_X").exists()  # nothing half-written


# ---- plans transfer and checks -------------------------------------------------------------


def test_plans_transfer_keeps_the_targets_fingerprint_and_takes_the_network():
    source = preset_plans("small")
    target = copy.deepcopy(preset_plans("tiny", spacing=(3.0, 0.8, 0.8)))
    target["configurations"]["3d_fullres"]["normalization_schemes"] = ["CTNormalization"]
    target["foreground_intensity_properties_per_channel"] = {"0": {"percentile_00_5": -1000.0}}
    target["configurations"]["3d_lowres"] = copy.deepcopy(target["configurations"]["3d_fullres"])
    export = {
        "plans": source,
        "configuration": "3d_fullres",
        "patch_size": [48, 48, 48],
        "preprocessing": {
            "target_spacing": [2.0, 2.0, 2.0],
            "normalization": "ZScoreNormalization",
        },
    }
    plans, notes = transfer_plans(target, export, "medsslPlans")
    conf = plans["configurations"]["3d_fullres"]
    assert list(plans["configurations"]) == ["3d_fullres"]
    assert conf["architecture"] == source["configurations"]["3d_fullres"]["architecture"]
    assert conf["patch_size"] == [48, 48, 48] and conf["spacing"] == [2.0, 2.0, 2.0]
    assert conf["data_identifier"] == "medsslPlans_3d_fullres"
    assert conf["normalization_schemes"] == ["CTNormalization"]  # the target's own planning
    assert plans["foreground_intensity_properties_per_channel"]["0"]["percentile_00_5"] == -1000
    assert any("spacing [2.0, 2.0, 2.0]" in n for n in notes)
    warnings = check_normalisation(plans, "3d_fullres", export)
    assert warnings and "ZScoreNormalization" in warnings[0] and "CTNormalization" in warnings[0]
    kept, _ = transfer_plans(target, export, "p", spacing="target")
    assert kept["configurations"]["3d_fullres"]["spacing"] == [3.0, 0.8, 0.8]


def test_warmup_then_poly_schedule():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = WarmupPolyLR(opt, 0.01, total_iters=100, warmup_iters=10, iters_per_epoch=10)
    lrs = [sched.lr_at(i) for i in range(100)]
    assert lrs[0] == pytest.approx(0.001) and lrs[9] == pytest.approx(0.01)
    assert all(a < b for a, b in pairwise(lrs[:10]))
    assert lrs[10] == pytest.approx(0.01) and all(a > b for a, b in pairwise(lrs[10:]))
    assert lrs[-1] < 0.0006
    sched.step(3)  # what nnU-Net calls at the start of epoch 3
    assert opt.param_groups[0]["lr"] == pytest.approx(lrs[30])


# ---- checkpoints ---------------------------------------------------------------------------


def _save_with_cuda_tags(obj, path):
    """``torch.save`` as on a GPU: every storage carries the location tag ``cuda:0``."""
    import torch.serialization as ser

    original = ser.location_tag
    ser.location_tag = lambda storage: "cuda:0"
    try:
        torch.save(obj, path)
    finally:
        ser.location_tag = original


_PLAIN_LOAD = (
    "import sys, torch\n"
    "torch.cuda.is_available = lambda: False\n"
    "d = torch.load(sys.argv[1], weights_only=False)\n"  # nnU-Net's call: no map_location
    "print(len(d['network_weights']))\n"
)


def _cpu_only_load(path):
    env = {"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-c", _PLAIN_LOAD, str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def test_a_gpu_saved_checkpoint_is_handed_to_nnunet_as_cpu_tensors(tmp_path):
    state = build_network("tiny", seed=0).state_dict()
    gpu_file = tmp_path / "gpu.pth"
    _save_with_cuda_tags({"network_weights": state}, gpu_file)
    plain = _cpu_only_load(gpu_file)
    assert plain.returncode != 0 and "CUDA" in plain.stderr  # the fixture is what a GPU writes
    weights, _ = _load_weights(gpu_file, tmp_path)
    assert all(torch.equal(weights[k], v) for k, v in state.items())
    again = _cpu_only_load(tmp_path / "pretrained.pth")
    assert again.returncode == 0, again.stderr
    assert int(again.stdout) == len(state)


@pytest.mark.cuda
def test_a_checkpoint_saved_from_a_real_gpu_loads_on_a_cpu_only_process(tmp_path):
    net = build_network("tiny", seed=0).cuda()
    gpu_file = tmp_path / "gpu.pth"
    torch.save({"network_weights": net.state_dict()}, gpu_file)
    assert _cpu_only_load(gpu_file).returncode != 0
    _load_weights(gpu_file, tmp_path)
    again = _cpu_only_load(tmp_path / "pretrained.pth")
    assert again.returncode == 0, again.stderr


def test_a_pretrained_arm_defaults_to_nnssls_recipe_and_scratch_to_nnunets():
    base = {"data": ["/d"], "labels": ["/l"]}
    pre = FinetuneSettings(**base, pretrained="/w.pth")
    assert pre.peak_lr() == 1e-3 and not pre.uses_deep_supervision() and pre.load == "encoder"
    scratch = FinetuneSettings(**base, scratch=True)
    assert scratch.peak_lr() == 1e-2 and scratch.uses_deep_supervision()
    # --scratch with weights: their plans, random weights: the scratch arm's recipe
    assert FinetuneSettings(**base, pretrained="/w.pth", scratch=True).peak_lr() == 1e-2
    mine = FinetuneSettings(**base, pretrained="/w.pth", lr=0.02, deep_supervision=True)
    assert mine.peak_lr() == 0.02 and mine.uses_deep_supervision()


def test_a_pretrained_run_loads_what_load_names_and_initialises_the_rest_from_its_seed(tmp_path):
    """Every seed of a pretrained arm started from the same non-pretrained weights (nnU-Net's
    loader wants every key, and the export carried one initialisation): the rest now comes
    from the run's seed, as the scratch arm's whole network does."""
    pre = build_network("tiny", output_channels=3, deep_supervision=True, seed=123).state_dict()
    decoder = [
        k
        for k in pre
        if k.startswith("decoder.") and ".seg_layers." not in k and ".encoder." not in k
    ]
    encoder = [k for k in pre if k.startswith("encoder.")]
    first = [k for k in decoder if k.startswith("decoder.stages.0.")]  # with its aliases
    rest = [k for k in decoder if k not in first]
    meta = {"pretrained_keys": sorted(encoder + first)}  # as contrastive: + some decoder
    assert loaded_keys(pre, meta, "encoder") == sorted(encoder)
    assert loaded_keys(pre, meta, "all") == sorted(encoder + first)
    assert loaded_keys(pre, {}, "all") == sorted(k for k in pre if ".seg_layers." not in k)

    labels = {"background": 0, "a": 1, "b": 2}
    starts = {}
    for seed, load in ((0, "encoder"), (1, "encoder"), (0, "all")):
        run = tmp_path / f"{seed}_{load}"
        run.mkdir()
        settings = FinetuneSettings(
            data=["/d"], labels=["/l"], pretrained="/w.pth", seed=seed, load=load
        )
        _write_start_weights(run, settings, pre, meta, "tiny", "3d_fullres", labels)
        starts[seed, load] = torch.load(run / "pretrained.pth", weights_only=True)
        record = json.loads((run / "pretrained.json").read_text())
        assert record["load"] == load and record["init_seed"] == seed
    a, b = starts[0, "encoder"]["network_weights"], starts[1, "encoder"]["network_weights"]
    for k in encoder:
        assert torch.equal(a[k], pre[k]) and torch.equal(b[k], pre[k]), k
    own = build_network("tiny", output_channels=3, deep_supervision=True, seed=0).state_dict()
    weighted = [k for k in decoder if k.endswith("weight") and a[k].dim() > 1]
    assert weighted
    for k in weighted:
        assert torch.equal(a[k], own[k]) and not torch.equal(a[k], b[k]), k
    every = starts[0, "all"]["network_weights"]
    assert all(torch.equal(every[k], pre[k]) for k in first)
    assert all(torch.equal(every[k], own[k]) for k in rest)
    # what nnU-Net's own loader makes of the file: the pretrained encoder (its decoder holds
    # the encoder a second time, as decoder.encoder.*: that copy must not win)
    from nnunetv2.run.load_pretrained_weights import load_pretrained_weights

    for seed, load in starts:
        net = build_network("tiny", output_channels=3, deep_supervision=True, seed=99)
        load_pretrained_weights(net, str(tmp_path / f"{seed}_{load}" / "pretrained.pth"))
        got = net.state_dict()
        for k in encoder:
            assert torch.equal(got[k], pre[k]), (seed, load, k)
        other = next(k for k in weighted if k in rest)
        assert not torch.equal(got[other], pre[other])  # not pretrained in either


def test_dice_per_label_against_hand_made_arrays():
    """Dice was only checked to lie in [0, 1]."""
    ref = np.zeros((4, 4), np.int32)
    ref[:2, :2] = 1  # label 1: 4 voxels
    ref[3, :] = 2  # label 2: 4 voxels
    pred = np.zeros((4, 4), np.int32)
    pred[:2, :1] = 1  # 2 voxels, both right: Dice 2*2/(2+4)
    pred[3, :2] = 2  # 2 of label 2 right ...
    pred[2, :2] = 2  # ... and 2 wrong: Dice 2*2/(4+4)
    labels = {"background": 0, "a": 1, "b": 2, "absent": 3}
    dice = dice_per_label(pred, ref, labels)
    assert dice["a"] == pytest.approx(4 / 6) and dice["b"] == pytest.approx(0.5)
    assert np.isnan(dice["absent"]) and "background" not in dice
    assert dice_per_label(ref, ref, labels)["a"] == 1.0
    assert dice_per_label(np.zeros_like(ref), ref, labels)["b"] == 0.0


# ---- nnU-Net end to end --------------------------------------------------------------------


@pytest.mark.e2e
def test_checkpoint_to_dice_through_nnunets_commands(medssl, pretrained, labelled, tmp_path):
    img, lab = labelled
    export = tmp_path / "mae.pth"
    assert medssl("export-nnunet", pretrained, "-o", export).code == 0
    # test cases given as DICOM series: their predictions also come back as DICOM SEGs,
    # de-identified; one of them carries a value planted into every identifying attribute
    test = tmp_path / "test"
    write_dicom_series(read_volume(img / "c3_image.nrrd"), test / "c3", modality="MR")
    write_planted_series(test / "planted", index=1)
    run = tmp_path / "run"
    args = ["finetune", "-d", img, "-l", lab, "--pretrained", export, "-o", run, *SHORT]
    args += ["--test-data", test, "--label-names", "background,tissue,core", "--device", "cpu"]
    args += ["--deidentify"]
    env = {"MEDSSL_DEID_SALT": SALT.decode()}
    r = medssl(*args, timeout=600, env=env)
    assert r.code == 0, r.stderr[-3000:]
    assert find_needles(r.output) == []
    deid = Deidentifier(SALT)
    planted = hd.seg.segread(run / "predictions" / seg_name("planted", deid))
    assert planted.PatientIdentityRemoved == "YES" and planted.StudyInstanceUID != STUDY_UID
    for path in (run / "predictions").rglob("*"):  # SEGs, NIfTI predictions, names
        assert find_needles(path.name) == [], path
        if path.suffix == ".dcm":
            assert find_needles(path.read_bytes()) == [], path
    assert "Dice (validation, 1 cases): tissue" in r.stdout
    dice = json.loads((run / "dice.json").read_text())
    assert set(dice["validation"]["cases"]) == {"c0"}  # fold 0 of 4 leave-one-out folds
    assert 0.0 <= dice["validation"]["mean"]["tissue"] <= 1.0
    # dice.json is the Dice of nnU-Net's validation prediction against the label map
    results = run / "nnUNet_results" / "Dataset900_medssl"
    folder = results / "nnUNetTrainer_medsslShort__medsslPlans__3d_fullres"
    p = read_volume(folder / "fold_0" / "validation" / "c0.nii.gz").array
    r = read_volume(lab / "c0_label.nii.gz").array
    for name, value in (("tissue", 1), ("core", 2)):
        both = int((p == value).sum() + (r == value).sum())
        hand = 2 * int(((p == value) & (r == value)).sum()) / both
        assert dice["validation"]["cases"]["c0"][name] == pytest.approx(hand), name
    train_log = (run / "logs" / "train_fold0.log").read_text()
    assert "-pretrained_weights" in train_log and "Loading pretrained weights" in train_log
    # a pretrained arm: nnssl's recipe (lr 1e-3, encoder loaded, no deep supervision)
    assert "Current learning rate: 0.001" in train_log
    assert json.loads((run / "pretrained.json").read_text())["load"] == "encoder"
    assert "medsslPlans" in train_log and "nnUNetTrainer_medsslShort" in train_log
    # the fine-tuning network is the pretrained one: same keys and shapes
    final = torch.load(folder / "fold_0" / "checkpoint_final.pth", weights_only=False)
    pre = torch.load(export, weights_only=True)["network_weights"]
    for key, value in final["network_weights"].items():
        if ".seg_layers." not in key:
            assert value.shape == pre[key].shape, key
    # the DICOM test series: a NIfTI prediction and a SEG that matches it
    pred = read_volume(run / "predictions" / "c3.nii.gz").array
    seg = hd.seg.segread(run / "predictions" / seg_name("c3", deid))
    assert [d.SegmentLabel for d in seg.SegmentSequence] == ["tissue", "core"]
    assert seg.NumberOfFrames == 2 * SHAPE[0]
    assert int(np.asarray(seg.pixel_array).sum()) == int((pred > 0).sum())
    # re-running the same command resumes: everything is done, no nnU-Net command runs
    logs = {p.name: p.stat().st_mtime for p in (run / "logs").iterdir()}
    r = medssl(*args, timeout=600, env=env)
    assert r.code == 0, r.stderr[-3000:]
    assert logs == {p.name: p.stat().st_mtime for p in (run / "logs").iterdir()}
    # and other settings in the same folder are refused
    r = medssl(*args[:-2], "cuda", "--deidentify", env=env)
    assert r.code == 2 and "other settings" in r.stderr


@pytest.mark.e2e
def test_a_checkpoint_that_does_not_fit_is_refused_before_training(medssl, labelled, tmp_path):
    img, lab = labelled
    foreign = tmp_path / "foreign.pth"  # an nnU-Net checkpoint of another network, no plans
    torch.save({"network_weights": build_network("small", seed=0).state_dict()}, foreign)
    run = tmp_path / "run"
    r = medssl("finetune", "-d", img, "-l", lab, "-w", foreign, "-o", run, *SHORT)
    assert r.code == 2, r.stderr[-2000:]
    assert "do not fit the fine-tuning network" in r.stderr
    # nnU-Net planned a PlainConvUNet for this data: its first conv is named and shaped
    assert "missing key encoder.stages.0.0.convs.0.conv.weight (shape (32, 1, 3, 3, 3))" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (run / "nnUNet_results" / "Dataset900_medssl").exists()


def test_splits_given_by_the_user_are_checked(labelled, tmp_path):
    img, lab = labelled
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps([{"train": ["c0", "c1"], "val": ["c9"]}]))
    settings = FinetuneSettings(
        data=[str(img)], labels=[str(lab)], scratch=True, splits=str(splits), device="cpu"
    )
    with pytest.raises(InputError, match=r"unknown cases \['c9'\]"):
        finetune(settings, tmp_path / "run")


@pytest.mark.slow  # two nnU-Net runs, one killed: ~50 s
def test_a_killed_run_continues_from_nnunets_checkpoint(labelled, tmp_path):
    """nnU-Net refuses ``--c`` with ``-pretrained_weights``: a resumed fold continues from its
    own checkpoint_latest.pth without it."""
    img, lab = labelled
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "medssl", "finetune", "-d", str(img), "-l", str(lab)]
    cmd += ["--scratch", "-o", str(run), "--device", "cpu", *SHORT[:2]]
    cmd += ["--epochs", "5", "--iterations", "2", "--val-iterations", "1"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL)
    fold = run / "nnUNet_results" / "Dataset900_medssl"
    latest = fold / "nnUNetTrainer_medsslShort__nnUNetPlans__3d_fullres" / "fold_0"
    deadline = time.time() + 300
    while not (latest / "checkpoint_latest.pth").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (latest / "checkpoint_final.pth").exists(), "finished before it was killed"
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    log = (run / "logs" / "train_fold0.log").read_text()
    assert "--c" in log and (latest / "checkpoint_final.pth").is_file()
