"""Regularize a neural ODE with its adaptive solver's own error and stiffness estimates over all accepted steps."""

from __future__ import annotations

import logging
from typing import ClassVar, Literal

import torch
from torch import Tensor

from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.dynamics._rk import STABILITY_SIZE, Method, ODEFunc, RKStats, integrate
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["GlobalSolverRegularizer", "Heuristic", "solve_with_heuristics", "solver_heuristic_penalty"]

Heuristic = Literal["error", "stiffness", "error_stiffness"]


def solve_with_heuristics(func: ODEFunc, y0: Tensor, t0: float = 0.0, t1: float = 1.0, *, rtol: float = 1e-5,
                          atol: float = 1e-5, method: Method = "tsit5") -> tuple[Tensor, RKStats]:
    """Differentiable adaptive solve returning ``y(t1)`` and every accepted step's heuristics (Tsit5 by default)."""
    return integrate(func, y0, t0, t1, rtol=rtol, atol=atol, method=method)


def solver_heuristic_penalty(stats: RKStats, heuristic: Heuristic = "error", method: Method = "tsit5",
                             stiffness_factor: float = 0.1) -> Tensor:
    """The official per-step value, aggregated over the accepted steps in ``stats``.

    ``"error"``: mean_j EEst_j·h_j; ``"stiffness"``: max_j |eigen_est_j| / ρ; ``"error_stiffness"``:
    mean_j (EEst_j·h_j + stiffness_factor·eigen_est_j / ρ), with ρ = ``STABILITY_SIZE[method]``.
    """
    if not stats.errors:
        raise ValueError("`stats` holds no accepted step; solve first with `solve_with_heuristics`.")
    error = torch.stack([e * abs(h) for e, h in zip(stats.errors, stats.steps, strict=True)])
    stiffness = torch.stack(stats.eigen_estimates).abs() / STABILITY_SIZE[method]
    if heuristic == "error":
        return error.mean()
    if heuristic == "stiffness":
        return stiffness.max()
    return (error + stiffness_factor * stiffness).mean()


@register("global_solver_regularizer", kind="loss", seed=18,
          fidelity="official-code",
          verified_by="tests/common_regs/dynamics/test_solver_regularizers.py"
                      "::test_global_penalty_equals_the_official_aggregate_by_hand",
          paper="Pal, Ma, Shah, Rackauckas, Opening the Blackbox: Accelerating Neural Differential Equations by "
                "Regularizing Internal Solver Heuristics, ICML 2021, arXiv:2105.03918")
class GlobalSolverRegularizer(ConfigFromKeys):
    r"""Penalize an adaptive solver's local-error (and/or stiffness) estimates over every accepted step of the solve.

    Adaptive solvers take many steps when the learned dynamics are hard to integrate; these heuristics come for
    free from the forward solve, and minimizing them (gradients through the discrete adjoint) learns dynamics
    that need fewer function evaluations at prediction time.

    Reference:
        Avik Pal, Yingbo Ma, Viral Shah, Christopher Rackauckas, "Opening the Blackbox: Accelerating Neural
        Differential Equations by Regularizing Internal Solver Heuristics", ICML 2021, arXiv:2105.03918. Official
        code ``avik-pal/RegNeuralDE.jl``: ``src/models/neural_ode.jl`` (``TrackedNeuralODE``: a ``SavingCallback``
        stores ``integrator.EEst * integrator.dt`` after every step) and ``experiments/mnist_node.jl`` (``REG_TYPE``
        "error_est": ``λ * mean(saveval)`` with λ annealed 100 → 10, Tsit5; "stiff_est": ``|eigen_est| /
        alg_stability_size(Tsit5)``, aggregated by ``maximum``, λ = 0.1; "error_stiff_est": mean of ``EEst*dt +
        0.1 * eigen_est / alg_stability_size``, λ = 10; reltol = abstol = 1.4e-8). The paper body was not read.

    Math:
        .. math::
            E_j = \mathrm{RMS}\Big(\frac{h_j\sum_i (b_i - \hat b_i)k_i}{\mathrm{atol} + \mathrm{rtol}
            \max(|y_j|, |y_{j+1}|)}\Big),\quad S_j = \frac{\mathrm{RMS}(k_7 - k_6)}{\rho\,
            \mathrm{RMS}(y_{j+1} - y^{(6)}_j)},\quad
            R = \operatorname{mean}_j E_j h_j\ \text{or}\ \max_j S_j\ \text{or}\ \operatorname{mean}_j (E_j h_j +
            0.1\,S_j)

        over the accepted steps j; ρ the stability-region size (Tsit5 3.5068, DP5 3.3066).

    Args:
        heuristic: "error" (official default ``error_est``), "stiffness" or "error_stiffness". Default "error".
        method: the solver whose tableau gives the heuristics, "tsit5" (official) or "dopri5". Default "tsit5".
        stiffness_factor: the weight of S_j inside "error_stiffness". Default 0.1 (official).
        weight: λ used by ``RegHooks``. Default 1.0 (regkit; the official runs anneal 100 → 10 for "error", 0.1 for
            "stiffness", 10 for "error_stiffness").

    Shape:
        Inputs: ``ctx.extras["solver_stats"]``, the :class:`~common_regs.dynamics._rk.RKStats` of the forward solve
        (``solve_with_heuristics`` with the same ``method``).

    Returns:
        Scalar penalty.

    Note:
        Deviations: the step sequence comes from torchdiffeq's I-controller (OrdinaryDiffEq uses a PI controller),
        so the accepted steps differ slightly from Julia's; the official ``SavingCallback`` may also store a 0 at
        t₀ (dt = 0 before the first step), which would enter its mean — regkit averages over accepted steps only.

    Example:
        >>> import torch
        >>> y, stats = solve_with_heuristics(lambda t, y: -y, torch.ones(2, dtype=torch.float64))
        >>> float(solver_heuristic_penalty(stats)) > 0
        True
    """

    config_keys: ClassVar[tuple[str, ...]] = ("heuristic", "method", "stiffness_factor", "weight")
    runtime_keys: ClassVar[tuple[str, ...]] = ()
    citation: ClassVar[str] = (
        "@inproceedings{pal2021opening, title={Opening the Blackbox: Accelerating Neural Differential Equations by "
        "Regularizing Internal Solver Heuristics}, author={Pal, Avik and Ma, Yingbo and Shah, Viral and Rackauckas, "
        "Christopher}, booktitle={ICML}, year={2021}}"
    )

    def __init__(self, heuristic: Heuristic = "error", method: Method = "tsit5", stiffness_factor: float = 0.1,
                 weight: float = 1.0) -> None:
        if heuristic not in ("error", "stiffness", "error_stiffness"):
            raise ValueError(f"`heuristic` must be 'error', 'stiffness' or 'error_stiffness', got {heuristic!r}.")
        if method not in STABILITY_SIZE:
            raise ValueError(f"`method` must be one of {sorted(STABILITY_SIZE)}, got {method!r}.")
        if stiffness_factor < 0:
            raise ValueError(f"`stiffness_factor` must be >= 0, got {stiffness_factor}.")
        self.heuristic: Heuristic = heuristic
        self.method: Method = method
        self.stiffness_factor, self.weight = float(stiffness_factor), weight

    def __call__(self, ctx: TrainContext) -> Tensor:
        stats = ctx.extras.get("solver_stats")
        if not isinstance(stats, RKStats):
            raise ValueError("GlobalSolverRegularizer needs ctx.extras['solver_stats'] from `solve_with_heuristics`.")
        return solver_heuristic_penalty(stats, self.heuristic, self.method, self.stiffness_factor)
