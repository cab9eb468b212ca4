r"""SPLADE max pooling fused with the MLM vocabulary projection, without (B, L, V) activations.

SPLADE-max (Formal et al., "SPLADE v2", arXiv:2109.10086, Eq. 5; sentence-transformers ``SpladePooling("max")``)
computes, for document b and vocabulary entry t,

.. math::  w_{b,t} = \max_{i \in \mathrm{valid}(b)} \phi(\langle h_{b,i}, W_t \rangle + c_t),
           \qquad \phi = \log(1 + \mathrm{ReLU}(\cdot)) \ (\texttt{relu}) \text{ or }
           \log(1 + \log(1 + \mathrm{ReLU}(\cdot))) \ (\texttt{log1p\_relu})

where ``h`` are the MLM head's transformed hidden states, ``W`` the output embeddings (V × d) and ``c`` their bias.
Because φ is non-decreasing, :math:`\max_i \phi(x_i) = \phi(\max_i x_i)`: this module takes the max of the raw
logits per document (one (L, V) slice at a time, never the (B, L, V) tensor autograd would keep) and applies φ
on (B, V). The backward pass is exact: the gradient of the max reaches only the argmax position of each (b, t), and
only entries with a non-zero upstream gradient (active after ReLU) cost anything, so the usual
(B, L, V) × d backward matmul becomes an index-add over the active entries. Results equal sentence-transformers'
``SpladePooling`` output (tested), which multiplies padded positions' logits by 0 instead of skipping them; both
give the same value because φ(0) = 0 ≤ every max.

``method="dense"`` computes the same max the plain way — the (B, L, V) logits in ``compute_dtype``, padded
positions set to −inf, ``amax`` over L, autograd for the backward — which is what a GPU wants (one large matmul
instead of a Python loop with a host sync per document; the (B, L, V) bfloat16 tensor of a 64 × 256-wordpiece
batch is ~1 GB). Values are equal; gradients are equal except where several positions tie for the max (``amax``
splits the gradient evenly between them, the loop gives it to the first one — both are valid subgradients).
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = ["Activation", "Method", "max_logits", "splade_activation", "splade_max_pool"]

Activation = Literal["relu", "log1p_relu"]
Method = Literal["loop", "dense"]


def splade_activation(logits: Tensor, activation: Activation) -> Tensor:
    """φ of the module docstring: ``log1p(relu(x))``, or ``log1p(log1p(relu(x)))`` for ``log1p_relu``."""
    if activation not in ("relu", "log1p_relu"):
        raise ValueError(f"`activation` must be 'relu' or 'log1p_relu', got {activation!r}.")
    out = torch.log1p(torch.relu(logits))
    return torch.log1p(out) if activation == "log1p_relu" else out


def _forward_max(
    hidden: Tensor, mask: Tensor, weight: Tensor, bias: Tensor | None, compute_dtype: torch.dtype | None
) -> tuple[Tensor, Tensor]:
    batch, _, _ = hidden.shape
    values = hidden.new_empty((batch, weight.shape[0]))
    positions = torch.zeros((batch, weight.shape[0]), dtype=torch.long, device=hidden.device)
    w = weight if compute_dtype is None else weight.to(compute_dtype)
    for b in range(batch):
        rows = mask[b].nonzero(as_tuple=True)[0]
        if rows.numel() == 0:
            values[b] = float("-inf")
            continue
        h = hidden[b, rows] if compute_dtype is None else hidden[b, rows].to(compute_dtype)
        best, where = (h @ w.T).max(dim=0)
        values[b] = best.to(values.dtype)
        positions[b] = rows[where]
    if bias is not None:
        values = values + bias.to(values.dtype)
    return values, positions


def _dense_max(
    hidden: Tensor, mask: Tensor, weight: Tensor, bias: Tensor | None, compute_dtype: torch.dtype | None
) -> Tensor:
    h = hidden if compute_dtype is None else hidden.to(compute_dtype)
    w = weight if compute_dtype is None else weight.to(compute_dtype)
    logits = (h @ w.T).masked_fill(~mask.unsqueeze(-1), float("-inf"))  # (B, L, V)
    values = logits.amax(dim=1).to(hidden.dtype)
    return values if bias is None else values + bias.to(values.dtype)


class _MaxLogits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, mask, weight, bias, compute_dtype):  # type: ignore[override]
        values, positions = _forward_max(hidden, mask, weight, bias, compute_dtype)
        ctx.save_for_backward(hidden, weight, positions)
        ctx.has_bias = bias is not None
        return values

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        hidden, weight, positions = ctx.saved_tensors
        grad_hidden = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight) if ctx.needs_input_grad[2] else None
        for b in range(hidden.shape[0]):
            active = (grad_out[b] != 0).nonzero(as_tuple=True)[0]
            if active.numel() == 0:
                continue
            g = grad_out[b, active].unsqueeze(1)
            where = positions[b, active]
            if grad_hidden is not None:
                grad_hidden[b].index_add_(0, where, g * weight[active])
            if grad_weight is not None:
                grad_weight.index_add_(0, active, g * hidden[b, where])
        grad_bias = grad_out.sum(0) if ctx.has_bias and ctx.needs_input_grad[3] else None
        return grad_hidden, None, grad_weight, grad_bias, None


def max_logits(
    hidden: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    compute_dtype: torch.dtype | None = None,
    method: Method = "loop",
) -> Tensor:
    """``max_{valid i} (hidden[b, i] · weight[t] + bias[t])`` of shape (B, V), differentiable (exact subgradient).

    Args:
        hidden: (B, L, d) transformed hidden states.
        mask: (B, L) attention mask (non-zero = valid position).
        weight: (V, d) output embeddings.
        bias: (V,) output bias or None.
        compute_dtype: dtype of the (L, V) matmul (e.g. ``torch.bfloat16`` for speed on CPUs with bf16 units);
            None keeps ``hidden``'s dtype. Values are returned in ``hidden``'s dtype.
        method: ``"loop"`` (one document at a time, sparse backward; for CPUs) or ``"dense"`` (materialises the
            (B, L, V) logits, autograd backward; for GPUs). Default "loop" (module docstring).

    A document with no valid position gets ``-inf`` (φ maps it to 0).
    """
    if hidden.ndim != 3 or mask.shape != hidden.shape[:2]:
        raise ValueError(
            f"`hidden` must be (B, L, d) and `mask` (B, L); got {tuple(hidden.shape)} and {tuple(mask.shape)}."
        )
    if weight.ndim != 2 or weight.shape[1] != hidden.shape[2]:
        raise ValueError(f"`weight` must be (V, {hidden.shape[2]}), got {tuple(weight.shape)}.")
    if method not in ("loop", "dense"):
        raise ValueError(f"`method` must be 'loop' or 'dense', got {method!r}.")
    if method == "dense":
        return _dense_max(hidden, mask.to(torch.bool), weight, bias, compute_dtype)
    return _MaxLogits.apply(hidden, mask.to(torch.bool), weight, bias, compute_dtype)


def splade_max_pool(
    hidden: Tensor,
    mask: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    *,
    activation: Activation = "relu",
    compute_dtype: torch.dtype | None = None,
    method: Method = "loop",
) -> Tensor:
    """SPLADE-max document vectors (B, V): φ(:func:`max_logits`) (module docstring)."""
    return splade_activation(max_logits(hidden, mask, weight, bias, compute_dtype=compute_dtype, method=method),
                             activation)
