"""Structure learning and classical optimization (family F11): CoLiDE DAG estimation and greedy BCD rules."""

from __future__ import annotations

from common_regs.structure.colide import CoLiDE
from common_regs.structure.greedy_bcd import GreedyBCD

__all__ = ["CoLiDE", "GreedyBCD"]
