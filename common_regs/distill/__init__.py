"""Distillation and self-distillation (family F3): target providers and the losses that consume them."""

from __future__ import annotations

from common_regs.distill.distill_loss import DistillLoss
from common_regs.distill.dr_tune import DRTune, procrustes_rotation, semantic_calibration
from common_regs.distill.further_pretrain_self_distillation import FurtherPretrainSelfDistillation, hidden_distance
from common_regs.distill.minmax_ensemble_teacher import MinMaxEnsembleTeacher, minmax_ensemble_scores
from common_regs.distill.progressive_self_distillation import ProgressiveSelfDistillation, pskd_alpha, pskd_targets
from common_regs.distill.random_teacher import RandomTeacher, perturbed_copy, ridge_probe_accuracy

__all__ = [
    "DRTune",
    "DistillLoss",
    "FurtherPretrainSelfDistillation",
    "MinMaxEnsembleTeacher",
    "ProgressiveSelfDistillation",
    "RandomTeacher",
    "hidden_distance",
    "minmax_ensemble_scores",
    "perturbed_copy",
    "procrustes_rotation",
    "pskd_alpha",
    "pskd_targets",
    "ridge_probe_accuracy",
    "semantic_calibration",
]
