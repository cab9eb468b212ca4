"""Differentiable Dormand–Prince 5(4) and Tsitouras 5(4) steppers that expose the solver's internal heuristics.

torchdiffeq's ``dopri5`` does not expose per-step error or stiffness estimates, so the solver-heuristic
regularizers (Pal et al. 2021, 2023) use this small adaptive integrator: torchdiffeq's error norm and step-size
controller (Hairer's initial step, safety 0.9, factors in [0.2, 10]) with either tableau — DP5 (torchdiffeq's
default) or Tsit5 (the authors' solver in OrdinaryDiffEq.jl); backpropagating through it is the discrete adjoint.
Step sizes are controller decisions and are detached. The per-step heuristics are OrdinaryDiffEq's: ``EEst``, the
scaled RMS of the embedded error, and ``eigen_est`` = RMS(k₇ − k₆) / RMS(y₇ − y₆) (Hairer & Wanner II, p. 22).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = ["STABILITY_SIZE", "Method", "ODEFunc", "RKStats", "dopri5_step", "initial_step", "integrate", "rk_step",
           "scaled_rms"]

ODEFunc = Callable[[Tensor, Tensor], Tensor]
Method = Literal["dopri5", "tsit5"]

_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
# Tsitouras (2011), Table 1, as in OrdinaryDiffEq's Tsit5 tableau: the last row of A is b (first same as last); the
# error weights are b − b̂ (the paper lists b̂ − b with the sign of the last entry flipped; the norm ignores the sign).
_TS_C = (0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0)
_TS_B = (0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742, -3.290069515436081, 2.324710524099774,
         0.0)
_TS_A = (
    (),
    (0.161,),
    (-0.008480655492356989, 0.335480655492357),
    (2.897153057105493, -6.359448489975075, 4.3622954328695815),
    (5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525),
    (5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401, -0.028269050394068383),
    _TS_B[:6],
)
_TS_E = (-0.00178001105222577714, -0.0008164344596567469, 0.007880878010261995, -0.1447110071732629,
         0.5823571654525552, -0.45808210592918697, 0.015151515151515152)
_TABLEAUS = {
    "dopri5": (_C, _A, tuple(b5 - b4 for b5, b4 in zip(_B5, _B4, strict=True))),
    "tsit5": (_TS_C, _TS_A, _TS_E),
}
# OrdinaryDiffEq ``alg_stability_size``: the real-axis extent of each method's stability region
STABILITY_SIZE: dict[str, float] = {"dopri5": 3.3066, "tsit5": 3.5068}


def scaled_rms(values: Tensor, y0: Tensor, y1: Tensor, rtol: float, atol: float) -> Tensor:
    """``RMS(v / (atol + rtol · max(|y0|, |y1|)))`` (the embedded-RK error norm), differentiable in all three.

    The tolerance scale depends on the states, so it carries gradient too: with it detached, the penalties' autograd
    gradient is not the derivative of the penalty at a fixed step sequence (off by about 1 % on ``y' = -θy³``).
    """
    scale = atol + rtol * torch.maximum(y0.abs(), y1.abs())
    return (values / scale).pow(2).mean().sqrt()


def rk_step(func: ODEFunc, t: float, y: Tensor, h: float, k1: Tensor | None = None, method: Method = "dopri5"
            ) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """One explicit 5(4) FSAL step: ``(y_next, error_vector, eigen_est, k7, nfe)``.

    ``error_vector = h Σ (b − b̂)ᵢ kᵢ``; ``eigen_est = RMS(k7 − k6) / RMS(y_next − y6)`` (``y6`` the sixth stage
    state, both stages at t + h), OrdinaryDiffEq's stiffness estimate |λ| (0 when ``y_next = y6``), so ``h·eigen_est``
    equals ``h|λ|`` on ``y' = λy``.
    """
    c, a, e = _TABLEAUS[method]
    nfe = 0
    if k1 is None:
        k1, nfe = func(torch.as_tensor(t, dtype=y.dtype), y), 1
    ks = [k1]
    stage = y
    for i in range(1, 7):
        stage = y + h * sum(aij * k for aij, k in zip(a[i], ks, strict=False) if aij != 0.0)
        if i == 5:
            y6 = stage
        ks.append(func(torch.as_tensor(t + c[i] * h, dtype=y.dtype), stage))
        nfe += 1
    y_next = stage  # the last row of A is b (first same as last)
    error = h * sum(ei * k for ei, k in zip(e, ks, strict=True) if ei != 0.0)
    denominator = (y_next - y6).norm()
    eigen_est = torch.where(denominator > 0, (ks[6] - ks[5]).norm() / denominator.clamp_min(1e-300),
                            torch.zeros_like(denominator))
    return y_next, error, eigen_est, ks[6], nfe


def dopri5_step(func: ODEFunc, t: float, y: Tensor, h: float, k1: Tensor | None = None
                ) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """:func:`rk_step` with the Dormand–Prince tableau (torchdiffeq's ``dopri5``)."""
    return rk_step(func, t, y, h, k1, "dopri5")


def initial_step(func: ODEFunc, t0: float, y0: Tensor, f0: Tensor, rtol: float, atol: float,
                 dtmax: float = math.inf) -> tuple[float, int]:
    """Hairer's initial step heuristic: ``(h0, nfe)``.

    As torchdiffeq ``_select_initial_step`` (order 4, exponent 1/5) and OrdinaryDiffEq ``ode_determine_initdt``
    for Tsit5 (``10^(−(2 + log10 max(d1, d2))/5)``, the same number), which also caps the probe step and the result
    at ``dtmax`` (default: no cap, as torchdiffeq).
    """
    with torch.no_grad():
        scale = atol + y0.abs() * rtol
        d0, d1 = float((y0 / scale).pow(2).mean().sqrt()), float((f0 / scale).pow(2).mean().sqrt())
        h0 = min(1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1, dtmax)
        f1 = func(torch.as_tensor(t0 + h0, dtype=y0.dtype), y0 + h0 * f0)
        d2 = float(((f1 - f0) / scale).pow(2).mean().sqrt()) / h0
        h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** (1.0 / 5.0)
    return min(100 * h0, h1, dtmax), 1


@dataclass
class RKStats:
    """Per accepted step: scaled error estimate Eⱼ (``EEst``), step size hⱼ, ``eigen_est``, start time tⱼ; counters."""

    errors: list[Tensor] = field(default_factory=list)
    steps: list[float] = field(default_factory=list)
    eigen_estimates: list[Tensor] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    nfe: int = 0
    rejected: int = 0

    @property
    def accepted(self) -> int:
        return len(self.steps)


def integrate(func: ODEFunc, y0: Tensor, t0: float, t1: float, *, rtol: float = 1e-5, atol: float = 1e-5,
              max_steps: int = 10_000, method: Method = "dopri5") -> tuple[Tensor, RKStats]:
    """Adaptive 5(4) solve from ``t0`` to ``t1``; returns ``y(t1)`` and the accepted steps' heuristics."""
    if t1 <= t0:
        raise ValueError(f"`t1` must be > `t0`, got t0={t0}, t1={t1}.")
    stats = RKStats()
    f0 = func(torch.as_tensor(t0, dtype=y0.dtype), y0)
    h, extra = initial_step(func, t0, y0, f0, rtol, atol)
    stats.nfe = 1 + extra
    t, y, k1 = t0, y0, f0
    while t < t1 - 1e-12 * max(1.0, abs(t1)):
        if stats.accepted + stats.rejected >= max_steps:
            raise RuntimeError(f"integrate: exceeded `max_steps`={max_steps} at t={t:.6g} (h={h:.3g}).")
        h = min(h, t1 - t)
        y_next, error, eigen_est, k7, nfe = rk_step(func, t, y, h, k1, method)
        stats.nfe += nfe
        ratio = scaled_rms(error, y, y_next, rtol, atol)
        r = float(ratio.detach())
        if r <= 1.0:
            stats.errors.append(ratio)
            stats.steps.append(h)
            stats.eigen_estimates.append(eigen_est)
            stats.times.append(t)
            t, y, k1 = t + h, y_next, k7
        else:
            stats.rejected += 1
        factor = 10.0 if r == 0.0 else min(10.0, max(0.2, 0.9 * r ** (-1.0 / 5.0)))
        h = h * factor
        if not math.isfinite(h) or h <= 0:
            raise RuntimeError(f"integrate: step size became {h} at t={t:.6g}.")
    return y, stats
