"""MEE: maximize a nearest-neighbour entropy estimate of discriminator embeddings to combat GAN mode collapse."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["ManifoldEntropy", "disomap_loss", "dlle_loss", "kl_entropy", "mee_entropy", "nearest_sq_distance"]

EULER_GAMMA = 0.5772156649015329


def nearest_sq_distance(codes: Tensor, reference: Tensor) -> Tensor:
    """``ρᵢ² = min_b ‖codesᵢ − reference_b‖²`` (B,) — squared Euclidean distance to the nearest reference code."""
    if codes.ndim != 2 or reference.ndim != 2 or codes.shape[1] != reference.shape[1]:
        raise ValueError(f"`codes` (B, d) and `reference` (K, d) must be 2-D with equal d, got {tuple(codes.shape)} "
                         f"and {tuple(reference.shape)}.")
    return torch.cdist(codes, reference).pow(2).min(dim=1).values


def _log_unit_ball_volume(d: int) -> float:
    return d / 2 * math.log(math.pi) - math.lgamma(d / 2 + 1)


def kl_entropy(codes: Tensor, reference: Tensor) -> Tensor:
    """Kozachenko–Leonenko estimate ``Ĥ = (d/2)·mean log ρᵢ² + log V_d + log K + γ`` (independent reference set)."""
    d, k = codes.shape[1], reference.shape[0]
    return d / 2 * nearest_sq_distance(codes, reference).log().mean() + _log_unit_ball_volume(d) + math.log(k) \
        + EULER_GAMMA


def mee_entropy(codes: Tensor, reference: Tensor) -> Tensor:
    """The MEE statistic on the same scale: ``(d/2)·log mean ρᵢ² + log V_d + log K + γ`` (log of the mean).

    ``mee_entropy − kl_entropy ≥ 0`` is a Jensen gap: the estimator's bias relative to Kozachenko–Leonenko. It is
    independent of location and scale, so ``mee_entropy`` shifts exactly like the true entropy (``+d log c`` under
    ``x ↦ cx``); MEE maximizes its monotone transform ``log mean ρᵢ²/d``.
    """
    d, k = codes.shape[1], reference.shape[0]
    return d / 2 * nearest_sq_distance(codes, reference).mean().log() + _log_unit_ball_volume(d) + math.log(k) \
        + EULER_GAMMA


def dlle_loss(encoder: Callable[[Tensor], Tensor], x: Tensor, x_aug: Tensor) -> Tensor:
    """DLLE consistency ``mse(D(x), sg D(aug x))`` (official: aug = random flip + 1e-3 Gaussian noise)."""
    return F.mse_loss(encoder(x), encoder(x_aug).detach())


def disomap_loss(encoder: Callable[[Tensor], Tensor], x_real: Tensor, x_fake: Tensor, alpha: Tensor,
                 noise: Tensor) -> Tensor:
    """DIsoMap linearity ``mse(D(αx_r + (1−α)x_f), sg(αD(x_r) + (1−α)D(x_f) + n))``; α (B,), noise like the codes.

    Official: α ~ N(0, 1) (sic: Gaussian, extrapolating as well as interpolating) and n ~ N(0, 0.05²).
    """
    z_r, z_f = encoder(x_real), encoder(x_fake)
    target = alpha[:, None] * z_r + (1 - alpha[:, None]) * z_f + noise
    a = alpha.reshape(-1, *([1] * (x_real.ndim - 1)))
    return F.mse_loss(encoder(a * x_real + (1 - a) * x_fake), target.detach())


@register("manifold_entropy", kind="loss", seed=11,
          fidelity="official-code",
          verified_by="tests/common_regs/generative/test_manifold_entropy.py",
          paper="Liu, Li, Wu, Liang, Huang, Li, Ghanem, Zheng, Combating Mode Collapse in GANs via Manifold Entropy "
                "Estimation, AAAI 2023, arXiv:2208.12055")
class ManifoldEntropy(ConfigFromKeys):
    r"""Entropy bonus on embedding codes: push each code away from its nearest neighbour in a replay buffer.

    In MEE the discriminator is an embedding network (shaped by the DLLE and DIsoMap terms, see
    :func:`dlle_loss` / :func:`disomap_loss`); the generator (and the discriminator on real codes) maximizes a
    non-parametric nearest-neighbour entropy estimate of the codes, which spreads samples over modes.

    Reference:
        Haozhe Liu, Bing Li, Haoqian Wu, Hanbang Liang, Yawen Huang, Yuexiang Li, Bernard Ghanem, Yefeng Zheng,
        "Combating Mode Collapse in GANs via Manifold Entropy Estimation", AAAI 2023, arXiv:2208.12055. Checked
        against the official ``HaozheLiu-ST/MEE`` ``train.py`` (``enrtopy_loss``, ``entropy_buffer``, DLLE /
        DIsoMap blocks); the paper's own estimator equation was not read (the code is the reference).

    Math:
        .. math::
            L_{ent} = -\log\Big(\frac1B\sum_i \min_{b\le K} \tfrac1d\|z_i - m_b\|^2\Big),\qquad
            m \leftarrow \mathrm{FIFO}(m, \mathrm{sg}\,z)

        z ↔ the batch codes (B, d), m ↔ the replay buffer (K, d), initialised U(−1, 1); the coefficient η (official:
        linear ramp 0 → 1 over 100 epochs) is the ``RegHooks`` weight (use ``schedules.Linear``).

    Args:
        code_dim: d, the embedding size. Default 8 (official ``--outcomes``).
        buffer_size: K. Default 1024 (official ``--buffer_size``).
        weight: η used by ``RegHooks`` when no schedule is given. Default 1.0 (official ``--entropy_lr``).

    Shape:
        ``ctx.outputs`` or ``ctx.extras["codes"]``: (B, d) codes of the current batch.

    Returns:
        Scalar loss (minimizing it maximizes the entropy estimate); the buffer is updated after the distance.

    Note:
        The official buffer is (K, B, d) — code i is compared only with past codes at batch position i — and its
        FIFO drops B rows but appends one, so after a few steps it holds only the previous batch. regkit keeps the
        stated intent: a (K, d) FIFO of the last K codes, every code compared with all of them.

    Example:
        >>> import torch
        >>> term = ManifoldEntropy(code_dim=2, buffer_size=4)
        >>> loss = term.forward(torch.zeros(3, 2))
        >>> term.buffer[-3:].abs().sum().item()
        0.0
    """

    config_keys: ClassVar[tuple[str, ...]] = ("code_dim", "buffer_size", "weight")
    runtime_keys: ClassVar[tuple[str, ...]] = ()
    citation: ClassVar[str] = (
        "@inproceedings{liu2023combating, title={Combating Mode Collapse in GANs via Manifold Entropy Estimation}, "
        "author={Liu, Haozhe and Li, Bing and Wu, Haoqian and Liang, Hanbang and Huang, Yawen and Li, Yuexiang and "
        "Ghanem, Bernard and Zheng, Yefeng}, booktitle={AAAI}, year={2023}}"
    )

    def __init__(self, code_dim: int = 8, buffer_size: int = 1024, weight: float = 1.0) -> None:
        if code_dim < 1:
            raise ValueError(f"`code_dim` must be >= 1, got {code_dim}.")
        if buffer_size < 1:
            raise ValueError(f"`buffer_size` must be >= 1, got {buffer_size}.")
        self.code_dim, self.buffer_size, self.weight = int(code_dim), int(buffer_size), float(weight)
        self.buffer = torch.rand(self.buffer_size, self.code_dim) * 2 - 1

    def forward(self, codes: Tensor) -> Tensor:
        if codes.ndim != 2 or codes.shape[1] != self.code_dim:
            raise ValueError(f"`codes` must be (B, {self.code_dim}), got {tuple(codes.shape)}.")
        reference = self.buffer.to(device=codes.device, dtype=codes.dtype)
        loss = -torch.log(nearest_sq_distance(codes, reference).mean() / self.code_dim)
        self.buffer = torch.cat([self.buffer, codes.detach().to(self.buffer)])[-self.buffer_size:]
        return loss

    def __call__(self, ctx: TrainContext) -> Tensor:
        codes = ctx.extras.get("codes", ctx.outputs)
        if not isinstance(codes, Tensor):
            raise ValueError("ManifoldEntropy needs the codes in ctx.extras['codes'] or ctx.outputs "
                             "(a (B, d) tensor).")
        return self.forward(codes)

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if tuple(state["buffer"].shape) != (self.buffer_size, self.code_dim):
            raise ValueError(f"`buffer` must be ({self.buffer_size}, {self.code_dim}), "
                             f"got {tuple(state['buffer'].shape)}.")
        self.buffer = state["buffer"].clone()
