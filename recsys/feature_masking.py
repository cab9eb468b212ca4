r"""Feature-level augmentation of the SSL item-tower regularizer: RFM / CFM complementary views of catalogue items.

Yao, Yi, Cheng, Yu, Chen, Menon, Hong, Chi, Tjoa, Kang, Ettinger, "Self-supervised Learning for Large-scale Item
Recommendations", CIKM 2021, arXiv:2007.12865 (§3.2 augmentation, §3.3 SSL item distribution). Exactly as computed:

1. a separate batch of SSL items is drawn **uniformly from the catalogue** (§3.3: not from the power-law click
   distribution), without replacement, so no item is its own in-batch negative;
2. masking: a set F_m of ``m = ⌈mask_ratio · k⌉`` of the k item features (clamped to [1, k − 1]) is replaced in
   view A by the feature's default embedding (the learned missing / OOV row of its table,
   :attr:`recsys.features.EncodedFeature.default_index`), view B masks the complement F \ F_m.
   RFM: F_m uniform among the m-subsets. CFM: a seed feature drawn uniformly per batch, F_m = {seed} ∪ its
   m − 1 top mutual-information partners (:mod:`recsys.feature_mi`; ties: lower feature index first);
3. dropout: in each view, every value of a multi-valued feature that is not masked is dropped independently with
   probability ``dropout``; a bag left empty becomes the default row.

The views land in ``batch.extras["ssl"]`` (:class:`SSLViews`); :class:`recsys.ssl.ItemSSLLoss` encodes them.
Paper choices that could not be confirmed (number of partners, dropout rate): see :mod:`recsys.ssl`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import polars as pl
import torch
from torch import Tensor

from common_regs.api import ConfigFromKeys
from common_regs.registry import register
from recsys.data import Vocabulary
from recsys.feature_mi import MIMatrix, top_partners
from recsys.features import FeatureSpec, FeatureTable
from recsys.models.base import RecBatch

logger = logging.getLogger(__name__)

__all__ = [
    "CITATION",
    "PAPER",
    "CorrelatedFeatureMasking",
    "RandomFeatureMasking",
    "SSLViews",
    "cfm_masked_set",
    "drop_values",
    "mask_features",
    "masked_count",
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


# -- masking patterns and value dropout -------------------------------------------------------------------------


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


def mask_features(
    lookup: Mapping[str, tuple[Tensor, Tensor]], masked: Sequence[str], defaults: Mapping[str, int]
) -> Lookup:
    """Replace every row of the ``masked`` features by a one-value bag holding the feature's default row."""
    out = dict(lookup)
    for name in masked:
        values, lengths = lookup[name]
        out[name] = (torch.full_like(lengths, defaults[name]), torch.ones_like(lengths))
    return out


