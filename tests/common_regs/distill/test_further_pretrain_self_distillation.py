"""Self-distillation for further pre-training (#61): the official [CLS] distance by hand, closed-form grad, frozen
teacher."""

from __future__ import annotations

import pytest
import torch

from common_regs.api import TrainContext
from common_regs.distill import FurtherPretrainSelfDistillation, hidden_distance


def test_official_cls_distance() -> None:
    """``MSELoss(reduction="sum")(student_h[:, 0], teacher_h[:, 0]) / B`` (``SelfPreTrainer.train``), by loops."""
    torch.manual_seed(0)
    teacher = torch.nn.Linear(4, 3).double()
    x = torch.randn(2, 5, 4, dtype=torch.float64)  # (B, T, D_in): token 0 plays [CLS]
    student = torch.randn(2, 5, 3, dtype=torch.float64)
    target = teacher(x).detach()
    cls_only = sum(float(student[b, 0, j] - target[b, 0, j]) ** 2 for b in range(2) for j in range(3)) / 2
    every_token = sum(float(student[b, t, j] - target[b, t, j]) ** 2
                      for b in range(2) for t in range(5) for j in range(3)) / 2
    ctx = TrainContext(model=teacher, batch=x, extras={"hidden": student})
    assert float(FurtherPretrainSelfDistillation(teacher)(ctx)) == pytest.approx(cls_only, rel=1e-12)
    assert float(FurtherPretrainSelfDistillation(teacher, token=None)(ctx)) == pytest.approx(every_token, rel=1e-12)
    hf_style = FurtherPretrainSelfDistillation(lambda inputs: (teacher(inputs), None))  # last_hidden_state first
    assert float(hf_style(ctx)) == pytest.approx(cls_only, rel=1e-12)


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
    with pytest.raises(TypeError, match="token"):
        FurtherPretrainSelfDistillation(torch.nn.Identity(), token=1.5)  # type: ignore[arg-type]
