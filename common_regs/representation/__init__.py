"""Representation regularizers and diagnostics (family F7): SSL losses, neural-collapse tools, filter design."""

from __future__ import annotations

from common_regs.representation.filter_design import FilterInit, dct_bank, gabor_bank, receptive_field
from common_regs.representation.intrinsic_normal_prototypes import (
    IntrinsicNormalPrototypes,
    inp_coherence_loss,
    scale_gradient,
    soft_mining_loss,
)
from common_regs.representation.msb_reg import MSBReg, brownian_loss, multiview_centroid_loss, singular_value_loss
from common_regs.representation.neural_collapse import NeuralCollapseMonitor, neural_collapse_metrics
from common_regs.representation.t_jepa import (
    TJEPA,
    RegularizationTokens,
    ema_momentum,
    ema_update,
    feature_masks,
    jepa_loss,
)
from common_regs.representation.vicinity_ufm import (
    VicinityUFM,
    collapsed_ufm_minimizer,
    ufm_features_step,
    ufm_objective,
    ufm_weights_step,
)

__all__ = [
    "TJEPA",
    "FilterInit",
    "IntrinsicNormalPrototypes",
    "MSBReg",
    "NeuralCollapseMonitor",
    "RegularizationTokens",
    "VicinityUFM",
    "brownian_loss",
    "collapsed_ufm_minimizer",
    "dct_bank",
    "ema_momentum",
    "ema_update",
    "feature_masks",
    "gabor_bank",
    "inp_coherence_loss",
    "jepa_loss",
    "multiview_centroid_loss",
    "neural_collapse_metrics",
    "receptive_field",
    "scale_gradient",
    "singular_value_loss",
    "soft_mining_loss",
    "ufm_features_step",
    "ufm_objective",
    "ufm_weights_step",
]
