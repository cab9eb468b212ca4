"""Cross initialization: start a learned token embedding at the text encoder's output of a mean embedding.

An ℓ2 penalty then anchors the embedding there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.generative._utils import squared_distance
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["CrossInitialization"]


@register("cross_initialization", kind="loss", seed=53,
          fidelity="paper-equation",
          verified_by="tests/common_regs/generative/test_generative.py::test_cross_initialization_anchor",
          paper="Pang, Zhang, Zhou, Wang, Cross Initialization for Face Personalization of Text-to-Image Models, "
                "CVPR 2024, arXiv:2312.15905")
class CrossInitialization(ConfigFromKeys):
    r"""Initialize a textual-inversion embedding from the encoder output of a mean embedding and anchor it there.

    The textual-inversion input embedding v starts at ``v₀ = E(v̄)`` — the text encoder's *output* for the mean
    of a set of reference token embeddings (celebrity names in the paper), which lies close to where optimized
    embeddings end up — and an ℓ2 term keeps v near v₀, cutting training from thousands of steps to hundreds.

    Reference:
        Lianyu Pang, Jian Yin, Haoran Xie, Qiping Wang, Qing Li, Xudong Mao, "Cross Initialization for Face
        Personalization of Text-to-Image Models", CVPR 2024, arXiv:2312.15905 (§3; author list and arXiv id
        recalled, unconfirmed). Small version: any callable encoder; Stable Diffusion is not reproduced.

    Math:
        .. math::
            v_0 = E\Big(\frac1K\sum_k e_k\Big),\qquad R(v) = \|v - v_0\|_2^2

    Args:
        weight: coefficient λ of R used by ``RegHooks``. Default 5e-4 (regkit; the paper's value unconfirmed).

    Shape:
        reference_embeddings (K, D) → v₀ (D,) (or the encoder's output shape).

    Returns:
        ``__call__`` returns the scalar anchor penalty on ``self.embedding``.

    Note:
        Call :meth:`initialize` once before training; it creates ``self.embedding`` (an ``nn.Parameter``).

    Example:
        >>> import torch
        >>> ci = CrossInitialization(); v = ci.initialize(torch.nn.Identity(), torch.ones(3, 4))
        >>> float(ci.penalty())
        0.0
    """

    config_keys: ClassVar[tuple[str, ...]] = ("weight",)
    runtime_keys: ClassVar[tuple[str, ...]] = ()
    citation: ClassVar[str] = (
        "@inproceedings{pang2024cross, title={Cross Initialization for Face Personalization of Text-to-Image Models}, "
        "author={Pang, Lianyu and others}, booktitle={CVPR}, year={2024}}"
    )

    def __init__(self, weight: float = 5e-4) -> None:
        if weight < 0:
            raise ValueError(f"`weight` must be >= 0, got {weight}.")
        self.weight = float(weight)
        self.embedding: nn.Parameter | None = None
        self.anchor: Tensor | None = None

    @torch.no_grad()
    def initialize(self, encoder: Callable[[Tensor], Tensor], reference_embeddings: Tensor) -> nn.Parameter:
        """Set ``v₀ = encoder(mean(reference_embeddings))`` and return a trainable copy ``v``."""
        if reference_embeddings.ndim != 2:
            raise ValueError(f"`reference_embeddings` must be (K, D), got shape {tuple(reference_embeddings.shape)}.")
        self.anchor = encoder(reference_embeddings.mean(0)).detach().clone()
        self.embedding = nn.Parameter(self.anchor.clone())
        return self.embedding

    def penalty(self) -> Tensor:
        if self.embedding is None or self.anchor is None:
            raise ValueError("CrossInitialization: call `initialize(encoder, reference_embeddings)` first.")
        return squared_distance([self.embedding], [self.anchor])

    def __call__(self, ctx: TrainContext) -> Tensor:
        return self.penalty()

    def state_dict(self) -> dict[str, Any]:
        return {"anchor": self.anchor, "embedding": None if self.embedding is None else self.embedding.detach()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.anchor = state["anchor"]
        self.embedding = None if state["embedding"] is None else nn.Parameter(state["embedding"].clone())
