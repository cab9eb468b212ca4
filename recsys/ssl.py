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

Augmentation (§3.2), exactly as computed here:

1. masking: a set F_m of ``m = ⌈mask_ratio · k⌉`` of the k item features (clamped to [1, k − 1]) is replaced in
   view A by the feature's default embedding (the learned missing / OOV row of its table,
   :attr:`recsys.features.EncodedFeature.default_index`), view B masks the complement F \\ F_m.
   RFM: F_m uniform among the m-subsets. CFM: a seed feature drawn uniformly per batch, F_m = {seed} ∪ its
   m − 1 top mutual-information partners (:mod:`recsys.feature_mi`; ties: lower feature index first).
2. dropout: in each view, every value of a multi-valued feature that is not masked is dropped independently with
   probability ``dropout``; a bag left empty becomes the default row.

Paper choices that could not be confirmed here (``shared/reference/recsys.md`` §1.2-1.3) and regkit's reading:
the number of partners (the text gives n = ⌊k/2⌋, "masked and retained set roughly the same size": for odd k,
1 + ⌊k/2⌋ = ⌈k/2⌉ = m above; for even k regkit masks exactly half); the dropout rate, τ and α (not recovered;
defaults below come from public re-implementations); how MI handles multi-valued features (:mod:`recsys.feature_mi`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from common_regs.api import TrainContext
from common_regs.registry import register
from recsys.feature_mi import MIMatrix, cached_mutual_information_matrix, top_partners
from recsys.features import FeatureTable
from recsys.losses import in_batch_softmax_loss
from recsys.models.base import RecBatch

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

PAPER = "Yao et al., Self-supervised Learning for Large-scale Item Recommendations, CIKM 2021, arXiv:2007.12865"
CITATION = """@inproceedings{yao2021ssl,
  title     = {Self-supervised Learning for Large-scale Item Recommendations},
  author    = {Yao, Tiansheng and Yi, Xinyang and Cheng, Derek Zhiyuan and Yu, Felix and Chen, Ting and Menon, Aditya
               and Hong, Lichan and Chi, Ed H. and Tjoa, Steve and Kang, Jieqi and Ettinger, Evan},
  booktitle = {CIKM},
  year      = {2021},
  note      = {arXiv:2007.12865}
}"""

Lookup = dict[str, tuple[Tensor, Tensor]]


# -- the math ----------------------------------------------------------------------------------------------------


def ssl_info_nce(view_a: Tensor, view_b: Tensor, temperature: float, *, item_ids: Tensor | None = None) -> Tensor:
    """Eq. 3: ``−(1/N) Σ_i log( exp(s(z_i, z'_i)/τ) / Σ_j exp(s(z_i, z'_j)/τ) )``, s = cosine similarity.

    The same in-batch softmax as the main loss (:func:`recsys.losses.in_batch_softmax_loss` on L2-normalised
    vectors with scale 1/τ, no logQ). ``item_ids`` removes columns of duplicate items from a row's denominator.
    """
    if view_a.dim() != 2 or view_a.shape != view_b.shape:
        raise ValueError(f"`view_a` and `view_b` must both be (N, D), got {tuple(view_a.shape)} and {tuple(view_b.shape)}.")
    if temperature <= 0:
        raise ValueError(f"`temperature` must be > 0, got {temperature}.")
    return in_batch_softmax_loss(F.normalize(view_a, dim=-1), F.normalize(view_b, dim=-1), scale=1.0 / temperature,
                                 candidate_ids=item_ids)


def masked_count(num_features: int, mask_ratio: float) -> int:
    """``m = ⌈mask_ratio · k⌉`` clamped to [1, k − 1]: both complementary views keep at least one feature."""
    if num_features < 2:
        raise ValueError(f"complementary views need at least 2 item features, got {num_features}.")
    if not 0.0 < mask_ratio < 1.0:
        raise ValueError(f"`mask_ratio` must be in (0, 1), got {mask_ratio}.")
    return min(num_features - 1, max(1, math.ceil(mask_ratio * num_features - 1e-9)))


def cfm_masked_set(mi: np.ndarray, seed: int, count: int) -> list[int]:
    """CFM's F_m: the seed feature plus its ``count − 1`` highest-MI partners (ties: lower index)."""
    if count < 1:
        raise ValueError(f"`count` must be >= 1, got {count}.")
    return [seed, *top_partners(mi, seed, count - 1)]


def mask_features(lookup: Mapping[str, tuple[Tensor, Tensor]], masked: Sequence[str],
                  defaults: Mapping[str, int]) -> Lookup:
    """Replace every row of the ``masked`` features by a one-value bag holding the feature's default row."""
    out = dict(lookup)
    for name in masked:
        values, lengths = lookup[name]
        out[name] = (torch.full_like(lengths, defaults[name]), torch.ones_like(lengths))
    return out


def drop_values(values: Tensor, lengths: Tensor, p: float, default: int,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Drop each value of a jagged bag column independently with probability ``p``; empty bags → ``[default]``."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1), got {p}.")
    if p == 0.0 or values.numel() == 0:
        return values, lengths
    rows = torch.repeat_interleave(torch.arange(lengths.numel()), lengths)
    keep = torch.rand(values.numel(), generator=generator) >= p
    kept_rows = rows[keep]
    new_lengths = torch.bincount(kept_rows, minlength=lengths.numel())
    empty = torch.nonzero(new_lengths == 0).reshape(-1)
    all_rows = torch.cat([kept_rows, empty])
    all_values = torch.cat([values[keep], torch.full_like(empty, default)])
    order = torch.argsort(all_rows, stable=True)
    return all_values[order], new_lengths + (new_lengths == 0).to(new_lengths.dtype)


# -- augmentation hooks ------------------------------------------------------------------------------------------


@dataclass
class SSLViews:
    """Two augmented views of ``items`` (catalogue indices): ``{feature: (values, lengths)}`` item-tower lookups.

    ``masked_a`` / ``masked_b`` are the (disjoint, covering) feature sets masked in each view; ``seed_feature`` is
    CFM's seed (None for RFM).
    """

    items: Tensor
    view_a: Lookup
    view_b: Lookup
    masked_a: tuple[str, ...]
    masked_b: tuple[str, ...]
    seed_feature: str | None = None


class _FeatureMasking:
    """Shared machinery of RFM and CFM (see the subclasses for the docstring template)."""

    config_keys: ClassVar[tuple[str, ...]] = ("mask_ratio", "dropout", "batch_size", "seed")
    runtime_keys: ClassVar[tuple[str, ...]] = ("items",)
    citation: ClassVar[str] = CITATION

    def __init__(self, items: FeatureTable, *, mask_ratio: float = 0.5, dropout: float = 0.1,
                 batch_size: int | None = None, seed: int = 0) -> None:
        if not isinstance(items, FeatureTable):
            raise TypeError(f"`items` must be a recsys.features.FeatureTable, got {type(items).__name__}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1), got {dropout}.")
        if batch_size is not None and batch_size < 2:
            raise ValueError(f"`batch_size` must be >= 2 (in-batch negatives) or None, got {batch_size}.")
        self.items, self.keys = items, tuple(items.keys)
        self.count = masked_count(len(self.keys), mask_ratio)
        self.mask_ratio, self.dropout, self.batch_size, self.seed = mask_ratio, dropout, batch_size, seed
        self.defaults = {name: feature.default_index for name, feature in items.features.items()}
        self.multi_valued = {name for name, f in items.features.items() if f.spec.kind == "multi_categorical"}
        self.calls = 0

    def masked_set(self, generator: torch.Generator) -> tuple[list[int], int | None]:
        """Indices of F_m (masked in view A) and the seed feature index (CFM) or None."""
        raise TypeError(f"{type(self).__name__} must implement `masked_set`.")

    def _view(self, lookup: Lookup, masked: Sequence[str], generator: torch.Generator) -> Lookup:
        view = mask_features(lookup, masked, self.defaults)
        for name in self.multi_valued.difference(masked):
            view[name] = drop_values(*view[name], self.dropout, self.defaults[name], generator)
        return view

    def views(self, items: Tensor, generator: torch.Generator | None = None) -> SSLViews:
        """Two complementary augmented views of the catalogue items ``items``."""
        generator = generator or torch.Generator().manual_seed(self.seed)
        chosen, seed = self.masked_set(generator)
        masked_a = tuple(self.keys[i] for i in sorted(chosen))
        masked_b = tuple(key for key in self.keys if key not in masked_a)
        lookup = self.items.lookup(items)
        return SSLViews(items, self._view(lookup, masked_a, generator), self._view(lookup, masked_b, generator),
                        masked_a, masked_b, None if seed is None else self.keys[seed])

    def sample_items(self, size: int, generator: torch.Generator) -> Tensor:
        """``min(size, catalogue)`` distinct catalogue items, uniformly (O(catalogue) per call)."""
        return torch.randperm(self.items.entity.size, generator=generator)[: min(size, self.items.entity.size)]

    def __call__(self, batch: RecBatch) -> RecBatch:
        if not isinstance(batch, RecBatch):
            raise TypeError(f"{type(self).__name__} transforms a recsys RecBatch, got {type(batch).__name__}.")
        state = np.random.SeedSequence([self.seed, self.calls]).generate_state(2)
        generator = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        self.calls += 1
        items = self.sample_items(self.batch_size or len(batch), generator)
        return batch.replace(extras={**batch.extras, "ssl": self.views(items, generator)})

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self.calls}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.calls = int(state["calls"])

    def get_config_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in self.config_keys}


