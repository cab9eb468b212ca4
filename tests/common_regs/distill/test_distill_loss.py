"""DistillLoss: KL zero up to a per-row shift, soft-CE closed form, MSE, missing targets."""

from __future__ import annotations

import pytest
import torch

from common_regs.api import TrainContext
from common_regs.distill import DistillLoss


def _ctx(outputs: torch.Tensor, targets: torch.Tensor) -> TrainContext:
    return TrainContext(model=torch.nn.Identity(), outputs=outputs, extras={"targets": targets})


def test_kl_is_zero_for_shifted_rows_and_positive_otherwise() -> None:
    z = torch.randn(4, 6)
    assert float(DistillLoss("kl")(_ctx(z, z + torch.randn(4, 1)))) == pytest.approx(0.0, abs=1e-6)
    assert float(DistillLoss("kl")(_ctx(z, z.flip(1)))) > 0


def test_soft_ce_and_mse_closed_forms() -> None:
    z = torch.tensor([[0.0, 0.0]])
    assert float(DistillLoss("soft_ce")(_ctx(z, torch.tensor([[0.5, 0.5]])))) == pytest.approx(0.6931, abs=1e-4)
    assert float(DistillLoss("mse")(_ctx(z, torch.tensor([[1.0, 2.0]])))) == pytest.approx(5.0)


def test_errors() -> None:
    with pytest.raises(ValueError, match="targets"):
        DistillLoss()(TrainContext(model=torch.nn.Identity(), outputs=torch.zeros(1, 2)))
    with pytest.raises(ValueError, match="mode"):
        DistillLoss("hinge")  # type: ignore[arg-type]
