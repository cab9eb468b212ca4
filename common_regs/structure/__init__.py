"""Structure learning and classical optimization (family F11).

CoLiDE DAG estimation, greedy BCD rules, supervised dictionary learning (BCD), DGNO weak-form physics residuals.
"""

from __future__ import annotations

from common_regs.structure.colide import CoLiDE
from common_regs.structure.greedy_bcd import GreedyBCD
from common_regs.structure.supervised_dictionary_learning import SupervisedDictionaryLearning
from common_regs.structure.weak_form_residual import WeakFormResidual

__all__ = ["CoLiDE", "GreedyBCD", "SupervisedDictionaryLearning", "WeakFormResidual"]
