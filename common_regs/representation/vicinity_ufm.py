"""Vicinity-regularized unconstrained features model (Tirer, Huang, Niles-Weed, Eq. 2): features kept near H₀."""

from __future__ import annotations

import logging
import math
from typing import ClassVar

import torch
from torch import Tensor

from common_regs.api import ConfigFromKeys
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["VicinityUFM", "collapsed_ufm_minimizer", "ufm_features_step", "ufm_objective", "ufm_weights_step"]


def ufm_objective(w: Tensor, h: Tensor, y: Tensor, h0: Tensor, beta: float, lambda_w: float,
                  lambda_h: float = 0.0) -> Tensor:
    """The paper's Eq. 2, ``f(W, H; H₀)``, with K = rows of Y and N = Kn = columns (one per sample).

    ``(1/2N)‖WH − Y‖² + (λ_W/2K)‖W‖² + (λ_H/2N)‖H‖² + (β/2N)‖H − H₀‖²``; β = 0 gives the plain UFM of Eq. 1.
    """
    k, n_total = y.shape
    return (((w @ h - y) ** 2).sum() / (2 * n_total) + lambda_w / (2 * k) * (w**2).sum()
            + lambda_h / (2 * n_total) * (h**2).sum() + beta / (2 * n_total) * ((h - h0) ** 2).sum())


def ufm_features_step(w: Tensor, y: Tensor, h0: Tensor, beta: float, lambda_h: float = 0.0) -> Tensor:
    """argmin_H of Eq. 2 for fixed W: ``(WᵀW + (λ_H + β)I) H = WᵀY + βH₀`` (least-norm solution if λ_H + β = 0)."""
    gram = w.T @ w
    shift = lambda_h + beta
    if shift == 0.0:
        return torch.linalg.pinv(gram, hermitian=True) @ (w.T @ y)
    return torch.linalg.solve(gram + shift * torch.eye(gram.shape[0], dtype=gram.dtype), w.T @ y + beta * h0)


def ufm_weights_step(h: Tensor, y: Tensor, lambda_w: float) -> Tensor:
    """argmin_W of Eq. 2 for fixed H (paper §3): ``W*(H) = YHᵀ(HHᵀ + nλ_W I)⁻¹`` with n = N/K samples per class."""
    k, n_total = y.shape
    gram = h @ h.T + (n_total / k) * lambda_w * torch.eye(h.shape[0], dtype=h.dtype)
    return torch.linalg.solve(gram, h @ y.T).T


def collapsed_ufm_minimizer(basis: Tensor, per_class: int, lambda_w: float, lambda_h: float
                            ) -> tuple[Tensor, Tensor]:
    r"""A global minimizer (W*, H*) of the plain UFM (Eq. 1), as constructed after the paper's Theorem 2.1.

    With c = √(λ_Hλ_W) ≤ 1 and ρ = (1 − c)√(λ_W/λ_H): ``H* = √ρ R ⊗ 1ₙᵀ`` and ``W* = √(λ_H/λ_W) √ρ Rᵀ``, R the
    (D, K) orthonormal ``basis``; for c > 1 the minimizer is (0, 0). Taken as H₀ in Eq. 2 it is also Eq. 2's unique
    minimizer (Corollary 2.2): the exactly collapsed point that the near-collapse analysis (§4) perturbs.

    Args:
        basis: R, (D, K) with orthonormal columns (D ≥ K).
        per_class: n, samples per class; columns are class-major (class 0's n columns first).
        lambda_w: λ_W > 0.
        lambda_h: λ_H > 0.

    Returns:
        (W* (K, D), H* (D, Kn)), in the dtype of ``basis``.
    """
    if lambda_w <= 0 or lambda_h <= 0:
        raise ValueError(f"`lambda_w` and `lambda_h` must be > 0, got {lambda_w} and {lambda_h}.")
    if per_class < 1:
        raise ValueError(f"`per_class` must be >= 1, got {per_class}.")
    k = basis.shape[1]
    if not torch.allclose(basis.T @ basis, torch.eye(k, dtype=basis.dtype), atol=1e-6):
        raise ValueError("`basis` must have orthonormal columns (RᵀR = I); orthonormalise it with torch.linalg.qr.")
    c = math.sqrt(lambda_h * lambda_w)
    rho = max(1.0 - c, 0.0) * math.sqrt(lambda_w / lambda_h)
    h_bar = math.sqrt(rho) * basis
    return math.sqrt(lambda_h / lambda_w) * h_bar.T, h_bar.repeat_interleave(per_class, dim=1)


