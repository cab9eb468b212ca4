"""Filter design helpers (#66): orthogonal filters, orthonormal DCT bank, unit Gabor filters, receptive field."""

from __future__ import annotations

import pytest
import torch

from common_regs.representation import FilterInit, dct_bank, gabor_bank, receptive_field


def test_orthogonal_and_kaiming_initialisation() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3))
    FilterInit("orthogonal", gain=2.0).apply(model)
    for conv in (model[0], model[2]):
        w = conv.weight.reshape(8, -1)
        torch.testing.assert_close(w @ w.T, 4.0 * torch.eye(8), atol=1e-5, rtol=1e-5)
        assert float(conv.bias.detach().abs().sum()) == 0.0
    FilterInit("kaiming").apply(model)
    assert float(model[2].weight.detach().std()) == pytest.approx((2 / (8 * 9)) ** 0.5, rel=0.25)


def test_dct_bank_is_orthonormal_and_gabor_filters_unit_norm() -> None:
    bank = dct_bank(4).reshape(16, 16)
    torch.testing.assert_close(bank @ bank.T, torch.eye(16), atol=1e-5, rtol=1e-5)
    gabor = gabor_bank(6, 7)
    torch.testing.assert_close(gabor.reshape(6, -1).norm(dim=1), torch.ones(6))
    conv = torch.nn.Conv2d(1, 4, 5)
    FilterInit("gabor").apply(conv)
    assert not torch.equal(conv.weight[0], conv.weight[1])


def test_receptive_field_and_errors() -> None:
    assert receptive_field([3, 3, 3]) == 7
    assert receptive_field([3, 3], strides=[2, 1]) == 7
    assert receptive_field([3], dilations=[4]) == 9
    with pytest.raises(ValueError, match="scheme"):
        FilterInit("wavelet")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Conv2d"):
        FilterInit().apply(torch.nn.Linear(2, 2))


def _bars(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """8×8 images holding one horizontal (class 0) or vertical (class 1) bar, plus Gaussian noise."""
    images, labels = torch.zeros(n, 1, 8, 8), torch.randint(0, 2, (n,), generator=generator)
    positions = torch.randint(1, 7, (n,), generator=generator)
    for i in range(n):
        if labels[i]:
            images[i, 0, :, positions[i]] = 1.0
        else:
            images[i, 0, positions[i], :] = 1.0
    return images + 0.3 * torch.randn(images.shape, generator=generator), labels


def test_each_scheme_in_a_small_training_run() -> None:
    """Every initialisation trains a tiny CNN on bar orientation; with the convolution frozen, the fixed-structure
    banks (Gabor, DCT) already give orientation features that a linear head separates better than random filters."""
    generator = torch.Generator().manual_seed(0)
    x, y = _bars(64, generator)
    x_test, y_test = _bars(256, generator)
    probe = {}
    for scheme in ("orthogonal", "kaiming", "gabor", "dct"):
        torch.manual_seed(0)
        body = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 5), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                   torch.nn.Flatten())
        FilterInit(scheme).apply(body)
        with torch.no_grad():  # frozen filters: a linear probe on their pooled responses
            features, features_test = body(x), body(x_test)
        head = torch.nn.Linear(4, 2)
        optimizer = torch.optim.Adam(head.parameters(), lr=0.05)
        for _ in range(150):
            loss = torch.nn.functional.cross_entropy(head(features), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        probe[scheme] = float((head(features_test).argmax(1) == y_test).float().mean())
        model = torch.nn.Sequential(body, torch.nn.Linear(4, 2))  # then train the filters too
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
        for _ in range(100):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
        assert float(loss.detach()) < 0.05 and accuracy > 0.9, (scheme, float(loss.detach()), accuracy)
    assert min(probe["gabor"], probe["dct"]) > max(probe["orthogonal"], probe["kaiming"]) + 0.05, probe
