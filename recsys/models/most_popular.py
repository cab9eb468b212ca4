"""MostPopular: every user gets the items with the most training interactions (the baseline every model must beat)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from recsys.models.base import register_model
from recsys.models.closed_form import ClosedFormRecommender, interaction_matrix

if TYPE_CHECKING:
    from recsys.data import Interactions

__all__ = ["MostPopular"]


@register_model
class MostPopular(ClosedFormRecommender):
    """score(u, i) = the number of training users of item i (a repeated pair counts once), the same for every user.

    As embeddings: every user is ``[1]``, item i is ``[count_i]``.
    """

    name = "most_popular"

    def __init__(self, num_users: int, num_items: int) -> None:
        super().__init__(num_users, num_items)
        self.register_buffer("counts", torch.zeros(num_items, 1))

    def fit(self, interactions: Interactions) -> None:
        self.check_interactions(interactions)
        counts = interaction_matrix(interactions).sum(axis=0)
        self.counts = torch.as_tensor(counts, dtype=torch.float32).reshape(-1, 1)

    def user_embeddings(self, users: Tensor, *, cold: Tensor | None = None) -> Tensor:
        return torch.ones(users.numel(), 1)

    def item_embeddings(self) -> Tensor:
        return self.counts

    def get_config(self) -> dict[str, Any]:
        return {}
