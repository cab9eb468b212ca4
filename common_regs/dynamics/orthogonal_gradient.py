"""⊥Grad: drop the gradient component along the weights (naïve loss minimization direction)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import ClassVar

import torch
from torch import Tensor, nn

from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["OrthogonalGradient", "orthogonal_gradient", "orthogonalize_grads_"]


def orthogonal_gradient(weight: Tensor, grad: Tensor, *, renormalize: bool = True, eps: float = 1e-30) -> Tensor:
    """``g⊥ = g − (⟨w, g⟩ / (⟨w, w⟩ + ε)) w`` over the flattened tensor; rescaled to ‖g‖ if ``renormalize``."""
    w, g = weight.reshape(-1).to(torch.float64), grad.reshape(-1).to(torch.float64)
    g_perp = g - (w @ g) / (w @ w + eps) * w
    if renormalize:
        g_perp = g_perp * (g.norm() / (g_perp.norm() + eps))
    return g_perp.reshape(grad.shape).to(grad.dtype)


@torch.no_grad()
def orthogonalize_grads_(params: Iterable[nn.Parameter], *, renormalize: bool = True) -> None:
    """In place: replace each parameter's ``.grad`` by :func:`orthogonal_gradient` (skips params without grad)."""
    for p in params:
        if p.grad is not None:
            p.grad.copy_(orthogonal_gradient(p.detach(), p.grad, renormalize=renormalize))


@register("orthogonal_gradient", kind="grad_transform", seed=32,
          fidelity="paper-equation",
          verified_by="tests/common_regs/dynamics/test_stablemax_orthograd.py"
                      "::test_orthograd_update_is_orthogonal_to_weights",
          paper="Prieto, Barsbey, Mediano, Birdal, Grokking at the Edge of Numerical Stability, ICLR 2025, "
                "arXiv:2501.04697")
class OrthogonalGradient(ConfigFromKeys):
    r"""Project each parameter's gradient onto the orthogonal complement of the parameter (⊥Grad / OrthoGrad).

    Past zero training error the cross-entropy gradient mostly scales the weights up (naïve loss minimization),
    pushing toward softmax collapse; removing that component lets generalizing directions drive training and
    makes grokking happen without weight decay. Apply between ``backward()`` and ``optimizer.step()``.

    Reference:
        Prieto, Barsbey, Mediano, Birdal, "Grokking at the Edge of Numerical Stability", ICLR 2025,
        arXiv:2501.04697 (§5, ⊥Grad). Rescaling to the original norm follows the public OrthoGrad
        implementations (heavyball; the reference code's ``OrthoGrad`` wrapper).

    Math:
        .. math::
            g_\perp = g - \frac{\langle \theta, g\rangle}{\langle\theta,\theta\rangle + 10^{-30}}\theta,
            \qquad g \leftarrow g_\perp \cdot \frac{\|g\|}{\|g_\perp\| + 10^{-30}}\ (\text{if renormalize})

        per parameter tensor θ (flattened).

    Args:
        renormalize: rescale g⊥ to ‖g‖. Default True (reference OrthoGrad wrapper).
        include_bias: also project 1-D parameters (biases, norms). Default True (reference applies it to all).

    Shape:
        Any parameter shapes; the projection is per tensor.

    Returns:
        ``apply(ctx)`` returns None and rewrites ``.grad`` in place.

    Note:
        A parameter that is exactly zero is left unchanged (the projection is undefined there).

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 0.0])); w.grad = torch.tensor([1.0, 1.0])
        >>> orthogonalize_grads_([w], renormalize=False); w.grad.tolist()
        [0.0, 1.0]
    """

    config_keys: ClassVar[tuple[str, ...]] = ("renormalize", "include_bias")
    runtime_keys: ClassVar[tuple[str, ...]] = ()
    citation: ClassVar[str] = (
        "@inproceedings{prieto2025grokking, title={Grokking at the Edge of Numerical Stability}, "
        "author={Prieto, Lucas and Barsbey, Melih and Mediano, Pedro A. M. and Birdal, Tolga}, "
        "booktitle={ICLR}, year={2025}}"
    )

    def __init__(self, renormalize: bool = True, include_bias: bool = True) -> None:
        self.renormalize, self.include_bias = bool(renormalize), bool(include_bias)

    def apply(self, ctx: TrainContext) -> None:
        params = [p for p in ctx.model.parameters() if self.include_bias or p.ndim > 1]
        orthogonalize_grads_(params, renormalize=self.renormalize)
