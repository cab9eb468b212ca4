"""Recommenders fitted in one pass over the training interactions instead of by gradient steps (the baselines).

A :class:`ClosedFormRecommender` is still a :class:`~recsys.models.base.Recommender`: it serves through FAISS from
:meth:`user_embeddings` / :meth:`item_embeddings`, so the baselines (most popular, EASE, ItemKNN, ALS) are served
and evaluated by exactly the code that serves the neural models. Instead of the trainer, a run calls :meth:`fit`
(:func:`recsys.trainer.fit_closed_form`).
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from recsys.models.base import RecBatch, Recommender, RecOutput, Similarity

if TYPE_CHECKING:
    from recsys.data import Interactions

__all__ = ["ClosedFormRecommender", "HistoryRecommender", "interaction_matrix"]


def interaction_matrix(interactions: Interactions) -> sp.csr_matrix:
    """The binary ``num_users × num_items`` matrix X of the known training pairs (a repeated pair counts once)."""
    keys = interactions.pair_keys()
    users, items = np.divmod(keys, interactions.num_items)
    values = np.ones(keys.size, dtype=np.float64)
    return sp.csr_matrix((values, (users, items)), shape=(interactions.num_users, interactions.num_items))


class ClosedFormRecommender(Recommender, abc.ABC):
    """A recommender whose weights come from :meth:`fit`, not from training steps.

    Scores are plain inner products (no normalisation, scale 1). :meth:`forward` returns the embeddings of a batch
    as the model ranks them, so the loss code and diagnostics work on it like on any model; it has nothing to train.
    """

    closed_form: ClassVar[bool] = True

    def __init__(self, num_users: int, num_items: int) -> None:
        super().__init__(num_users, num_items, Similarity(normalize=False, temperature=1.0))

    @abc.abstractmethod
    def fit(self, interactions: Interactions) -> None:
        """Set the weights from the training ``interactions`` (indexed by this model's vocabularies)."""

    def embeddable(self, users: Tensor, cold: Tensor | None) -> Tensor:
        """Users with a fitted vector: known ids not marked ``cold`` (the others get the zero vector)."""
        known = users < self.num_users  # the OOV bucket was never fitted
        return known if cold is None else known & ~cold

    def forward(self, batch: RecBatch) -> RecOutput:
        items = self.item_embeddings()
        negatives = None if batch.negatives is None else items[batch.negatives]
        return RecOutput(user=self.user_embeddings(batch.users), item=items[batch.items], negatives=negatives,
                         scale=self.similarity.scale())


class HistoryRecommender(ClosedFormRecommender, abc.ABC):
    """Item-to-item models: score(u, i) = Σ_{j ∈ I_u} W[j, i] = ⟨x_u, W[:, i]⟩ with x_u the user's binary history.

    The user vector is the history row (kept as CSR buffers so the served model is self-contained), the item vector
    the weight column: FAISS inner-product search ranks exactly as ``X · W``. Subclasses compute W in
    :meth:`item_weights`.

    Args:
        num_users, num_items: vocabulary sizes. history_nnz: number of stored training pairs (set when a saved model is
            rebuilt before its state is loaded; a fresh model gets its history from :meth:`fit`).
    """

    def __init__(self, num_users: int, num_items: int, *, history_nnz: int = 0) -> None:
        super().__init__(num_users, num_items)
        self.register_buffer("history_indptr", torch.zeros(num_users + 1, dtype=torch.int64))
        self.register_buffer("history_items", torch.zeros(history_nnz, dtype=torch.int64))
        self.register_buffer("weights", torch.zeros(num_items, num_items))

    @abc.abstractmethod
    def item_weights(self, matrix: sp.csr_matrix) -> np.ndarray:
        """The ``num_items × num_items`` weights W from the binary interaction matrix X."""

    def fit(self, interactions: Interactions) -> None:
        self.check_interactions(interactions)
        matrix = interaction_matrix(interactions)
        self.history_indptr = torch.from_numpy(matrix.indptr.astype(np.int64))
        self.history_items = torch.from_numpy(matrix.indices.astype(np.int64))
        self.weights = torch.from_numpy(np.asarray(self.item_weights(matrix), dtype=np.float32))

    def user_embeddings(self, users: Tensor, *, cold: Tensor | None = None) -> Tensor:
        known = self.embeddable(users, cold)
        safe = torch.where(known, users, torch.zeros_like(users))
        starts = self.history_indptr[safe]
        counts = torch.where(known, self.history_indptr[safe + 1] - starts, torch.zeros_like(starts))
        rows = torch.repeat_interleave(torch.arange(users.numel()), counts)
        offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        vectors = torch.zeros(users.numel(), self.num_items)
        vectors[rows, self.history_items[torch.repeat_interleave(starts, counts) + offsets]] = 1.0
        return vectors

    def item_embeddings(self) -> Tensor:
        return self.weights.T

    def history_config(self) -> dict[str, int]:
        """The part of :meth:`get_config` that sizes the history buffers."""
        return {"history_nnz": int(self.history_items.numel())}
