"""Policy-gradient-driven noise mask: a light policy samples Beta noise masks, trained by REINFORCE."""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Beta

from common_regs.api import ConfigFromKeys
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["PolicyNoiseMask", "reinforce_loss"]


def reinforce_loss(log_prob: Tensor, reward: Tensor, baseline: float = 0.0) -> Tensor:
    """``-mean_i (R_i - b) · log π(m_i | x_i)``: its gradient is the REINFORCE estimate of ``-∇ E[R]``."""
    return -((reward.detach() - baseline) * log_prob).mean()


@register(
    "policy_gradient_noise_mask",
    fidelity="reconstruction",
    verified_by="tests/common_regs/robust/test_policy_gradient_noise_mask.py",
    kind="batch_transform",
    paper="Yavuz, Yang, Policy Gradient-Driven Noise Mask, 2024, arXiv:2406.14568",
    seed=24,
)
class PolicyNoiseMask(ConfigFromKeys, nn.Module):
    r"""Input-conditional additive noise whose per-element mask ~ Beta(a(x), b(x)) is learned by policy gradient.

    A very light policy network outputs Beta parameters for every input element; the classifier trains on
    ``x + σ·m ⊙ ξ``; the policy is updated with REINFORCE from the classifier's per-sample cross-entropy. Only the
    classifier ("heated" intermediate model) is kept for fine-tuning; the policy is dropped at inference.

    Reference:
        Yavuz, Yang, "Policy Gradient-Driven Noise Mask", 2024, arXiv:2406.14568 (Beta policy, REINFORCE with
        log-probabilities and a cross-entropy reward, policy discarded at inference: confirmed from the abstract).
        **Equation unconfirmed**: the noise form x + σ m ⊙ ξ, the softplus parametrisation, the EMA baseline and the
        reward sign (``reward="neg_loss"``: the policy favours masks the classifier still fits) are regkit choices.

    Math:
        .. math::
            (a, b) = \mathrm{softplus}(\pi_\phi(x)) + 10^{-3},\quad m\sim\mathrm{Beta}(a, b),\quad
            \tilde x = x + \sigma\, m\odot\xi,\ \xi\sim\mathcal N(0, I),\\
            L_\pi = -\tfrac1B\sum_i (R_i - \bar R)\sum_j \log \mathrm{Beta}(m_{ij}; a_{ij}, b_{ij}),\quad
            R_i = \mp\,CE(f(\tilde x_i), y_i),\quad \bar R \leftarrow 0.9\bar R + 0.1\,\mathrm{mean}_i R_i

        σ ↔ ``noise_scale``; the sign of R follows ``reward``.

    Args:
        policy: network mapping x (B, *S) to raw Beta parameters (B, 2, *S). None = a linear layer for flat inputs
            of ``num_features`` features. Default None.
        num_features: input width for the default policy (required when ``policy`` is None). Default None.
        noise_scale: σ. Default 0.5 (regkit default; the paper's value is unconfirmed).
        reward: ``"neg_loss"`` (R = -CE) or ``"loss"`` (R = +CE, adversarial noise). Default "neg_loss".

    Shape:
        x (B, *S) → (B, *S); ``last_log_prob`` (B,).

    Returns:
        the noised batch in training mode; ``x`` unchanged in eval mode.

    Note:
        The Beta sample is not reparametrised (the classifier loss does not reach the policy); the policy learns
        only through :meth:`policy_loss`. Call ``policy_loss(per_sample_ce)`` after the classifier forward.

    Example:
        >>> import torch
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> noise = PolicyNoiseMask(num_features=4)
        >>> x = torch.zeros(3, 4)
        >>> bool((noise(x) != 0).any()), bool((noise.eval()(x) == 0).all())
        (True, True)
    """

    config_keys: ClassVar[tuple[str, ...]] = ("num_features", "noise_scale", "reward")
    runtime_keys: ClassVar[tuple[str, ...]] = ("policy",)
    citation: ClassVar[str] = (
        "@article{yavuz2024policy, title={Policy Gradient-Driven Noise Mask}, author={Yavuz, Mehmet Can and Yang, "
        "Yang}, journal={arXiv:2406.14568}, year={2024}}"
    )

    def __init__(
        self,
        policy: nn.Module | None = None,
        num_features: int | None = None,
        noise_scale: float = 0.5,
        reward: Literal["neg_loss", "loss"] = "neg_loss",
    ) -> None:
        super().__init__()
        if policy is None:
            if not isinstance(num_features, int) or num_features < 1:
                raise ValueError(
                    f"`num_features` must be a positive integer when `policy` is None, got {num_features!r}."
                )
            policy = nn.Sequential(nn.Linear(num_features, 2 * num_features), nn.Unflatten(1, (2, num_features)))
        if noise_scale < 0:
            raise ValueError(f"`noise_scale` must be >= 0, got {noise_scale}.")
        if reward not in ("neg_loss", "loss"):
            raise ValueError(f"`reward` must be 'neg_loss' or 'loss', got {reward!r}.")
        self.policy, self.num_features, self.noise_scale, self.reward = (
            policy,
            num_features,
            float(noise_scale),
            reward,
        )
        self.baseline = 0.0
        self.last_log_prob: Tensor | None = None

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        return {"num_features": 4}

    def distribution(self, x: Tensor) -> Beta:
        raw = self.policy(x)
        if raw.shape != (x.shape[0], 2, *x.shape[1:]):
            raise ValueError(
                f"the policy must return (B, 2, *S) = {(x.shape[0], 2, *x.shape[1:])}, got {tuple(raw.shape)}."
            )
        params = F.softplus(raw) + 1e-3
        return Beta(params[:, 0], params[:, 1])

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        dist = self.distribution(x.detach())
        mask = dist.sample().clamp(1e-6, 1 - 1e-6)
        self.last_log_prob = dist.log_prob(mask).reshape(x.shape[0], -1).sum(1)
        return x + self.noise_scale * mask * torch.randn_like(x)

    def policy_loss(self, per_sample_loss: Tensor) -> Tensor:
        """REINFORCE loss of the last sampled masks; updates the EMA baseline."""
        if self.last_log_prob is None:
            raise ValueError("`policy_loss` needs a training-mode forward first (no mask was sampled).")
        reward = -per_sample_loss.detach() if self.reward == "neg_loss" else per_sample_loss.detach()
        loss = reinforce_loss(self.last_log_prob, reward, self.baseline)
        self.baseline = 0.9 * self.baseline + 0.1 * float(reward.mean())
        return loss
