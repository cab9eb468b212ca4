"""ItemKNN: item-based collaborative filtering with shrunk cosine similarity and a neighbourhood cut.

References: Sarwar, Karypis, Konstan, Riedl, "Item-Based Collaborative Filtering Recommendation Algorithms",
WWW 2001; the shrunk cosine and per-item top-k of the ItemKNN-CF baseline in Ferrari Dacrema, Cremonesi, Jannach,
"Are We Really Making Much Progress?", RecSys 2019: ``s_ji = ⟨x_j, x_i⟩ / (‖x_j‖ ‖x_i‖ + h)`` over the item columns
of X, ``s_ii = 0``, only the ``k`` largest ``s_ji`` of each item i kept; scores ``X · S``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.models.base import register_model
from recsys.models.closed_form import HistoryRecommender

__all__ = ["ItemKNN", "item_knn_weights"]


def item_knn_weights(matrix: sp.spmatrix, neighbours: int, shrink: float) -> np.ndarray:
    """S of ItemKNN: shrunk cosine between item columns, each column cut to its ``neighbours`` largest entries."""
    gram = np.asarray((matrix.T @ matrix).todense(), dtype=np.float64)
    norms = np.sqrt(np.diag(gram))
    similarity = gram / (np.outer(norms, norms) + shrink + 1e-12)  # the epsilon: two empty items give 0, not 0/0
    np.fill_diagonal(similarity, 0.0)
    if neighbours < similarity.shape[0]:
        # per column i, zero every neighbour j below the k-th largest (ties at the cut keep the lower index)
        order = np.argsort(-similarity, axis=0, kind="stable")
        dropped = order[neighbours:]
        np.put_along_axis(similarity, dropped, 0.0, axis=0)
    return similarity


@register_model
class ItemKNN(HistoryRecommender):
    """Item-based kNN over binary implicit feedback: score(u, i) = Σ_{j ∈ I_u} S[j, i].

    Args:
        num_users, num_items: vocabulary sizes. neighbours: k, the neighbours kept per item (default 100).
        shrink: h, the shrinkage added to the cosine's denominator (default 10), which damps similarities resting on
            few co-occurrences.
        history_nnz: see :class:`~recsys.models.closed_form.HistoryRecommender`.
    """

    name = "item_knn"

    def __init__(
        self, num_users: int, num_items: int, neighbours: int = 100, shrink: float = 10.0, *, history_nnz: int = 0
    ) -> None:
        super().__init__(num_users, num_items, history_nnz=history_nnz)
        if neighbours < 1:
            raise ValueError(f"`neighbours` must be >= 1, got {neighbours}.")
        if shrink < 0:
            raise ValueError(f"`shrink` must be >= 0, got {shrink}.")
        self.neighbours, self.shrink = neighbours, shrink

    def item_weights(self, matrix: sp.csr_matrix) -> np.ndarray:
        return item_knn_weights(matrix, self.neighbours, self.shrink)

    def get_config(self) -> dict[str, Any]:
        return {"neighbours": self.neighbours, "shrink": self.shrink, **self.history_config()}
