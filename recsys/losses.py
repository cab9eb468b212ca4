r"""Training losses: in-batch sampled softmax with logQ correction, BPR with sampled negatives, batch L2.

In-batch softmax (Yi et al., "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item Recommendations",
RecSys 2019, Eq. 3-4): with batch pairs (u_i, v_i) and every other in-batch item as a negative,

.. math::

    s^c_{ij} = s \, \langle u_i, v_j \rangle - w \log p_j, \qquad
    \mathcal{L} = -\frac{1}{B} \sum_i \log \frac{e^{s^c_{ii}}}{\sum_j e^{s^c_{ij}}}

where ``s`` is the model's scale (1/τ), ``p_j`` the sampling probability of item ``j`` (its share of the training
log, or the streaming estimate of Yi et al. Algorithm 2) and ``w`` the correction weight (1 in the paper).
A column whose item equals the row's positive item (an accidental hit: the same item twice in the batch) is
removed from that row's denominator.

BPR (Rendle et al., "BPR: Bayesian Personalized Ranking from Implicit Feedback", UAI 2009, arXiv:1205.2618, Eq. 4
without the prior term, which regkit adds separately as :class:`EmbeddingL2`):

.. math::

    \mathcal{L} = -\frac{1}{BN} \sum_{i,n} \log \sigma\big(s \langle u_i, v_i\rangle
        - s \langle u_i, v_{in}\rangle\big)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = [
    "EmbeddingL2",
    "StreamingFrequencyEstimator",
    "bpr_loss",
    "in_batch_logit_bias",
    "in_batch_logits",
    "in_batch_softmax_loss",
    "log_q_from_counts",
]


def in_batch_logits(
    query: Tensor,
    candidates: Tensor,
    *,
    scale: Tensor | float = 1.0,
    log_q: Tensor | None = None,
    candidate_ids: Tensor | None = None,
    log_q_weight: float = 1.0,
) -> Tensor:
    """``(B, B)`` corrected in-batch logits ``s^c_ij`` (module docstring); row i's positive is column i.

    Args:
        query: ``(B, D)`` user embeddings.
        candidates: ``(B, D)`` embeddings of each row's positive item.
        scale: logit multiplier s (1/τ).
        log_q: ``(B,)`` log sampling probability of each candidate.
        candidate_ids: ``(B,)`` item ids; equal ids in other columns are set to -inf (accidental hits).
        log_q_weight: w, the strength of the correction (1 = Yi et al.).
    """
    if query.shape != candidates.shape or query.dim() != 2:
        raise ValueError(
            f"`query` and `candidates` must both be (B, D), got {tuple(query.shape)} and {tuple(candidates.shape)}."
        )
    logits = scale * query @ candidates.T
    bias = in_batch_logit_bias(log_q=log_q, candidate_ids=candidate_ids, log_q_weight=log_q_weight, dtype=logits.dtype)
    return logits if bias is None else logits + bias


def in_batch_logit_bias(
    *,
    log_q: Tensor | None = None,
    candidate_ids: Tensor | None = None,
    log_q_weight: float = 1.0,
    dtype: torch.dtype = torch.float32,
) -> Tensor | None:
    """The additive part of :func:`in_batch_logits`: ``-w log p_j`` in every row, ``-inf`` on accidental hits.

    ``(1, B)`` with only ``log_q``, ``(B, B)`` with ``candidate_ids``, ``None`` with neither. Independent of the
    embeddings, so a hook that scores several query variants against one batch (multi-sample dropout) builds it once.
    """
    bias = None
    if log_q is not None:
        bias = -(log_q_weight * log_q.to(dtype))[None, :]
    if candidate_ids is not None:
        same = candidate_ids[None, :] == candidate_ids[:, None]
        same.fill_diagonal_(False)
        base = bias if bias is not None else torch.zeros((), dtype=dtype, device=candidate_ids.device)
        bias = base.expand(same.shape).masked_fill(same, float("-inf"))
    return bias


def in_batch_softmax_loss(
    query: Tensor,
    candidates: Tensor,
    *,
    scale: Tensor | float = 1.0,
    log_q: Tensor | None = None,
    candidate_ids: Tensor | None = None,
    log_q_weight: float = 1.0,
) -> Tensor:
    """In-batch sampled softmax with optional logQ correction: cross-entropy of :func:`in_batch_logits` rows."""
    logits = in_batch_logits(
        query, candidates, scale=scale, log_q=log_q, candidate_ids=candidate_ids, log_q_weight=log_q_weight
    )
    targets = torch.arange(query.shape[0], device=query.device)
    return F.cross_entropy(logits, targets)


def bpr_loss(query: Tensor, positives: Tensor, negatives: Tensor, *, scale: Tensor | float = 1.0) -> Tensor:
    """BPR: ``-mean log σ(s⟨u,v⁺⟩ − s⟨u,v⁻⟩)`` over every (row, negative); ``negatives`` is ``(B, N, D)``."""
    if negatives.dim() != 3 or negatives.shape[0] != query.shape[0]:
        raise ValueError(f"`negatives` must be (B, N, D) with B={query.shape[0]}, got {tuple(negatives.shape)}.")
    positive = (query * positives).sum(-1, keepdim=True)
    # B independent dot products, not a matmul: as an einsum they became a batched matmul of 1 x D by D x N
    # matrices, about 3x slower forward and backward at N = 1
    negative = (query.unsqueeze(1) * negatives).sum(-1)
    margin = positive - negative
    return -F.logsigmoid(margin if isinstance(scale, float) and scale == 1.0 else scale * margin).mean()


def log_q_from_counts(counts: np.ndarray | Tensor, *, min_count: float = 1.0) -> Tensor:
    """``log p_j`` with ``p_j = max(count_j, min_count) / Σ count`` (items never seen get ``min_count``)."""
    counts_tensor = torch.as_tensor(np.asarray(counts), dtype=torch.float64).clamp(min=min_count)
    if counts_tensor.numel() == 0:
        raise ValueError("`counts` is empty.")
    return (counts_tensor / counts_tensor.sum()).log().to(torch.float32)


class StreamingFrequencyEstimator:
    """Streaming estimate of each item's sampling probability (Yi et al. RecSys 2019, Algorithm 2).

    Arrays A (last step an item was seen) and B (estimated steps between occurrences) of size H, indexed by
    ``h(y) = y mod H``. For every occurrence of item y at step t: ``B[h] ← (1−α)·B[h] + α·(t − A[h])``, then
    ``A[h] ← t``; the estimated probability is ``p = 1/B[h]``. Several occurrences of one item in a step are
    applied in order, exactly as the paper's per-example loop does (the later ones with ``t − A = 0``).

    Args:
        num_buckets: H. Default: the number of items (no collisions).
        alpha: α. Default 0.01 (regkit choice: the paper's experimental value could not be confirmed here).
        initial_interval: B before an item's first occurrence, so unseen items get ``p = 1/initial_interval``.
            The paper does not state the initial A and B; regkit starts at A = 0, B = ``initial_interval``.
    """

    state_keys: ClassVar[tuple[str, ...]] = ("last_step", "interval")

    def __init__(self, num_buckets: int, *, alpha: float = 0.01, initial_interval: float = 1.0) -> None:
        if num_buckets < 1:
            raise ValueError(f"`num_buckets` must be >= 1, got {num_buckets}.")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"`alpha` must be in (0, 1], got {alpha}.")
        if initial_interval <= 0:
            raise ValueError(f"`initial_interval` must be > 0, got {initial_interval}.")
        self.num_buckets, self.alpha = num_buckets, alpha
        self.last_step = torch.zeros(num_buckets, dtype=torch.float64)
        self.interval = torch.full((num_buckets,), float(initial_interval), dtype=torch.float64)

    def update(self, items: Tensor, step: int) -> None:
        """Apply one step's occurrences (``items`` may repeat)."""
        buckets, occurrences = torch.unique(items.reshape(-1) % self.num_buckets, return_counts=True)
        decay = (1.0 - self.alpha) ** occurrences.to(torch.float64)
        delta = float(step) - self.last_step[buckets]
        # first occurrence uses δ = t − A, the (c − 1) later ones δ = 0: B ← (1−α)^c B + α (1−α)^(c−1) δ
        later = (1.0 - self.alpha) ** (occurrences.to(torch.float64) - 1.0)
        self.interval[buckets] = decay * self.interval[buckets] + self.alpha * later * delta
        self.last_step[buckets] = float(step)

    def log_probability(self, items: Tensor) -> Tensor:
        """``log p = −log B[h(y)]`` for each item (float32)."""
        return (-self.interval[items % self.num_buckets].clamp(min=1e-12).log()).to(torch.float32)

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step.clone(), "interval": self.interval.clone(), "alpha": self.alpha}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state["last_step"].shape != self.last_step.shape:
            raise ValueError(f"estimator state has {state['last_step'].numel()} buckets, expected {self.num_buckets}.")
        self.last_step = state["last_step"].clone()
        self.interval = state["interval"].clone()
        self.alpha = float(state["alpha"])


