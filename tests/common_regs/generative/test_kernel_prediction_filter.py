"""MISF (#65): per-pixel, per-channel filtering and kernel prediction against the official formulas worked by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from common_regs.generative.kernel_prediction_filter import (
    KernelPredictionFilter,
    expand_kernel_groups,
    per_pixel_filter,
)


def _official_kernel_conv(x: np.ndarray, kernels: np.ndarray, k: int) -> np.ndarray:
    """MISF KernelConv by loops: zero padding, tap i·k + j of channel c in kernel row c·k² + i·k + j."""
    b, c, h, w = x.shape
    pad = k // 2
    out = np.zeros_like(x)
    for n in range(b):
        for ch in range(c):
            for r in range(h):
                for s in range(w):
                    for i in range(k):
                        for j in range(k):
                            rr, ss = r + i - pad, s + j - pad
                            if 0 <= rr < h and 0 <= ss < w:
                                out[n, ch, r, s] += kernels[n, ch * k * k + i * k + j, r, s] * x[n, ch, rr, ss]
    return out


@pytest.mark.parametrize("k", [1, 3, 5])
def test_per_pixel_filter_matches_the_official_loops(k: int) -> None:
    rng = np.random.default_rng(k)
    x = rng.standard_normal((2, 3, 4, 5))
    kernels = rng.standard_normal((2, 3 * k * k, 4, 5))
    out = per_pixel_filter(torch.from_numpy(x), torch.from_numpy(kernels), k)
    np.testing.assert_allclose(out.numpy(), _official_kernel_conv(x, kernels, k), rtol=1e-12, atol=1e-12)


def test_channels_have_their_own_kernels() -> None:
    x = torch.arange(2 * 3 * 3, dtype=torch.float64).view(1, 2, 3, 3)
    kernels = torch.zeros(1, 18, 3, 3, dtype=torch.float64)
    kernels[:, 4] = 1.0  # channel 0: centre tap -> identity
    kernels[:, 9 + 5] = 2.0  # channel 1: twice the right neighbour (zero past the border)
    out = per_pixel_filter(x, kernels, 3)
    torch.testing.assert_close(out[0, 0], x[0, 0])
    expected = torch.tensor([[10.0, 11.0, 0.0], [13.0, 14.0, 0.0], [16.0, 17.0, 0.0]], dtype=torch.float64) * 2
    torch.testing.assert_close(out[0, 1], expected)
    with pytest.raises(ValueError, match="`kernels` must have shape"):
        per_pixel_filter(x, kernels[:, :9], 3)


def test_group_expansion_is_the_official_nearest_interpolation() -> None:
    g, c, k = 4, 16, 3
    kernels = torch.randn(2, g * k * k, 3, 5, dtype=torch.float64)
    # the official KPN.forward expression, spatial size unchanged
    official = F.interpolate(kernels.unsqueeze(0), size=(c * k * k, 3, 5), mode="nearest").squeeze(0)
    expanded = expand_kernel_groups(kernels, c, k)
    torch.testing.assert_close(expanded, official, rtol=0, atol=0)
    by_hand = torch.stack([kernels[:, (o * g) // c] for o in range(c * k * k)], dim=1)  # row o <- floor(o G / C)
    torch.testing.assert_close(expanded, by_hand, rtol=0, atol=0)
    with pytest.raises(ValueError, match="multiple of"):
        expand_kernel_groups(kernels[:, :5], c, k)


def test_layer_is_a_raw_1x1_prediction_then_the_official_filter() -> None:
    torch.manual_seed(0)
    layer = KernelPredictionFilter(feature_channels=2, channels=3, kernel_size=3).double()
    with torch.no_grad():
        layer.predictor.weight.normal_()
        layer.predictor.bias.normal_()
    image = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    features = torch.randn(1, 2, 4, 4, dtype=torch.float64)
    w = layer.predictor.weight.detach().numpy()[:, :, 0, 0]
    bias = layer.predictor.bias.detach().numpy()
    f = features.numpy()
    kernels = np.einsum("of,bfhw->bohw", w, f) + bias[None, :, None, None]  # no softmax: raw 1x1 conv output
    expected = _official_kernel_conv(image.numpy(), kernels, 3)
    np.testing.assert_allclose(layer(image, features).detach().numpy(), expected, rtol=1e-10, atol=1e-12)


def test_semantic_level_groups_then_filter() -> None:
    torch.manual_seed(1)
    layer = KernelPredictionFilter(feature_channels=3, channels=8, kernel_size=3, kernel_groups=2).double()
    assert layer.predictor.out_channels == 2 * 9
    image = torch.randn(1, 8, 3, 3, dtype=torch.float64)
    features = torch.randn(1, 3, 3, 3, dtype=torch.float64)
    raw = layer.predictor(features).detach().numpy()
    stretched = np.stack([raw[:, (o * 2) // 8] for o in range(8 * 9)], axis=1)
    expected = _official_kernel_conv(image.numpy(), stretched, 3)
    np.testing.assert_allclose(layer(image, features).detach().numpy(), expected, rtol=1e-10, atol=1e-12)


def test_official_initialisation_and_validation() -> None:
    layer = KernelPredictionFilter()  # image level: 64 feature channels -> 3·9 kernel channels
    assert tuple(layer.predictor.weight.shape) == (27, 64, 1, 1)
    assert float(layer.predictor.bias.detach().abs().max()) == 0.0
    assert float(layer.predictor.weight.detach().std()) == pytest.approx(0.02, rel=0.15)
    with pytest.raises(ValueError, match="`kernel_size`"):
        KernelPredictionFilter(kernel_size=2)
    with pytest.raises(ValueError, match="`kernel_groups`"):
        KernelPredictionFilter(kernel_groups=0)
