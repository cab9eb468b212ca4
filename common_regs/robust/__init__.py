"""Noisy labels and robust targets (family F4): per-sample-state loss terms, sample selection, noise policies."""

from __future__ import annotations

from common_regs.robust.co_teaching import CoTeaching, co_teaching_forget_rate, small_loss_indices
from common_regs.robust.conr import ConR, conr_loss
from common_regs.robust.early_learning_regularization import EarlyLearningRegularization, elr_penalty
from common_regs.robust.eata import EATA, configure_norm_adaptation, eata_selection, fisher_diagonal, softmax_entropy
from common_regs.robust.nested_dropout import NestedDropout, best_prefix
from common_regs.robust.policy_gradient_noise_mask import PolicyNoiseMask, reinforce_loss

__all__ = [
    "EATA",
    "CoTeaching",
    "ConR",
    "EarlyLearningRegularization",
    "NestedDropout",
    "PolicyNoiseMask",
    "best_prefix",
    "co_teaching_forget_rate",
    "configure_norm_adaptation",
    "conr_loss",
    "eata_selection",
    "elr_penalty",
    "fisher_diagonal",
    "reinforce_loss",
    "small_loss_indices",
    "softmax_entropy",
]
