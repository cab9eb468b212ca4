"""Closed-form generalization dynamics of a linear student trained by gradient flow (Advani & Saxe)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor

from common_regs.api import ConfigFromKeys
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["LinearGradientFlow", "gradient_flow_weights", "marchenko_pastur_pdf"]


def gradient_flow_weights(x: Tensor, y: Tensor, w0: Tensor, times: Sequence[float]) -> Tensor:
    """``w(t)`` under ``ẇ = −∇ ½‖Xw − y‖²/n`` in the eigenbasis of ``Σ = XᵀX/n`` (rows = times).

    Along eigenvector vᵢ with λᵢ > 0: ``wᵢ(t) = wᵢ* + (wᵢ(0) − wᵢ*) e^{−λᵢ t}``, ``wᵢ* = vᵢᵀXᵀy/(nλᵢ)``; along
    λᵢ = 0 (the null space of X) the component stays frozen at ``wᵢ(0)``.
    """
    x, y, w0 = x.to(torch.float64), y.to(torch.float64), w0.to(torch.float64)
    n = x.shape[0]
    lam, vecs = torch.linalg.eigh(x.T @ x / n)
    c0 = vecs.T @ w0
    proj = vecs.T @ (x.T @ y) / n
    active = lam > lam.max() * 1e-10
    target = torch.where(active, proj / torch.where(active, lam, torch.ones_like(lam)), c0)
    rows = []
    for t in times:
        decay = torch.where(active, torch.exp(-lam * t), torch.ones_like(lam))
        rows.append(vecs @ (target + (c0 - target) * decay))
    return torch.stack(rows)


def marchenko_pastur_pdf(values: Tensor, ratio: float, variance: float = 1.0) -> Tensor:
    """Marchenko–Pastur density of the eigenvalues of ``XᵀX/n`` (X: n × d, iid entries), ``ratio = d/n ≤ 1``."""
    if not 0 < ratio <= 1:
        raise ValueError(f"`ratio` must be in (0, 1], got {ratio}.")
    lo, hi = variance * (1 - math.sqrt(ratio)) ** 2, variance * (1 + math.sqrt(ratio)) ** 2
    v = values.to(torch.float64)
    inside = (v > lo) & (v < hi)
    dens = torch.sqrt(((hi - v) * (v - lo)).clamp_min(0)) / (2 * math.pi * variance * ratio * v.clamp_min(1e-300))
    return torch.where(inside, dens, torch.zeros_like(v))


@register("linear_gradient_flow", kind="solver", seed=47,
          fidelity="diagnostic",
          verified_by="tests/common_regs/dynamics/test_stn_and_diagnostics.py"
                      "::test_gradient_flow_closed_form_matches_small_step_gd_and_freezes_null_space",
          paper="Advani, Saxe, High-dimensional dynamics of generalization error in neural networks, Neural "
                "Networks 2020, arXiv:1710.03667")
class LinearGradientFlow(ConfigFromKeys):
    r"""Exact train/test error trajectories of a linear student–teacher model under gradient flow.

    Explains why early stopping regularizes: each eigen-mode of the data covariance is learned at rate λᵢ,
    small-eigenvalue modes (which fit noise) come last, and the null-space component never moves (so the
    initialization scale sets an error floor). Use as a test fixture or diagnostic for regularization studies.

    The paper is analytical; what it prescribes for training is to start from small initial weights (the frozen
    subspace keeps whatever the initialization put there) and to stop early when the effective number of
    parameters is close to the number of samples. The exact curves returned here give that error floor and the
    best stopping time; both are shown acting in plain gradient-descent runs in
    ``tests/common_regs/dynamics/test_generalization_dynamics.py``.

    Reference:
        Madhu S. Advani, Andrew M. Saxe, "High-dimensional dynamics of generalization error in neural networks",
        Neural Networks 132, 2020, arXiv:1710.03667 (§2–3, linear student–teacher gradient flow).

    Math:
        .. math::
            w(t) = \sum_i v_i\big(w_i^* + (w_i(0) - w_i^*)e^{-\lambda_i t}\big),\quad
            E_g(t) = \|w(t) - \bar w\|^2 + \sigma^2

        for isotropic test inputs; (λᵢ, vᵢ) eigenpairs of XᵀX/n, λᵢ = 0 modes frozen.

    Args:
        noise: σ, the teacher's output-noise standard deviation (added to the test error). Default 0.0.

    Shape:
        x (n, d), y (n,), w0 (d,), teacher (d,).

    Returns:
        ``__call__`` returns ``{"time", "train_mse", "test_error"}`` lists.

    Note:
        Train MSE is ``mean((Xw − y)²)``; the test error assumes x ~ N(0, I) at test time.

    Example:
        >>> import torch
        >>> x = torch.eye(3)[:2]; y = torch.tensor([1.0, 2.0])
        >>> out = LinearGradientFlow()(x, y, torch.zeros(3), torch.tensor([1.0, 2.0, 3.0]), [0.0, 1e3])
        >>> [round(v, 4) for v in out["test_error"]]
        [14.0, 9.0]
    """

    config_keys: ClassVar[tuple[str, ...]] = ("noise",)
    runtime_keys: ClassVar[tuple[str, ...]] = ()
    citation: ClassVar[str] = (
        "@article{advani2020high, title={High-dimensional dynamics of generalization error in neural networks}, "
        "author={Advani, Madhu S. and Saxe, Andrew M.}, journal={Neural Networks}, volume={132}, year={2020}}"
    )

    def __init__(self, noise: float = 0.0) -> None:
        if noise < 0:
            raise ValueError(f"`noise` must be >= 0, got {noise}.")
        self.noise = float(noise)

    def __call__(self, x: Tensor, y: Tensor, w0: Tensor, teacher: Tensor, times: Sequence[float]
                 ) -> dict[str, list[float]]:
        ws = gradient_flow_weights(x, y, w0, times)
        x64, y64, teacher64 = x.to(torch.float64), y.to(torch.float64), teacher.to(torch.float64)
        train = ((ws @ x64.T) - y64).pow(2).mean(1)
        test = (ws - teacher64).pow(2).sum(1) + self.noise**2
        return {"time": list(map(float, times)), "train_mse": train.tolist(), "test_error": test.tolist()}