@register(
    "vicinity_ufm",
    fidelity="paper-equation",
    verified_by="tests/common_regs/representation/test_vicinity_ufm.py"
                "::test_perturbation_of_a_collapsed_input_matches_theorem_4_2",
    kind="solver",
    paper="Tirer, Huang, Niles-Weed, Perturbation Analysis of Neural Collapse, ICML 2023, arXiv:2210.16658",
    seed=9,
)
class VicinityUFM(ConfigFromKeys):
    r"""Minimizes the paper's vicinity-regularized UFM (Eq. 2): last-layer W and features H kept near given H₀.

    The unconstrained features model treats the penultimate features as free variables; the proximity term
    β‖H − H₀‖² models a simple link from shallower features H₀ (1/β ~ that link's complexity), so collapse is only
    partial. For large β the minimizer is an implicit gradient step from H₀ and has smaller within-class
    variability than H₀ (Corollary 3.2); near collapse, deviations of H₀ pass to H through a linear map whose
    intra-class blocks shrink with λ_H (Theorem 4.2). Use it to predict how much collapse a link allows (with
    :func:`~common_regs.representation.neural_collapse.neural_collapse_metrics`).

    Reference:
        Tom Tirer, Haoxiang Huang, Jonathan Niles-Weed, "Perturbation Analysis of Neural Collapse", ICML 2023,
        arXiv:2210.16658: §2 Eq. 2 (the model), §3 (W*(H) closed form), Theorem 2.1 / Corollary 2.2 (collapsed
        minimizer), Theorem 4.2 (singular values of the perturbation map). Equation numbers as in the
        OpenReview ICLR 2023 text of the paper. No official code was found (authors' GitHub accounts tomtirer,
        tirer-lab; Papers with Code lists none); the alternating exact block minimization is regkit's solver.

    Math:
        .. math::
            \min_{W,H}\ \frac{1}{2Kn}\lVert WH - Y\rVert_F^2 + \frac{\lambda_W}{2K}\lVert W\rVert_F^2 +
            \frac{\lambda_H}{2Kn}\lVert H\rVert_F^2 + \frac{\beta}{2Kn}\lVert H - H_0\rVert_F^2\\
            H \leftarrow (W^\top W + (\lambda_H + \beta) I)^{-1}(W^\top Y + \beta H_0),\quad
            W \leftarrow YH^\top(HH^\top + n\lambda_W I)^{-1}

        K classes, n samples per class (n = N/K when unbalanced); the objective is non-increasing over iterations.

    Args:
        beta: proximity weight β. Default 100.0 (the paper's Fig. 1; its analysis is the large-β regime).
        lambda_w: last-layer regularization λ_W. Default 5e-3 (regkit default).
        lambda_h: feature regularization λ_H. Default 5e-3 (regkit default).
        iterations: alternating steps. Default 100 (regkit default).

    Shape:
        Y (K, N) one-hot columns, H₀ (D, N); returns W (K, D), H (D, N).

    Returns:
        ``solve(y, h0)`` → (W, H, objective values per iteration).

    Note:
        Runs in float64. W is initialised from the closed form given H = H₀. λ_H = β = 0 is allowed (the least-norm
        H of the plain UFM without feature regularization); the paper takes β > 0.

    Example:
        >>> import torch
        >>> y = torch.eye(2).repeat_interleave(3, 1).double(); h0 = torch.randn(4, 6, dtype=torch.float64)
        >>> _, _, history = VicinityUFM(beta=1.0, iterations=5).solve(y, h0)
        >>> all(b <= a + 1e-12 for a, b in zip(history, history[1:]))
        True
    """

    config_keys: ClassVar[tuple[str, ...]] = ("beta", "lambda_w", "lambda_h", "iterations")
    citation: ClassVar[str] = (
        "@inproceedings{tirer2023perturbation, title={Perturbation Analysis of Neural Collapse}, author={Tirer, Tom "
        "and Huang, Haoxiang and Niles-Weed, Jonathan}, booktitle={ICML}, year={2023}}"
    )

    def __init__(self, beta: float = 100.0, lambda_w: float = 5e-3, lambda_h: float = 5e-3,
                 iterations: int = 100) -> None:
        if beta < 0 or lambda_w <= 0 or lambda_h < 0:
            raise ValueError(f"`beta` and `lambda_h` must be >= 0 and `lambda_w` > 0, got {beta}, {lambda_h} and "
                             f"{lambda_w}.")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"`iterations` must be a positive integer, got {iterations!r}.")
        self.beta, self.lambda_w, self.lambda_h = float(beta), float(lambda_w), float(lambda_h)
        self.iterations = iterations

    def solve(self, y: Tensor, h0: Tensor) -> tuple[Tensor, Tensor, list[float]]:
        if y.shape[1] != h0.shape[1]:
            raise ValueError(f"`y` has {y.shape[1]} columns (samples) but `h0` {h0.shape[1]}.")
        y, h0 = y.double(), h0.double()
        h = h0.clone()
        w = ufm_weights_step(h, y, self.lambda_w)
        history = []
        for _ in range(self.iterations):
            h = ufm_features_step(w, y, h0, self.beta, self.lambda_h)
            w = ufm_weights_step(h, y, self.lambda_w)
            history.append(float(ufm_objective(w, h, y, h0, self.beta, self.lambda_w, self.lambda_h)))
        return w, h, history
