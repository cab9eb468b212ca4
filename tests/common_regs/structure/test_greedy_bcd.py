from __future__ import annotations

import pytest
import torch

from common_regs.structure import GreedyBCD
from common_regs.structure.greedy_bcd import block_coordinate_descent


def _problem() -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    g = torch.Generator().manual_seed(0)
    scale = torch.logspace(-1, 1, 40, dtype=torch.float64)[torch.randperm(40, generator=g)]
    a = torch.randn(100, 40, generator=g, dtype=torch.float64) * scale
    return a, torch.randn(100, generator=g, dtype=torch.float64), [list(range(i, i + 4)) for i in range(0, 40, 4)]


def test_greedy_rules_beat_cyclic_per_iteration() -> None:
    a, b, blocks = _problem()
    _, cyclic = block_coordinate_descent(a, b, blocks, rule="cyclic", iters=50)
    _, gsl = block_coordinate_descent(a, b, blocks, rule="gsl", iters=50)
    assert all(gsl[k] < cyclic[k] for k in (10, 25, 50))
    _, cyc_newton = block_coordinate_descent(a, b, blocks, rule="cyclic", update="newton", iters=50)
    _, greedy_newton = GreedyBCD(rule="gs_newton", update="newton", iters=50)(a, b, blocks)
    assert all(greedy_newton[k] < cyc_newton[k] for k in (25, 50))
    assert all(later <= earlier + 1e-12 for earlier, later in zip(gsl, gsl[1:], strict=False))  # monotone


def test_lipschitz_step_guarantee_and_exact_newton_block_minimizer() -> None:
    a, b, blocks = _problem()
    x, hist = block_coordinate_descent(a, b, blocks, rule="gsl", iters=1)
    grad = -a.T @ b  # at x = 0
    (best,) = [blk for blk in blocks if bool(x[blk].abs().sum() > 0)]
    lip = float(torch.linalg.eigvalsh(a[:, best].T @ a[:, best])[-1])
    assert hist[0] - hist[1] >= float(grad[best] @ grad[best]) / (2 * lip) - 1e-9
    x, _ = block_coordinate_descent(a, b, blocks, rule="gs", update="newton", iters=1)
    moved = [blk for blk in blocks if bool(x[blk].abs().sum() > 0)][0]
    torch.testing.assert_close((a.T @ (a @ x - b))[moved], torch.zeros(4, dtype=torch.float64), atol=1e-9, rtol=0)
    with pytest.raises(ValueError, match="partition"):
        block_coordinate_descent(a, b, blocks[:-1])
    with pytest.raises(ValueError, match="`rule`"):
        GreedyBCD(rule="best")  # type: ignore[arg-type]


@pytest.mark.parametrize(("rule", "columns", "picked"), [
    # A = I, b = (.5, .5, .75), g = −b: GS scores Σ|g_i| = 1.0 (block 0) vs 0.75 (block 1). An ℓ2 score would
    # pick block 1 (0.707 < 0.75).
    ("gs", (1.0, 1.0, 1.0), 0),
    # A = diag(1, 1, 2): g = (−.5, −.5, −1.5), L_B = (1, 4), L_i = (1, 1, 4). GSL Σ|g_i|/√L_B = 1.0 vs 1.5/2 = 0.75;
    # GSD Σ|g_i|/√L_i = 1.0 vs 0.75: block 0 (‖g_B‖²/L_B would pick block 1: 0.5 < 0.5625).
    ("gsl", (1.0, 1.0, 2.0), 0),
    ("gsd", (1.0, 1.0, 2.0), 0),
    # GSQ √(g_Bᵀ H_B⁻¹ g_B): √0.5 = 0.707 vs √(2.25/4) = 0.75: block 1.
    ("gs_newton", (1.0, 1.0, 2.0), 1),
])
def test_rules_pick_the_block_the_authors_code_picks(rule, columns, picked) -> None:
    a = torch.diag(torch.tensor(columns, dtype=torch.float64))
    b = torch.tensor([0.5, 0.5, 0.75], dtype=torch.float64)
    blocks = [[0, 1], [2]]
    x, hist = block_coordinate_descent(a, b, blocks, rule=rule, iters=1)
    # One Lipschitz step x_B = −g_B / L_B from x = 0, by hand for each block of the two test matrices.
    step = {0: [0.5, 0.5, 0.0], 1: [0.0, 0.0, 0.75 * columns[2] / columns[2] ** 2]}[picked]
    torch.testing.assert_close(x, torch.tensor(step, dtype=torch.float64), atol=1e-12, rtol=0)
    expected = 0.5 * float(((a @ torch.tensor(step, dtype=torch.float64)) - b).pow(2).sum())
    assert hist[0] == pytest.approx(0.53125, abs=1e-12) and hist[1] == pytest.approx(expected, abs=1e-12)
