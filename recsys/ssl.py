"""Self-supervised item-tower regularization with feature masking (RFM / CFM) and an in-batch InfoNCE loss.

Yao, Yi, Cheng, Yu, Chen, Menon, Hong, Chi, Tjoa, Kang, Ettinger, "Self-supervised Learning for Large-scale Item
Recommendations", CIKM 2021, arXiv:2007.12865. Two ``common_regs`` hooks plug the method into
:class:`recsys.trainer.Trainer` without trainer changes:

* a ``batch_transform`` (:class:`RandomFeatureMasking` or :class:`CorrelatedFeatureMasking`) samples a separate
  batch of SSL items **uniformly from the catalogue** (§3.3: not from the power-law click distribution; drawn
  without replacement, so no item is its own in-batch negative) and builds two views of their features with
  complementary masks (§3.2), stored in ``batch.extras["ssl"]``;
* a ``loss`` (:class:`ItemSSLLoss`) encodes both views with the shared item tower and returns the InfoNCE of
  Eq. 3; :class:`~common_regs.training.RegHooks` adds ``α ·`` it to the main loss (Eq. 5).

The augmentation (masking to a learned default row, multi-valued dropout) lives in :mod:`recsys.feature_masking`,
the pairwise feature MI of CFM in :mod:`recsys.feature_mi`; this module holds the loss, the config and
:func:`build_ssl_hooks`, and re-exports the masking classes.

Paper choices that could not be confirmed here (``shared/reference/recsys.md`` §1.2-1.3) and regkit's reading:
the number of partners (the text gives n = ⌊k/2⌋, "masked and retained set roughly the same size": for odd k,
1 + ⌊k/2⌋ = ⌈k/2⌉ = m of recsys.feature_masking; for even k regkit masks exactly half); the dropout rate, τ and α
(not recovered; defaults below come from public re-implementations); how MI handles multi-valued features
(:mod:`recsys.feature_mi`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from common_regs.api import ConfigFromKeys, TrainContext
from common_regs.registry import register
from recsys.feature_masking import (
    CITATION,
    PAPER,
    CorrelatedFeatureMasking,
    RandomFeatureMasking,
    SSLViews,
    cfm_masked_set,
    drop_values,
    mask_features,
    masked_count,
)
from recsys.feature_mi import MIMatrix, cached_mutual_information_matrix
from recsys.features import FeatureTable
from recsys.losses import in_batch_softmax_loss

logger = logging.getLogger(__name__)

__all__ = [
    "CorrelatedFeatureMasking",
    "ItemSSLLoss",
    "RandomFeatureMasking",
    "SSLConfig",
    "SSLViews",
    "build_ssl_hooks",
    "cfm_masked_set",
    "drop_values",
    "mask_features",
    "masked_count",
    "ssl_info_nce",
    "ssl_mutual_information",
]


# -- the math ----------------------------------------------------------------------------------------------------


def ssl_info_nce(view_a: Tensor, view_b: Tensor, temperature: float, *, item_ids: Tensor | None = None) -> Tensor:
    """Eq. 3: ``−(1/N) Σ_i log( exp(s(z_i, z'_i)/τ) / Σ_j exp(s(z_i, z'_j)/τ) )``, s = cosine similarity.

    The same in-batch softmax as the main loss (:func:`recsys.losses.in_batch_softmax_loss` on L2-normalised
    vectors with scale 1/τ, no logQ). ``item_ids`` removes columns of duplicate items from a row's denominator.
    """
    if view_a.dim() != 2 or view_a.shape != view_b.shape:
        raise ValueError(
            f"`view_a` and `view_b` must both be (N, D), got {tuple(view_a.shape)} and {tuple(view_b.shape)}."
        )
    if temperature <= 0:
        raise ValueError(f"`temperature` must be > 0, got {temperature}.")
    return in_batch_softmax_loss(
        F.normalize(view_a, dim=-1), F.normalize(view_b, dim=-1), scale=1.0 / temperature, candidate_ids=item_ids
    )


# -- the contrastive loss ----------------------------------------------------------------------------------------


@register("ssl_infonce", kind="loss", paper=PAPER,
          fidelity="paper-equation",
          verified_by="tests/recsys/test_ssl.py::test_info_nce_matches_a_hand_computed_three_item_batch",
          seed=23)
class ItemSSLLoss(ConfigFromKeys):
    r"""In-batch InfoNCE between the two augmented views of the SSL items, through the shared item tower.

    The auxiliary loss of the SSL framework: regularizes item representations, most where clicks are sparse
    (tail items are sampled as often as head items). Needs a feature-masking transform among the hooks.

    Reference:
        Yao et al., "Self-supervised Learning for Large-scale Item Recommendations", CIKM 2021, arXiv:2007.12865
        (Eq. 3 loss, Eq. 5 total loss; encoders H = G = the item tower, embedding tables shared).

    Math:
        .. math::

            \mathcal{L}_{self} = -\frac{1}{N}\sum_i \log
                \frac{\exp(s(z_i, z'_i)/\tau)}{\sum_{j} \exp(s(z_i, z'_j)/\tau)},\quad
            s(a, b) = \frac{\langle a, b\rangle}{\lVert a\rVert \lVert b\rVert},\quad
            \mathcal{L} = \mathcal{L}_{main} + \alpha\, \mathcal{L}_{self}

        z_i = item_tower(view A of x_i), z'_j = item_tower(view B of x_j); τ ↔ ``temperature``, α ↔ ``weight``
        (applied by RegHooks).

    Args:
        temperature: τ. Default 0.1 (source: RecBole-GNN SSL4REC ``tau``; the paper's value was not recovered).
        weight: α. Default 0.1 (source: SELFRec SSL4Rec ``alpha``; the paper tunes α, value not recovered).

    Shape:
        view embeddings (N, D).

    Returns:
        A scalar tensor (the unweighted L_self); ``last_alignment`` keeps the batch mean of s(z_i, z'_i).

    Note:
        Expects ``ctx.batch.extras["ssl"]`` (:class:`SSLViews`) and a model with ``item_tower.pack`` and
        ``encode_items`` (:class:`recsys.models.TwoTower`). Shapes are checked, values are not.

    Example:
        >>> import torch
        >>> z = torch.eye(3)
        >>> round(float(ssl_info_nce(z, z, 1.0)), 4)  # -log(e / (e + 2))
        0.5514
    """

    config_keys: ClassVar[tuple[str, ...]] = ("temperature", "weight")
    runtime_keys: ClassVar[tuple[str, ...]] = ()
    citation: ClassVar[str] = CITATION

    def __init__(self, temperature: float = 0.1, weight: float = 0.1) -> None:
        if temperature <= 0:
            raise ValueError(f"`temperature` must be > 0, got {temperature}.")
        if weight < 0:
            raise ValueError(f"`weight` (α) must be >= 0, got {weight}.")
        self.temperature, self.weight = temperature, weight
        self.last_alignment = float("nan")

    def __call__(self, ctx: TrainContext) -> Tensor:
        views = getattr(ctx.batch, "extras", {}).get("ssl")
        if not isinstance(views, SSLViews):
            raise ValueError(
                "`ssl_infonce` found no `extras['ssl']` views in the batch: add RandomFeatureMasking or "
                "CorrelatedFeatureMasking to the trainer hooks (build_ssl_hooks does both)."
            )
        model = ctx.model
        tower = getattr(model, "item_tower", None)
        if tower is None or not hasattr(tower, "pack") or not hasattr(model, "encode_items"):
            raise TypeError(f"`ssl_infonce` needs a two-tower model with an item tower, got {type(model).__name__}.")
        z_a = model.encode_items(tower.pack(views.view_a))
        z_b = model.encode_items(tower.pack(views.view_b))
        with torch.no_grad():
            self.last_alignment = float(F.cosine_similarity(z_a, z_b, dim=-1).mean())
        return ssl_info_nce(z_a, z_b, self.temperature, item_ids=views.items)


# -- configuration -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SSLConfig:
    """The ``ssl:`` section of a recsys run config (``ssl: cfm`` is shorthand for ``{mode: cfm}``).

    Args:
        mode: ``"none"``, ``"rfm"`` or ``"cfm"``. alpha: α. temperature: τ. mask_ratio: r. dropout: p.
        batch_size: SSL items per step (None = main batch size). Defaults as in the hook classes.
        mi_weighting: ``"catalogue"`` (every item once; matches the uniform SSL items) or ``"interactions"``
            (items weighted by training count, as LibRecommender). Default "catalogue" (regkit choice).
        mi_cache_dir: where the MI matrix is cached (None = ``<run output>/cache``).
        cfm_exclude_id: CFM only: leave the item's id feature(s) (kind ``id``) out of the MI grouping. The id
            determines every other feature, so it is every feature's top-MI partner and raw-MI CFM always groups
            the seed with it; excluded, the id is kept in view A and masked in view B while the seed and its
            partners are drawn among the other features (:class:`CorrelatedFeatureMasking` ``exclude``).
            Default False (the paper's definition: MI over all item features).
    """

    mode: Literal["none", "rfm", "cfm"] = "none"
    alpha: float = 0.1
    temperature: float = 0.1
    mask_ratio: float = 0.5
    dropout: float = 0.1
    batch_size: int | None = None
    mi_weighting: Literal["catalogue", "interactions"] = "catalogue"
    mi_cache_dir: str | None = None
    cfm_exclude_id: bool = False

    def __post_init__(self) -> None:
        if self.mode not in ("none", "rfm", "cfm"):
            raise ValueError(f"`ssl.mode` must be 'none', 'rfm' or 'cfm', got {self.mode!r}.")
        if self.mi_weighting not in ("catalogue", "interactions"):
            raise ValueError(f"`ssl.mi_weighting` must be 'catalogue' or 'interactions', got {self.mi_weighting!r}.")
        if self.alpha < 0:
            raise ValueError(f"`ssl.alpha` must be >= 0, got {self.alpha}.")
        if self.cfm_exclude_id and self.mode != "cfm":
            raise ValueError(f"`ssl.cfm_exclude_id` applies to mode 'cfm' only, got mode {self.mode!r}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_ssl_hooks(
    config: SSLConfig,
    items: FeatureTable,
    *,
    item_counts: np.ndarray | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
) -> list[Any]:
    """The trainer hooks for ``config``: ``[]`` for mode none, else ``[masking transform, ItemSSLLoss]``.

    ``item_counts`` (training interactions per item) is needed for ``mi_weighting="interactions"``.
    """
    if config.mode == "none":
        return []
    options = {
        "mask_ratio": config.mask_ratio,
        "dropout": config.dropout,
        "batch_size": config.batch_size,
        "seed": seed,
    }
    if config.mode == "rfm":
        transform: RandomFeatureMasking | CorrelatedFeatureMasking = RandomFeatureMasking(items, **options)
    else:
        mi = ssl_mutual_information(config, items, item_counts=item_counts, cache_dir=cache_dir)
        exclude = [name for name, f in items.features.items() if f.spec.kind == "id"] if config.cfm_exclude_id else []
        transform = CorrelatedFeatureMasking(items, mi, **options, exclude=exclude)
    logger.info(
        "SSL %s: alpha=%s tau=%s mask_ratio=%s (m=%d of %d features%s) dropout=%s batch=%s",
        config.mode,
        config.alpha,
        config.temperature,
        config.mask_ratio,
        transform.count,
        len(transform.keys),
        f", {list(transform.exclude)} outside the MI grouping" if getattr(transform, "exclude", ()) else "",
        config.dropout,
        config.batch_size or "main batch",
    )
    return [transform, ItemSSLLoss(temperature=config.temperature, weight=config.alpha)]


def ssl_mutual_information(
    config: SSLConfig,
    items: FeatureTable,
    *,
    item_counts: np.ndarray | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> MIMatrix:
    """The (cached) MI matrix of ``items`` with the configured weighting."""
    weights = None
    if config.mi_weighting == "interactions":
        if item_counts is None:
            raise ValueError("`ssl.mi_weighting`='interactions' needs the training `item_counts`.")
        weights = np.asarray(item_counts, dtype=np.float64)
    return cached_mutual_information_matrix(
        items, config.mi_cache_dir or cache_dir, weights=weights, weighting=config.mi_weighting
    )
