"""MISF per-pixel kernel-prediction filtering (the filtering op of Multi-level Interactive Siamese Filtering)."""

from __future__ import annotations

import logging
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common_regs.api import ConfigFromKeys
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["KernelPredictionFilter", "expand_kernel_groups", "per_pixel_filter"]


def per_pixel_filter(x: Tensor, kernels: Tensor, kernel_size: int) -> Tensor:
    """MISF ``KernelConv``: ``y[b,c,h,w] = Σ_{i,j} K[b, c·k² + i·k + j, h, w] · x₀[b, c, h+i−⌊k/2⌋, w+j−⌊k/2⌋]``.

    One k×k kernel per pixel *and* channel, zero padding (x₀ = 0 outside the map), no normalisation.

    Args:
        x: map to filter, (B, C, H, W).
        kernels: raw kernels, (B, C·k², H, W), channel-major (channel c owns kernel channels c·k² … c·k² + k² − 1,
            tap index i·k + j with i the row offset).
        kernel_size: k (odd).

    Returns:
        The filtered map, (B, C, H, W).
    """
    b, c, h, w = x.shape
    taps = kernel_size * kernel_size
    if kernels.shape != (b, c * taps, h, w):
        raise ValueError(f"`kernels` must have shape {(b, c * taps, h, w)}, got {tuple(kernels.shape)}.")
    # unfold orders its rows (channel, row offset, column offset): the official shifted-view stack, row-major.
    patches = F.unfold(x, kernel_size, padding=kernel_size // 2).view(b, c, taps, h, w)
    return (patches * kernels.view(b, c, taps, h, w)).sum(2)


def expand_kernel_groups(kernels: Tensor, channels: int, kernel_size: int) -> Tensor:
    """Stretch G·k² predicted kernel channels to C·k², as MISF's semantic level does: row o copies row ⌊o·G/C⌋.

    This is the exact integer form of the official nearest-neighbour ``F.interpolate`` along the kernel-channel
    axis (``KPN.forward``), which it uses to turn G = 64 kernel groups into kernels for 256 feature channels. The
    index runs over the flattened (channel, tap) axis, so for C/G > 1 consecutive flattened rows repeat and a
    channel's k² taps come from neighbouring predicted rows, not from one group's kernel.

    Args:
        kernels: (B, G·k², h, w).
        channels: C, channels of the map to filter.
        kernel_size: k.

    Returns:
        (B, C·k², h, w).
    """
    taps = kernel_size * kernel_size
    n_in, n_out = kernels.shape[1], channels * taps
    if n_in % taps:
        raise ValueError(f"`kernels` must have a multiple of k² = {taps} channels, got {n_in}.")
    source = torch.arange(n_out, device=kernels.device) * n_in // n_out
    return kernels[:, source]


@register("kernel_prediction_filter", kind="solver", seed=65,
          fidelity="official-code",
          verified_by="tests/common_regs/generative/test_kernel_prediction_filter.py",
          paper="Li, Guo, Lin, Li, Feng, Wang, MISF: Multi-level Interactive Siamese Filtering for High-Fidelity "
                "Image Inpainting, CVPR 2022, arXiv:2203.06304")
class KernelPredictionFilter(ConfigFromKeys, nn.Module):
    r"""Predict a raw k×k kernel per pixel and channel with a 1×1 convolution, then filter the map with it.

    MISF fills holes by predictive filtering at two levels: the kernel prediction branch turns features into
    per-pixel kernels, and the semantic & image filtering branch applies them to the encoder's deep features
    (semantic level) and to the decoder's RGB output (image level). This is that op; it is an architecture piece,
    not a regularizer, registered as a ``solver`` (pure tensor op) because none of the eight hook kinds fits.

    Reference:
        Xiaoguang Li, Qing Guo, Di Lin, Ping Li, Wei Feng, Song Wang, "MISF: Multi-level Interactive Siamese
        Filtering for High-Fidelity Image Inpainting", CVPR 2022, arXiv:2203.06304. Checked against the official
        code github.com/tsingqguo/misf:

        - ``kpn/network.py`` ``KernelConv.forward`` (``kernel_size=[3]``, ``sep_conv=False``,
          ``core_bias=False``, ``rate=1``, ``white_level=1.0``): zero-pad by ⌊k/2⌋, stack the k² shifted views
          (index i·k + j), multiply by the kernels and sum; a (B, C, H, W) input makes the kernels a
          (B, C, k², 1, H, W) view, i.e. one kernel per channel, channel-major. No softmax, no bias.
        - ``kpn/network.py`` ``KPN.forward``: image-level kernels ``core_img = Conv2d(64, 3·k², 1)`` on full-
          resolution features; semantic-level kernels ``Conv2d(256, G·k², 1)`` on ¼-resolution features with
          G = ``int(FILTER_TYPE)`` = 64 (``checkpoints/config.yml``), stretched to 256·k² channels by
          ``F.interpolate(..., mode='nearest')`` (:func:`expand_kernel_groups`).
        - ``src/networks.py`` ``InpaintGenerator.forward``: semantic filtering of ``encoder2``'s 256-channel output,
          image filtering of the decoder's 3-channel output; ``init_weights`` draws every conv weight from
          N(0, 0.02²) with zero bias (also applied to the kernel predictor).
        - ``kpn/config.py``: ``kernel_size`` default [3].

        The rest of MISF (the KPN U-Net that produces the features, the generator, losses and discriminator) is
        out of scope: ``features`` is whatever guiding map the caller supplies.

    Math:
        .. math::
            K = W * f + b\ (1\times1\ \text{conv}),\qquad
            y_{c,p} = \sum_{i,j=0}^{k-1} K_{c k^2 + i k + j,\,p}\; x_{c,\,p + (i - \lfloor k/2\rfloor,\,
            j - \lfloor k/2\rfloor)}

        with x = 0 outside the map; for G < C kernel groups, K is first stretched along its channel axis,
        K'_o = K_{\lfloor o G / C\rfloor}, o = 0 … C·k² − 1.

    Args:
        feature_channels: channels F of the guiding feature map. Default 64 (source: image level, ``core_img``
            reads the 64-channel ``conv9``; the semantic level reads 256 channels).
        channels: channels C of the map to filter. Default 3 (source: image level, RGB; 256 at the semantic
            level).
        kernel_size: k (odd). Default 3 (source: ``kpn/config.py`` ``--kernel_size [3]``).
        kernel_groups: G, kernels predicted per pixel before stretching to C; None means G = C (one kernel per
            channel, the image level). Default None (source: image level; the semantic level uses G = 64 for
            C = 256).

    Shape:
        image (B, C, H, W), features (B, F, H, W) → (B, C, H, W).

    Returns:
        The filtered map.

    Note:
        Kernels are unnormalised, as in the official code: constants are not preserved unless the predictor learns
        kernels that sum to 1. The official image level feeds the result to ``(tanh(y) + 1) / 2``; that belongs to
        the generator, not to this op.

    Example:
        >>> import torch
        >>> layer = KernelPredictionFilter(feature_channels=4)
        >>> layer(torch.ones(1, 3, 5, 5), torch.randn(1, 4, 5, 5)).shape
        torch.Size([1, 3, 5, 5])
    """

    config_keys: ClassVar[tuple[str, ...]] = ("feature_channels", "channels", "kernel_size", "kernel_groups")
    runtime_keys: ClassVar[tuple[str, ...]] = ()
    citation: ClassVar[str] = (
        "@inproceedings{li2022misf, title={MISF: Multi-level Interactive Siamese Filtering for High-Fidelity Image "
        "Inpainting}, author={Li, Xiaoguang and Guo, Qing and Lin, Di and Li, Ping and Feng, Wei and Wang, Song}, "
        "booktitle={CVPR}, year={2022}}"
    )

    def __init__(self, feature_channels: int = 64, channels: int = 3, kernel_size: int = 3,
                 kernel_groups: int | None = None) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be a positive odd integer, got {kernel_size}.")
        if feature_channels < 1 or channels < 1:
            raise ValueError(f"`feature_channels` and `channels` must be >= 1, got {feature_channels}, {channels}.")
        if kernel_groups is not None and kernel_groups < 1:
            raise ValueError(f"`kernel_groups` must be >= 1 or None, got {kernel_groups}.")
        self.feature_channels, self.channels, self.kernel_size = feature_channels, channels, kernel_size
        self.kernel_groups = kernel_groups
        groups = channels if kernel_groups is None else kernel_groups
        self.predictor = nn.Conv2d(feature_channels, groups * kernel_size * kernel_size, 1)
        # MISF's InpaintGenerator.init_weights: N(0, 0.02²) weights, zero bias, on every conv including these.
        nn.init.normal_(self.predictor.weight, 0.0, 0.02)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, image: Tensor, features: Tensor) -> Tensor:
        kernels = self.predictor(features)
        if kernels.shape[1] != self.channels * self.kernel_size**2:
            kernels = expand_kernel_groups(kernels, self.channels, self.kernel_size)
        return per_pixel_filter(image, kernels, self.kernel_size)