@register("ssl_rfm", kind="batch_transform", paper=PAPER)
class RandomFeatureMasking(_FeatureMasking):
    """Random Feature Masking: two views of uniformly sampled catalogue items with complementary random masks.

    Builds the augmented pairs of the SSL item-tower regularizer; the paper's baseline augmentation (CFM is the
    proposed one). Use with :class:`ItemSSLLoss` as trainer hooks.

    Reference:
        Yao et al., "Self-supervised Learning for Large-scale Item Recommendations", CIKM 2021, arXiv:2007.12865
        (§3.2, RFM; §3.3 uniform SSL item distribution).

    Math:
        .. math::

            F_m \\sim \\mathrm{Uniform}\\{S \\subset F : |S| = m\\},\\quad m = \\min(k-1, \\max(1, \\lceil r k \\rceil)),
            \\quad y = h(x) = \\mathrm{drop}_p(\\mathrm{mask}_{F_m}(x)),\\; y' = \\mathrm{drop}_p(\\mathrm{mask}_{F \\setminus F_m}(x))

        with r ↔ ``mask_ratio``, p ↔ ``dropout``; masked features → their default (missing / OOV) row.

    Args:
        items: the item :class:`~recsys.features.FeatureTable` (k >= 2 features).
        mask_ratio: r. Default 0.5 (source: paper §3.2, complementary halves).
        dropout: p, per-value drop rate of multi-valued features. Default 0.1 (source: SELFRec / RecBole-GNN SSL4Rec
            ``drop_ratio``; the paper's value was not recovered).
        batch_size: SSL items per step. Default None = the main batch size (source: LibRecommender two_tower).
        seed: seed of the per-call generator (call c uses SeedSequence([seed, c])). Default 0 (convention).

    Shape:
        N SSL items per call; views are jagged lookups over N rows.

    Returns:
        ``__call__(batch)``: the batch with ``extras["ssl"]`` = :class:`SSLViews`.

    Note:
        Masks are per batch (one pattern for all N items), as in the paper. The views are built on CPU index
        tensors; the forward pass happens in :class:`ItemSSLLoss`.

    Example:
        >>> import polars as pl, torch
        >>> from recsys.data import Vocabulary
        >>> from recsys.features import FeatureSpec, FeatureTable
        >>> frame = pl.DataFrame({"item_id": [1, 2, 3, 4], "genres": [["a"], ["a", "b"], ["b"], ["c"]],
        ...                       "year": [1990, 1995, 2000, 2005]})
        >>> specs = [FeatureSpec("item_id", "id"), FeatureSpec("genres", "multi_categorical", "genres"),
        ...          FeatureSpec("year", "bucketized", "year", num_buckets=2)]
        >>> table = FeatureTable.build(Vocabulary.from_values("item_id", frame["item_id"]), specs, frame)
        >>> views = RandomFeatureMasking(table).views(torch.arange(4))
        >>> sorted(views.masked_a + views.masked_b) == sorted(table.keys), set(views.masked_a) & set(views.masked_b)
        (True, set())
    """

    def __init__(self, items: FeatureTable, mask_ratio: float = 0.5, dropout: float = 0.1,
                 batch_size: int | None = None, seed: int = 0) -> None:
        super().__init__(items, mask_ratio=mask_ratio, dropout=dropout, batch_size=batch_size, seed=seed)

    def masked_set(self, generator: torch.Generator) -> tuple[list[int], int | None]:
        return torch.randperm(len(self.keys), generator=generator)[: self.count].tolist(), None


