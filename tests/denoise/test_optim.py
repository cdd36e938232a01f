import pytest
import torch

from medssl.denoise.filter2noise.optim import OneCycleAdamW, one_cycle


@pytest.mark.parametrize("total", [1, 7, 40])
def test_one_cycle_adamw_matches_torch_adamw_with_one_cycle_lr(total):
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(3, 4, generator=gen), torch.randn(5, generator=gen)]
    ours = [p.clone().requires_grad_() for p in start]
    ref = [p.clone().requires_grad_() for p in start]
    opt = OneCycleAdamW(ours, max_lr=3e-3, total=total, weight_decay=0.05)
    topt = torch.optim.AdamW(ref, lr=3e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(topt, max_lr=3e-3, total_steps=total)
    for step in range(total):
        assert opt.lr == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12)
        grads = [torch.randn(p.shape, generator=gen) for p in start]
        for i, (a, b) in enumerate(zip(ours, ref, strict=True)):
            if step % 3 == 2 and i == 1:  # a tensor without a gradient this step is skipped
                a.grad = b.grad = None
            else:
                a.grad, b.grad = grads[i].clone(), grads[i].clone()
        opt.step()
        topt.step()
        sched.step()
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        assert not torch.equal(a, torch.zeros_like(a))


def test_one_cycle_shape():
    lrs = [one_cycle(s, 100, 1.0)[0] for s in range(100)]
    betas = [one_cycle(s, 100, 1.0)[1] for s in range(100)]
    peak = max(range(100), key=lrs.__getitem__)
    assert lrs[0] == pytest.approx(1 / 25) and lrs[peak] == pytest.approx(1.0)
    assert 25 <= peak <= 31 and lrs[-1] == pytest.approx(1 / 25 / 1e4)
    assert betas[0] == pytest.approx(0.95) and betas[peak] == pytest.approx(0.85)
