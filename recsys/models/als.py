"""ALS for implicit feedback, fitted by the ``implicit`` library (an optional dependency: ``pip install regkit[als]``).

Reference: Hu, Koren, Volinsky, "Collaborative Filtering for Implicit Feedback Datasets", ICDM 2008, Eq. 3:
``min Σ_{u,i} c_ui (p_ui − x_uᵀ y_i)² + λ (Σ ‖x_u‖² + Σ ‖y_i‖²)`` with ``p_ui = 1`` on observed pairs and confidence
``c_ui = 1 + α r_ui``; solved by ``implicit.cpu.als.AlternatingLeastSquares`` (conjugate-gradient updates, Takács,
Pilászy, Tikk, RecSys 2011). regkit only feeds it the binary training matrix and serves its factors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from recsys.models.base import register_model
from recsys.models.closed_form import ClosedFormRecommender, interaction_matrix

if TYPE_CHECKING:
    from recsys.data import Interactions

__all__ = ["ALS"]


@register_model
class ALS(ClosedFormRecommender):
    """Implicit-feedback matrix factorisation by alternating least squares: score(u, i) = ⟨x_u, y_i⟩.

    Args:
        num_users, num_items: vocabulary sizes. factors: the dimension (default 64). regularization: λ (default
            0.01, implicit's). alpha: α of the confidence ``1 + α r`` (default 1.0). iterations: ALS sweeps (default
            15). seed: implicit's ``random_state`` (initial factors). num_threads: implicit's threads (0 = all cores).
    """

    name = "als"

    def __init__(
        self,
        num_users: int,
        num_items: int,
        factors: int = 64,
        regularization: float = 0.01,
        alpha: float = 1.0,
        iterations: int = 15,
        seed: int = 0,
        num_threads: int = 0,
    ) -> None:
        super().__init__(num_users, num_items)
        if factors < 1 or iterations < 1:
            raise ValueError(f"`factors` and `iterations` must be >= 1, got {factors} and {iterations}.")
        if regularization < 0 or alpha <= 0:
            raise ValueError(f"`regularization` must be >= 0 and `alpha` > 0, got {regularization} and {alpha}.")
        self.factors, self.regularization, self.alpha = factors, regularization, alpha
        self.iterations, self.seed, self.num_threads = iterations, seed, num_threads
        self.register_buffer("user_factors", torch.zeros(num_users, factors))
        self.register_buffer("item_factors", torch.zeros(num_items, factors))

    def fit(self, interactions: Interactions) -> None:
        from threadpoolctl import threadpool_limits

        try:
            from implicit.cpu.als import AlternatingLeastSquares
        except ImportError as err:
            raise ImportError("`model.name`='als' needs the `implicit` library: pip install 'regkit[als]' "
                              "(or pip install implicit).") from err
        self.check_interactions(interactions)
        solver = AlternatingLeastSquares(
            factors=self.factors,
            regularization=self.regularization,
            alpha=self.alpha,
            iterations=self.iterations,
            random_state=self.seed,
            num_threads=self.num_threads,
        )
        with threadpool_limits(1, "blas"):  # implicit parallelises over users itself; nested BLAS threads thrash
            solver.fit(interaction_matrix(interactions).astype("float32"), show_progress=False)
        self.user_factors = torch.as_tensor(solver.user_factors, dtype=torch.float32)
        self.item_factors = torch.as_tensor(solver.item_factors, dtype=torch.float32)

    def user_embeddings(self, users: Tensor, *, cold: Tensor | None = None) -> Tensor:
        known = self.embeddable(users, cold)
        vectors = torch.zeros(users.numel(), self.factors)
        vectors[known] = self.user_factors[users[known]]
        return vectors

    def item_embeddings(self) -> Tensor:
        return self.item_factors

    def get_config(self) -> dict[str, Any]:
        return {"factors": self.factors, "regularization": self.regularization, "alpha": self.alpha,
                "iterations": self.iterations, "seed": self.seed, "num_threads": self.num_threads}
