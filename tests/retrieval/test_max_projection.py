"""Fused SPLADE-max projection: values equal sentence-transformers' SpladePooling, gradients equal autograd's."""

from __future__ import annotations

import pytest
import torch
from sentence_transformers.sparse_encoder.modules import SpladePooling

from retrieval.max_projection import max_logits, splade_activation, splade_max_pool

MASK = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])


def _inputs(dtype=torch.float64):
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 5, 4, dtype=dtype, generator=generator, requires_grad=True)
    weight = torch.randn(7, 4, dtype=dtype, generator=generator, requires_grad=True)
    bias = torch.randn(7, dtype=dtype, generator=generator, requires_grad=True)
    return hidden, weight, bias


@pytest.mark.parametrize("activation", ["relu", "log1p_relu"])
def test_equals_sentence_transformers_splade_pooling(activation: str) -> None:
    hidden, weight, bias = _inputs(torch.float32)
    logits = hidden @ weight.T + bias
    pooling = SpladePooling("max", activation_function=activation).eval()
    expected = pooling({"token_embeddings": logits.detach().clone(), "attention_mask": MASK})["sentence_embedding"]
    got = splade_max_pool(hidden, MASK, weight, bias, activation=activation)
    torch.testing.assert_close(got, expected)


def test_gradients_equal_autograd_of_the_naive_formula() -> None:
    hidden, weight, bias = _inputs()
    assert torch.autograd.gradcheck(lambda h, w, b: max_logits(h, MASK, w, b), (hidden, weight, bias))
    upstream = torch.randn(3, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    naive = splade_activation((hidden @ weight.T + bias) * MASK[..., None], "relu").amax(1)
    fused = splade_max_pool(hidden, MASK, weight, bias)
    expected = torch.autograd.grad((naive * upstream).sum(), (hidden, weight, bias))
    got = torch.autograd.grad((fused * upstream).sum(), (hidden, weight, bias))
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)


def test_bfloat16_matmul_stays_close_and_no_valid_position_gives_zero() -> None:
    hidden, weight, bias = (t.detach().float() for t in _inputs())
    exact = splade_max_pool(hidden, MASK, weight, bias)
    fast = splade_max_pool(hidden, MASK, weight, bias, compute_dtype=torch.bfloat16)
    torch.testing.assert_close(fast, exact, atol=0.05, rtol=0.02)
    empty = torch.zeros(1, 5, dtype=torch.long)
    assert splade_max_pool(hidden[:1], empty, weight, bias).abs().sum() == 0


def test_shape_errors_name_the_argument() -> None:
    hidden, weight, bias = _inputs()
    with pytest.raises(ValueError, match="`mask`"):
        max_logits(hidden, MASK[:, :3], weight, bias)
    with pytest.raises(ValueError, match="`weight`"):
        max_logits(hidden, MASK, weight[:, :3], bias)
    with pytest.raises(ValueError, match="`activation`"):
        splade_activation(hidden, "gelu")


@pytest.mark.parametrize("compute_dtype", [None, torch.bfloat16])
def test_dense_method_equals_the_loop_in_values_and_gradients(compute_dtype) -> None:
    hidden, weight, bias = (t.detach().float().requires_grad_(True) for t in _inputs())
    mask = torch.cat([MASK, torch.zeros(1, 5, dtype=torch.long)])  # plus a document with no valid position
    hidden = torch.cat([hidden, hidden[:1]]).detach().requires_grad_(True)
    upstream = torch.rand(4, 7, generator=torch.Generator().manual_seed(2))
    results = []
    for method in ("loop", "dense"):
        out = splade_max_pool(hidden, mask, weight, bias, compute_dtype=compute_dtype, method=method)
        results.append((out, *torch.autograd.grad((out * upstream).sum(), (hidden, weight, bias))))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-6, rtol=1e-6)  # same max, same values
    # gradients: exact in float32; in bfloat16 the dense backward multiplies bfloat16 copies (the loop float32 ones)
    tolerance = {"atol": 1e-6, "rtol": 1e-6} if compute_dtype is None else {"atol": 1e-2, "rtol": 1e-2}
    for loop, dense in zip(results[0][1:], results[1][1:], strict=True):
        torch.testing.assert_close(dense, loop, **tolerance)
    assert results[1][0][3].abs().sum() == 0  # the empty document stays zero


def test_unknown_method_is_rejected() -> None:
    hidden, weight, bias = _inputs()
    with pytest.raises(ValueError, match="`method`"):
        max_logits(hidden, MASK, weight, bias, method="fast")
