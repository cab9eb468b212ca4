"""Low-rank, SVD and weight reparametrizations (``Reparam`` hook kind) and their regularizers."""

from __future__ import annotations

from common_regs.lowrank.maestro import Maestro
from common_regs.lowrank.pela import PELA
from common_regs.lowrank.regularized_mask_tuning import RegularizedMaskTuning
from common_regs.lowrank.sorsa import SORSA
from common_regs.lowrank.sorsa_orthonormal_penalty import SorsaOrthonormalPenalty
from common_regs.lowrank.svfit import SVFit
from common_regs.lowrank.weight_compander import WeightCompander

__all__ = ["PELA", "SORSA", "Maestro", "RegularizedMaskTuning", "SVFit", "SorsaOrthonormalPenalty", "WeightCompander"]
