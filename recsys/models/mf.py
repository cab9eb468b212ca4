"""Matrix factorisation trained with BPR (or any regkit loss): one embedding per user and per item.

Reference: Rendle, Freudenthaler, Gantner, Schmidt-Thieme, "BPR: Bayesian Personalized Ranking from Implicit
Feedback", UAI 2009, arXiv:1205.2618 (Eq. 1-2: x̂_uij = x̂_ui − x̂_uj with x̂_ui = ⟨w_u, h_i⟩, loss −ln σ(x̂_uij)).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

from recsys.models.base import RecBatch, Recommender, RecOutput, Similarity, register_model

logger = logging.getLogger(__name__)

__all__ = ["MatrixFactorization"]


@register_model
class MatrixFactorization(Recommender):
    """MF: score(u, i) = scale · ⟨e_u, e_i⟩ with free embeddings (optionally L2-normalised, scale = 1/τ).

    Rows ``num_users`` / ``num_items`` are the out-of-vocabulary buckets. Initialised N(0, ``init_std``²)
    (std 0.1 as in the LightGCN reference code, He et al. 2020, which uses the same init for its MF baseline).

    Args:
        num_users, num_items: vocabulary sizes (known ids). embedding_dim: D. Default 64 (LightGCN paper §4.1.2).
        normalize, temperature, learnable_temperature: see :class:`~recsys.models.base.Similarity`.
            Default off / 1.0: the plain BPR dot product.
        init_std: standard deviation of the initial embeddings.
    """

    name = "mf"

    def __init__(
        self,
        num_users: int,
        num_items: int,
        embedding_dim: int = 64,
        normalize: bool = False,
        temperature: float = 1.0,
        learnable_temperature: bool = False,
        init_std: float = 0.1,
    ) -> None:
        super().__init__(num_users, num_items, Similarity(normalize, temperature, learnable_temperature))
        if embedding_dim < 1:
            raise ValueError(f"`embedding_dim` must be >= 1, got {embedding_dim}.")
        self.embedding_dim = embedding_dim
        self.init_std = init_std
        self.user_table = nn.Embedding(num_users + 1, embedding_dim)
        self.item_table = nn.Embedding(num_items + 1, embedding_dim)
        nn.init.normal_(self.user_table.weight, std=init_std)
        nn.init.normal_(self.item_table.weight, std=init_std)

    def forward(self, batch: RecBatch) -> RecOutput:
        user = self.user_table(batch.users)
        item = self.item_table(batch.items)
        regularized = [user, item]
        negatives = None
        if batch.negatives is not None:
            negatives = self.item_table(batch.negatives)
            regularized.append(negatives)
        embed = self.similarity.embed
        return RecOutput(
            user=embed(user),
            item=embed(item),
            negatives=embed(negatives) if negatives is not None else None,
            scale=self.similarity.scale(),
            regularized=regularized,
        )

    def user_embeddings(self, users: Tensor, *, cold: Tensor | None = None) -> Tensor:
        if cold is not None and bool(cold.any()):
            users = torch.where(cold, torch.full_like(users, self.num_users), users)
        return self.similarity.embed(self.user_table(users))

    def item_embeddings(self) -> Tensor:
        return self.similarity.embed(self.item_table.weight[: self.num_items])

    def get_config(self) -> dict[str, Any]:
        return {
            "embedding_dim": self.embedding_dim,
            "normalize": self.similarity.normalize,
            "temperature": float(1.0 / self.similarity.scale()),
            "learnable_temperature": isinstance(self.similarity.log_scale, nn.Parameter),
            "init_std": self.init_std,
        }
