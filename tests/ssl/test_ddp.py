"""DDP under torchrun: 2 gloo processes on the CPU give the single-process result."""

import copy
import os
import subprocess
import sys

import pytest
import torch
import yaml

from medssl.ssl.engine import load_checkpoint
from medssl.ssl.pretrain import pretrain
from tests.ssl.volumes import TINY_CONFIG, write_collection


def _setup(tmp_path, steps):
    """Tiny volumes and a config (SGD, batch 4) written as YAML: ``(data, cfg, config path)``.

    SGD: Adam would turn the float noise in the (mathematically zero) gradients of conv biases
    that feed an instance norm into full-size steps.
    """
    data = write_collection(tmp_path / "vols")
    cfg = copy.deepcopy(TINY_CONFIG)
    cfg["data"]["cache_dir"] = str(tmp_path / "cache")
    cfg["train"].update(steps=steps, batch_size=4, checkpoint_every=2, optimizer="sgd", lr=0.01)
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(cfg))
    return data, cfg, config


def _assert_same_weights(tmp_path):
    """The torchrun run's final weights equal the single-process run's; returns both."""
    ddp = load_checkpoint(tmp_path / "ddp" / "checkpoint_final.pt")
    single = load_checkpoint(tmp_path / "single" / "checkpoint_final.pt")
    for key, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][key], value, rtol=1e-4, atol=1e-6, msg=key)
    return ddp, single


@pytest.mark.ddp
@pytest.mark.parametrize("method", ["s3d"])
@pytest.mark.e2e
def test_two_gloo_processes_match_one_process_on_the_global_batch(tmp_path, method):
    data, cfg, config = _setup(tmp_path, steps=3)

    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "medssl", "pretrain", "--method", method, "--config", str(config),
        "--data", str(data), "-o", str(tmp_path / "ddp"),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    torch.set_num_threads(1)
    pretrain(method, data, tmp_path / "single", config=cfg, verbose=False)

    ddp, single = _assert_same_weights(tmp_path)
    assert ddp["world_size"] == 2 and single["world_size"] == 1
    assert len(ddp["rng"]) == 2  # each rank's RNG state, for exact resume


@pytest.mark.ddp
@pytest.mark.e2e
def test_two_nodes_through_torchruns_rendezvous_match_one_process(tmp_path):
    """Multi-node as on a cluster (examples/slurm/pretrain-multinode.sbatch): two torchrun
    launchers, one process each, meet through the c10d rendezvous on localhost (gloo)."""
    import socket

    data, cfg, config = _setup(tmp_path, steps=2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
        "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
        "--rdzv_id", "medssl-two-nodes",
        "-m", "medssl", "pretrain", "--method", "mae", "--config", str(config),
        "--data", str(data), "-o", str(tmp_path / "ddp"),
    ]  # fmt: skip
    nodes = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    for node in nodes:
        _, err = node.communicate(timeout=300)
        assert node.returncode == 0, err[-3000:]

    torch.set_num_threads(1)
    pretrain("mae", data, tmp_path / "single", config=cfg, verbose=False)
    ddp, _ = _assert_same_weights(tmp_path)
    assert ddp["world_size"] == 2
