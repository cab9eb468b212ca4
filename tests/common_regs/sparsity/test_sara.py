"""SaRA (#15): trainable count = |M|, frozen entries bit-identical, nuclear-norm gradient = U Vᵀ ⊙ M, re-selection."""

from __future__ import annotations

import torch
from torch import nn

from common_regs.sparsity.sara import SaRA


def _setup(**kwargs: object) -> tuple[nn.Module, SaRA, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 12))
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.5)
    sched = SaRA(targets=["0.weight"], **kwargs)  # type: ignore[arg-type]
    sched.prepare(model, opt)
    return model, sched, opt


def test_only_the_smallest_weights_train() -> None:
    model, sched, opt = _setup(trainable_fraction=0.25)
    mask = sched.masks["0.weight"]
    raw = sched.original("0.weight")
    assert int(mask.sum()) == 30 == sched.trainable_count()
    assert raw.detach().abs()[mask == 1].max() <= raw.detach().abs()[mask == 0].min()
    before = raw.detach().clone()
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 10)).pow(2).sum().backward()
        opt.step()
        sched.step()
    assert torch.equal(raw.detach()[mask == 0], before[mask == 0])
    assert not torch.equal(raw.detach()[mask == 1], before[mask == 1])


def test_nuclear_norm_gradient_is_uv_transpose_on_the_mask() -> None:
    model, sched, _ = _setup(trainable_fraction=0.5, min_dim=4, nuclear_weight=1.0)
    term = sched.nuclear_term()
    value = term(None)
    value.backward()
    mask = sched.masks["0.weight"]
    u, s, vh = torch.linalg.svd(sched.original("0.weight").detach() * mask, full_matrices=False)
    torch.testing.assert_close(value, s.sum())
    torch.testing.assert_close(sched.original("0.weight").grad, (u @ vh) * mask, rtol=1e-4, atol=1e-5)


def test_reselection_only_at_the_scheduled_step() -> None:
    model, sched, opt = _setup(trainable_fraction=0.25, progressive_step=2)
    masks = [sched.masks["0.weight"].clone()]
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 10)).pow(2).sum().backward()
        opt.step()
        sched.step()
        masks.append(sched.masks["0.weight"].clone())
    assert torch.equal(masks[0], masks[1])
    assert not torch.equal(masks[1], masks[2])
    assert torch.equal(masks[2], masks[3])
