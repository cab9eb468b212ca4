"""Entropic optimal transport by log-domain Sinkhorn iterations (the baseline that SNS accelerates)."""

from __future__ import annotations

import logging
from typing import ClassVar

import torch
from torch import Tensor

from common_regs.api import ConfigFromKeys
from common_regs.ot._utils import OTResult, check_problem, log_plan, sinkhorn_sweep
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["Sinkhorn", "sinkhorn"]


def sinkhorn(
    a: Tensor, b: Tensor, cost: Tensor, eps: float, *, max_iter: int = 10_000, tol: float = 1e-9,
    x0: Tensor | None = None, y0: Tensor | None = None,
) -> OTResult:
    """Log-domain Sinkhorn until the marginal error ``‖P1 − a‖₁ + ‖Pᵀ1 − b‖₁ <= tol`` (or ``max_iter`` sweeps).

    ``P = exp((−C + x1ᵀ + 1yᵀ)/ε − 1)``; ``n_iter`` is the number of sweeps that produced the returned iterate.
    """
    if eps <= 0:
        raise ValueError(f"`eps` must be > 0, got {eps}.")
    if max_iter < 0:
        raise ValueError(f"`max_iter` must be >= 0, got {max_iter}.")
    a, b, cost = check_problem(a, b, cost)
    eta = 1.0 / eps
    x = torch.zeros_like(a) if x0 is None else torch.as_tensor(x0, dtype=torch.float64).clone()
    y = torch.zeros_like(b) if y0 is None else torch.as_tensor(y0, dtype=torch.float64).clone()
    log_a, log_b = a.log(), b.log()
    errors: list[float] = []
    converged = False
    for it in range(max_iter + 1):
        new_x, new_y, err = sinkhorn_sweep(cost, x, y, log_a, log_b, eta, columns_exact=it > 0)
        errors.append(err)
        if err <= tol or it == max_iter:
            converged = err <= tol
            break
        x, y = new_x, new_y
    plan = torch.exp(log_plan(cost, x, y, eta))
    return OTResult(plan=plan, x=x, y=y, n_iter=len(errors) - 1, errors=errors, converged=converged)


@register("sinkhorn", kind="solver",
          fidelity="paper-equation",
          verified_by="tests/common_regs/ot/test_sinkhorn_newton_sparse.py"
                      "::test_sns_reaches_sinkhorn_plan_in_fewer_iterations",
          paper="Cuturi, Sinkhorn Distances: Lightspeed Computation of Optimal Transport, NeurIPS 2013, "
                "arXiv:1306.0895")
class Sinkhorn(ConfigFromKeys):
    r"""Entropic OT solver (log-domain Sinkhorn), the baseline of :class:`SinkhornNewtonSparse`.

    Use it for entropic OT plans and costs between two histograms; it is linearly convergent and slows down sharply
    as ``eps`` → 0, which is what SNS fixes.

    Reference:
        Marco Cuturi, "Sinkhorn Distances: Lightspeed Computation of Optimal Transport", NeurIPS 2013,
        arXiv:1306.0895; log-domain form and dual variables as in Tang et al., ICLR 2024, arXiv:2401.12253 (Eq. 2).

    Math:
        .. math::
            P_{ij} = \exp\big((-C_{ij} + x_i + y_j)/\varepsilon - 1\big),\quad
            x \leftarrow x + \varepsilon(\log a - \log P\mathbf 1),\quad
            y \leftarrow y + \varepsilon(\log b - \log P^\top\mathbf 1)

        stopped when ``‖P1 − a‖₁ + ‖Pᵀ1 − b‖₁ <= tol``. ``ε`` ↔ ``eps``.

    Args:
        eps: entropic regularization ε (= 1/η). Default 0.01 (convention for costs scaled to [0, 1]).
        max_iter: maximum Sinkhorn sweeps. Default 10000 (convention).
        tol: ℓ1 marginal-error tolerance. Default 1e-9 (convention for float64).

    Shape:
        a (n,), b (m,), cost (n, m) → plan (n, m).

    Returns:
        :class:`~common_regs.ot._utils.OTResult` (plan, dual variables, iteration count, error trace).

    Note:
        Computes in float64. Costs should be O(1): ``eps`` is absolute, not relative to the cost scale.

    Example:
        >>> import torch
        >>> res = Sinkhorn(eps=0.1)(torch.full((3,), 1 / 3), torch.full((3,), 1 / 3), torch.rand(3, 3))
        >>> bool(res.converged), round(float(res.plan.sum()), 6)
        (True, 1.0)
    """

    config_keys: ClassVar[tuple[str, ...]] = ("eps", "max_iter", "tol")
    runtime_keys: ClassVar[tuple[str, ...]] = ()
    citation: ClassVar[str] = (
        "@inproceedings{cuturi2013sinkhorn, title={Sinkhorn Distances: Lightspeed Computation of Optimal Transport}, "
        "author={Cuturi, Marco}, booktitle={NeurIPS}, year={2013}}"
    )

    def __init__(self, eps: float = 0.01, max_iter: int = 10_000, tol: float = 1e-9) -> None:
        if eps <= 0:
            raise ValueError(f"`eps` must be > 0, got {eps}.")
        if max_iter < 0 or tol <= 0:
            raise ValueError(f"`max_iter` must be >= 0 and `tol` > 0, got {max_iter}, {tol}.")
        self.eps, self.max_iter, self.tol = float(eps), int(max_iter), float(tol)

    def __call__(self, a: Tensor, b: Tensor, cost: Tensor) -> OTResult:
        return sinkhorn(a, b, cost, self.eps, max_iter=self.max_iter, tol=self.tol)
