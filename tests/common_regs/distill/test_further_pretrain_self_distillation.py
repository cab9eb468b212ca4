"""Self-distillation for further pre-training (#61): zero at student = teacher, closed-form grad, frozen teacher."""

from __future__ import annotations

import pytest
import torch

from common_regs.api import TrainContext
from common_regs.distill import FurtherPretrainSelfDistillation, hidden_distance


def test_zero_when_student_equals_teacher() -> None:
    teacher = torch.nn.Linear(4, 3)
    x = torch.randn(6, 4)
    term = FurtherPretrainSelfDistillation(teacher)
    assert float(term(TrainContext(model=teacher, batch=x, extras={"hidden": teacher(x)}))) == 0.0


def test_gradient_closed_form_and_teacher_frozen() -> None:
    torch.manual_seed(0)
    teacher = torch.nn.Linear(4, 3)
    student_hidden = torch.randn(5, 3, requires_grad=True)
    x = torch.randn(5, 4)
    term = FurtherPretrainSelfDistillation(teacher)
    term(TrainContext(model=teacher, batch=x, extras={"hidden": student_hidden})).backward()
    torch.testing.assert_close(student_hidden.grad, 2 * (student_hidden.detach() - teacher(x).detach()) / 5)
    assert all(p.grad is None for p in teacher.parameters())


def test_shape_mismatch_and_missing_hidden() -> None:
    with pytest.raises(ValueError, match="differ"):
        hidden_distance(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="hidden"):
        FurtherPretrainSelfDistillation(torch.nn.Identity())(
            TrainContext(model=torch.nn.Identity(), batch=torch.ones(1))
        )
