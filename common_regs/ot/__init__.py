"""Optimal transport (family F8): entropic solvers (Sinkhorn, SNS), sparsity-constrained OT, the Monge gap.

Solvers are pure functions returning :class:`~common_regs.ot._utils.OTResult`; the Monge gap is a ``LossTerm``.
POT (``pot``) is only a test-time reference; nothing here imports it.
"""

from __future__ import annotations

from common_regs.ot._utils import OTResult
from common_regs.ot.monge_gap import MongeGap
from common_regs.ot.sinkhorn import Sinkhorn
from common_regs.ot.sinkhorn_newton_sparse import SinkhornNewtonSparse
from common_regs.ot.sparsity_constrained_ot import SparsityConstrainedOT

__all__ = ["MongeGap", "OTResult", "Sinkhorn", "SinkhornNewtonSparse", "SparsityConstrainedOT"]
