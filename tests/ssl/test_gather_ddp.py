"""Global-batch losses under DDP: 2 gloo processes, each holding half of the batch, get the
single-process loss on the concatenated batch and (after DDP's averaging) its gradients."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from medssl.ssl.contrastive import global_contrastive_loss, local_contrastive_loss
from medssl.ssl.distributed import all_gather_with_grad
from medssl.ssl.graphmatch import GraphMatchingLoss

WORLD = 2


def _inputs():
    g = torch.Generator().manual_seed(0)
    n = 8
    return {
        "z1": torch.randn(n, 16, generator=g),
        "z2": torch.randn(n, 16, generator=g),
        "f1": torch.randn(n, 4, 6, 6, generator=g),
        "f2": torch.randn(n, 4, 6, 6, generator=g),
        "partition": torch.tensor([0, 1, 2, 3] * 2),
        "volume": torch.tensor([0] * 4 + [1] * 4),
    }


def _losses(x: dict, gm: GraphMatchingLoss) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(5)
    return {
        "global": global_contrastive_loss(x["z1"], x["z2"], x["partition"], x["volume"], "GD"),
        "local": local_contrastive_loss(x["f1"], x["f2"], x["partition"], x["volume"], "LD"),
        "graph": gm(x["z1"], x["z2"], x["f1"], x["f2"], generator=gen)["loss"],
    }


def _grads(full: dict, parts: dict | None, rank: int | None):
    torch.manual_seed(0)
    gm = GraphMatchingLoss(16, width=8, k=3)
    out = {}
    for name in ("global", "local", "graph"):
        leaves = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in full.items()}
        if rank is None:
            x = leaves
        else:
            n = full["z1"].shape[0] // WORLD
            sl = slice(rank * n, (rank + 1) * n)
            leaves = {
                k: v[sl].clone().requires_grad_(v.is_floating_point()) for k, v in full.items()
            }
            x = {k: all_gather_with_grad(v) for k, v in leaves.items()}
        loss = _losses(x, gm)[name]
        gm.zero_grad()
        loss.backward()
        grads = {k: v.grad.clone() for k, v in leaves.items() if v.grad is not None}
        params = {k: p.grad.clone() for k, p in gm.named_parameters() if p.grad is not None}
        out[name] = (loss.detach(), grads, params)
    return out


def _worker(rank: int, init: str, result_dir: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    try:
        res = _grads(_inputs(), None, rank)
        torch.save(res, os.path.join(result_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
def test_gathered_losses_and_gradients_equal_the_single_process_ones(tmp_path):
    init = f"file://{tmp_path / 'store'}"
    mp.spawn(_worker, args=(init, str(tmp_path)), nprocs=WORLD, join=True)
    single = _grads(_inputs(), None, None)
    n = _inputs()["z1"].shape[0] // WORLD
    for rank in range(WORLD):
        res = torch.load(tmp_path / f"rank{rank}.pt")
        for name, (loss, grads, params) in res.items():
            ref_loss, ref_grads, ref_params = single[name]
            torch.testing.assert_close(loss, ref_loss, msg=f"{name} loss")
            for k, g in grads.items():
                # every rank computes the global loss; DDP then averages over the ranks
                ref = ref_grads[k][rank * n : (rank + 1) * n]
                torch.testing.assert_close(g / WORLD, ref, msg=f"{name} d/d{k}")
            for k, g in params.items():  # head parameters see the whole batch on every rank
                torch.testing.assert_close(g, ref_params[k], msg=f"{name} d/d{k}")
