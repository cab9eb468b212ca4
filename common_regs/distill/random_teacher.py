"""Random teachers: distil a student into a frozen, randomly initialised teacher (no labels, no augmentation)."""

from __future__ import annotations

import copy
import logging
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common_regs._batch import batch_inputs
from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.distill._utils import check_positive, soft_cross_entropy
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["RandomTeacher", "perturbed_copy", "ridge_probe_accuracy"]


@torch.no_grad()
def perturbed_copy(module: nn.Module, scale: float, generator: torch.Generator | None = None) -> nn.Module:
    """A deep copy with every parameter ``θ + scale · std(θ) · ε``, ε ~ N(0, 1): a student "close to" the teacher."""
    student = copy.deepcopy(module)
    for parameter in student.parameters():
        noise = torch.randn(parameter.shape, generator=generator).to(parameter)
        spread = parameter.std() if parameter.numel() > 1 else parameter.abs().mean()
        parameter.add_(scale * float(spread) * noise)
        parameter.requires_grad_(True)
    return student


def ridge_probe_accuracy(
    train_features: Tensor, train_labels: Tensor, test_features: Tensor, test_labels: Tensor, ridge: float = 1e-3
) -> float:
    """Accuracy of a closed-form ridge-regression linear probe (one-hot targets, bias column, standardised inputs)."""
    mean, std = train_features.mean(0), train_features.std(0).clamp_min(1e-8)

    def design(features: Tensor) -> Tensor:
        z = ((features - mean) / std).double()
        return torch.cat([z, torch.ones(len(z), 1, dtype=z.dtype)], 1)

    x = design(train_features)
    y = F.one_hot(train_labels.long(), int(max(train_labels.max(), test_labels.max())) + 1).double()
    weights = torch.linalg.solve(x.T @ x + ridge * len(x) * torch.eye(x.shape[1], dtype=x.dtype), x.T @ y)
    predictions = (design(test_features) @ weights).argmax(1)
    return float((predictions == test_labels.long()).double().mean())


@register(
    "random_teacher",
    fidelity="reconstruction",
    verified_by="tests/common_regs/distill/test_random_teacher.py",
    kind="target_provider",
    paper="Sarnthein, Bachmann, Anagnostidis, Hofmann, Random Teachers are Good Teachers, ICML 2023, arXiv:2302.12091",
    seed=31,
)
class RandomTeacher(ConfigFromKeys):
    r"""Soft targets from a frozen, randomly initialised teacher (DINO-style self-distillation without augmentation).

    A student trained to match the sharpened outputs of a *random* network learns data-dependent features whose
    linear-probe accuracy exceeds the teacher's ("student beats teacher"), the effect being strongest when the
    student starts close to the teacher (:func:`perturbed_copy`). Use it as an analysis tool or a label-free
    warm start; check the effect with :func:`ridge_probe_accuracy` on teacher vs student features.

    Reference:
        Sarnthein, Bachmann, Anagnostidis, Hofmann, "Random Teachers are Good Teachers", ICML 2023,
        arXiv:2302.12091 (random-teacher distillation, student-teacher locality: confirmed from the abstract).
        **Equation unconfirmed**: the DINO-style cross-entropy and its temperatures are restated from DINO
        (Caron et al. 2021, arXiv:2104.14294), not checked against the paper's code (``safelix/dinopl``);
        no centering is applied.

    Math:
        .. math::
            q_i = \mathrm{softmax}(t(x_i)/\tau_t),\qquad
            L = -\tfrac1B\sum_i\sum_k q_{ik}\log\mathrm{softmax}(s(x_i)/\tau_s)_k

        with t the frozen teacher (``teacher``), τ_t ↔ ``teacher_temperature``, τ_s ↔ ``student_temperature``.
        With τ_s = τ_t and s ≡ t the gradient w.r.t. the student logits is 0.

    Args:
        teacher: the randomly initialised teacher (frozen here: ``requires_grad_(False)``, eval mode).
        teacher_temperature: τ_t. Default 0.04 (source: DINO default; unconfirmed for this paper).
        student_temperature: τ_s. Default 0.1 (source: DINO default; unconfirmed for this paper).

    Shape:
        inputs (B, *); teacher output (B, K); targets (B, K).

    Returns:
        ``targets(ctx)``: (B, K) teacher probabilities; ``loss(student_logits, targets)``: scalar.

    Note:
        The teacher never receives gradients (targets are computed under ``torch.no_grad``).

    Example:
        >>> import torch
        >>> from common_regs.api import TrainContext
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> teacher = torch.nn.Linear(4, 8)
        >>> provider = RandomTeacher(teacher)
        >>> q = provider.targets(TrainContext(model=teacher, batch=torch.randn(2, 4)))
        >>> q.shape, bool(torch.allclose(q.sum(-1), torch.ones(2)))
        (torch.Size([2, 8]), True)
    """

    config_keys: ClassVar[tuple[str, ...]] = ("teacher_temperature", "student_temperature")
    runtime_keys: ClassVar[tuple[str, ...]] = ("teacher",)
    citation: ClassVar[str] = (
        "@inproceedings{sarnthein2023random, title={Random Teachers are Good Teachers}, author={Sarnthein, Felix "
        "and Bachmann, Gregor and Anagnostidis, Sotiris and Hofmann, Thomas}, booktitle={ICML}, year={2023}}"
    )

    def __init__(
        self, teacher: nn.Module, teacher_temperature: float = 0.04, student_temperature: float = 0.1
    ) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.teacher_temperature = check_positive("teacher_temperature", teacher_temperature)
        self.student_temperature = check_positive("student_temperature", student_temperature)

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        return {"teacher": nn.Linear(4, 3)}

    @torch.no_grad()
    def targets(self, ctx: TrainContext) -> Tensor:
        return F.softmax(self.teacher(batch_inputs(ctx)) / self.teacher_temperature, dim=-1)

    def loss(self, student_logits: Tensor, targets: Tensor) -> Tensor:
        return soft_cross_entropy(student_logits, targets.detach(), self.student_temperature)
