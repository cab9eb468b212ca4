from __future__ import annotations

import torch
from torch import nn

from common_regs.quant.quantization_noise import QuantizationNoise, quant_noise


def test_noise_variance_closed_forms() -> None:
    x = torch.linspace(-1.0, 1.0, 200_000)
    step = 2.0 / (2**4 - 1)
    generator = torch.Generator().manual_seed(0)
    uniform = quant_noise(x, 4, "uniform", generator) - x
    gaussian = quant_noise(x, 4, "gaussian", generator) - x
    assert abs(float(uniform.var()) / (step**2 / 12) - 1) < 0.02
    assert abs(float(gaussian.var()) / (step**2 / 4) - 1) < 0.02
    assert float(uniform.abs().max()) <= step / 2 + 1e-6


def test_eval_is_clean_and_train_gradient_is_full_precision_share() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 3))
    x = torch.randn(4, 5)
    clean_weight = model[0].weight.detach().clone()
    reparam = QuantizationNoise(bits=(4, 8), activations=False)
    reparam.prepare(model)
    model.eval()
    torch.testing.assert_close(model[0].weight.detach(), clean_weight)
    model.train()
    noisy = model[0].weight.detach()
    assert not torch.equal(noisy, clean_weight)
    assert float((noisy - clean_weight).abs().max()) < float(clean_weight.max() - clean_weight.min())
    model(x).sum().backward()
    plain = clean_weight.clone().requires_grad_(True)
    (x @ plain.T).sum().backward()
    torch.testing.assert_close(model[0].parametrizations.weight.original0.grad, plain.grad / 3)  # 1/(n+1), n=2


def test_activation_noise_only_in_training() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 3))
    reparam = QuantizationNoise(bits=(2,))
    reparam.prepare(model)
    x = torch.randn(4, 5)
    model.eval()
    a, b = model(x), model(x)
    assert torch.equal(a, b)
    model.train()
    assert not torch.equal(model(x), model(x))
