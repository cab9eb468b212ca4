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
    grad = a.T @ (a @ torch.zeros(40, dtype=torch.float64) - b)
    best = max(blocks, key=lambda blk: float(grad[blk] @ grad[blk]) / float(torch.linalg.eigvalsh(
        a[:, blk].T @ a[:, blk])[-1]))
    lip = float(torch.linalg.eigvalsh(a[:, best].T @ a[:, best])[-1])
    assert hist[0] - hist[1] >= float(grad[best] @ grad[best]) / (2 * lip) - 1e-9
    x, _ = block_coordinate_descent(a, b, blocks, rule="gs", update="newton", iters=1)
    moved = [blk for blk in blocks if bool(x[blk].abs().sum() > 0)][0]
    torch.testing.assert_close((a.T @ (a @ x - b))[moved], torch.zeros(4, dtype=torch.float64), atol=1e-9, rtol=0)
    with pytest.raises(ValueError, match="partition"):
        block_coordinate_descent(a, b, blocks[:-1])
    with pytest.raises(ValueError, match="`rule`"):
        GreedyBCD(rule="best")  # type: ignore[arg-type]
