"""INP-Former losses (#20): coherence zero on prototypes, γ = 0 is the plain loss, hard tokens get γ-scaled grads."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common_regs.api import TrainContext
from common_regs.representation import IntrinsicNormalPrototypes, inp_coherence_loss, soft_mining_loss


def test_coherence_is_zero_when_every_token_is_a_prototype() -> None:
    torch.manual_seed(0)
    prototypes = torch.randn(2, 3, 4)
    tokens = prototypes[:, [2, 0, 1, 1]] * 2.0
    assert float(inp_coherence_loss(tokens, prototypes)) < 1e-6
    assert float(inp_coherence_loss(-tokens, prototypes)) > 0.05


def _plain(encoder: torch.Tensor, decoder: torch.Tensor) -> torch.Tensor:
    return (1 - F.cosine_similarity(encoder.flatten(1), decoder.flatten(1), dim=1)).mean()


def test_gamma_zero_equals_plain_global_cosine_and_gradient_scaling() -> None:
    torch.manual_seed(0)
    encoder = torch.randn(2, 5, 4)
    decoder = torch.randn(2, 5, 4, requires_grad=True)
    plain_decoder = decoder.detach().clone().requires_grad_(True)
    soft = soft_mining_loss(encoder, decoder, gamma=0.0)
    plain = _plain(encoder, plain_decoder)
    torch.testing.assert_close(soft, plain)
    soft.backward()
    plain.backward()
    torch.testing.assert_close(decoder.grad, plain_decoder.grad)
    decoder.grad = None
    soft_mining_loss(encoder, decoder, gamma=3.0).backward()
    distance = 1 - F.cosine_similarity(encoder, decoder.detach(), dim=-1)
    factor = (distance / distance.mean()) ** 3
    torch.testing.assert_close(decoder.grad, plain_decoder.grad * factor[..., None])


def test_combined_term() -> None:
    e, d, p = torch.randn(1, 4, 3), torch.randn(1, 4, 3), torch.randn(1, 2, 3)
    term = IntrinsicNormalPrototypes(coherence_weight=0.5)
    value = term(
        TrainContext(model=torch.nn.Identity(), outputs={"encoder": e, "decoder": d, "tokens": e, "prototypes": p})
    )
    torch.testing.assert_close(value, _plain(e, d) + 0.5 * inp_coherence_loss(e, p))
