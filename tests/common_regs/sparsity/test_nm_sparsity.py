"""NMSparsity (#56): decay values, structure-decay frames, SR-STE gradient, dense identity at d_t = 1."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

from common_regs.sparsity._masks import nm_mask
from common_regs.sparsity.nm_sparsity import NMSparsity, mask_decay_factor, structure_decay_schedule


def test_decay_factor_values() -> None:
    assert mask_decay_factor("linear", 0.1, 3) == pytest.approx(0.7)
    assert mask_decay_factor("linear", 0.1, 30) == 0.0
    assert mask_decay_factor("exp", 0.1, 3) == pytest.approx(math.exp(-0.3))
    assert mask_decay_factor("step", 0.1, 0) == 0.0


def test_structure_decay_frames_match_the_paper_example() -> None:
    # 1:16 over 4 equal frames after 10 dense steps: 15:16, 8:16, 4:16, 2:16, 1:16
    frames = structure_decay_schedule(1, 16, dense_steps=10, total_steps=60, fine_tune_steps=10)
    assert frames == [(10, 15), (20, 8), (30, 4), (40, 2), (50, 1)]
    sched = NMSparsity(1, 16, structure_decay=True, dense_steps=10, total_steps=60, fine_tune_steps=10)
    assert [sched.current_n(s) for s in (10, 19, 20, 35, 55)] == [15, 15, 8, 4, 1]
    assert sched.current_fill(5) == 1.0 and sched.current_fill(55) == 0.0


def test_nm_mask_keeps_exactly_n_largest_per_group() -> None:
    w = torch.tensor([[0.1, -3.0, 2.0, 0.5, 4.0, -0.2, 0.3, -0.1]])
    assert nm_mask(w, 2, 4).tolist() == [[0, 1, 1, 0, 1, 0, 1, 0]]
    conv = torch.randn(3, 8, 2, 2)
    mask = nm_mask(conv, 1, 4)
    assert torch.equal(mask.movedim(1, -1).reshape(-1, 4).sum(1), torch.ones(3 * 2 * 2 * 2))


def test_forward_is_soft_masked_and_backward_is_straight_through() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(8, 2, bias=False)
    sched = NMSparsity(2, 4, decay="linear", decay_coef=0.25)
    sched.prepare(nn.Sequential(layer))
    raw = sched.original("0.weight").detach().clone()
    mask = nm_mask(raw, 2, 4)
    torch.testing.assert_close(layer.weight, raw * (mask + (1 - mask) * 1.0))  # d_0 = 1: dense
    sched.step()  # d_1 = 0.75
    torch.testing.assert_close(layer.weight, raw * (mask + (1 - mask) * 0.75))
    x = torch.randn(5, 8)
    layer(x).sum().backward()
    torch.testing.assert_close(sched.original("0.weight").grad, x.sum(0).expand(2, 8))  # dense gradient (STE)


def test_srste_gradient_matches_formula() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(8, 3, bias=False)
    sched = NMSparsity(2, 4, srste=True, srste_decay=0.1)
    sched.prepare(nn.Sequential(layer))
    raw = sched.original("0.weight")
    mask = nm_mask(raw, 2, 4)
    x = torch.randn(4, 8)
    layer(x).sum().backward()
    expected = x.sum(0).expand(3, 8) + 0.1 * (1 - mask) * raw.detach()
    torch.testing.assert_close(raw.grad, expected)
    torch.testing.assert_close(layer.weight, raw.detach() * mask)


def test_indivisible_input_dimension_is_rejected_with_the_shape() -> None:
    with pytest.raises(ValueError, match=r"not divisible by `m`=4"):
        NMSparsity(2, 4).prepare(nn.Sequential(nn.Linear(6, 4)))
    with pytest.raises(ValueError, match="total_steps"):
        NMSparsity(2, 4, structure_decay=True)


def _train(sched: NMSparsity, steps: int) -> nn.Module:
    """The docs' usage: NMSparsity through RegHooks on a small MLP, ``steps`` optimizer steps."""
    from common_regs.training import RegHooks

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 4))
    hooks = RegHooks([sched], model, torch.optim.SGD(model.parameters(), lr=0.05))
    x, y = torch.randn(32, 64), torch.randint(0, 4, (32,))
    for step in range(steps):
        hooks.step((x, y), lambda b: model(b[0]), lambda out, b: nn.functional.cross_entropy(out, b[1]), step=step)
    return model


def _assert_exact_nm(model: nn.Module, names: list[str], n: int, m: int) -> None:
    for name in names:
        groups = (model.get_parameter(name).detach() != 0).reshape(-1, m).sum(1)
        assert int(groups.max()) <= n, f"{name}: a group of {m} has {int(groups.max())} non-zeros, expected <= {n}"


def test_squash_before_the_decay_ends_still_leaves_nm_weights_and_warns() -> None:
    # the docs' example (decay_coef=1e-3 reaches d_t = 0 at step 1000) squashed after 5 steps
    sched = NMSparsity(2, 4, decay="linear", decay_coef=1e-3, exclude=("4",))
    model = _train(sched, 5)
    assert sched.final_step() == 1000
    with pytest.warns(UserWarning, match=r"stopped at step 5, before the hard 2:4 pattern \(it starts at step 1000"):
        sched.squash()
    _assert_exact_nm(model, ["0.weight", "2.weight"], 2, 4)


def test_squash_after_the_decay_ends_is_silent_and_exact() -> None:
    sched = NMSparsity(2, 4, decay="linear", decay_coef=0.25, dense_steps=2)
    assert sched.final_step() == 6
    model = _train(sched, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched.squash()
    _assert_exact_nm(model, ["0.weight", "2.weight", "4.weight"], 2, 4)


def test_final_step_of_each_schedule() -> None:
    assert NMSparsity(decay="exp").final_step() is None  # exp(-c t) never reaches 0
    assert NMSparsity(decay="exp", fine_tune_steps=10, total_steps=100).final_step() == 90
    assert NMSparsity(decay="step", dense_steps=7).final_step() == 7
    assert NMSparsity(srste=True).final_step() == 0
    assert NMSparsity(decay_coef=0.1, dense_steps=5).final_step() == 15
    structured = NMSparsity(1, 16, structure_decay=True, decay="step", dense_steps=10, total_steps=60,
                            fine_tune_steps=10)
    assert structured.final_step() == 50  # last frame (1:16) starts at 50
