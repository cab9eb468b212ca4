"""Random teachers (#31): zero student gradient at s ≡ t, frozen teacher, probe and perturbed copy helpers."""

from __future__ import annotations

import torch

from common_regs.api import TrainContext
from common_regs.distill import RandomTeacher, perturbed_copy, ridge_probe_accuracy


def test_student_equal_to_teacher_gets_zero_gradient_and_teacher_none() -> None:
    torch.manual_seed(0)
    teacher = torch.nn.Linear(5, 6)
    provider = RandomTeacher(teacher, teacher_temperature=0.1, student_temperature=0.1)
    student = perturbed_copy(teacher, scale=0.0)
    x = torch.randn(8, 5)
    targets = provider.targets(TrainContext(model=student, batch=x))
    logits = student(x)
    logits.retain_grad()
    provider.loss(logits, targets).backward()
    torch.testing.assert_close(logits.grad, torch.zeros_like(logits), atol=1e-6, rtol=0)
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())


def test_perturbed_copy_is_close_but_distinct() -> None:
    torch.manual_seed(0)
    teacher = torch.nn.Linear(20, 20)
    student = perturbed_copy(teacher, scale=0.1, generator=torch.Generator().manual_seed(1))
    diff = ((student.weight - teacher.weight).norm() / teacher.weight.norm()).detach()
    assert 0.05 < float(diff) < 0.2


def test_ridge_probe_accuracy_on_separable_and_random_labels() -> None:
    torch.manual_seed(0)
    x = torch.randn(200, 3)
    y = (x[:, 0] > 0).long()
    assert ridge_probe_accuracy(x[:100], y[:100], x[100:], y[100:]) > 0.95
    noise = torch.randint(0, 2, (200,))
    assert ridge_probe_accuracy(x[:100], noise[:100], x[100:], noise[100:]) < 0.7