@register("embedding_l2", kind="loss", paper="He et al., LightGCN: Simplifying and Powering Graph Convolution "
          "Network for Recommendation, SIGIR 2020, arXiv:2002.02126",
          fidelity="paper-equation",
          verified_by="tests/recsys/test_losses.py::test_embedding_l2_term")
class EmbeddingL2(ConfigFromKeys):
    """L2 penalty on the embedding rows a batch touched: ``(1/2B) Σ_rows ‖e‖²`` (layer-0 embeddings).

    The regulariser of BPR-MF and LightGCN (He et al., SIGIR 2020, arXiv:2002.02126, Eq. 15: λ‖E^(0)‖², applied
    per batch in the reference code as ``reg = ½(‖e_u‖² + ‖e_i‖² + ‖e_j‖²)/B``). A ``LossTerm`` hook of
    ``common_regs`` (kind ``"loss"``): the trainer adds ``weight · value`` without knowing about it.

    Args:
        weight: λ. Default 1e-4 (LightGCN paper §4.1.2).
    """

    config_keys: ClassVar[tuple[str, ...]] = ("weight",)

    def __init__(self, weight: float = 1e-4) -> None:
        if weight < 0:
            raise ValueError(f"`weight` must be >= 0, got {weight}.")
        self.weight = weight

    def __call__(self, ctx: TrainContext) -> Tensor:
        tensors = getattr(ctx.outputs, "regularized", None)
        if not tensors:
            return torch.zeros(())
        batch_size = tensors[0].shape[0]
        return sum(t.pow(2).sum() for t in tensors) / (2 * batch_size)  # type: ignore[return-value]
