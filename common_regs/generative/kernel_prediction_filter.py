"""MISF-style per-pixel kernel-prediction filtering (image branch of Multi-level Interactive Siamese Filtering)."""

from __future__ import annotations

import logging
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common_regs.api import ConfigFromKeys
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["KernelPredictionFilter", "per_pixel_filter"]


def per_pixel_filter(image: Tensor, kernels: Tensor, kernel_size: int) -> Tensor:
    """``ŷ_p = Σ_{q ∈ N_k(p)} K_p(q) x_q`` per channel: image (B, C, H, W), kernels (B, k², H, W)."""
    b, c, h, w = image.shape
    if kernels.shape != (b, kernel_size * kernel_size, h, w):
        expected = (b, kernel_size * kernel_size, h, w)
        raise ValueError(f"`kernels` must have shape {expected}, got {tuple(kernels.shape)}.")
    patches = F.unfold(image, kernel_size, padding=kernel_size // 2).view(b, c, kernel_size * kernel_size, h, w)
    return (patches * kernels[:, None]).sum(2)


@register("kernel_prediction_filter", kind="solver", seed=65,
          fidelity="reconstruction",
          verified_by="tests/common_regs/generative/test_generative.py::test_kernel_prediction_filter_invariants",
          paper="Li, Guo, Lin, Ouyang, Zhang, Wang, Lin, MISF: Multi-level Interactive Siamese Filtering for High-"
                "Fidelity Image Inpainting, CVPR 2022, arXiv:2203.06304")
class KernelPredictionFilter(ConfigFromKeys, nn.Module):
    r"""Predict a normalized k×k kernel per pixel from features and filter the image with it.

    MISF's image-level branch fills holes by predictive filtering: a small network predicts, for every pixel, a
    kernel that mixes its neighbourhood. It is an architecture op, not a regularizer; registered as a ``solver``
    (pure tensor op) because none of the eight hook kinds fits.

    Reference:
        Xiaoguang Li, Qing Guo, Di Lin, Ping Li, Wei Feng, Song Wang, "MISF: Multi-level Interactive Siamese
        Filtering for High-Fidelity Image Inpainting", CVPR 2022, arXiv:2203.06304 (§3.2; authors recalled).
        Equation unconfirmed beyond the standard predictive-filtering form below; the kernel softmax is a regkit
        choice.

    Math:
        .. math::
            K_p = \mathrm{softmax}(g_\theta(f)_p),\qquad \hat y_p = \sum_{q\in N_k(p)} K_p(q)\,x_q

    Args:
        feature_channels: channels of the guiding feature map f. Default 16 (regkit toy).
        kernel_size: k (odd). Default 3 (MISF uses 3×3 at the image level, recalled).
        normalize: softmax-normalize kernels (preserves constant images). Default True (regkit).

    Shape:
        image (B, C, H, W), features (B, F, H, W) → (B, C, H, W).

    Returns:
        The filtered image.

    Note:
        Zero padding at borders: with normalized kernels a constant image is preserved only in the interior.

    Example:
        >>> import torch
        >>> layer = KernelPredictionFilter(feature_channels=4)
        >>> layer(torch.ones(1, 3, 5, 5), torch.randn(1, 4, 5, 5)).shape
        torch.Size([1, 3, 5, 5])
    """

    config_keys: ClassVar[tuple[str, ...]] = ("feature_channels", "kernel_size", "normalize")
    runtime_keys: ClassVar[tuple[str, ...]] = ()
    citation: ClassVar[str] = (
        "@inproceedings{li2022misf, title={MISF: Multi-level Interactive Siamese Filtering for High-Fidelity Image "
        "Inpainting}, author={Li, Xiaoguang and others}, booktitle={CVPR}, year={2022}}"
    )

    def __init__(self, feature_channels: int = 16, kernel_size: int = 3, normalize: bool = True) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be a positive odd integer, got {kernel_size}.")
        self.feature_channels, self.kernel_size, self.normalize = feature_channels, kernel_size, normalize
        self.predictor = nn.Conv2d(feature_channels, kernel_size * kernel_size, 3, padding=1)

    def forward(self, image: Tensor, features: Tensor) -> Tensor:
        logits = self.predictor(features)
        kernels = torch.softmax(logits, dim=1) if self.normalize else logits
        return per_pixel_filter(image, kernels, self.kernel_size)