@register("ssl_cfm", kind="batch_transform", paper=PAPER)
class CorrelatedFeatureMasking(_FeatureMasking):
    """Correlated Feature Masking: mask a random seed feature together with its most correlated partners.

    Keeps highly correlated features on the same side, so the contrastive task cannot be solved by a shortcut
    (one feature predicting its correlated twin across views). Use with :class:`ItemSSLLoss` as trainer hooks.

    Reference:
        Yao et al., "Self-supervised Learning for Large-scale Item Recommendations", CIKM 2021, arXiv:2007.12865
        (§3.2, CFM; §3.3 uniform SSL item distribution).

    Math:
        .. math::

            f_{seed} \\sim \\mathrm{Uniform}(F),\\quad F_m = \\{f_{seed}\\} \\cup
            \\operatorname{top}_{m-1}\\{f \\ne f_{seed} : \\mathrm{MI}(f_{seed}, f)\\},\\quad
            m = \\min(k-1, \\max(1, \\lceil r k \\rceil))

        view A masks F_m, view B masks F \\ F_m, then multi-valued values are dropped with probability p.
        MI as in :mod:`recsys.feature_mi`. r ↔ ``mask_ratio``, p ↔ ``dropout``.

    Args:
        items: the item :class:`~recsys.features.FeatureTable` (k >= 2 features).
        mi: :class:`~recsys.feature_mi.MIMatrix` over exactly ``items``' features (same order).
        mask_ratio: r. Default 0.5 (source: paper §3.2, masked and retained sets of about the same size).
        dropout: p. Default 0.1 (source: SELFRec / RecBole-GNN ``drop_ratio``; paper value not recovered).
        batch_size: SSL items per step. Default None = the main batch size (source: LibRecommender two_tower).
        seed: seed of the per-call generator. Default 0 (convention).

    Shape:
        N SSL items per call; ``mi`` is (k, k).

    Returns:
        ``__call__(batch)``: the batch with ``extras["ssl"]`` = :class:`SSLViews` (``seed_feature`` set).

    Note:
        The seed changes per batch (paper: "we vary the seed feature per batch"). With few features (k = 3 on
        ML-100K) CFM and RFM share most masking patterns; CFM only rules out the splits that separate a feature
        from its top partner.

    Example:
        >>> import numpy as np, polars as pl, torch
        >>> from recsys.data import Vocabulary
        >>> from recsys.feature_mi import MIMatrix
        >>> from recsys.features import FeatureSpec, FeatureTable
        >>> frame = pl.DataFrame({"item_id": [1, 2], "a": ["x", "y"], "b": ["u", "v"], "c": ["p", "p"]})
        >>> specs = [FeatureSpec(n, "categorical", n) for n in "abc"] + [FeatureSpec("item_id", "id")]
        >>> table = FeatureTable.build(Vocabulary.from_values("item_id", frame["item_id"]), specs, frame)
        >>> mi = MIMatrix(("a", "b", "c", "item_id"), np.array([[1, .9, .1, .2], [.9, 1, .3, .2],
        ...                                                    [.1, .3, 1, .0], [.2, .2, .0, 1]]), "custom", "")
        >>> views = CorrelatedFeatureMasking(table, mi).views(torch.arange(2))
        >>> {"a": ("a", "b"), "b": ("a", "b"), "c": ("b", "c"), "item_id": ("a", "item_id")}[views.seed_feature] \\
        ...     == views.masked_a
        True
    """

    config_keys: ClassVar[tuple[str, ...]] = ("mask_ratio", "dropout", "batch_size", "seed")
    runtime_keys: ClassVar[tuple[str, ...]] = ("items", "mi")

    def __init__(self, items: FeatureTable, mi: MIMatrix, mask_ratio: float = 0.5, dropout: float = 0.1,
                 batch_size: int | None = None, seed: int = 0) -> None:
        super().__init__(items, mask_ratio=mask_ratio, dropout=dropout, batch_size=batch_size, seed=seed)
        if not isinstance(mi, MIMatrix):
            raise TypeError(f"`mi` must be a recsys.feature_mi.MIMatrix, got {type(mi).__name__}.")
        mi.check_features(self.keys)
        self.mi = mi

    def masked_set(self, generator: torch.Generator) -> tuple[list[int], int | None]:
        seed = int(torch.randint(len(self.keys), (1,), generator=generator))
        return cfm_masked_set(self.mi.values, seed, self.count), seed


