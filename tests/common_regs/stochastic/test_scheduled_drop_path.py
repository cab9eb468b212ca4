"""ScheduledDropPath (#17): E[out] = x, per-sample masks, p = 0 at step 0, TF-slim's time and cell-depth schedule."""

from __future__ import annotations

import pytest
import torch

from common_regs.api import TrainContext
from common_regs.stochastic import DropPath, ScheduledDropPath, drop_path, scheduled_drop_prob
from common_regs.training import RegHooks


def test_unbiased_and_mask_constant_over_non_batch_dims() -> None:
    x = torch.randn(1, 3, 4).expand(20000, 3, 4)
    out = drop_path(x, 0.3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.mean(0), x[0], atol=0.03, rtol=0)
    kept = out.reshape(len(out), -1) != 0
    assert bool((kept.all(1) | (~kept).all(1)).all())
    # about 30 % of the samples dropped (±0.05 is 15 standard deviations at n = 20000); the identity passes the rest
    assert abs(float((~kept).all(1).float().mean()) - 0.3) < 0.05
    # TF-slim scaling: a kept sample is x / keep exactly (keep = 0.7)
    torch.testing.assert_close(out[kept.all(1)], (x / 0.7)[kept.all(1)])
    assert torch.equal(drop_path(x, 0.3, training=False), x)


def test_schedule_values() -> None:
    assert scheduled_drop_prob(0.4, 0, 100) == 0.0
    assert scheduled_drop_prob(0.4, 50, 100, cell=1, num_cells=4) == pytest.approx(0.4 * 0.5 * 0.5)
    assert scheduled_drop_prob(0.4, 500, 100) == pytest.approx(0.4)


def test_scheduler_drives_droppath_layers_through_reghooks() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), DropPath(), torch.nn.Linear(3, 3), DropPath())
    scheduler = ScheduledDropPath(final_drop_prob=0.4, total_steps=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    hooks = RegHooks([scheduler], model, optimizer)
    scheduler.prepare(model)
    assert scheduler.current == [0.0, 0.0]
    x = torch.randn(8, 3)
    for step in range(6):
        hooks.step(x, model, lambda out, b: out.pow(2).mean(), step=step)
    assert scheduler.current == pytest.approx([0.2, 0.4])
    with pytest.raises(ValueError, match="DropPath"):
        ScheduledDropPath().prepare(torch.nn.Linear(2, 2))
    scheduler.step(TrainContext(model=model, step=1))
    assert scheduler.current == pytest.approx([0.4 * 0.5 * 0.5, 0.4 * 0.5])


def test_cells_follow_tf_slim_two_stage_keep_probability() -> None:
    # NASNet-A CIFAR: drop_path_keep_prob 0.6; three cells, the first and last with two paths each; step 250 of 1000
    keep, total, step = 0.6, 1000, 250
    cells = [0, 0, 1, 2, 2]
    model = torch.nn.Sequential(*[DropPath(cell=c) for c in cells])
    scheduler = ScheduledDropPath(final_drop_prob=1 - keep, total_steps=total)
    scheduler.prepare(model)
    scheduler.step(TrainContext(model=model, step=step - 1))
    expected = []
    for c in cells:  # nasnet_utils._apply_drop_path, drop_connect_version 'v3', written out by hand
        keep_cell = 1 - (c + 1) / 3 * (1 - keep)
        keep_now = 1 - min(1.0, step / total) * (1 - keep_cell)
        expected.append(1 - keep_now)
    assert expected == pytest.approx([0.4 / 3 / 4, 0.4 / 3 / 4, 0.8 / 3 / 4, 0.1, 0.1])
    assert scheduler.current == pytest.approx(expected, abs=1e-12)
    flat = ScheduledDropPath(final_drop_prob=1 - keep, total_steps=total, depth_scale=False)  # 'v1': time only
    flat.prepare(model)
    flat.step(TrainContext(model=model, step=step - 1))
    assert flat.current == pytest.approx([0.1] * 5, abs=1e-12)
    with pytest.raises(ValueError, match="`cell` is set on 1 of 2"):
        ScheduledDropPath().prepare(torch.nn.Sequential(DropPath(cell=0), DropPath()))
    with pytest.raises(ValueError, match="`cell`"):
        DropPath(cell=-1)
