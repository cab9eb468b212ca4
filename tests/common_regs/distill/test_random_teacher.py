"""Random teachers (#31): dinopl's CE at τ = 1 by hand, zero gradient at s ≡ t, frozen teacher, ε-neighbourhood."""

from __future__ import annotations

import math

import pytest
import torch

from common_regs.api import TrainContext
from common_regs.distill import RandomTeacher, perturbed_copy, ridge_probe_accuracy


def test_official_cross_entropy_and_gradient_by_hand() -> None:
    teacher_logits = [[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]]
    student_logits = [[0.5, 0.0, 1.0], [2.0, -1.0, 0.0]]

    def softmax(row: list[float], temperature: float) -> list[float]:
        exps = [math.exp(v / temperature) for v in row]
        return [e / sum(exps) for e in exps]

    # dinopl multicrop_loss 'CE', one crop paired with itself: mean_i Σ_k -q_ik log p_ik, τ_t = τ_s = 1 (v2 config)
    expected, expected_grad = 0.0, []
    for t_row, s_row in zip(teacher_logits, student_logits, strict=True):
        q, p = softmax(t_row, 1.0), softmax(s_row, 1.0)
        expected += -sum(q[k] * math.log(p[k]) for k in range(3)) / 2
        expected_grad.append([(p[k] - q[k]) / 2 for k in range(3)])

    provider = RandomTeacher(torch.nn.Identity())
    assert (provider.teacher_temperature, provider.student_temperature) == (1.0, 1.0)
    batch = torch.tensor(teacher_logits, dtype=torch.float64)
    targets = provider.targets(TrainContext(model=torch.nn.Identity(), batch=batch))
    student = torch.tensor(student_logits, dtype=torch.float64, requires_grad=True)
    loss = provider.loss(student, targets)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-12)  # float64 throughout
    torch.testing.assert_close(student.grad, torch.tensor(expected_grad, dtype=torch.float64), atol=1e-12, rtol=0)


def test_student_equal_to_teacher_gets_zero_gradient_and_teacher_none() -> None:
    torch.manual_seed(0)
    teacher = torch.nn.Linear(5, 6)
    provider = RandomTeacher(teacher, teacher_temperature=0.1, student_temperature=0.1)
    student = perturbed_copy(teacher, 0.0)  # the official default `--s_init teacher`
    x = torch.randn(8, 5)
    teacher.train()  # put back in eval mode by `targets`, as dinopl does every step with t_eval
    targets = provider.targets(TrainContext(model=student, batch=x))
    assert not teacher.training
    logits = student(x)
    logits.retain_grad()
    provider.loss(logits, targets).backward()
    torch.testing.assert_close(logits.grad, torch.zeros_like(logits), atol=1e-6, rtol=0)
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())


def test_neighbourhood_init_is_teacher_plus_eps_fresh_init() -> None:
    norm = torch.nn.LayerNorm(4)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([0.5, -1.0, 2.0, 3.0]))
        norm.bias.copy_(torch.tensor([0.1, 0.2, -0.3, 0.0]))
    # LayerNorm's fresh init is weight 1, bias 0: θ_s = θ_t + 0.1 · (1, 0), and / sqrt(1.01) when variance preserving
    student = perturbed_copy(norm, 0.1)
    torch.testing.assert_close(student.weight, norm.weight + 0.1)
    torch.testing.assert_close(student.bias, norm.bias)
    preserved = perturbed_copy(norm, 0.1, var_preserving=True)
    torch.testing.assert_close(preserved.weight, (norm.weight + 0.1) / math.sqrt(1.01))
    assert all(p.requires_grad for p in student.parameters())

    torch.manual_seed(0)
    teacher = torch.nn.Linear(20, 20)
    first = perturbed_copy(teacher, 0.5, torch.Generator().manual_seed(1))
    again = perturbed_copy(teacher, 0.5, torch.Generator().manual_seed(1))
    other = perturbed_copy(teacher, 0.5, torch.Generator().manual_seed(2))
    direction = ((first.weight - teacher.weight) / 0.5).detach()
    bound = 1 / math.sqrt(20)  # nn.Linear default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert float(direction.abs().max()) <= bound + 1e-6 and float(direction.std()) > bound / 2
    assert torch.equal(first.weight, again.weight) and not torch.equal(first.weight, other.weight)
    with pytest.raises(ValueError, match="reset_parameters"):
        perturbed_copy(torch.nn.ParameterList([torch.nn.Parameter(torch.ones(2))]), 0.1)


def test_ridge_probe_accuracy_on_separable_and_random_labels() -> None:
    torch.manual_seed(0)
    x = torch.randn(200, 3)
    y = (x[:, 0] > 0).long()
    assert ridge_probe_accuracy(x[:100], y[:100], x[100:], y[100:]) > 0.95
    noise = torch.randint(0, 2, (200,))
    assert ridge_probe_accuracy(x[:100], noise[:100], x[100:], noise[100:]) < 0.7