# -- the contrastive loss ----------------------------------------------------------------------------------------


@register("ssl_infonce", kind="loss", paper=PAPER)
class ItemSSLLoss:
    """In-batch InfoNCE between the two augmented views of the SSL items, through the shared item tower.

    The auxiliary loss of the SSL framework: regularizes item representations, most where clicks are sparse
    (tail items are sampled as often as head items). Needs a feature-masking transform among the hooks.

    Reference:
        Yao et al., "Self-supervised Learning for Large-scale Item Recommendations", CIKM 2021, arXiv:2007.12865
        (Eq. 3 loss, Eq. 5 total loss; encoders H = G = the item tower, embedding tables shared).

    Math:
        .. math::

            \\mathcal{L}_{self} = -\\frac{1}{N}\\sum_i \\log
                \\frac{\\exp(s(z_i, z'_i)/\\tau)}{\\sum_{j} \\exp(s(z_i, z'_j)/\\tau)},\\quad
            s(a, b) = \\frac{\\langle a, b\\rangle}{\\lVert a\\rVert \\lVert b\\rVert},\\quad
            \\mathcal{L} = \\mathcal{L}_{main} + \\alpha\\, \\mathcal{L}_{self}

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
            raise ValueError("`ssl_infonce` found no `extras['ssl']` views in the batch: add RandomFeatureMasking or "
                             "CorrelatedFeatureMasking to the trainer hooks (build_ssl_hooks does both).")
        model = ctx.model
        tower = getattr(model, "item_tower", None)
        if tower is None or not hasattr(tower, "pack") or not hasattr(model, "encode_items"):
            raise TypeError(f"`ssl_infonce` needs a two-tower model with an item tower, got {type(model).__name__}.")
        z_a = model.encode_items(tower.pack(views.view_a))
        z_b = model.encode_items(tower.pack(views.view_b))
        with torch.no_grad():
            self.last_alignment = float(F.cosine_similarity(z_a, z_b, dim=-1).mean())
        return ssl_info_nce(z_a, z_b, self.temperature, item_ids=views.items)

    def get_config_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "weight": self.weight}


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
    """

    mode: Literal["none", "rfm", "cfm"] = "none"
    alpha: float = 0.1
    temperature: float = 0.1
    mask_ratio: float = 0.5
    dropout: float = 0.1
    batch_size: int | None = None
    mi_weighting: Literal["catalogue", "interactions"] = "catalogue"
    mi_cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("none", "rfm", "cfm"):
            raise ValueError(f"`ssl.mode` must be 'none', 'rfm' or 'cfm', got {self.mode!r}.")
        if self.mi_weighting not in ("catalogue", "interactions"):
            raise ValueError(f"`ssl.mi_weighting` must be 'catalogue' or 'interactions', got {self.mi_weighting!r}.")
        if self.alpha < 0:
            raise ValueError(f"`ssl.alpha` must be >= 0, got {self.alpha}.")

    @classmethod
    def from_value(cls, value: str | Mapping[str, Any] | None) -> SSLConfig:
        if value is None or isinstance(value, str):
            return cls(mode=value or "none")  # type: ignore[arg-type]
        if not isinstance(value, Mapping):
            raise TypeError(f"`ssl` must be 'none' / 'rfm' / 'cfm' or a mapping, got {type(value).__name__}.")
        unknown = set(value) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown `ssl` options {sorted(unknown)}; allowed: {sorted(f.name for f in fields(cls))}.")
        return cls(**value)

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
    options = {"mask_ratio": config.mask_ratio, "dropout": config.dropout, "batch_size": config.batch_size,
               "seed": seed}
    if config.mode == "rfm":
        transform: _FeatureMasking = RandomFeatureMasking(items, **options)
    else:
        mi = ssl_mutual_information(config, items, item_counts=item_counts, cache_dir=cache_dir)
        transform = CorrelatedFeatureMasking(items, mi, **options)
    logger.info("SSL %s: alpha=%s tau=%s mask_ratio=%s (m=%d of %d features) dropout=%s batch=%s", config.mode,
                config.alpha, config.temperature, config.mask_ratio, transform.count, len(transform.keys),
                config.dropout, config.batch_size or "main batch")
    return [transform, ItemSSLLoss(temperature=config.temperature, weight=config.alpha)]


def ssl_mutual_information(
    config: SSLConfig, items: FeatureTable, *, item_counts: np.ndarray | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> MIMatrix:
    """The (cached) MI matrix of ``items`` with the configured weighting."""
    weights = None
    if config.mi_weighting == "interactions":
        if item_counts is None:
            raise ValueError("`ssl.mi_weighting`='interactions' needs the training `item_counts`.")
        weights = np.asarray(item_counts, dtype=np.float64)
    return cached_mutual_information_matrix(items, config.mi_cache_dir or cache_dir, weights=weights,
                                            weighting=config.mi_weighting)
