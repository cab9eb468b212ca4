"""Structure learning and classical optimization (family F11): CoLiDE DAG estimation, greedy BCD rules,
supervised dictionary learning (BCD)."""

from __future__ import annotations

from common_regs.structure.colide import CoLiDE
from common_regs.structure.greedy_bcd import GreedyBCD
from common_regs.structure.supervised_dictionary_learning import SupervisedDictionaryLearning

__all__ = ["CoLiDE", "GreedyBCD", "SupervisedDictionaryLearning"]
