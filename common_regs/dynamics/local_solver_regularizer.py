"""Locally regularized neural ODEs: the solver's error (or stiffness) estimate of one step at a sampled time."""

from __future__ import annotations

import logging
from typing import ClassVar, Literal

import torch
from torch import Tensor

from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.dynamics._rk import STABILITY_SIZE, Method, ODEFunc, initial_step, integrate, rk_step, scaled_rms
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["LocalSolverRegularizer", "local_error_penalty", "local_heuristic", "sample_step", "sample_time",
           "time_grid"]


def sample_time(t0: float, t1: float, generator: torch.Generator | None = None) -> float:
    """The official "unbiased" strategy: ``t_j ~ U(t0, t1)`` (``rand() * (t2 - t0) + t0``)."""
    return t0 + float(torch.rand((), generator=generator, dtype=torch.float64)) * (t1 - t0)


@torch.no_grad()
def sample_step(func: ODEFunc, y0: Tensor, t0: float, t1: float, *, rtol: float = 1.4e-8, atol: float = 1.4e-8,
                generator: torch.Generator | None = None, method: Method = "tsit5") -> tuple[float, float, int]:
    """The official "biased" strategy: solve without autograd, draw one accepted step's start uniformly.

    Returns ``(t_j, h_j, nfe)``; the official code draws ``t_j`` from ``sol.t[1:end-1]``, the start times of the
    accepted steps.
    """
    _, stats = integrate(func, y0.detach(), t0, t1, rtol=rtol, atol=atol, method=method)
    j = int(torch.randint(stats.accepted, (1,), generator=generator))
    return stats.times[j], stats.steps[j], stats.nfe


def time_grid(t0: float, t_j: float, t1: float, *, dtype: torch.dtype = torch.float64) -> tuple[Tensor, int]:
    """Times for the solve that supplies ``y(t_j)`` and ``y(t1)``: ``(times, index of t_j)``.

    The first accepted step starts at ``t0``, so :func:`sample_step` draws ``t_j = t0`` once in ``accepted`` draws
    on average; ``torchdiffeq.odeint`` rejects a repeated time, so then the grid is ``[t0, t1]`` and ``y(t_j)`` is
    its first entry (the initial state).
    """
    if not t0 <= t_j < t1:
        raise ValueError(f"`t_j` must be in [t0, t1) = [{t0}, {t1}), got {t_j}.")
    if t_j == t0:
        return torch.tensor([t0, t1], dtype=dtype), 0
    return torch.tensor([t0, t_j, t1], dtype=dtype), 1


def local_error_penalty(func: ODEFunc, t: float, y: Tensor, h: float, *, rtol: float = 1.4e-8,
                        atol: float = 1.4e-8, method: Method = "tsit5", k1: Tensor | None = None) -> Tensor:
    """``EEst(t, y, h)·|h|``: the scaled embedded-error norm of one step from ``y`` times the step size."""
    y_next, error, _, _, _ = rk_step(func, t, y, h, k1, method)
    return scaled_rms(error, y, y_next, rtol, atol) * abs(h)


def local_heuristic(func: ODEFunc, t: float, y: Tensor, t_end: float, *, heuristic: Literal["error", "stiffness"] =
                    "error", rtol: float = 1.4e-8, atol: float = 1.4e-8, method: Method = "tsit5") -> Tensor:
    """The official regularization value of one step started at ``(t, y(t))`` on ``[t, t_end]``.

    As ``LocalRegNeuralDE.jl``: a fresh integrator is initialised at the state (not differentiated: ``y`` and the
    first stage ``k1 = f(t, y)`` are constants), its step size is the solver's automatic initial step (Hairer's
    heuristic, capped at ``t_end − t``), and one step is taken; the gradient reaches the parameters of ``func``
    through stages 2–7. ``"error"``: ``EEst·h``; ``"stiffness"``: ``RMS(k7 − k6)/RMS(y7 − y6)/ρ``. Not reproduced:
    OrdinaryDiffEq's shortcut ``h = 100·h_probe`` when the probe derivative equals ``k1`` exactly (degenerate fields).
    """
    if not t < t_end:
        raise ValueError(f"`t` must be < `t_end`, got t={t}, t_end={t_end}.")
    y = y.detach()
    with torch.no_grad():
        k1 = func(torch.as_tensor(t, dtype=y.dtype), y)
        h, _ = initial_step(func, t, y, k1, rtol, atol, dtmax=t_end - t)
    if heuristic == "error":
        return local_error_penalty(func, t, y, h, rtol=rtol, atol=atol, method=method, k1=k1)
    _, _, eigen_est, _, _ = rk_step(func, t, y, h, k1, method)
    return eigen_est.abs() / STABILITY_SIZE[method]


