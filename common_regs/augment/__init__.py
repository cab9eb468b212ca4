"""Data augmentation and adversarial/outlier regularizers (family F6): batch transforms and their loss terms."""

from __future__ import annotations

from common_regs.augment.abnormal_adversarial_regularization import AAER, aaer_regularizer, squared_l2_mean
from common_regs.augment.cutmix import CutMix, cutmix_box, mix_labels
from common_regs.augment.sparsity_denoising_mask import SparsityDenoisingMask, sparsify
from common_regs.augment.virtual_outlier_regularization import (
    VirtualOutlierRegularizer,
    energy,
    energy_margin_loss,
    knn_distance,
    synthesize_virtual_outliers,
)

__all__ = [
    "AAER",
    "CutMix",
    "SparsityDenoisingMask",
    "VirtualOutlierRegularizer",
    "aaer_regularizer",
    "cutmix_box",
    "energy",
    "energy_margin_loss",
    "knn_distance",
    "mix_labels",
    "sparsify",
    "squared_l2_mean",
    "synthesize_virtual_outliers",
]