def drop_values(
    values: Tensor, lengths: Tensor, p: float, default: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
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


class _FeatureMasking(ConfigFromKeys):
    """Shared machinery of RFM and CFM (see the subclasses for the docstring template)."""

    config_keys: ClassVar[tuple[str, ...]] = ("mask_ratio", "dropout", "batch_size", "seed")
    runtime_keys: ClassVar[tuple[str, ...]] = ("items",)
    citation: ClassVar[str] = CITATION

    def __init__(
        self,
        items: FeatureTable,
        *,
        mask_ratio: float = 0.5,
        dropout: float = 0.1,
        batch_size: int | None = None,
        seed: int = 0,
    ) -> None:
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
        return SSLViews(
            items,
            self._view(lookup, masked_a, generator),
            self._view(lookup, masked_b, generator),
            masked_a,
            masked_b,
            None if seed is None else self.keys[seed],
        )

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

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        frame = pl.DataFrame({"item_id": [1, 2, 3], "a": ["x", "y", "x"], "b": ["u", "v", "v"]})
        specs = [FeatureSpec("item_id", "id")] + [FeatureSpec(name, "categorical", name) for name in "ab"]
        items = FeatureTable.build(Vocabulary.from_values("item_id", frame["item_id"]), specs, frame)
        return {"items": items, "mask_ratio": 0.4, "batch_size": 2, "seed": 3}


@register("ssl_rfm", kind="batch_transform", paper=PAPER,
          fidelity="paper-equation",
          verified_by="tests/recsys/test_ssl.py::test_rfm_views_are_complementary_and_cover_every_pattern",
          seed=23)
class RandomFeatureMasking(_FeatureMasking):
    r"""Random Feature Masking: two views of uniformly sampled catalogue items with complementary random masks.

    Builds the augmented pairs of the SSL item-tower regularizer; the paper's baseline augmentation (CFM is the
    proposed one). Use with :class:`ItemSSLLoss` as trainer hooks.

    Reference:
        Yao et al., "Self-supervised Learning for Large-scale Item Recommendations", CIKM 2021, arXiv:2007.12865
        (§3.2, RFM; §3.3 uniform SSL item distribution).

    Math:
        .. math::

            F_m \sim \mathrm{Uniform}\{S \subset F : |S| = m\},\quad
            m = \min(k-1, \max(1, \lceil r k \rceil)),\quad
            y = \mathrm{drop}_p(\mathrm{mask}_{F_m}(x)),\;
            y' = \mathrm{drop}_p(\mathrm{mask}_{F \setminus F_m}(x))

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

    def __init__(
        self,
        items: FeatureTable,
        mask_ratio: float = 0.5,
        dropout: float = 0.1,
        batch_size: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(items, mask_ratio=mask_ratio, dropout=dropout, batch_size=batch_size, seed=seed)

    def masked_set(self, generator: torch.Generator) -> tuple[list[int], int | None]:
        return torch.randperm(len(self.keys), generator=generator)[: self.count].tolist(), None


@register("ssl_cfm", kind="batch_transform", paper=PAPER,
          fidelity="paper-equation",
          verified_by="tests/recsys/test_ssl.py::test_cfm_masks_the_seed_and_its_top_mi_partners",
          seed=23)
class CorrelatedFeatureMasking(_FeatureMasking):
    r"""Correlated Feature Masking: mask a random seed feature together with its most correlated partners.

    Keeps highly correlated features on the same side, so the contrastive task cannot be solved by a shortcut
    (one feature predicting its correlated twin across views). Use with :class:`ItemSSLLoss` as trainer hooks.

    Reference:
        Yao et al., "Self-supervised Learning for Large-scale Item Recommendations", CIKM 2021, arXiv:2007.12865
        (§3.2, CFM; §3.3 uniform SSL item distribution).

    Math:
        .. math::

            f_{seed} \sim \mathrm{Uniform}(F),\quad F_m = \{f_{seed}\} \cup
            \operatorname{top}_{m-1}\{f \ne f_{seed} : \mathrm{MI}(f_{seed}, f)\},\quad
            m = \min(k-1, \max(1, \lceil r k \rceil))

        view A masks F_m, view B masks F \ F_m, then multi-valued values are dropped with probability p.
        MI as in :mod:`recsys.feature_mi`. r ↔ ``mask_ratio``, p ↔ ``dropout``.

    Args:
        items: the item :class:`~recsys.features.FeatureTable` (k >= 2 features).
        mi: :class:`~recsys.feature_mi.MIMatrix` over exactly ``items``' features (same order).
        mask_ratio: r. Default 0.5 (source: paper §3.2, masked and retained sets of about the same size).
        dropout: p. Default 0.1 (source: SELFRec / RecBole-GNN ``drop_ratio``; paper value not recovered).
        batch_size: SSL items per step. Default None = the main batch size (source: LibRecommender two_tower).
        seed: seed of the per-call generator. Default 0 (convention).
        exclude: features left out of the MI grouping (e.g. the item id, every feature's top-MI partner): never
            the seed nor a partner, so they are always kept in view A and masked in view B; the seed, the partners
            and m are drawn among the k' other features (m = ⌈r k'⌉ clamped to [1, k' − 1]). Default () (the
            paper's grouping over all features).

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
        >>> {"a": ("a", "b"), "b": ("a", "b"), "c": ("b", "c"), "item_id": ("a", "item_id")}[views.seed_feature] \
        ...     == views.masked_a
        True
    """

    config_keys: ClassVar[tuple[str, ...]] = ("mask_ratio", "dropout", "batch_size", "seed", "exclude")
    runtime_keys: ClassVar[tuple[str, ...]] = ("items", "mi")

    def __init__(
        self,
        items: FeatureTable,
        mi: MIMatrix,
        mask_ratio: float = 0.5,
        dropout: float = 0.1,
        batch_size: int | None = None,
        seed: int = 0,
        exclude: Sequence[str] = (),
    ) -> None:
        super().__init__(items, mask_ratio=mask_ratio, dropout=dropout, batch_size=batch_size, seed=seed)
        if not isinstance(mi, MIMatrix):
            raise TypeError(f"`mi` must be a recsys.feature_mi.MIMatrix, got {type(mi).__name__}.")
        mi.check_features(self.keys)
        unknown = sorted(set(exclude) - set(self.keys))
        if unknown:
            raise ValueError(f"`exclude` names features {unknown} that are not item features {list(self.keys)}.")
        self.mi, self.exclude = mi, tuple(exclude)
        # Indices of the features that take part in the MI grouping; excluded ones always stay in the complement.
        self.grouped = [i for i, key in enumerate(self.keys) if key not in self.exclude]
        if len(self.grouped) < 2:
            raise ValueError(
                f"`exclude`={list(self.exclude)} leaves {len(self.grouped)} item feature(s) to group; CFM needs >= 2."
            )
        self.count = masked_count(len(self.grouped), mask_ratio)

    @classmethod
    def example_kwargs(cls) -> dict[str, Any]:
        kwargs = super().example_kwargs()
        keys = tuple(kwargs["items"].keys)
        return {**kwargs, "mi": MIMatrix(keys, np.eye(len(keys)) + 0.1, "custom", "")}

    def masked_set(self, generator: torch.Generator) -> tuple[list[int], int | None]:
        grouped = np.asarray(self.grouped)
        local = int(torch.randint(len(grouped), (1,), generator=generator))
        chosen = cfm_masked_set(self.mi.values[np.ix_(grouped, grouped)], local, self.count)
        return [int(grouped[i]) for i in chosen], int(grouped[local])
