"""A differentiable Dormand–Prince 5(4) stepper that exposes the solver's internal heuristics.

torchdiffeq's ``dopri5`` does not expose per-step error or stiffness estimates, so the solver-heuristic
regularizers (Pal et al. 2021, 2023) use this small adaptive integrator: the same tableau, error norm and
step-size controller as torchdiffeq (Hairer's initial step, safety 0.9, factors in [0.2, 10]); backpropagating
through it is the discrete adjoint. Step sizes are controller decisions and are detached.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = ["ODEFunc", "RKStats", "dopri5_step", "initial_step", "integrate", "scaled_rms"]

ODEFunc = Callable[[Tensor, Tensor], Tensor]

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


def scaled_rms(values: Tensor, y0: Tensor, y1: Tensor, rtol: float, atol: float) -> Tensor:
    """``RMS(v / (atol + rtol · max(|y0|, |y1|)))`` (the embedded-RK error norm), differentiable in all three.

    The tolerance scale depends on the states, so it carries gradient too: with it detached, the penalties' autograd
    gradient is not the derivative of the penalty at a fixed step sequence (off by about 1 % on ``y' = -θy³``).
    """
    scale = atol + rtol * torch.maximum(y0.abs(), y1.abs())
    return (values / scale).pow(2).mean().sqrt()


def dopri5_step(func: ODEFunc, t: float, y: Tensor, h: float, k1: Tensor | None = None
                ) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """One DP5(4) step: ``(y_next, error_vector, stiffness, k7, nfe)``.

    ``error_vector = h Σ (b5 − b4)ᵢ kᵢ``; ``stiffness = h ‖k7 − k6‖ / ‖y_next − y6‖`` (Hairer & Wanner's DOPRI5
    stiffness detection, ``y6`` the sixth stage state), which equals ``h·|λ|`` on ``y' = λy``.
    """
    nfe = 0
    if k1 is None:
        k1, nfe = func(torch.as_tensor(t, dtype=y.dtype), y), 1
    ks = [k1]
    stage = y
    for i in range(1, 7):
        stage = y + h * sum(a * k for a, k in zip(_A[i], ks, strict=False) if a != 0.0)
        if i == 5:
            y6 = stage
        ks.append(func(torch.as_tensor(t + _C[i] * h, dtype=y.dtype), stage))
        nfe += 1
    y_next = stage  # row 7 of A equals b5 (first same as last)
    error = h * sum((b5 - b4) * k for b5, b4, k in zip(_B5, _B4, ks, strict=True) if b5 != b4)
    stiffness = abs(h) * (ks[6] - ks[5]).norm() / (y_next - y6).norm().clamp_min(1e-30)
    return y_next, error, stiffness, ks[6], nfe


def initial_step(func: ODEFunc, t0: float, y0: Tensor, f0: Tensor, rtol: float, atol: float) -> tuple[float, int]:
    """Hairer's initial step heuristic (as torchdiffeq ``_select_initial_step``, order 4): ``(h0, nfe)``."""
    with torch.no_grad():
        scale = atol + y0.abs() * rtol
        d0, d1 = float((y0 / scale).pow(2).mean().sqrt()), float((f0 / scale).pow(2).mean().sqrt())
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        f1 = func(torch.as_tensor(t0 + h0, dtype=y0.dtype), y0 + h0 * f0)
        d2 = float(((f1 - f0) / scale).pow(2).mean().sqrt()) / h0
        h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** (1.0 / 5.0)
    return min(100 * h0, h1), 1


@dataclass
class RKStats:
    """Per accepted step: scaled error estimate Eⱼ, step size hⱼ, stiffness Sⱼ, start time tⱼ; plus counters."""

    errors: list[Tensor] = field(default_factory=list)
    steps: list[float] = field(default_factory=list)
    stiffness: list[Tensor] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    nfe: int = 0
    rejected: int = 0

    @property
    def accepted(self) -> int:
        return len(self.steps)


def integrate(func: ODEFunc, y0: Tensor, t0: float, t1: float, *, rtol: float = 1e-5, atol: float = 1e-5,
              max_steps: int = 10_000) -> tuple[Tensor, RKStats]:
    """Adaptive DP5(4) from ``t0`` to ``t1``; returns ``y(t1)`` and the accepted steps' heuristics."""
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
        y_next, error, stiffness, k7, nfe = dopri5_step(func, t, y, h, k1)
        stats.nfe += nfe
        ratio = scaled_rms(error, y, y_next, rtol, atol)
        r = float(ratio.detach())
        if r <= 1.0:
            stats.errors.append(ratio)
            stats.steps.append(h)
            stats.stiffness.append(stiffness)
            stats.times.append(t)
            t, y, k1 = t + h, y_next, k7
        else:
            stats.rejected += 1
        factor = 10.0 if r == 0.0 else min(10.0, max(0.2, 0.9 * r ** (-1.0 / 5.0)))
        h = h * factor
        if not math.isfinite(h) or h <= 0:
            raise RuntimeError(f"integrate: step size became {h} at t={t:.6g}.")
    return y, stats
