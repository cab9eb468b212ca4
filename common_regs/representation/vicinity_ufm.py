"""Vicinity-regularized unconstrained features model: features pulled toward their initial values H₀ (closed forms)."""

from __future__ import annotations

import logging
from typing import ClassVar

import torch
from torch import Tensor

from common_regs.api import ConfigFromKeys
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["VicinityUFM", "ufm_features_step", "ufm_objective", "ufm_weights_step"]


def ufm_objective(w: Tensor, h: Tensor, y: Tensor, h0: Tensor, beta: float, lambda_w: float) -> Tensor:
    """``(1/2N)‖WH - Y‖² + (λ_W/2)‖W‖² + (β/2N)‖H - H₀‖²`` (H, Y, H₀ have one column per sample)."""
    n = y.shape[1]
    return ((w @ h - y) ** 2).sum() / (2 * n) + lambda_w / 2 * (w**2).sum() + beta / (2 * n) * ((h - h0) ** 2).sum()


def ufm_features_step(w: Tensor, y: Tensor, h0: Tensor, beta: float) -> Tensor:
    """argmin_H of the objective for fixed W: ``(WᵀW + βI) H = WᵀY + βH₀`` (least-norm solution if β = 0)."""
    gram = w.T @ w
    if beta == 0.0:
        return torch.linalg.pinv(gram, hermitian=True) @ (w.T @ y)
    return torch.linalg.solve(gram + beta * torch.eye(gram.shape[0], dtype=gram.dtype), w.T @ y + beta * h0)


def ufm_weights_step(h: Tensor, y: Tensor, lambda_w: float) -> Tensor:
    """argmin_W for fixed H: ``W = Y Hᵀ (H Hᵀ + N λ_W I)⁻¹``."""
    n = y.shape[1]
    gram = h @ h.T + n * lambda_w * torch.eye(h.shape[0], dtype=h.dtype)
    return torch.linalg.solve(gram, h @ y.T).T


@register(
    "vicinity_ufm",
    fidelity="reconstruction",
    verified_by="tests/common_regs/representation/test_vicinity_ufm.py",
    kind="solver",
    paper="Tirer, Huang, Niles-Weed, Perturbation Analysis of Neural Collapse, ICML 2023, arXiv:2210.16658",
    seed=9,
)
class VicinityUFM(ConfigFromKeys):
    r"""Block-coordinate solver of the UFM whose features are regularized toward a vicinity of H₀.

    The unconstrained features model treats the penultimate features as free variables; with the extra proximity
    term β‖H − H₀‖² (features cannot move far from what the backbone gives) collapse is only partial, and the
    amount of within-class variability left grows with β. Use it to predict/diagnose how much collapse a feature
    regularizer allows (with :func:`~common_regs.representation.neural_collapse.neural_collapse_metrics`).

    Reference:
        Tirer, Huang, Niles-Weed, "Perturbation Analysis of Neural Collapse", ICML 2023, arXiv:2210.16658.
        **Equation unconfirmed**: the objective is restated from the regkit reference notes ([recall]); the
        alternating closed-form solver is regkit's.

    Math:
        .. math::
            \min_{W,H}\ \frac{1}{2N}\lVert WH - Y\rVert_F^2 + \frac{\lambda_W}{2}\lVert W\rVert_F^2 +
            \frac{\beta}{2N}\lVert H - H_0\rVert_F^2,\quad
            H \leftarrow (W^\top W + \beta I)^{-1}(W^\top Y + \beta H_0),\quad
            W \leftarrow YH^\top(HH^\top + N\lambda_W I)^{-1}

        β ↔ ``beta``, λ_W ↔ ``lambda_w``; the objective is non-increasing over the iterations.

    Args:
        beta: proximity weight β. Default 1.0 (regkit default).
        lambda_w: classifier weight decay λ_W. Default 5e-3 (regkit default).
        iterations: alternating steps. Default 100 (regkit default).

    Shape:
        Y (C, N) one-hot columns, H₀ (D, N); returns W (C, D), H (D, N).

    Returns:
        ``solve(y, h0)`` → (W, H, objective values per iteration).

    Note:
        Runs in float64. W is initialised from the closed form given H = H₀.

    Example:
        >>> import torch
        >>> y = torch.eye(2).repeat_interleave(3, 1).double(); h0 = torch.randn(4, 6, dtype=torch.float64)
        >>> _, _, history = VicinityUFM(beta=1.0, iterations=5).solve(y, h0)
        >>> all(b <= a + 1e-12 for a, b in zip(history, history[1:]))
        True
    """

    config_keys: ClassVar[tuple[str, ...]] = ("beta", "lambda_w", "iterations")
    citation: ClassVar[str] = (
        "@inproceedings{tirer2023perturbation, title={Perturbation Analysis of Neural Collapse}, author={Tirer, Tom "
        "and Huang, Haoxiang and Niles-Weed, Jonathan}, booktitle={ICML}, year={2023}}"
    )

    def __init__(self, beta: float = 1.0, lambda_w: float = 5e-3, iterations: int = 100) -> None:
        if beta < 0 or lambda_w <= 0:
            raise ValueError(f"`beta` must be >= 0 and `lambda_w` > 0, got {beta} and {lambda_w}.")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"`iterations` must be a positive integer, got {iterations!r}.")
        self.beta, self.lambda_w, self.iterations = float(beta), float(lambda_w), iterations

    def solve(self, y: Tensor, h0: Tensor) -> tuple[Tensor, Tensor, list[float]]:
        if y.shape[1] != h0.shape[1]:
            raise ValueError(f"`y` has {y.shape[1]} columns (samples) but `h0` {h0.shape[1]}.")
        y, h0 = y.double(), h0.double()
        h = h0.clone()
        w = ufm_weights_step(h, y, self.lambda_w)
        history = []
        for _ in range(self.iterations):
            h = ufm_features_step(w, y, h0, self.beta)
            w = ufm_weights_step(h, y, self.lambda_w)
            history.append(float(ufm_objective(w, h, y, h0, self.beta, self.lambda_w)))
        return w, h, history
