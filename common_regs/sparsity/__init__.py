"""Sparsity and pruning methods (family F1): mask schedulers, sparsity penalties and post-hoc pruners.

Mask schedulers share :class:`~common_regs.sparsity._masks.MaskSchedulerBase` (mask ownership by parameter FQN via
``torch.nn.utils.parametrize``, optimizer-state zeroing at pruned entries, ``state_dict`` round-trip).
"""

from __future__ import annotations

from common_regs.sparsity._masks import MaskSchedulerBase
from common_regs.sparsity.beta_rank import BetaRank
from common_regs.sparsity.dare import DARE, AdamR
from common_regs.sparsity.dsl import DSL
from common_regs.sparsity.dsnot import DSnoT
from common_regs.sparsity.fire_together_wire_together import FireTogetherWireTogether, FTWTLayer
from common_regs.sparsity.group_envelope_prox import GroupEnvelopeProx
from common_regs.sparsity.iterative_soft_shrinkage import IterativeSoftShrinkage
from common_regs.sparsity.magnitude_pruning import MagnitudePruning
from common_regs.sparsity.mask_sparsity import MaskSparsity
from common_regs.sparsity.nm_sparsity import NMSparsity
from common_regs.sparsity.polarization_regularizer import ConsensusGate, PolarizationRegularizer
from common_regs.sparsity.sara import SaRA
from common_regs.sparsity.sparse_ift import SparseIFT

__all__ = [
    "DARE",
    "DSL",
    "AdamR",
    "BetaRank",
    "ConsensusGate",
    "DSnoT",
    "FTWTLayer",
    "FireTogetherWireTogether",
    "GroupEnvelopeProx",
    "IterativeSoftShrinkage",
    "MagnitudePruning",
    "MaskSchedulerBase",
    "MaskSparsity",
    "NMSparsity",
    "PolarizationRegularizer",
    "SaRA",
    "SparseIFT",
]
