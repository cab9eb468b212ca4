"""common_regs methods adapted to the in-batch softmax of the recsys trainer: multi-sample dropout and PS-KD.

Both methods *replace* the task loss of a classifier (Inoue 2019: the mean loss over dropout samples; Kim et al.
2021: the cross-entropy against softened targets). :class:`recsys.trainer.Trainer` always computes its own task
loss ``ℓ`` (the logQ-corrected in-batch softmax of :func:`recsys.losses.in_batch_softmax_loss`) and adds the
weighted ``loss`` hooks, so each adapter here is a ``loss`` hook returning the *difference* ``Δ = L_method − ℓ``,
added with weight 1: the trainer's total ``ℓ + Δ`` is exactly the method's loss and its gradient is the method's
gradient. Nothing is added to the model code: multi-sample dropout reads the user tower's penultimate features
through a torch forward hook (as ``torch.ao.pruning`` attaches to modules), PS-KD keeps its teacher in the hook.

``hooks: [{name: multi_sample_dropout, ...}, {name: ps_kd, ...}]`` in a recsys run config selects these adapters:
they are registered as the ``recsys`` adapters of those methods (:func:`common_regs.registry.register_adapter`), and
:mod:`common_regs.hook_specs` resolves a name to its domain adapter, else to the plain common_regs class.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common_regs.api import TrainContext
from common_regs.distill.progressive_self_distillation import ProgressiveSelfDistillation, pskd_alpha
from common_regs.registry import register_adapter
from common_regs.stochastic.multi_sample_dropout import MultiSampleDropout
from recsys.losses import in_batch_logit_bias, log_q_from_counts
from recsys.models.base import RecBatch, Recommender, RecOutput
from recsys.trainer import TrainConfig

logger = logging.getLogger(__name__)

__all__ = ["InBatchPSKD", "InBatchSoftmax", "TrainSetup", "TwoTowerMultiSampleDropout"]


@dataclass(frozen=True)
class TrainSetup:
    """What an adapter needs from the run besides its own options: the model and the task-loss settings.

    Args:
        model: the recommender the trainer will train.
        train: the run's :class:`~recsys.trainer.TrainConfig` (``loss``, ``logq``, ``logq_weight``).
        item_counts: training interactions per item (the trainer's ``logq="counts"`` table comes from it).
        epochs: the run's configured epoch budget (``train.epochs`` of the config, before any refit shortening).
    """

    model: Recommender
    train: TrainConfig
    item_counts: np.ndarray | None
    epochs: int


class InBatchSoftmax:
    """The trainer's in-batch logits, rebuilt for a hook: same logQ table, weight and accidental-hit mask.

    Only ``train.loss='softmax'`` with ``logq`` 'counts' or 'none' is supported: the streaming logQ estimate
    lives inside the trainer and changes as it is read, so a hook cannot reproduce it.
    """

    def __init__(self, setup: TrainSetup, method: str) -> None:
        train = setup.train
        if train.loss != "softmax":
            raise ValueError(f"`{method}` adapts the in-batch softmax: it needs `train.loss`='softmax', got "
                             f"{train.loss!r}.")
        if train.logq == "streaming":
            raise ValueError(f"`{method}` needs `train.logq` 'counts' or 'none' (the streaming estimate cannot be "
                             "rebuilt outside the trainer), got 'streaming'.")
        self.log_q_table: Tensor | None = None
        if train.logq == "counts":
            if setup.item_counts is None:
                raise ValueError(f"`{method}` with `train.logq`='counts' needs the training `item_counts`.")
            self.log_q_table = log_q_from_counts(setup.item_counts)
        self.log_q_weight = float(train.logq_weight)

    def bias(self, items: Tensor) -> Tensor | None:
        """The batch's additive logit term (logQ, -inf on accidental hits), as the trainer builds it."""
        log_q = self.log_q_table[items] if self.log_q_table is not None else None
        return in_batch_logit_bias(log_q=log_q, candidate_ids=items, log_q_weight=self.log_q_weight)

    @staticmethod
    def logits(user: Tensor, item: Tensor, scale: Tensor | float, bias: Tensor | None) -> Tensor:
        """``(B, B)`` logits exactly as :meth:`recsys.trainer.Trainer.task_loss` builds them.

        ``bias`` comes from :meth:`bias`; the same operations as :func:`recsys.losses.in_batch_logits`.
        """
        logits = scale * user @ item.T
        return logits if bias is None else logits + bias.to(logits.dtype)

    @staticmethod
    def loss(logits: Tensor) -> Tensor:
        """The task loss ℓ: cross-entropy of each row against its own column."""
        return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def _recoutput(ctx: TrainContext, method: str) -> tuple[RecOutput, RecBatch]:
    outputs, batch = ctx.outputs, ctx.batch
    if not isinstance(outputs, RecOutput) or not isinstance(batch, RecBatch):
        raise TypeError(f"`{method}` runs inside recsys.trainer.Trainer: it expects RecOutput / RecBatch, got "
                        f"{type(outputs).__name__} / {type(batch).__name__}.")
    return outputs, batch


@register_adapter("multi_sample_dropout", domain="recsys", kind="loss")
class TwoTowerMultiSampleDropout:
    r"""Multi-sample dropout on the user tower of a two-tower model, averaged over the in-batch softmax losses.

    The user tower's penultimate features h (the input of its last ``nn.Linear``, ``at="hidden"``; or the tower
    output before L2 normalisation, ``at="output"``) play the role of the paper's pre-classifier features, and the
    rest of the scoring path (last layer → normalise → ``s·⟨u, v_j⟩ − w log q_j`` over the in-batch items → softmax
    cross-entropy) the role of its shared head; the item embeddings are the classifier weights, so they get no
    dropout. Uses :class:`common_regs.stochastic.multi_sample_dropout.MultiSampleDropout` (the registered method
    ``multi_sample_dropout``) for the M samples and the loss average.

    Reference:
        Inoue, "Multi-Sample Dropout for Accelerated Training and Better Generalization", 2019, arXiv:1905.09788.

    Math:
        .. math::
            \Delta = \frac1M\sum_{m=1}^{M} \ell\big(g(h \odot \xi_m/(1-p)), V\big) - \ell\big(g(h), V\big),
            \qquad \ell(u, V) = -\frac1B\sum_i \log\mathrm{softmax}_j(s\langle u_i, v_j\rangle - w\log q_j)_i

        g ↔ last user-tower layer + normalisation (``at="hidden"``) or normalisation only (``at="output"``),
        M ↔ ``num_samples``, p ↔ ``p``. The trainer adds Δ to its own ℓ(g(h), V), so the total is the MSD loss.

    Args:
        model: a :class:`recsys.models.TwoTower` (needs ``user_tower``).
        softmax: the trainer's logits (:class:`InBatchSoftmax`).
        num_samples: M. Default 8 (source: Inoue 2019, gains saturate around 8).
        p: dropout probability. Default 0.5 (source: Inoue 2019's CNN heads).
        at: ``"hidden"`` or ``"output"``. Default "hidden" (Inoue 2019: dropout before the last fully connected
            layer).

    Note:
        Give the model ``dropout: 0`` (the default): model dropout before the last layer would be applied on top.
        M = 1 is plain dropout on h; p = 0 gives Δ = 0.
    """

    config_keys: ClassVar[tuple[str, ...]] = ("num_samples", "p", "at")

    def __init__(
        self,
        model: Recommender,
        softmax: InBatchSoftmax,
        *,
        num_samples: int = 8,
        p: float = 0.5,
        at: Literal["hidden", "output"] = "hidden",
    ) -> None:
        tower = getattr(model, "user_tower", None)
        if not isinstance(tower, nn.Module):
            raise ValueError(f"`multi_sample_dropout` needs a two-tower model (`model.name`='two_tower'), got "
                             f"{type(model).__name__}.")
        if at not in ("hidden", "output"):
            raise ValueError(f"`at` must be 'hidden' or 'output', got {at!r}.")
        self.model, self.softmax, self.at = model, softmax, at
        self._captured: dict[str, Tensor] = {}
        self._current: dict[str, Any] = {}
        captured = self._captured  # closures, not bound methods: a deep copy of the model (PS-KD's teacher) shares
        # this dict but never writes to it (writes only happen in training mode with autograd on)
        if at == "hidden":
            linears = [module for module in getattr(tower, "mlp", nn.Sequential()) if isinstance(module, nn.Linear)]
            if not linears:
                raise ValueError("`at`='hidden' needs a user tower with at least one MLP layer (`tower_layers`); "
                                 "use `at`='output' for a tower without one.")
            last = linears[-1]

            def capture_input(module: nn.Module, args: tuple[Any, ...]) -> None:
                if module.training and torch.is_grad_enabled():
                    captured["features"] = args[0]

            self._handle = last.register_forward_pre_hook(capture_input)

            def head(h: Tensor) -> Tensor:  # F.linear, not last(h): that would re-run the capture hook
                return model.similarity.embed(F.linear(h, last.weight, last.bias))

        else:

            def capture_output(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
                if module.training and torch.is_grad_enabled():
                    captured["features"] = output

            self._handle = tower.register_forward_hook(capture_output)
            head = model.similarity.embed  # type: ignore[assignment]
        self.method = MultiSampleDropout(head, num_samples=num_samples, p=p, criterion=self._criterion)
        self.num_samples, self.p = num_samples, float(p)

    def _criterion(self, user: Tensor, target: Tensor) -> Tensor:
        current = self._current
        return self.softmax.loss(self.softmax.logits(user, current["item"], current["scale"], current["bias"]))

    def __call__(self, ctx: TrainContext) -> Tensor:
        outputs, batch = _recoutput(ctx, "multi_sample_dropout")
        features = self._captured.pop("features", None)
        if features is None:
            raise ValueError("`multi_sample_dropout`: no user-tower features were captured in this step's forward "
                             "pass (the model must run in training mode with autograd on).")
        self._current = {"item": outputs.item, "scale": outputs.scale, "bias": self.softmax.bias(batch.items)}
        try:
            target = torch.arange(len(batch), device=outputs.user.device)
            sampled = self.method.loss(features, target, training=ctx.model.training)
            plain = self._criterion(outputs.user, target)
        finally:
            self._current = {}
        return sampled - plain

    def remove(self) -> None:
        """Detach the forward hook from the model."""
        self._handle.remove()

    @classmethod
    def from_setup(cls, setup: TrainSetup, **options: Any) -> TwoTowerMultiSampleDropout:
        return cls(setup.model, InBatchSoftmax(setup, "multi_sample_dropout"), **options)


@register_adapter("ps_kd", domain="recsys", kind="loss")
class InBatchPSKD:
    r"""PS-KD for the in-batch softmax: the model of the previous epoch is the teacher of the current batch.

    PS-KD (Kim et al. 2021) trains against ``ỹ = (1-α_t)·onehot(y) + α_t·p^{(t-1)}``, the model's own prediction
    from the previous epoch; the paper describes that prediction as coming from the model of epoch t-1 acting as
    teacher, and the official code stores each sample's softmax from its visit in epoch t-1 over the *fixed*
    classes (:class:`~common_regs.distill.progressive_self_distillation.ProgressiveSelfDistillation`). Here the
    "classes" are the in-batch candidates, which change every batch, so a per-sample store of past softmaxes has
    no meaning next epoch. The faithful adaptation keeps the teacher itself: a frozen copy of the model taken at
    the first step of each epoch (= the model at the end of epoch t-1), which scores the *current* batch's
    candidates with the same logQ correction and accidental-hit mask; p^{(t-1)} is its softmax. At epoch 0 there is
    no past prediction and the target is the one-hot label (as the official code's one-hot initialisation).

    Reference:
        Kim, Ji, Yoon, Hwang, "Self-Knowledge Distillation with Progressive Refinement of Targets", ICCV 2021,
        arXiv:2006.12000 (targets and α_t as in the common_regs implementation, checked against the official code
        ``lgcnsai/PS-KD-Pytorch``).

    Math:
        .. math::
            \alpha_t = \alpha_T\min(1, (t+1)/E),\quad
            \Delta = \alpha_t\Big(-\tfrac1B\sum_i\sum_j p^{(t-1)}_{ij}\log\mathrm{softmax}(z_i)_j
                 + \tfrac1B\sum_i\log\mathrm{softmax}(z_i)_i\Big)

        with z the student's corrected in-batch logits, p^{(t-1)}_i = softmax of the teacher's logits for row i,
        α_T ↔ ``alpha_final``, E ↔ ``total_epochs``. Soft cross-entropy is linear in its target, so
        ``ℓ + Δ = −(1/B) Σ_i Σ_j ỹ_ij log softmax(z_i)_j`` with ``ỹ = (1-α_t)e_i + α_t p^{(t-1)}_i``: the PS-KD loss.
        Δ is computed as α_t times a difference, so α_t = 0 adds exactly zero value and zero gradient.

    Args:
        model: the recommender (any model trained with ``train.loss='softmax'``).
        softmax: the trainer's logits (:class:`InBatchSoftmax`).
        alpha_final: α_T. Default 0.8 (source: official README command, ``--alpha_T 0.8``).
        total_epochs: E. Default: the run's ``train.epochs`` (convention: the official code ramps over the whole
            schedule; with early stopping the configured cap is the schedule, so the validation run and the refit
            see the same α_t at each epoch).

    Note:
        The teacher runs in eval mode under ``torch.no_grad`` (no dropout); it costs one extra forward pass per step
        and one model copy in memory. Unlike the official store, p^{(t-1)} is the end-of-epoch model's prediction,
        not the prediction made when the sample was visited during epoch t-1 (fresher by up to one epoch).
    """

    config_keys: ClassVar[tuple[str, ...]] = ("alpha_final", "total_epochs")

    def __init__(
        self, model: Recommender, softmax: InBatchSoftmax, *, alpha_final: float = 0.8, total_epochs: int = 300
    ) -> None:
        if isinstance(alpha_final, bool) or not isinstance(alpha_final, (int, float)) or not 0 <= alpha_final <= 1:
            raise ValueError(f"`alpha_final` must be a number in [0, 1], got {alpha_final!r}.")
        if isinstance(total_epochs, bool) or not isinstance(total_epochs, int) or total_epochs < 1:
            raise ValueError(f"`total_epochs` must be a positive integer, got {total_epochs!r}.")
        self.model, self.softmax = model, softmax
        self.alpha_final, self.total_epochs = float(alpha_final), total_epochs
        self.teacher: Recommender | None = None
        self.teacher_epoch = -1

    def alpha(self, epoch: int) -> float:
        return pskd_alpha(self.alpha_final, epoch, self.total_epochs)

    def _snapshot(self) -> Recommender:
        teacher = copy.deepcopy(self.model)
        teacher.eval()
        teacher.requires_grad_(False)
        return teacher

    def __call__(self, ctx: TrainContext) -> Tensor:
        outputs, batch = _recoutput(ctx, "ps_kd")
        if ctx.epoch > 0 and self.teacher_epoch != ctx.epoch:
            self.teacher, self.teacher_epoch = self._snapshot(), ctx.epoch  # the model at the end of epoch t-1
        if ctx.epoch == 0 or self.teacher is None:
            return torch.zeros((), device=outputs.user.device)
        bias = self.softmax.bias(batch.items)
        student = self.softmax.logits(outputs.user, outputs.item, outputs.scale, bias)
        with torch.no_grad():
            past = self.teacher(batch)
            teacher_probs = F.softmax(self.softmax.logits(past.user, past.item, past.scale, bias), dim=-1)
            # soft CE is linear in the target: CE(z, ỹ) - CE(z, onehot) = α·CE(z, p - onehot), one log-softmax
            target = teacher_probs - torch.eye(student.shape[0], dtype=student.dtype, device=student.device)
        # finite stand-in for the -inf of accidental hits: their target weight is exactly 0 (teacher and label)
        student = student.masked_fill(torch.isneginf(student), torch.finfo(student.dtype).min)
        return self.alpha(ctx.epoch) * ProgressiveSelfDistillation.loss(student, target)  # the PS-KD soft CE

    def state_dict(self) -> dict[str, Any]:
        return {
            "teacher_epoch": self.teacher_epoch,
            "teacher": None if self.teacher is None else {k: v.clone() for k, v in self.teacher.state_dict().items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.teacher_epoch = int(state["teacher_epoch"])
        self.teacher = None
        if state["teacher"] is not None:
            self.teacher = self._snapshot()
            self.teacher.load_state_dict(state["teacher"])

    @classmethod
    def from_setup(cls, setup: TrainSetup, **options: Any) -> InBatchPSKD:
        options.setdefault("total_epochs", setup.epochs)
        return cls(setup.model, InBatchSoftmax(setup, "ps_kd"), **options)

