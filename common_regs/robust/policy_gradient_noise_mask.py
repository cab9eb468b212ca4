"""Policy-gradient-driven noise mask: a policy samples Beta masks that multiply the input, trained by REINFORCE."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Beta

from common_regs.api import ConfigFromKeys
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["PolicyNoiseMask", "gaussian_blur", "reinforce_loss"]

# A Beta sample can round to exactly 0 or 1 in float32, where the log-density is infinite.
_EPS = 1e-6


def reinforce_loss(log_prob: Tensor, task_loss: Tensor) -> Tensor:
    """Official joint objective ``mean_i [log Σ_j π(m_ij | x_i)] · L_task`` (``train_one_epoch.py``).

    ``log_prob`` (B, M) holds the per-cell Beta log-densities of the sampled masks; ``task_loss`` is the classifier's
    batch-mean cross-entropy, not detached: the one objective trains both networks.
    """
    return torch.logsumexp(log_prob, dim=1).mean() * task_loss


def gaussian_blur(image: Tensor, kernel_size: int, sigma: float) -> Tensor:
    """Separable Gaussian blur of (B, C, H, W) with reflect padding (torchvision ``gaussian_blur`` semantics).

    Weights ``exp(-½ (x/σ)²)`` normalized over ``x ∈ {-(k-1)/2, …, (k-1)/2}``; padding ``k // 2`` on each side.
    """
    half = (kernel_size - 1) * 0.5
    x = torch.linspace(-half, half, kernel_size, dtype=image.dtype, device=image.device)
    k1d = torch.exp(-0.5 * (x / sigma) ** 2)
    k1d = k1d / k1d.sum()
    kernel = (k1d[:, None] * k1d[None, :]).expand(image.shape[1], 1, kernel_size, kernel_size)
    pad = kernel_size // 2
    padded = F.pad(image, [pad, pad, pad, pad], mode="reflect")
    return F.conv2d(padded, kernel, groups=image.shape[1])


class _TwoHeadPolicy(nn.Module):
    """The official ``MaskGenerator`` heads (Linear-BN-ReLU ×2, Linear) for log α and log β, on flat features."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()

        def head() -> nn.Sequential:
            return nn.Sequential(nn.Linear(in_dim, in_dim), nn.BatchNorm1d(in_dim), nn.ReLU(),
                                 nn.Linear(in_dim, in_dim), nn.BatchNorm1d(in_dim), nn.ReLU(),
                                 nn.Linear(in_dim, out_dim))

        self.alpha, self.beta = head(), head()

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([self.alpha(x), self.beta(x)], dim=1)


