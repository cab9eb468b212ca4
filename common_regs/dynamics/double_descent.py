"""Double-descent diagnostics: feature-covariance spectrum, random-features risk, lr scans, a conditioning callback."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from common_regs.api import ConfigFromKeys
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = [
    "ConditioningMonitor",
    "DoubleDescentDiagnostics",
    "covariance_spectrum",
    "effective_lr_scan",
    "random_features_curve",
]


def covariance_spectrum(features: Tensor) -> Tensor:
    """Eigenvalues of ``ΦᵀΦ / n`` in descending order (float64)."""
    phi = features.to(torch.float64)
    return torch.linalg.eigvalsh(phi.T @ phi / phi.shape[0]).flip(0).clamp_min(0.0)


def _relu_features(x: Tensor, proj: Tensor) -> Tensor:
    return torch.relu(x @ proj) / proj.shape[1] ** 0.5


def random_features_curve(n_train: int, widths: Sequence[int], *, dim: int = 20, noise: float = 0.1,
                          n_test: int = 1000, ridge: float = 0.0, seed: int = 0) -> dict[str, list[float]]:
    """Test MSE of min-norm (or ridge) least squares on p random ReLU features, for each p in ``widths``.

    Data: x ~ N(0, I_dim), y = ⟨x, w̄⟩/√dim + noise·ξ. Also returns the condition number of the non-zero
    spectrum of ``ΦᵀΦ/n`` (largest / smallest non-zero eigenvalue), which blows up at p ≈ n.
    """
    gen = torch.Generator().manual_seed(seed)
    teacher = torch.randn(dim, generator=gen, dtype=torch.float64)
    x_tr = torch.randn(n_train, dim, generator=gen, dtype=torch.float64)
    x_te = torch.randn(n_test, dim, generator=gen, dtype=torch.float64)
    y_tr = x_tr @ teacher / dim**0.5 + noise * torch.randn(n_train, generator=gen, dtype=torch.float64)
    y_te = x_te @ teacher / dim**0.5
    risks, conds = [], []
    for p in widths:
        proj = torch.randn(dim, p, generator=gen, dtype=torch.float64)
        phi_tr, phi_te = _relu_features(x_tr, proj), _relu_features(x_te, proj)
        if ridge > 0:
            coef = torch.linalg.solve(phi_tr.T @ phi_tr + ridge * n_train * torch.eye(p, dtype=torch.float64),
                                      phi_tr.T @ y_tr)
        else:
            coef = torch.linalg.pinv(phi_tr) @ y_tr
        risks.append(float((phi_te @ coef - y_te).pow(2).mean()))
        spec = covariance_spectrum(phi_tr)
        nonzero = spec[spec > spec[0] * 1e-12]
        conds.append(float(nonzero[0] / nonzero[-1]))
    return {"width": [float(p) for p in widths], "test_mse": risks, "condition_number": conds}


def effective_lr_scan(features: Tensor, targets: Tensor, lrs: Sequence[float], *, steps: int = 200
                      ) -> dict[str, Any]:
    """Full-batch GD on ``½‖Φw − y‖²/n`` from 0 for each lr: final loss, and the stability edge ``2/λ_max``."""
    phi, y = features.to(torch.float64), targets.to(torch.float64)
    lam_max = float(covariance_spectrum(phi)[0])
    losses = []
    for lr in lrs:
        w = torch.zeros(phi.shape[1], dtype=torch.float64)
        for _ in range(steps):
            w = w - lr * phi.T @ (phi @ w - y) / phi.shape[0]
        losses.append(float(0.5 * (phi @ w - y).pow(2).mean()))
    return {"lr": list(map(float, lrs)), "final_loss": losses, "stability_edge": 2.0 / lam_max,
            "effective_lr": [float(lr) * lam_max for lr in lrs]}


@register("double_descent_diagnostics", kind="solver", seed=45,
          fidelity="diagnostic",
          verified_by="tests/common_regs/dynamics/test_stn_and_diagnostics.py"
                      "::test_double_descent_peak_at_interpolation_threshold",
          paper="Liu, Flanigan, Understanding the Role of Optimization in Double Descent, NeurIPS 2023 OPT "
                "workshop, arXiv:2312.03951")
class DoubleDescentDiagnostics(ConfigFromKeys):
    r"""Experiment helpers relating double descent to the conditioning of the feature covariance.

    The test-error peak of min-norm least squares at p ≈ n coincides with the smallest non-zero eigenvalue of
    ΦᵀΦ/n going to 0 (condition number blow-up); ridge or early-stopped (small effective learning rate)
    optimization flattens it. Use these to diagnose a model family before tuning regularization.

    The paper is analytical/empirical (an explanation of when the peak appears) and proposes no training method;
    its measurement, the conditioning of the problem the optimizer faces, is also given as a training callback for
    any loop, :class:`ConditioningMonitor`.

    Reference:
        Chris Yuhao Liu, Jeffrey Flanigan, "Understanding the Role of Optimization in Double Descent", NeurIPS 2023
        workshop poster (OpenReview 8vggUWDeLF), arXiv:2312.03951. No equation of the paper is implemented; these
        are the standard quantities it studies (keywords: double descent, optimization, condition number).

    Math:
        .. math::
            \hat w = \Phi^+ y,\quad \kappa = \lambda_{\max}/\lambda_{\min>0}(\Phi^\top\Phi/n),\quad
            \text{stable GD iff } \eta < 2/\lambda_{\max}

    Args:
        dim: input dimension of the synthetic teacher. Default 20 (regkit toy).
        noise: label-noise standard deviation. Default 0.1 (regkit toy).
        ridge: ridge coefficient (0 = min-norm). Default 0.0 (convention).
        seed: RNG seed. Default 0.

    Shape:
        features (n, p), targets (n,).

    Returns:
        ``__call__(n_train, widths)`` returns the dict of :func:`random_features_curve`.

    Note:
        Dense eigendecompositions: keep p and n in the low thousands.

    Example:
        >>> out = DoubleDescentDiagnostics()(40, [10, 40, 160])
        >>> out["condition_number"][1] > out["condition_number"][0]
        True
    """

    config_keys: ClassVar[tuple[str, ...]] = ("dim", "noise", "ridge", "seed")
    runtime_keys: ClassVar[tuple[str, ...]] = ()
    citation: ClassVar[str] = (
        "@article{liu2023understanding, title={Understanding the Role of Optimization in Double Descent}, "
        "author={Liu, Chris Yuhao and Flanigan, Jeffrey}, journal={arXiv:2312.03951}, year={2023}}"
    )

    def __init__(self, dim: int = 20, noise: float = 0.1, ridge: float = 0.0, seed: int = 0) -> None:
        if dim < 1 or noise < 0 or ridge < 0:
            raise ValueError(f"`dim` must be >= 1 and `noise`, `ridge` >= 0, got {dim}, {noise}, {ridge}.")
        self.dim, self.noise, self.ridge, self.seed = int(dim), float(noise), float(ridge), int(seed)

    def __call__(self, n_train: int, widths: Sequence[int]) -> dict[str, list[float]]:
        return random_features_curve(n_train, widths, dim=self.dim, noise=self.noise, ridge=self.ridge,
                                     seed=self.seed)


class ConditioningMonitor:
    r"""Training callback: the conditioning of the least-squares problem on a model's features, as training goes.

    Liu & Flanigan tie the height of the double-descent peak to whether the optimizer can reach a low-loss
    minimum, which the condition number of the problem decides. Call it in any loop with the step and the current
    features Φ (n, p) of a fixed probe set (penultimate activations, random features) and, optionally, the learning
    rate; every ``every``-th step it records κ, λ_max and the effective learning rate η·λ_max of ΦᵀΦ/n in
    :attr:`history` and logs them at INFO as ``reg/conditioning/<quantity>``.

    Math:
        .. math::
            \kappa = \lambda_{\max}/\lambda_{\min>0}(\Phi^\top\Phi/n),\quad
            \text{GD on } \tfrac{1}{2n}\lVert\Phi w - y\rVert^2 \text{ converges iff } \eta\lambda_{\max} < 2

        λ_min>0 is the smallest eigenvalue above ``λ_max · 1e-12`` (the non-zero spectrum).

    Args:
        every: measure when ``step % every == 0``. Default 1.

    Example:
        >>> import torch
        >>> monitor = ConditioningMonitor()
        >>> out = monitor(0, torch.eye(4, dtype=torch.float64) * torch.tensor([1.0, 1.0, 2.0, 2.0]), lr=0.5)
        >>> round(out["condition_number"], 6), round(out["effective_lr"], 6)
        (4.0, 0.5)
    """

    def __init__(self, every: int = 1) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"`every` must be a positive integer, got {every!r}.")
        self.every = every
        self.history: list[dict[str, float]] = []

    def __call__(self, step: int, features: Tensor, lr: float | None = None) -> dict[str, float] | None:
        """Measure at ``step`` (None when ``step`` is not a multiple of ``every``); features are detached."""
        if step % self.every:
            return None
        spectrum = covariance_spectrum(features.detach())
        nonzero = spectrum[spectrum > spectrum[0] * 1e-12]
        lam_max = float(spectrum[0])
        out = {"condition_number": float(nonzero[0] / nonzero[-1]) if len(nonzero) else float("inf"),
               "lambda_max": lam_max}
        if lr is not None:
            out["effective_lr"] = float(lr) * lam_max
        self.history.append({"step": step, **out})
        logger.info("step %d: %s", step, ", ".join(f"reg/conditioning/{k}={v:.4g}" for k, v in out.items()))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"every": self.every, "history": [dict(entry) for entry in self.history]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.every = int(state["every"])
        self.history = [dict(entry) for entry in state["history"]]
