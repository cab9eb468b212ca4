from __future__ import annotations

import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from common_regs.structure.supervised_dictionary_learning import SupervisedDictionaryLearning, sdl_objective


def _planted(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    d, r, n = 20, 3, 300
    w = torch.linalg.qr(torch.randn(d, r, generator=g, dtype=torch.float64))[0]
    h = 3 * torch.randn(r, n, generator=g, dtype=torch.float64)
    x = w @ h + 0.05 * torch.randn(d, n, generator=g, dtype=torch.float64)
    aux = torch.randn(2, n, generator=g, dtype=torch.float64)
    y = (torch.rand(n, generator=g, dtype=torch.float64) < torch.sigmoid(h[0] + 2 * aux[0])).double()
    return {"w": w, "x": x, "aux": aux, "y": y}


def _sin_angle(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest principal-angle sine between span(a) and span(b) (rotation/scale invariant)."""
    qa, qb = torch.linalg.qr(a)[0], torch.linalg.qr(b)[0]
    return float(torch.linalg.matrix_norm(qb - qa @ (qa.T @ qb), ord=2))


@pytest.mark.parametrize("mode", ["feature", "filter"])
@pytest.mark.parametrize("nonnegative", [False, True])
def test_bcd_objective_is_monotone(mode: str, nonnegative: bool) -> None:
    p = _planted()
    x = p["x"].abs() if nonnegative else p["x"]
    result = SupervisedDictionaryLearning(n_components=3, mode=mode, nonnegative=nonnegative, l2=(1e-3, 1e-3, 1e-3),
                                          iterations=200).fit(x, p["y"], p["aux"], torch.Generator().manual_seed(0))
    objective = torch.tensor(result.objective, dtype=torch.float64)
    assert bool((objective[1:] <= objective[:-1] * (1 + 1e-12)).all())
    assert float(objective[-1]) < 0.5 * float(objective[0])
    assert float(objective[-1]) == pytest.approx(float(sdl_objective(x, p["y"], result.dictionary, result.codes,
                                                                     result.beta, p["aux"], xi=1.0, mode=mode,
                                                                     l2=(1e-3, 1e-3, 1e-3))))
    if nonnegative:
        assert float(result.dictionary.min()) >= 0 and float(result.codes.min()) >= 0


def test_recovers_the_planted_dictionary_subspace() -> None:
    p = _planted()
    result = SupervisedDictionaryLearning(n_components=3, iterations=300).fit(p["x"], p["y"], p["aux"],
                                                                              torch.Generator().manual_seed(0))
    assert _sin_angle(p["w"], result.dictionary) < 0.01  # noise level 0.05 / signal 3


def test_regression_block_matches_sklearn_logistic_regression() -> None:
    """At a BCD fixed point β is the ridge-logistic fit on the final codes (+ covariates): sklearn is the reference."""
    p = _planted()
    lam = 1e-2
    result = SupervisedDictionaryLearning(n_components=3, l2=(0.0, 0.0, lam), iterations=1000).fit(
        p["x"], p["y"], p["aux"], torch.Generator().manual_seed(0))
    design = torch.cat([result.codes, p["aux"]]).T.numpy()
    reference = LogisticRegression(C=1 / (2 * lam), tol=1e-10, max_iter=10_000).fit(design, p["y"].numpy())
    assert float(result.beta[0]) == pytest.approx(float(reference.intercept_[0]), abs=2e-3)
    torch.testing.assert_close(result.beta[1:], torch.from_numpy(reference.coef_[0]), atol=2e-3, rtol=0)


def test_supervision_finds_a_low_variance_discriminative_direction() -> None:
    """Labels depend on a direction of small variance: ξ large ≈ PCA (misses it), small ξ (filter SDL) finds it."""
    g = torch.Generator().manual_seed(1)
    d, n = 30, 400
    q = torch.linalg.qr(torch.randn(d, 3, generator=g, dtype=torch.float64))[0]
    big = 3 * torch.randn(2, 2 * n, generator=g, dtype=torch.float64)
    small = 0.5 * torch.randn(2 * n, generator=g, dtype=torch.float64)
    x = q[:, :2] @ big + q[:, 2:] * small + 0.1 * torch.randn(d, 2 * n, generator=g, dtype=torch.float64)
    y = (small > 0).double()
    auc = {}
    for xi in (10.0, 0.1):
        model = SupervisedDictionaryLearning(n_components=2, xi=xi, mode="filter", iterations=400)
        result = model.fit(x[:, :n], y[:n], generator=torch.Generator().manual_seed(0))
        auc[xi] = roc_auc_score(y[n:].numpy(), model.predict_proba(result, x[:, n:]).numpy())
    assert auc[10.0] < 0.6 and auc[0.1] > 0.9


def test_validation() -> None:
    with pytest.raises(ValueError, match="xi"):
        SupervisedDictionaryLearning(xi=0.0)
    with pytest.raises(ValueError, match="0/1"):
        SupervisedDictionaryLearning(n_components=1).fit(torch.randn(3, 4), torch.tensor([0.0, 2.0, 1.0, 0.0]))
    with pytest.raises(ValueError, match="n_components"):
        SupervisedDictionaryLearning(n_components=5).fit(torch.randn(3, 4), torch.zeros(4))