@register(
    "policy_gradient_noise_mask",
    fidelity="official-code",
    verified_by="tests/common_regs/robust/test_policy_gradient_noise_mask.py",
    kind="batch_transform",
    paper="Yavuz, Yang, Policy Gradient-Driven Noise Mask, 2024, arXiv:2406.14568",
    seed=24,
)
class PolicyNoiseMask(ConfigFromKeys, nn.Module):
    r"""Input-conditional multiplicative Beta noise mask, sampled by a light policy trained with REINFORCE.

    A policy maps the input to per-cell log-parameters of a Beta distribution; these are smoothed with a running
    base; a mask is sampled, (for images) upsampled from a ``grid × grid`` layout to the image and Gaussian-blurred,
    and multiplies the input. One objective, the summed-likelihood-weighted cross-entropy, trains the classifier and
    the policy. Only the classifier ("heated" intermediate model) is kept and fine-tuned; the policy is dropped.

    Reference:
        Yavuz, Yang, "Policy Gradient-Driven Noise Mask", 2024, arXiv:2406.14568. Official code
        ``ogrenenmakine/Policy-Gradient-Driven-Noise-Mask`` (moved to ``convergedmachine/…``):
        ``_policy_gradient/create_model.py`` (``MaskGenerator``), ``_policy_gradient/train_one_epoch.py`` (mask,
        blur, objective), ``_policy_gradient/train.py`` (base initialization), ``get_args_parser.py`` and the README
        command (grid 64, kernel 13, σ 6).

    Math:
        .. math::
            (\hat a, \hat b) = \pi_\phi(x),\quad a = d\,\bar a + (1-d)\,\hat a,\quad b = d\,\bar b + (1-d)\,\hat b,
            \quad \bar a \leftarrow \rho\,\bar a + (1-\rho)\,\mathrm{mean}_i\,\hat a_i\ (\text{same for } \bar b),\\
            m_{ij}\sim\mathrm{Beta}(e^{a_{ij}}, e^{b_{ij}}),\quad
            \tilde x_i = x_i \odot \mathrm{blur}_{k,\sigma}(\mathrm{up}(m_i)),\quad
            L = \Big[\tfrac1B\sum_i \log\sum_j \mathrm{Beta}(m_{ij}; e^{a_{ij}}, e^{b_{ij}})\Big]\cdot
            \mathrm{CE}(f(\tilde x), y)

        d ↔ ``decay``, ρ ↔ ``base_momentum``; ā, b̄ start U(0, 1); "up" is nearest-neighbour upsampling.

    Args:
        policy: network mapping x (B, *S) to raw log-parameters (B, 2, M) (row 0 log α, row 1 log β), M = F for
            flat inputs (B, F) and ``grid²`` for images (B, C, H, W). None = the official two MLP heads on flat
            inputs of ``num_features`` features (images need a policy with a feature extractor). Default None.
        num_features: F, the flat input width (required when ``policy`` is None or inputs are flat). Default None.
        grid: mask cells per image side for (B, C, H, W) inputs. Default None (flat inputs); the official value
            is 64.
        kernel_size: Gaussian blur kernel for image masks. Default 13 (official README / args).
        sigma: Gaussian blur σ. Default 6.0 (official README / args).
        decay: d, weight of the running base in the Beta parameters. Default 0.9 (official ``MaskGenerator``).
        base_momentum: ρ, momentum of the running base. Default 0.99 (official ``MaskGenerator``).

    Shape:
        x (B, F) or (B, C, H, W) → same shape; ``last_log_prob`` (B, M); ``last_mask`` (B, M).

    Returns:
        The masked batch in training mode; ``x`` unchanged in eval mode.

    Note:
        Deviations: samples are clamped to [1e-6, 1 − 1e-6] so the log-density stays finite; the policy sees
        ``x.detach()``; flat inputs are masked cell by cell (no upsampling or blur: the official code only handles
        images). The official heated-model validation multiplies by masks drawn from the base distribution
        Beta(e^ā, e^b̄); here eval mode is the identity (the paper drops the policy at inference). The official
        optimizer gives the policy a tenth of the classifier's learning rate with a cosine schedule: a trainer
        setting.

    Example:
        >>> import torch
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> noise = PolicyNoiseMask(num_features=4)
        >>> x = torch.ones(3, 4)
        >>> bool(((noise(x) > 0) & (noise(x) < 1)).all()), bool((noise.eval()(x) == 1).all())
        (True, True)
    """

    config_keys: ClassVar[tuple[str, ...]] = ("num_features", "grid", "kernel_size", "sigma", "decay",
                                              "base_momentum")
    runtime_keys: ClassVar[tuple[str, ...]] = ("policy",)
    citation: ClassVar[str] = (
        "@article{yavuz2024policy, title={Policy Gradient-Driven Noise Mask}, author={Yavuz, Mehmet Can and Yang, "
        "Yang}, journal={arXiv:2406.14568}, year={2024}}"
    )

    base_alpha: Tensor
    base_beta: Tensor

    def __init__(
        self,
        policy: nn.Module | None = None,
        num_features: int | None = None,
        grid: int | None = None,
        kernel_size: int = 13,
        sigma: float = 6.0,
        decay: float = 0.9,
        base_momentum: float = 0.99,
    ) -> None:
        super().__init__()
        if (num_features is None) == (grid is None):
            raise ValueError(
                f"give exactly one of `num_features` (flat inputs) and `grid` (images), got {num_features!r}, "
                f"{grid!r}."
            )
        size = num_features if grid is None else grid
        if not isinstance(size, int) or size < 1:
            raise ValueError(f"`num_features` / `grid` must be a positive integer, got {size!r}.")
        if policy is None:
            if num_features is None:
                raise ValueError("image inputs (`grid`) need a `policy` with a feature extractor.")
            policy = _TwoHeadPolicy(num_features, num_features)
        if kernel_size < 1 or kernel_size % 2 == 0 or sigma <= 0:
            raise ValueError(f"`kernel_size` must be odd and >= 1 and `sigma` > 0, got {kernel_size}, {sigma}.")
        if not (0 <= decay <= 1 and 0 <= base_momentum <= 1):
            raise ValueError(f"`decay` and `base_momentum` must be in [0, 1], got {decay}, {base_momentum}.")
        self.policy = policy
        self.num_features, self.grid = num_features, grid
        self.kernel_size, self.sigma = int(kernel_size), float(sigma)
        self.decay, self.base_momentum = float(decay), float(base_momentum)
        cells = size if grid is None else size * size
        # Official train.py: base_alpha, base_beta = torch.rand((1, grid * grid)).
        self.register_buffer("base_alpha", torch.rand(cells))
        self.register_buffer("base_beta", torch.rand(cells))
        self.last_log_prob: Tensor | None = None
        self.last_mask: Tensor | None = None

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        return {"num_features": 4}

    def distribution(self, x: Tensor) -> Beta:
        """Beta(e^a, e^b) of the cells; updates the running base (training only)."""
        raw = self.policy(x.detach())
        cells = self.base_alpha.numel()
        if raw.shape != (x.shape[0], 2, cells):
            raise ValueError(f"the policy must return (B, 2, M) = {(x.shape[0], 2, cells)}, got {tuple(raw.shape)}.")
        log_a = self.decay * self.base_alpha + (1 - self.decay) * raw[:, 0]
        log_b = self.decay * self.base_beta + (1 - self.decay) * raw[:, 1]
        with torch.no_grad():
            self.base_alpha.mul_(self.base_momentum).add_((1 - self.base_momentum) * raw[:, 0].mean(0))
            self.base_beta.mul_(self.base_momentum).add_((1 - self.base_momentum) * raw[:, 1].mean(0))
        return Beta(log_a.exp(), log_b.exp())

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        if self.grid is None and x.shape[1:] != (self.num_features,):
            raise ValueError(f"flat inputs must be (B, {self.num_features}), got {tuple(x.shape)}.")
        if self.grid is not None and x.dim() != 4:
            raise ValueError(f"`grid` masks need (B, C, H, W) inputs, got {tuple(x.shape)}.")
        dist = self.distribution(x)
        mask = dist.sample().clamp(_EPS, 1 - _EPS)
        self.last_mask = mask
        self.last_log_prob = dist.log_prob(mask)
        if self.grid is None:
            return x * mask.to(x.dtype)
        image_mask = mask.reshape(-1, 1, self.grid, self.grid).to(x.dtype)
        if image_mask.shape[-2:] != x.shape[-2:]:
            image_mask = F.interpolate(image_mask, size=tuple(x.shape[-2:]), mode="nearest")
        return x * gaussian_blur(image_mask, self.kernel_size, self.sigma)

    def joint_loss(self, task_loss: Tensor) -> Tensor:
        """The official objective for the last sampled masks; use it in place of the classifier loss.

        Its gradient is ``mean_i LSE_i · ∇_θ CE`` for the classifier and ``CE · ∇_φ mean_i LSE_i`` for the policy
        (REINFORCE with the cross-entropy as cost, no baseline).
        """
        if self.last_log_prob is None:
            raise ValueError("`joint_loss` needs a training-mode forward first (no mask was sampled).")
        if task_loss.dim() != 0:
            raise ValueError(f"`task_loss` must be the batch-mean scalar loss, got shape {tuple(task_loss.shape)}.")
        return reinforce_loss(self.last_log_prob, task_loss)

    def extra_repr(self) -> str:
        return (f"cells={self.base_alpha.numel()}, grid={self.grid}, blur=({self.kernel_size}, {self.sigma:g}), "
                f"decay={self.decay:g}, base_momentum={self.base_momentum:g}")
