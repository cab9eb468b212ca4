from __future__ import annotations

import torch

from common_regs.api import TrainContext
from common_regs.quant.latent_quantization import LatentQuantization, latent_quantize


def test_index_and_codebook_membership() -> None:
    values = torch.tensor([[-1.0, 0.0, 1.0], [0.0, 10.0, 20.0]])
    z = torch.tensor([[0.4, 14.0], [-0.6, 16.0]])
    quantized, indices = latent_quantize(z, values)
    assert indices.tolist() == [[1, 1], [0, 2]]
    torch.testing.assert_close(quantized, torch.tensor([[0.0, 10.0], [-1.0, 20.0]]))


def test_ste_is_identity_and_codebook_gets_gradient_only_from_quantization_loss() -> None:
    lq = LatentQuantization(num_latents=4, values_per_latent=5)
    z = torch.randn(8, 4, requires_grad=True)
    out = lq.quantizer(z)
    assert all(float(v) in set(lq.quantizer.values[j].tolist()) for row in out.detach() for j, v in enumerate(row))
    upstream = torch.randn(8, 4)
    (out * upstream).sum().backward()
    torch.testing.assert_close(z.grad, upstream)  # straight-through
    assert lq.quantizer.values.grad is None  # the reconstruction path never reaches the codebook
    parts = lq.losses()
    parts["commitment"].backward(retain_graph=True)
    assert lq.quantizer.values.grad is None
    parts["quantization"].backward()
    assert lq.quantizer.values.grad is not None and lq.quantizer.values.grad.abs().sum() > 0


def test_loss_term_value() -> None:
    lq = LatentQuantization(num_latents=1, values_per_latent=2, quantization_weight=0.5, commitment_weight=0.25)
    lq.quantizer(torch.tensor([[0.1]]))  # codebook {-0.5, 0.5}: ẑ = 0.5, error 0.16
    torch.testing.assert_close(lq(TrainContext(model=lq.quantizer)), torch.tensor(0.75 * 0.16))
