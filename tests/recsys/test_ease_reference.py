"""The EASE / EDLAE closed form (recsys.models.ease, also the benchmarks' reference rows), checked against its
optimality conditions: B = argmin ‖X − XB‖² + ‖diag(penalty)^½ B‖² subject to diag(B) = 0
(Steck, WWW 2019, Eq. 1-8)."""

from __future__ import annotations

import numpy as np

from recsys.models.ease import ease_weights


def _objective(matrix: np.ndarray, penalty: np.ndarray, weights: np.ndarray) -> float:
    return float(np.sum((matrix - matrix @ weights) ** 2) + np.sum(penalty[:, None] * weights**2))


def test_ease_satisfies_the_kkt_conditions_of_its_constrained_least_squares():
    rng = np.random.default_rng(0)
    matrix = (rng.random((60, 12)) < 0.3).astype(float)
    gram = matrix.T @ matrix
    for penalty in (np.full(12, 5.0), 0.5 / (1 - 0.5) * np.diag(gram) + 2.0):  # EASE λ = 5; EDLAE p = 0.5, λ = 2
        weights = ease_weights(matrix, penalty)
        assert np.allclose(np.diag(weights), 0.0, atol=1e-9)
        # stationarity: the gradient (G + Λ)B − G vanishes off the diagonal (the diagonal carries the multipliers)
        gradient = (gram + np.diag(penalty)) @ weights - gram
        assert np.allclose(gradient - np.diag(np.diag(gradient)), 0.0, atol=1e-8)
        # and B beats a perturbed feasible candidate on the penalised objective
        other = weights + 0.01 * rng.standard_normal(weights.shape)
        np.fill_diagonal(other, 0.0)
        assert _objective(matrix, penalty, weights) < _objective(matrix, penalty, other)
