"""Random teachers: distil a frozen, randomly initialised teacher into a student (no labels, no augmentation)."""

from __future__ import annotations

import copy
import logging
import math
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
def perturbed_copy(
    module: nn.Module, eps: float, generator: torch.Generator | None = None, *, var_preserving: bool = False
) -> nn.Module:
    """A student in the ε-neighbourhood of ``module``: ``θ_s = θ_t + ε·θ̃`` with θ̃ a fresh default initialisation.

    Official ``safelix/dinopl`` ``configuration.init_student_teacher``, ``--s_init neighborhood``: the student is
    re-initialised (``reset_parameters``), then each parameter becomes ``p_t + eps · p_s``, divided by
    ``sqrt(eps² + 1)`` with ``--s_init_var_preserving``. ``eps = 0`` is the official default ``--s_init teacher``
    (an exact copy). θ̃ is drawn by every submodule's own ``reset_parameters`` (PyTorch's default initialisation,
    the official ``--head_init_method default``), under a seed taken from ``generator`` when one is given.

    Raises:
        ValueError: if a submodule owns parameters but has no ``reset_parameters`` (no fresh draw is defined).
    """
    fresh = copy.deepcopy(module)
    for name, submodule in fresh.named_modules():
        owns = next(submodule.parameters(recurse=False), None) is not None
        if owns and not callable(getattr(submodule, "reset_parameters", None)):
            raise ValueError(
                f"`perturbed_copy` needs `reset_parameters` on every module that owns parameters; "
                f"`{name or type(submodule).__name__}` has none."
            )
    resettable = [m for m in fresh.modules() if callable(getattr(m, "reset_parameters", None))]
    cuda = sorted({p.device.index or 0 for p in fresh.parameters() if p.is_cuda})
    with torch.random.fork_rng(devices=cuda, enabled=generator is not None):
        if generator is not None:
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        for submodule in resettable:
            submodule.reset_parameters()
    student = copy.deepcopy(module)
    scale = math.sqrt(eps**2 + 1) if var_preserving else 1.0
    for parameter, direction in zip(student.parameters(), fresh.parameters(), strict=True):
        parameter.copy_((parameter + eps * direction) / scale)
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
    fidelity="official-code",
    verified_by="tests/common_regs/distill/test_random_teacher.py",
    kind="target_provider",
    paper="Sarnthein, Bachmann, Anagnostidis, Hofmann, Random Teachers are Good Teachers, ICML 2023, arXiv:2302.12091",
    seed=31,
)
class RandomTeacher(ConfigFromKeys):
    r"""Soft targets from a frozen, randomly initialised teacher (DINO's loss, no EMA, no centering, no augmentation).

    A student trained to match the outputs of a *random* network learns data-dependent features whose
    linear-probe accuracy exceeds the teacher's ("student beats teacher"), the effect being strongest when the
    student starts close to the teacher (:func:`perturbed_copy`). Use it as an analysis tool or a label-free
    warm start; check the effect with :func:`ridge_probe_accuracy` on teacher vs student features.

    Reference:
        Sarnthein, Bachmann, Anagnostidis, Hofmann, "Random Teachers are Good Teachers", ICML 2023,
        arXiv:2302.12091. Checked against the official code (``safelix/dinopl``): ``dinopl/core.py``
        (``DINO.multicrop_loss``, ``loss='CE'``: per sample ``Σ_k -softmax(t/τ_t)_k · log_softmax(s/τ_s)_k``,
        mean over the batch; ``DINOHead.forward``: logits ``(projection - center) / temp``) and the random-teacher
        configs named by its README (``configs/cifar10_distillation_v2.json``, also
        ``tinyimagenet_distillation.json``): ``t_mode='no_update'`` (no EMA: the teacher stays at its random
        initialisation), ``t_eval=true`` (teacher in eval mode), ``t_cmom=s_cmom=nan`` (no centering),
        ``t_temp=s_temp=1``, one 32×32 crop paired with itself (no augmentation). The MNIST config keeps DINO's
        0.04 / 0.1; pass those temperatures to reproduce it.

    Math:
        .. math::
            q_i = \mathrm{softmax}(t(x_i)/\tau_t),\qquad
            L = -\tfrac1B\sum_i\sum_k q_{ik}\log\mathrm{softmax}(s(x_i)/\tau_s)_k

        with t the frozen teacher (``teacher``), τ_t ↔ ``teacher_temperature``, τ_s ↔ ``student_temperature``;
        ∂L/∂s_i = (softmax(s_i/τ_s) − q_i)/(τ_s B), zero at s ≡ t with τ_s = τ_t.

    Args:
        teacher: the randomly initialised teacher (frozen here: ``requires_grad_(False)``, eval mode).
        teacher_temperature: τ_t. Default 1.0 (source: official ``cifar10_distillation_v2.json`` ``t_temp``).
        student_temperature: τ_s. Default 1.0 (source: official ``cifar10_distillation_v2.json`` ``s_temp``).

    Shape:
        inputs (B, *); teacher output (B, K); targets (B, K).

    Returns:
        ``targets(ctx)``: (B, K) teacher probabilities; ``loss(student_logits, targets)``: scalar.

    Note:
        The teacher never receives gradients (targets are computed under ``torch.no_grad``) and is put back in
        eval mode at every ``targets`` call, as the official ``training_step`` does with ``t_eval``. The DINO head
        (MLP + L2 bottleneck, 65536 outputs in the official configs) is the model's business, not this provider's.

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
        self, teacher: nn.Module, teacher_temperature: float = 1.0, student_temperature: float = 1.0
    ) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.teacher_temperature = check_positive("teacher_temperature", teacher_temperature)
        self.student_temperature = check_positive("student_temperature", student_temperature)

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        return {"teacher": nn.Linear(4, 3)}

    @torch.no_grad()
    def targets(self, ctx: TrainContext) -> Tensor:
        self.teacher.eval()
        return F.softmax(self.teacher(batch_inputs(ctx)) / self.teacher_temperature, dim=-1)

    def loss(self, student_logits: Tensor, targets: Tensor) -> Tensor:
        return soft_cross_entropy(student_logits, targets.detach(), self.student_temperature)
