"""Hessian and gradient alignment across training domains (HGP and Hutchinson variants) by double backprop."""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["HessianAlignment", "hessian_alignment_penalty", "hessian_gradient_product"]


def _flat(tensors: Sequence[Tensor]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def hessian_gradient_product(loss: Tensor, params: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """``(g, H g)`` with ``H g = ‖g‖ · ∇_θ ‖g‖`` (one extra backward; differentiable: ``create_graph=True``)."""
    grads = torch.autograd.grad(loss, params, create_graph=True)
    g = _flat(grads)
    norm = g.norm()
    hg = _flat(torch.autograd.grad(norm, params, create_graph=True)) * norm
    return g, hg


def _hutchinson_diag(loss: Tensor, params: Sequence[Tensor], samples: int, generator: torch.Generator | None
                     ) -> tuple[Tensor, Tensor]:
    """``(g, diag(H))`` with ``diag(H) ≈ mean_v v ⊙ H v`` over Rademacher ``v``."""
    g = _flat(torch.autograd.grad(loss, params, create_graph=True))
    estimate = torch.zeros_like(g)
    for _ in range(samples):
        v = torch.randint(0, 2, g.shape, generator=generator, device=g.device).to(g.dtype) * 2 - 1
        hv = _flat(torch.autograd.grad(g @ v, params, create_graph=True))
        estimate = estimate + v * hv
    return g, estimate / samples


def hessian_alignment_penalty(env_losses: Sequence[Tensor], params: Sequence[Tensor], *,
                              method: Literal["hgp", "hutchinson"] = "hgp", samples: int = 1,
                              generator: torch.Generator | None = None) -> Tensor:
    """``Σ_e ‖A_e − Ā‖² + Σ_e ‖g_e − ḡ‖²`` with ``A = Hg`` (HGP) or ``diag H`` (Hutchinson); bars use the mean loss."""
    if len(env_losses) < 2:
        raise ValueError(f"`env_losses` needs at least 2 environments, got {len(env_losses)}.")
    mean_loss = torch.stack(list(env_losses)).mean()

    def stats(loss: Tensor) -> tuple[Tensor, Tensor]:
        if method == "hgp":
            return hessian_gradient_product(loss, params)
        return _hutchinson_diag(loss, params, samples, generator)

    g_bar, a_bar = stats(mean_loss)
    penalty = mean_loss.new_zeros(())
    for loss in env_losses:
        g, a = stats(loss)
        penalty = penalty + (a - a_bar).pow(2).sum() + (g - g_bar).pow(2).sum()
    return penalty


@register("hessian_alignment", kind="loss", seed=40,
          fidelity="official-code",
          verified_by="tests/common_regs/dynamics/test_hessian_alignment.py",
          paper="Hemati, Zhang, Estiri, Wang, Understanding Hessian Alignment for Domain Generalization, ICCV 2023, "
                "arXiv:2308.11778")
class HessianAlignment(ConfigFromKeys):
    r"""Penalize differences of classifier-head gradients and Hessians across training domains.

    Out-of-domain transferability is bounded by the spectral distance between domain Hessians of the classifier
    head, so aligning Hessians (and gradients) across environments improves domain generalization; HGP gets
    ``H g`` from one extra backward pass, the Hutchinson variant estimates ``diag H``.

    Reference:
        Sobhan Hemati, Guojun Zhang, Amir Estiri, Xi Chen (Wang), "Understanding Hessian Alignment for Domain
        Generalization", ICCV 2023, arXiv:2308.11778 (§4, Eqs. for HGP and Hutchinson); checked against the
        official ``HessianAlignment/cmnist/cmnist_HGP.py``.

    Math:
        .. math::
            R = \sum_e \|H_e g_e - \bar H\bar g\|^2 + \|g_e - \bar g\|^2,\quad
            H g = \|g\|\,\nabla_\theta\|g\|

        (HGP), or ``diag(H_e)`` estimated by ``E_v[v ⊙ H_e v]`` with Rademacher v in place of ``H_e g_e``
        (``method="hutchinson"``); barred quantities come from the mean of the environment losses; θ = the
        parameters selected by ``include``.

    Args:
        method: "hgp" or "hutchinson". Default "hgp" (paper's main variant).
        include: fnmatch patterns of parameter names forming the head. Default ("*",) (all; the paper uses the
            classifier head only, e.g. ``("fc.*",)``).
        samples: Rademacher probes for the Hutchinson variant. Default 1 (official code).
        weight: coefficient α used by ``RegHooks``. Default 1.0 (regkit; CMNIST uses ~9.1e4 after annealing).

    Shape:
        Inputs: ``ctx.extras["env_losses"]``: a list of scalar losses, one per environment.

    Returns:
        Scalar penalty; ``last_components`` holds it.

    Note:
        Needs ``create_graph`` double backprop through the head: keep the head small.

    Example:
        >>> import torch
        >>> w = torch.nn.Parameter(torch.ones(2))
        >>> losses = [(w * torch.tensor([1.0, 2.0])).pow(2).sum(), (w * torch.tensor([1.0, 2.0])).pow(2).sum()]
        >>> float(hessian_alignment_penalty(losses, [w]))
        0.0
    """

    config_keys: ClassVar[tuple[str, ...]] = ("method", "include", "samples", "weight")
    runtime_keys: ClassVar[tuple[str, ...]] = ()
    citation: ClassVar[str] = (
        "@inproceedings{hemati2023hessian, title={Understanding Hessian Alignment for Domain Generalization}, "
        "author={Hemati, Sobhan and Zhang, Guojun and Estiri, Amir and Chen, Xi}, booktitle={ICCV}, year={2023}}"
    )

    def __init__(self, method: Literal["hgp", "hutchinson"] = "hgp", include: Sequence[str] = ("*",),
                 samples: int = 1, weight: float = 1.0) -> None:
        if method not in ("hgp", "hutchinson"):
            raise ValueError(f"`method` must be 'hgp' or 'hutchinson', got {method!r}.")
        if samples < 1:
            raise ValueError(f"`samples` must be >= 1, got {samples}.")
        self.method, self.include, self.samples, self.weight = method, tuple(include), int(samples), float(weight)
        self.last_components: dict[str, float] = {}

    def parameters(self, model: nn.Module) -> list[nn.Parameter]:
        params = [p for n, p in model.named_parameters()
                  if p.requires_grad and any(fnmatch.fnmatch(n, pat) for pat in self.include)]
        if not params:
            raise ValueError(f"`include` patterns {self.include} match no trainable parameter of the model.")
        return params

    def __call__(self, ctx: TrainContext) -> Tensor:
        losses = ctx.extras.get("env_losses")
        if not losses:
            raise ValueError("HessianAlignment needs ctx.extras['env_losses'] (one scalar loss per environment).")
        value = hessian_alignment_penalty(losses, self.parameters(ctx.model), method=self.method, samples=self.samples)
        self.last_components = {"hessian_alignment": float(value.detach())}
        return value
