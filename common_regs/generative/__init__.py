"""Generative-model regularizers and sampler policies (family F10), small-scale faithful versions.

Implemented: generalized-Gaussian prior (#12), cross initialization anchor (#53), adapt-then-unlearn repulsion
(#13), Smooth Diffusion step-wise variation (#63), adaptive guidance (#43), MISF kernel-prediction filter (#65),
RED-diff (#38), bad-noise minimax (#59), MEE manifold entropy (#11),
GIFD gradient-inversion attack (#26, for testing privacy defenses), OReX gradient hinge (#27).
The anchor-type terms share ``_utils.squared_distance``.
"""

from __future__ import annotations

from common_regs.generative.adapt_then_unlearn import AdaptThenUnlearnRepulsion
from common_regs.generative.adaptive_guidance import AdaptiveGuidance, AdaptiveGuidanceDenoiser
from common_regs.generative.bad_noise_minimax import BadNoiseMinimax
from common_regs.generative.cross_initialization import CrossInitialization
from common_regs.generative.generalized_gaussian_prior import GeneralizedGaussianPrior
from common_regs.generative.gifd_attack import GIFDAttack
from common_regs.generative.kernel_prediction_filter import KernelPredictionFilter
from common_regs.generative.manifold_entropy import ManifoldEntropy
from common_regs.generative.orex_gradient_hinge import OReXGradientHinge
from common_regs.generative.red_diff import REDDiff
from common_regs.generative.step_variation_regularizer import StepVariationRegularizer

__all__ = [
    "AdaptThenUnlearnRepulsion",
    "AdaptiveGuidance",
    "AdaptiveGuidanceDenoiser",
    "BadNoiseMinimax",
    "CrossInitialization",
    "GIFDAttack",
    "GeneralizedGaussianPrior",
    "KernelPredictionFilter",
    "ManifoldEntropy",
    "OReXGradientHinge",
    "REDDiff",
    "StepVariationRegularizer",
]
