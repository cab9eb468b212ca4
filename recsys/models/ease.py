"""EASE: the closed-form linear item-to-item autoencoder.

Reference: Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019, arXiv:1905.03375, Eq. 8:
``P = (XᵀX + λI)⁻¹``, ``B = I − P · diag(1 / diag(P))`` (so ``diag(B) = 0``), scores ``X · B``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.models.base import register_model
from recsys.models.closed_form import HistoryRecommender

__all__ = ["EASE", "ease_weights"]


def ease_weights(matrix: sp.spmatrix | np.ndarray, l2: float | np.ndarray) -> np.ndarray:
    """B of EASE for the interaction matrix X with diagonal penalty ``l2`` (λ, or one value per item)."""
    gram = np.asarray((matrix.T @ matrix).todense() if sp.issparse(matrix) else matrix.T @ matrix, dtype=np.float64)
    gram[np.diag_indices_from(gram)] += l2
    precision = np.linalg.inv(gram)
    weights = -precision / np.diag(precision)
    np.fill_diagonal(weights, 0.0)
    return weights


@register_model
class EASE(HistoryRecommender):
    """EASE over binary implicit feedback: score(u, i) = Σ_{j ∈ I_u} B[j, i].

    Fitting inverts the ``num_items × num_items`` Gram matrix: O(I³) time and I² memory, which suits catalogues up to
    some tens of thousands of items.

    Args:
        num_users, num_items: vocabulary sizes. l2: λ, the diagonal penalty. Default 500 (the paper's ML-20M value is
            500; tune it on validation, e.g. ``regkit recsys tune``).
        history_nnz: see :class:`~recsys.models.closed_form.HistoryRecommender`.
    """

    name = "ease"

    def __init__(self, num_users: int, num_items: int, l2: float = 500.0, *, history_nnz: int = 0) -> None:
        super().__init__(num_users, num_items, history_nnz=history_nnz)
        if l2 <= 0:
            raise ValueError(f"`l2` must be > 0, got {l2}.")
        self.l2 = l2

    def item_weights(self, matrix: sp.csr_matrix) -> np.ndarray:
        return ease_weights(matrix, self.l2)

    def get_config(self) -> dict[str, Any]:
        return {"l2": self.l2, **self.history_config()}