@register("local_solver_regularizer", kind="loss", seed=2,
          fidelity="official-code",
          verified_by="tests/common_regs/dynamics/test_solver_regularizers.py"
                      "::test_local_heuristic_equals_the_official_step_by_hand",
          paper="Pal, Edelman, Rackauckas, Locally Regularized Neural Differential Equations: Some Black Boxes Were "
                "Meant to Remain Closed!, ICML 2023, arXiv:2303.02262")
class LocalSolverRegularizer(ConfigFromKeys):
    r"""Solver-heuristic regularization at one randomly sampled time, usable with any ODE solver and sensitivity.

    Instead of differentiating every step of the solve (global regularization), sample a time t_j, take the state
    y(t_j) from any solve (e.g. ``torchdiffeq.odeint(f, y0, times)[index]`` with ``times, index = time_grid(t0, t_j,
    t1)``), start a fresh integrator there and penalize the error (or stiffness) estimate of its first step; the
    cost is one step of extra work and the state is not differentiated, so any adjoint works.

    Reference:
        Avik Pal, Alan Edelman, Christopher Rackauckas, "Locally Regularized Neural Differential Equations: Some
        Black Boxes Were Meant to Remain Closed!", ICML 2023, arXiv:2303.02262. Official code
        ``avik-pal/LocalRegNeuralDE.jl``: ``src/layers/neural_ode.jl`` (``NeuralODE{:unbiased}``: t₁ = rand·(t₂ −
        t₀) + t₀, the default; ``NeuralODE{:biased}``: t₁ drawn from ``sol.t[1:end-1]``; ``_get_ode_integrator``
        builds a non-differentiable Tsit5 integrator at ``sol(t₁)`` on (t₁, t₂)), ``src/perform_step.jl``
        (``_perform_step`` for ``Tsit5ConstantCache``, ``_compute_regularization_value``: ``EEst * dt`` or
        ``RMS(k7 − k6) / (RMS(g7 − g6) + eps) / 3.5068``) and ``experiments`` (loss ``task + w_reg * reg_val``,
        w_reg 2.5 → 1 exponentially for the error estimate, 0.1 for the stiffness estimate, reltol = abstol =
        1.4e-8). The paper body was not read.

    Math:
        .. math::
            R = E(t_j, y(t_j), h_0)\,h_0\ \ \text{or}\ \ \frac{\mathrm{RMS}(k_7 - k_6)}{\rho\,\mathrm{RMS}(y_7 -
            y_6)},\quad t_j\sim\mathcal U(t_0, t_1)\ \text{(unbiased)}\ \text{or}\ \mathcal U\{\text{accepted
            step starts}\}\ \text{(biased)}

        with E the scaled Tsitouras 5(4) error norm of one step, h₀ the automatic initial step at (t_j, y(t_j))
        capped at t₁ − t_j, ρ = 3.5068; the mean over the samples given (the official code uses one per batch).

    Args:
        heuristic: "error" (official ``:error_estimate``, the default) or "stiffness". Default "error".
        strategy: how :meth:`sample` draws t_j, "unbiased" (official default) or "biased". Default "unbiased".
        method: tableau of the regularization step, "tsit5" (official) or "dopri5". Default "tsit5".
        rtol: relative tolerance of the error norm and the initial step. Default 1.4e-8 (official experiments).
        atol: absolute tolerance of the error norm and the initial step. Default 1.4e-8 (official experiments).
        weight: coefficient λ used by ``RegHooks``. Default 1.0 (regkit; the official runs anneal 2.5 → 1).

    Shape:
        Inputs: ``ctx.extras["ode_func"]`` (callable ``f(t, y)``), ``ctx.extras["ode_samples"]``, a list of
        ``(t_j, y(t_j))``, and ``ctx.extras["ode_t_end"]``, the end of the integration interval.

    Returns:
        Scalar penalty.

    Note:
        Deviation: the "biased" draws come from regkit's integrator (torchdiffeq's I-controller), not
        OrdinaryDiffEq's PI controller, so the accepted steps differ slightly from Julia's.

    Example:
        >>> import torch
        >>> f = lambda t, y: -2.0 * y
        >>> term = LocalSolverRegularizer()
        >>> t = term.sample(f, torch.ones(2, dtype=torch.float64), 0.0, 1.0, torch.Generator().manual_seed(0))
        >>> y_t = torch.exp(torch.tensor(-2.0 * t, dtype=torch.float64)).expand(2)
        >>> float(local_heuristic(f, t, y_t, 1.0)) >= 0
        True
    """

    config_keys: ClassVar[tuple[str, ...]] = ("heuristic", "strategy", "method", "rtol", "atol", "weight")
    runtime_keys: ClassVar[tuple[str, ...]] = ()
    citation: ClassVar[str] = (
        "@inproceedings{pal2023locally, title={Locally Regularized Neural Differential Equations: Some Black Boxes "
        "Were Meant to Remain Closed!}, author={Pal, Avik and Edelman, Alan and Rackauckas, Christopher}, "
        "booktitle={ICML}, year={2023}}"
    )

    def __init__(self, heuristic: Literal["error", "stiffness"] = "error",
                 strategy: Literal["unbiased", "biased"] = "unbiased", method: Method = "tsit5",
                 rtol: float = 1.4e-8, atol: float = 1.4e-8, weight: float = 1.0) -> None:
        if heuristic not in ("error", "stiffness"):
            raise ValueError(f"`heuristic` must be 'error' or 'stiffness', got {heuristic!r}.")
        if strategy not in ("unbiased", "biased"):
            raise ValueError(f"`strategy` must be 'unbiased' or 'biased', got {strategy!r}.")
        if method not in STABILITY_SIZE:
            raise ValueError(f"`method` must be one of {sorted(STABILITY_SIZE)}, got {method!r}.")
        if rtol <= 0 or atol <= 0:
            raise ValueError(f"`rtol` and `atol` must be > 0, got {rtol}, {atol}.")
        self.heuristic: Literal["error", "stiffness"] = heuristic
        self.strategy: Literal["unbiased", "biased"] = strategy
        self.method: Method = method
        self.rtol, self.atol, self.weight = float(rtol), float(atol), weight

    def sample(self, func: ODEFunc, y0: Tensor, t0: float, t1: float,
               generator: torch.Generator | None = None) -> float:
        """Draw t_j by ``strategy`` ("biased" runs a no-grad solve of ``func`` from ``y0``)."""
        if self.strategy == "unbiased":
            return sample_time(t0, t1, generator)
        return sample_step(func, y0, t0, t1, rtol=self.rtol, atol=self.atol, generator=generator,
                           method=self.method)[0]

    def __call__(self, ctx: TrainContext) -> Tensor:
        e = ctx.extras
        func, samples, t_end = e.get("ode_func"), e.get("ode_samples"), e.get("ode_t_end")
        if func is None or not samples or t_end is None:
            raise ValueError("LocalSolverRegularizer needs ctx.extras['ode_func'], ['ode_samples'] (a list of "
                             "(t_j, y(t_j))) and ['ode_t_end'].")
        terms = [local_heuristic(func, t, y, float(t_end), heuristic=self.heuristic, rtol=self.rtol, atol=self.atol,
                                 method=self.method) for t, y in samples]
        return torch.stack(terms).mean()
