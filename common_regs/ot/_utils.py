r"""Shared OT helpers: input validation and the log-domain Sinkhorn scaling step (one copy of the math).

Parametrization (Tang et al. 2024, Eq. 2; the same scaling as Cuturi 2013 in log domain): with η = 1/ε and dual
variables x ∈ ℝⁿ, y ∈ ℝᵐ the plan is

.. math:: P_{ij}(x, y) = \exp\big(\eta(-C_{ij} + x_i + y_j) - 1\big)

and the concave Lyapunov (dual) function is

.. math:: f(x, y) = -\tfrac{1}{\eta}\sum_{ij} P_{ij}(x, y) + \sum_i r_i x_i + \sum_j c_j y_j.

A Sinkhorn iteration is exact block maximization of f: ``x += (log r − log P1)/η`` then ``y += (log c − log Pᵀ1)/η``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = ["OTResult", "check_problem", "dual_objective", "log_plan", "marginal_error", "sinkhorn_sweep"]


@dataclass
class OTResult:
    """A solver's output: the plan, the dual variables (x, y) of the parametrization above, and its trace.

    ``n_iter`` counts outer iterations (Sinkhorn sweeps, plus Newton steps for SNS); ``errors[k]`` is the marginal
    error after iteration k; ``converged`` says whether ``errors[-1] <= tol``.
    """

    plan: Tensor
    x: Tensor
    y: Tensor
    n_iter: int
    errors: list[float] = field(default_factory=list)
    converged: bool = False
    extras: dict[str, float] = field(default_factory=dict)


def check_problem(a: Tensor, b: Tensor, cost: Tensor, *, atol: float = 1e-6) -> tuple[Tensor, Tensor, Tensor]:
    """Validate histograms ``a`` (n,), ``b`` (m,) and ``cost`` (n, m); return them as float64 tensors."""
    a, b, cost = (torch.as_tensor(t, dtype=torch.float64) for t in (a, b, cost))
    if a.ndim != 1 or b.ndim != 1 or cost.ndim != 2:
        raise ValueError(f"`a`, `b`, `cost` must be 1-D, 1-D, 2-D, got shapes {tuple(a.shape)}, {tuple(b.shape)}, "
                         f"{tuple(cost.shape)}.")
    if cost.shape != (a.numel(), b.numel()):
        expected = (a.numel(), b.numel())
        raise ValueError(f"`cost` must have shape (len(a), len(b)) = {expected}, got {tuple(cost.shape)}.")
    if bool((a <= 0).any()) or bool((b <= 0).any()):
        raise ValueError("`a` and `b` must be strictly positive histograms; drop zero-mass points first.")
    if abs(float(a.sum() - b.sum())) > atol * max(1.0, float(a.sum())):
        raise ValueError(f"`a` and `b` must have equal mass (balanced OT), got {float(a.sum())} and {float(b.sum())}.")
    if not bool(torch.isfinite(cost).all()):
        raise ValueError("`cost` must be finite.")
    return a, b, cost


def log_plan(cost: Tensor, x: Tensor, y: Tensor, eta: float) -> Tensor:
    """``log P = η(−C + x 1ᵀ + 1 yᵀ) − 1``."""
    return eta * (x[:, None] + y[None, :] - cost) - 1.0


def sinkhorn_sweep(
    cost: Tensor, x: Tensor, y: Tensor, log_a: Tensor, log_b: Tensor, eta: float, *, columns_exact: bool = False
) -> tuple[Tensor, Tensor, float]:
    """One Sinkhorn iteration (row then column scaling) in the log domain.

    Returns the new ``(x, y)`` and the marginal error ``‖P1 − a‖₁ + ‖Pᵀ1 − b‖₁`` of the *input* iterate, read off the
    row log-sums the row step needs anyway. Pass ``columns_exact=True`` when the input came out of a column step
    (its column marginals are exact), which saves one pass over the plan.
    """
    log_rows = torch.logsumexp(log_plan(cost, x, y, eta), dim=1)
    err = float((log_rows.exp() - log_a.exp()).abs().sum())
    if not columns_exact:
        err += float((torch.logsumexp(log_plan(cost, x, y, eta), dim=0).exp() - log_b.exp()).abs().sum())
    x = x + (log_a - log_rows) / eta
    y = y + (log_b - torch.logsumexp(log_plan(cost, x, y, eta), dim=0)) / eta
    return x, y, err


def marginal_error(plan: Tensor, a: Tensor, b: Tensor) -> float:
    """``‖P1 − a‖₁ + ‖Pᵀ1 − b‖₁``."""
    return float((plan.sum(1) - a).abs().sum() + (plan.sum(0) - b).abs().sum())


def dual_objective(cost: Tensor, x: Tensor, y: Tensor, a: Tensor, b: Tensor, eta: float) -> Tensor:
    """The Lyapunov function f(x, y) above (concave; its maximum is the entropic OT value up to constants)."""
    return -torch.exp(log_plan(cost, x, y, eta)).sum() / eta + a @ x + b @ y


def sq_euclidean(x: Tensor, y: Tensor) -> Tensor:
    """``C_ij = ‖x_i − y_j‖²`` (ott-jax ``costs.SqEuclidean``; no ½)."""
    return (x[:, None, :] - y[None, :, :]).pow(2).sum(-1)
