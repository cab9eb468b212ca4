"""Latent quantization (QLAE): a per-dimension scalar codebook bottleneck with straight-through gradients."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["LatentQuantization", "LatentQuantizer", "latent_quantize"]


def latent_quantize(z: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest codebook value per latent dimension: ``ẑ_j = argmin_{v ∈ V_j} |z_j − v|``.

    ``z`` is (..., J) and ``values`` (J, K); returns ``(ẑ, indices)`` with ẑ of z's shape and indices in [0, K).
    """
    if z.shape[-1] != values.shape[0]:
        raise ValueError(f"`z` has {z.shape[-1]} latent dimensions but the codebook has {values.shape[0]}.")
    distance = (z.unsqueeze(-1) - values).abs()
    indices = distance.argmin(-1)
    quantized = torch.gather(values.expand(*z.shape, values.shape[1]), -1, indices.unsqueeze(-1)).squeeze(-1)
    return quantized, indices


class LatentQuantizer(nn.Module):
    """The bottleneck layer: ``z̃ = z + sg(ẑ − z)``; remembers ``z`` and ``ẑ`` of its last call for the losses."""

    def __init__(self, num_latents: int, values_per_latent: int, optimize_values: bool) -> None:
        super().__init__()
        values = torch.linspace(-0.5, 0.5, values_per_latent).repeat(num_latents, 1)
        self.values = nn.Parameter(values, requires_grad=optimize_values)
        self.last: tuple[Tensor, Tensor] | None = None

    def forward(self, z: Tensor) -> Tensor:
        quantized, _ = latent_quantize(z, self.values)
        self.last = (z, quantized)
        return z + (quantized - z).detach()


@register("latent_quantization", kind="loss", seed=71,
          fidelity="official-code",
          verified_by="tests/common_regs/quant/test_latent_quantization.py",
          paper="Hsu, Dorrell, Whittington, Wu, Finn, Disentanglement via Latent Quantization, NeurIPS 2023, "
                "arXiv:2305.18378")
class LatentQuantization(ConfigFromKeys):
    r"""Quantized latent bottleneck with a learnable scalar codebook per dimension, and its two VQ-style losses.

    Put ``lq.quantizer`` between encoder and decoder; add ``lq`` as a loss term. Each latent dimension snaps to the
    nearest of its own K learnable values (straight-through gradient to the encoder); the quantization loss moves
    the codebook toward the encodings and the commitment loss the encodings toward the codebook. The paper pairs it
    with unusually high AdamW weight decay (0.1) on the model, set in your optimizer.

    Reference:
        Hsu, Dorrell, Whittington, Wu, Finn, "Disentanglement via Latent Quantization", NeurIPS 2023,
        arXiv:2305.18378 (official ``disentangle/latents/quantized.py``, ``configs/model_partial/quantized_ae.yaml``).

    Math:
        .. math::
            \hat z_j = \arg\min_{v\in V_j}|z_j - v|,\quad \tilde z = z + \mathrm{sg}(\hat z - z),\\
            L = \lambda_q\,\overline{(\mathrm{sg}(z) - \hat z)^2}
              + \lambda_c\,\overline{(z - \mathrm{sg}(\hat z))^2}

        V_j initialized to linspace(−0.5, 0.5, K); the bar is the mean over batch and latent dimensions.

    Args:
        num_latents: J, the latent dimension.
        values_per_latent: K. Default 10 (source: official config).
        quantization_weight: λ_q. Default 0.01 (source: official config; ``vector_quantize_pytorch`` uses 0.1).
        commitment_weight: λ_c. Default 0.01 (source: official config).
        optimize_values: learn the codebook. Default True (source: official config).

    Shape:
        z (..., J) → z̃ (..., J); codebook (J, K).

    Returns:
        ``term(ctx)`` the weighted sum λ_q·quantization + λ_c·commitment of the last quantizer call.

    Note:
        The loss reduction (mean) is regkit's; the official code's reduction was not checked. Call the quantizer
        before the loss term in each step; the term raises if it has not run.

    Example:
        >>> import torch
        >>> lq = LatentQuantization(num_latents=3)
        >>> z_tilde = lq.quantizer(torch.tensor([[0.02, -0.4, 0.9]]))
        >>> [round(v, 4) for v in z_tilde[0].tolist()]
        [0.0556, -0.3889, 0.5]
    """

    hook_kind: ClassVar[str] = "loss"
    config_keys: ClassVar[tuple[str, ...]] = ("num_latents", "values_per_latent", "quantization_weight",
                                               "commitment_weight", "optimize_values")
    runtime_keys: ClassVar[tuple[str, ...]] = ()
    weight: ClassVar[float] = 1.0  # λ_q and λ_c are inside the term
    citation: ClassVar[str] = (
        "@inproceedings{hsu2023qlae, title={Disentanglement via Latent Quantization}, author={Hsu, Kyle and Dorrell, "
        "Will and Whittington, James C. R. and Wu, Jiajun and Finn, Chelsea}, booktitle={NeurIPS}, year={2023}}"
    )

    def __init__(self, num_latents: int, values_per_latent: int = 10, quantization_weight: float = 0.01,
                 commitment_weight: float = 0.01, optimize_values: bool = True) -> None:
        if num_latents < 1:
            raise ValueError(f"`num_latents` must be >= 1, got {num_latents}.")
        if values_per_latent < 2:
            raise ValueError(f"`values_per_latent` must be >= 2, got {values_per_latent}.")
        if quantization_weight < 0 or commitment_weight < 0:
            raise ValueError(f"loss weights must be >= 0, got {quantization_weight} and {commitment_weight}.")
        self.num_latents, self.values_per_latent = int(num_latents), int(values_per_latent)
        self.quantization_weight, self.commitment_weight = float(quantization_weight), float(commitment_weight)
        self.optimize_values = bool(optimize_values)
        self.quantizer = LatentQuantizer(num_latents, values_per_latent, optimize_values)

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        return {"num_latents": 3, "values_per_latent": 4}

    def losses(self) -> dict[str, Tensor]:
        """``{"quantization": mean (sg z − ẑ)², "commitment": mean (z − sg ẑ)²}`` of the last quantizer call."""
        if self.quantizer.last is None:
            raise ValueError("the latent quantizer has not run yet; call `quantizer(z)` in the forward pass first.")
        z, quantized = self.quantizer.last
        return {"quantization": (z.detach() - quantized).pow(2).mean(),
                "commitment": (z - quantized.detach()).pow(2).mean()}

    def __call__(self, ctx: TrainContext | None = None) -> Tensor:
        parts = self.losses()
        return self.quantization_weight * parts["quantization"] + self.commitment_weight * parts["commitment"]

    def state_dict(self) -> dict[str, Tensor]:
        return self.quantizer.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.quantizer.load_state_dict(state)
