"""common_regs methods adapted to the ranking step of the sparse retriever: multi-sample dropout and PS-KD.

Both methods *replace* a classifier's cross-entropy (Inoue 2019: the mean loss over dropout samples; Kim et al.
2021: the cross-entropy against softened targets). The sparse trainer (:class:`retrieval.trainer.SparseTrainer`)
computes its own ranking loss and adds the weighted ``loss`` hooks, so each adapter here is a ``loss`` hook
returning the *difference* ``Δ = L_method − ℓ`` for the ranking cross-entropy ℓ it adapts, added with weight 1 by
default: with ``ranking_loss: infonce`` (multi-sample dropout) the total ``ℓ + Δ`` is exactly the method's loss;
with the distillation losses, Δ is the method's change of that cross-entropy added to the distillation.

They are registered as the ``retrieval`` adapters of the methods (:func:`common_regs.registry.register_adapter`),
so ``hooks: [{name: multi_sample_dropout, ...}, {name: ps_kd, ...}]`` in a retrieval run config selects them; the
same names select the recsys adapters in a recsys config (:mod:`recsys.regularizers`).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from common_regs.api import TrainContext
from common_regs.distill.progressive_self_distillation import ProgressiveSelfDistillation, pskd_alpha
from common_regs.registry import register_adapter
from common_regs.stochastic.multi_sample_dropout import MultiSampleDropout
from retrieval.encoder import mlm_parts
from retrieval.losses import idf_scores

logger = logging.getLogger(__name__)

__all__ = ["RankingMultiSampleDropout", "RankingPSKD"]


def _outputs(ctx: TrainContext, method: str, keys: tuple[str, ...]) -> Mapping[str, Tensor]:
    outputs = ctx.outputs
    if not isinstance(outputs, Mapping) or any(key not in outputs for key in keys):
        raise ValueError(f"`{method}` runs inside retrieval.trainer.SparseTrainer: it needs the outputs {keys}.")
    return outputs


@register_adapter("multi_sample_dropout", domain="retrieval", kind="loss")
class RankingMultiSampleDropout:
    r"""Multi-sample dropout on the MLM head's states, averaged over the in-batch InfoNCE ranking losses.

    The MLM head's transformed states h (B·C, L, d) — the input of the vocabulary projection — play the role of the
    paper's pre-classifier features, and the rest of the scoring path (projection → SPLADE max pooling → IDF query
    dot products → cross-entropy of each query over the B·C documents of the batch, its positive at column i·C)
    the role of its shared head. Uses :class:`common_regs.stochastic.multi_sample_dropout.MultiSampleDropout` (the
    registered method ``multi_sample_dropout``) for the M samples and the loss average.

    Reference:
        Inoue, "Multi-Sample Dropout for Accelerated Training and Better Generalization", 2019, arXiv:1905.09788.

    Math:
        .. math::
            \Delta = \frac1M\sum_{m=1}^{M} \ell\big(g(h \odot \xi_m/(1-p))\big) - \ell\big(g(h)\big),
            \qquad \ell(w) = -\frac1B\sum_i \log\mathrm{softmax}_j(q_i \cdot w_j)_{iC}

        g ↔ projection + max pooling, w the (B·C, V) document vectors, q_i the IDF query vectors,
        M ↔ ``num_samples``, p ↔ ``p``. With ``ranking_loss: infonce`` the trainer's ℓ + Δ is the MSD loss.

    Args:
        setup: the trainer's :class:`retrieval.trainer.RankingSetup` (its ``pool``).
        num_samples: M. Default 8 (source: Inoue 2019, gains saturate around 8).
        p: dropout probability. Default 0.5 (source: Inoue 2019's CNN heads).

    Note:
        Each sample runs the vocabulary projection again: M samples cost M projections per step (the dominant
        cost of head-only training). p = 0 gives Δ = 0 up to rounding.
    """

    config_keys: ClassVar[tuple[str, ...]] = ("num_samples", "p")

    def __init__(self, setup: Any, *, num_samples: int = 8, p: float = 0.5) -> None:
        self.pool = setup.pool
        self.method = MultiSampleDropout(self._head, num_samples=num_samples, p=p, criterion=self._criterion)
        self.num_samples, self.p = num_samples, float(p)
        self._current: dict[str, Tensor] = {}

    def _head(self, states: Tensor) -> Tensor:
        repeats = states.shape[0] // self._current["mask"].shape[0]
        return self.pool(states, self._current["mask"].repeat(repeats, 1))

    def _criterion(self, doc: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(idf_scores(self._current["query"], doc), target)

    def __call__(self, ctx: TrainContext) -> Tensor:
        outputs = _outputs(ctx, "multi_sample_dropout", ("states", "mask", "scores"))
        target = ctx.batch["positive_columns"]
        self._current = {"mask": outputs["mask"], "query": ctx.batch["query"]}
        try:
            sampled = self.method.loss(outputs["states"], target, training=ctx.model.training)
        finally:
            self._current = {}
        return sampled - F.cross_entropy(outputs["scores"], target)

    @classmethod
    def from_setup(cls, setup: Any, **options: Any) -> RankingMultiSampleDropout:
        return cls(setup, **options)


@register_adapter("ps_kd", domain="retrieval", kind="loss")
class RankingPSKD:
    r"""PS-KD over each query's candidates: the model of the previous epoch is the teacher of the current batch.

    PS-KD (Kim et al. 2021) trains against ``ỹ = (1-α_t)·onehot(y) + α_t·p^{(t-1)}``, the model's own prediction
    from the previous epoch. Here a sample is a training query and its "classes" are the C candidates of its batch
    row (positive in column 0), which are re-sampled at every visit, so a per-sample store of past softmaxes (the
    official code's) has no meaning at the next visit. As in the recsys adaptation (:mod:`recsys.regularizers`),
    the teacher itself is kept: a frozen copy of the encoder taken at the first step of each epoch (a pass over the
    training queries; = the model at the end of epoch t-1), which scores the current batch's candidates;
    p^{(t-1)} is its softmax over them. At epoch 0 there is no past prediction and the term is 0.

    Reference:
        Kim, Ji, Yoon, Hwang, "Self-Knowledge Distillation with Progressive Refinement of Targets", ICCV 2021,
        arXiv:2006.12000 (α_t and the soft cross-entropy as in the common_regs implementation).

    Math:
        .. math::
            \alpha_t = \alpha_T\min(1, (t+1)/E),\quad
            \Delta = \alpha_t\Big(-\tfrac1B\sum_i\sum_j p^{(t-1)}_{ij}\log\mathrm{softmax}(z_i)_j
                 + \tfrac1B\sum_i\log\mathrm{softmax}(z_i)_0\Big)

        with z (B, C) the student's scores of each query's own candidates, α_T ↔ ``alpha_final``,
        E ↔ ``total_epochs``: Δ = CE(z, ỹ) − CE(z, onehot), the PS-KD change of the candidates' cross-entropy.

    Args:
        setup: the trainer's :class:`retrieval.trainer.RankingSetup` (model, forward pass, epochs).
        alpha_final: α_T. Default 0.8 (source: official README command, ``--alpha_T 0.8``).
        total_epochs: E. Default: the run's epoch count (convention: the official code ramps over the whole
            schedule).

    Note:
        The teacher runs in eval mode under ``torch.no_grad``; it costs one extra forward pass per step and one
        copy of the encoder in memory (and in checkpoints).
    """

    config_keys: ClassVar[tuple[str, ...]] = ("alpha_final", "total_epochs")

    def __init__(self, setup: Any, *, alpha_final: float = 0.8, total_epochs: int = 1) -> None:
        if isinstance(alpha_final, bool) or not isinstance(alpha_final, (int, float)) or not 0 <= alpha_final <= 1:
            raise ValueError(f"`alpha_final` must be a number in [0, 1], got {alpha_final!r}.")
        if isinstance(total_epochs, bool) or not isinstance(total_epochs, int) or total_epochs < 1:
            raise ValueError(f"`total_epochs` must be a positive integer, got {total_epochs!r}.")
        self.model, self.forward = setup.model, setup.outputs
        self.alpha_final, self.total_epochs = float(alpha_final), total_epochs
        self.teacher: Any = None
        self.teacher_epoch = -1

    def alpha(self, epoch: int) -> float:
        return pskd_alpha(self.alpha_final, epoch, self.total_epochs)

    def _snapshot(self) -> Any:
        teacher = copy.deepcopy(self.model)
        teacher.eval()
        teacher.requires_grad_(False)
        return teacher

    def __call__(self, ctx: TrainContext) -> Tensor:
        student = _outputs(ctx, "ps_kd", ("logits",))["logits"]
        if ctx.epoch > 0 and self.teacher_epoch != ctx.epoch:
            self.teacher, self.teacher_epoch = self._snapshot(), ctx.epoch  # the model at the end of epoch t-1
        if ctx.epoch == 0 or self.teacher is None:
            return student.new_zeros(())
        with torch.no_grad():
            past = F.softmax(self.forward(self.teacher, ctx.batch)["logits"].to(student.dtype), dim=-1)
            onehot = F.one_hot(torch.zeros(len(student), dtype=torch.long, device=student.device), student.shape[1])
            target = past - onehot.to(student.dtype)  # soft CE is linear in the target: one log-softmax
        return self.alpha(ctx.epoch) * ProgressiveSelfDistillation.loss(student, target)

    def state_dict(self) -> dict[str, Any]:
        teacher = None if self.teacher is None else mlm_parts(self.teacher)[0].state_dict()
        return {"teacher_epoch": self.teacher_epoch, "teacher": teacher}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.teacher_epoch = int(state["teacher_epoch"])
        self.teacher = None
        if state["teacher"] is not None:
            self.teacher = self._snapshot()
            mlm_parts(self.teacher)[0].load_state_dict(state["teacher"])

    @classmethod
    def from_setup(cls, setup: Any, **options: Any) -> RankingPSKD:
        options.setdefault("total_epochs", setup.epochs)
        return cls(setup, **options)
