"""Training dynamics and numerics (family F9).

StableMax, ⊥Grad, Hessian alignment, solver-heuristic regularizers for neural ODEs, self-tuning networks, and
double-descent / generalization-dynamics diagnostics.

``_rk`` holds the differentiable Dormand–Prince and Tsit5 steppers shared by both solver-heuristic regularizers.
"""

from __future__ import annotations

from common_regs.dynamics.double_descent import ConditioningMonitor, DoubleDescentDiagnostics
from common_regs.dynamics.generalization_dynamics import LinearGradientFlow
from common_regs.dynamics.global_solver_regularizer import GlobalSolverRegularizer
from common_regs.dynamics.hessian_alignment import HessianAlignment
from common_regs.dynamics.local_solver_regularizer import LocalSolverRegularizer
from common_regs.dynamics.orthogonal_gradient import OrthogonalGradient
from common_regs.dynamics.self_tuning_network import SelfTuningNetwork, STNLinear
from common_regs.dynamics.stablemax_cross_entropy import StableMaxCrossEntropy

__all__ = [
    "ConditioningMonitor",
    "DoubleDescentDiagnostics",
    "GlobalSolverRegularizer",
    "HessianAlignment",
    "LinearGradientFlow",
    "LocalSolverRegularizer",
    "OrthogonalGradient",
    "STNLinear",
    "SelfTuningNetwork",
    "StableMaxCrossEntropy",
]
