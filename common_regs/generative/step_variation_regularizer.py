"""Smooth Diffusion's step-wise variation regularization: keep ‖∂x̂₀/∂x_t‖ along random directions constant."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch
from torch import Tensor

from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["StepVariationRegularizer", "jacobian_vector_norms"]


def jacobian_vector_norms(x_t: Tensor, x0_pred: Tensor, alpha_bar: Tensor, generator: torch.Generator | None = None
                          ) -> Tensor:
    """``r_b = ‖∇_{x_t}⟨x̂₀, n⟩‖`` per sample with ``n ~ N(0, I)·√(1−ᾱ_t)/√(C·H·W)`` (double backprop)."""
    per_sample = x_t[0].numel()
    noise = torch.randn(x0_pred.shape, generator=generator, dtype=x0_pred.dtype) / per_sample**0.5
    noise = noise * (1.0 - alpha_bar).sqrt().reshape(-1, *([1] * (x0_pred.ndim - 1)))
    (grad,) = torch.autograd.grad((x0_pred * noise).sum(), x_t, create_graph=True)
    return grad.flatten(1).norm(dim=1)


@register("step_variation_regularizer", kind="loss", seed=63,
          fidelity="official-code",
          verified_by="tests/common_regs/generative/test_generative.py"
                      "::test_step_variation_matches_analytic_jvp_and_vanishes_for_isometries",
          paper="Guo, Xu, Wang, Chang, Wang, Wang, Shi, Smooth Diffusion: Crafting Smooth Latent Spaces in Diffusion "
                "Models, CVPR 2024, arXiv:2312.04410")
class StepVariationRegularizer(ConfigFromKeys):
    r"""Path-length-style penalty making the denoiser's x̂₀ vary uniformly with x_t (smooth latent space).

    A small change of the noisy latent should change the predicted clean image by a proportional, roughly
    constant amount; penalizing the deviation of the Jacobian–vector norm from its running mean gives smoother
    interpolation and inversion.

    Reference:
        Jiayi Guo, Xingqian Xu, Yifan Pu, Zanlin Ni, Chaofei Wang, Manushree Vasu, Shiji Song, Gao Huang,
        Humphrey Shi, "Smooth Diffusion: Crafting Smooth Latent Spaces in Diffusion Models", CVPR 2024,
        arXiv:2312.04410 (§3.3); checked against ``SHI-Labs/Smooth-Diffusion`` ``train_smooth_diffusion.py``
        (``step_regularize``). Small scale: any x̂₀ predictor; SD + LoRA not reproduced.

    Math:
        .. math::
            r_b = \big\|\nabla_{x_t}\langle \hat x_0(x_t), n\rangle\big\|_2,\ n\sim\mathcal N(0, I)
            \frac{\sqrt{1-\bar\alpha_t}}{\sqrt{CHW}},\quad m \leftarrow m + \delta(\bar r - m),\quad
            L = \tfrac1B\sum_b (r_b - m)^2

        with δ ↔ ``decay`` and m updated with the detached batch mean.

    Args:
        decay: running-mean rate δ. Default 0.01 (official code).
        weight: λ_reg used by ``RegHooks``. Default 1.0 (official code).

    Shape:
        Inputs: ``ctx.extras["x_t"]`` (B, ...) with ``requires_grad``, ``ctx.extras["x0_pred"]`` (B, ...) computed
        from it, ``ctx.extras["alpha_bar"]`` (B,).

    Returns:
        Scalar penalty; the running mean is in ``state_dict()["mean"]``.

    Note:
        The first call uses m = 0 as in the official code (the penalty starts at mean r²).

    Example:
        >>> import torch
        >>> x = torch.randn(2, 3, requires_grad=True)
        >>> r = jacobian_vector_norms(x, 2 * x, torch.zeros(2))
        >>> r.shape
        torch.Size([2])
    """

    config_keys: ClassVar[tuple[str, ...]] = ("decay", "weight")
    runtime_keys: ClassVar[tuple[str, ...]] = ()
    citation: ClassVar[str] = (
        "@inproceedings{guo2024smooth, title={Smooth Diffusion: Crafting Smooth Latent Spaces in Diffusion Models}, "
        "author={Guo, Jiayi and others}, booktitle={CVPR}, year={2024}}"
    )

    def __init__(self, decay: float = 0.01, weight: float = 1.0) -> None:
        if not 0 < decay <= 1:
            raise ValueError(f"`decay` must be in (0, 1], got {decay}.")
        self.decay, self.weight = float(decay), float(weight)
        self.mean = 0.0

    def forward(self, x_t: Tensor, x0_pred: Tensor, alpha_bar: Tensor) -> Tensor:
        r = jacobian_vector_norms(x_t, x0_pred, alpha_bar)
        self.mean = self.mean + self.decay * (float(r.detach().mean()) - self.mean)
        return (r - self.mean).pow(2).mean()

    def __call__(self, ctx: TrainContext) -> Tensor:
        try:
            return self.forward(ctx.extras["x_t"], ctx.extras["x0_pred"], ctx.extras["alpha_bar"])
        except KeyError as err:
            raise ValueError(f"StepVariationRegularizer needs ctx.extras[{err.args[0]!r}].") from None

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean = float(state["mean"])
