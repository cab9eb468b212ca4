"""CutMix: paste a random box from another sample of the batch; mix the labels by the pasted-area ratio."""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from common_regs.api import ConfigFromKeys
from common_regs.registry import register

logger = logging.getLogger(__name__)

__all__ = ["CutMix", "cutmix_box", "mix_labels"]


def cutmix_box(
    size: tuple[int, ...], lam: float, generator: torch.Generator | None = None
) -> tuple[tuple[int, int], ...]:
    """Random box ((start, stop) per spatial axis) covering about ``1 - lam`` of the spatial extent ``size``.

    2-D (H, W): torchvision v2 rule, half-sides ``int(½ √(1-λ) · side)`` around a uniform centre, clipped.
    1-D (L,): a segment with half-length ``int(½ (1-λ) · L)`` around a uniform centre, clipped.
    """
    if len(size) not in (1, 2):
        raise ValueError(f"CutMix boxes are 1-D or 2-D, got spatial size {size}.")
    ratio = math.sqrt(1.0 - lam) if len(size) == 2 else 1.0 - lam
    box = []
    for side in reversed(size):  # torchvision draws r_x (width) before r_y (height)
        centre = int(torch.randint(side, (1,), generator=generator))
        half = int(0.5 * ratio * side)
        box.append((max(centre - half, 0), min(centre + half, side)))
    return tuple(reversed(box))


def mix_labels(labels: Tensor, lam: float, num_classes: int) -> Tensor:
    """``λ · onehot(y) + (1 - λ) · onehot(y).roll(1, 0)`` (torchvision v2 ``_mixup_label``)."""
    soft = F.one_hot(labels.long(), num_classes).float() if labels.ndim == 1 else labels.float()
    return lam * soft + (1.0 - lam) * soft.roll(1, 0)


@register(
    "cutmix",
    fidelity="paper-equation",
    verified_by="tests/common_regs/augment/test_cutmix.py",
    kind="batch_transform",
    paper="Yun, Han, Oh, Chun, Choe, Yoo, CutMix: Regularization Strategy to Train Strong Classifiers with "
    "Localizable Features, ICCV 2019, arXiv:1905.04899",
    seed=10,
)
class CutMix(ConfigFromKeys):
    r"""Batch CutMix following ``torchvision.transforms.v2.CutMix``, plus a 1-D variant for sequence batches.

    A box of another sample (the batch rolled by one) is pasted into each sample and the labels are mixed with
    weight λ' = 1 − (pasted area)/(total area) on the sample's own label. Images (B, C, H, W) use square-root
    boxes; sequences (B, L) or (B, C, L) (signals, token embeddings over time) use a contiguous segment, where
    the same label rule is meaningful. Not for unordered tabular features (no locality).

    Reference:
        Yun et al., "CutMix: Regularization Strategy to Train Strong Classifiers with Localizable Features",
        ICCV 2019, arXiv:1905.04899 (Eq. 1-2, Algorithm A1). Semantics of ``torchvision.transforms.v2.CutMix``
        (λ ~ Beta(α, α), box half-sides ``int(½√(1-λ)·side)`` around a uniform centre, partner = ``roll(1, 0)``,
        λ adjusted to the clipped box); re-implemented because PyPI torchvision does not load beside torch 2.13 here.

    Math:
        .. math::
            \lambda\sim\mathrm{Beta}(\alpha,\alpha),\quad \tilde x_i = M\odot x_i + (1-M)\odot x_{i-1},\quad
            \lambda' = 1 - \frac{|\mathrm{box}|}{|\mathrm{image}|},\quad
            \tilde y_i = \lambda'\,\mathrm{onehot}(y_i) + (1-\lambda')\,\mathrm{onehot}(y_{i-1})

        M is 0 inside the box; i-1 wraps (batch rolled by one); α ↔ ``alpha``.

    Args:
        num_classes: C, for one-hot labels.
        alpha: Beta parameter α. Default 1.0 (source: paper and torchvision default).
        prob: probability of mixing a batch. Default 1.0 (source: torchvision semantics; the paper's CIFAR runs use
            0.5).
        seed: seed of the transform's own generator; None = global RNG. Default None.

    Shape:
        batch ``(x, y)``: x (B, C, H, W), (B, C, L) or (B, L); y (B,) int or (B, C) soft → (x', (B, C) soft labels).

    Returns:
        ``(mixed inputs, soft labels)``; ``last_lam`` holds λ' (1.0 when the batch was not mixed).

    Note:
        Inputs are cloned, never modified in place. Soft labels of each row sum to 1.

    Example:
        >>> import torch
        >>> cutmix = CutMix(num_classes=2, seed=0)
        >>> x, y = torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)]), torch.tensor([0, 1])
        >>> mixed, soft = cutmix((x, y))
        >>> bool(torch.isclose(soft[0, 0], 1 - mixed[0].mean()))
        True
    """

    config_keys: ClassVar[tuple[str, ...]] = ("num_classes", "alpha", "prob", "seed")
    citation: ClassVar[str] = (
        "@inproceedings{yun2019cutmix, title={CutMix: Regularization Strategy to Train Strong Classifiers with "
        "Localizable Features}, author={Yun, Sangdoo and Han, Dongyoon and Oh, Seong Joon and Chun, Sanghyuk and "
        "Choe, Junsuk and Yoo, Youngjoon}, booktitle={ICCV}, year={2019}}"
    )

    def __init__(self, num_classes: int, alpha: float = 1.0, prob: float = 1.0, seed: int | None = None) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"`num_classes` must be an integer >= 2, got {num_classes!r}.")
        if alpha <= 0:
            raise ValueError(f"`alpha` must be > 0, got {alpha}.")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"`prob` must be in [0, 1], got {prob}.")
        self.num_classes, self.alpha, self.prob, self.seed = num_classes, float(alpha), float(prob), seed
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.last_lam = 1.0
        self.last_box: tuple[tuple[int, int], ...] | None = None

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        return {"num_classes": 3, "alpha": 0.5, "seed": 0}

    def _uniform(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def __call__(self, batch: Any) -> tuple[Tensor, Tensor]:
        if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
            raise ValueError("`CutMix` expects a batch `(inputs, labels)`.")
        x, y = batch[0], batch[1]
        if x.ndim not in (2, 3, 4):
            raise ValueError(f"`CutMix` inputs must be (B, L), (B, C, L) or (B, C, H, W), got {tuple(x.shape)}.")
        if len(x) != len(y):
            raise ValueError(f"inputs have {len(x)} rows but labels {len(y)}.")
        if self.prob < 1.0 and self._uniform() >= self.prob:
            self.last_lam, self.last_box = 1.0, None
            return x, mix_labels(y, 1.0, self.num_classes)
        # λ ~ Beta(α, α) as G₁/(G₁+G₂) of two Gamma(α) draws, so the transform's own generator is honoured
        a, b = (float(torch._standard_gamma(torch.tensor([self.alpha]), generator=self.generator)) for _ in range(2))
        lam = a / (a + b) if a + b > 0 else 0.5
        spatial = tuple(x.shape[2:]) if x.ndim == 4 else (x.shape[-1],)
        box = cutmix_box(spatial, lam, self.generator)
        index = (Ellipsis, *[slice(start, stop) for start, stop in box])
        mixed = x.clone()
        mixed[index] = x.roll(1, 0)[index]
        area = math.prod(stop - start for start, stop in box)
        lam_adjusted = 1.0 - area / math.prod(spatial)
        self.last_lam, self.last_box = lam_adjusted, box
        return mixed, mix_labels(y, lam_adjusted, self.num_classes)
