r"""Mutual information between every pair of categorical item features, for Correlated Feature Masking (CFM).

Yao, Yi, Cheng, Yu, Chen, Menon, Hong, Chi, Tjoa, Kang, Ettinger, "Self-supervised Learning for Large-scale Item
Recommendations", CIKM 2021, arXiv:2007.12865 (§3.2, CFM): for features with vocabularies V_i, V_j

.. math::

    \mathrm{MI}(V_i, V_j) = \sum_{v_i \in V_i, v_j \in V_j} P(v_i, v_j)
        \log \frac{P(v_i, v_j)}{P(v_i) P(v_j)}

pre-computed for all pairs (natural log, nats; cells with P(v_i, v_j) = 0 contribute 0, the 0·log 0 = 0 convention).

How P is estimated is not stated in the text available here (see ``shared/reference/recsys.md`` §1.2); regkit's
choice, which also covers multi-valued features (genres):

* an entity (item) e is drawn with probability ∝ w_e (``weights``: 1 for every catalogue item by default, matching
  the uniform SSL item distribution; or the item's training count, as LibRecommender's ``mutual_info_score`` over
  interaction rows does), then one value of each feature is drawn uniformly from the entity's bag:
  P(a, b) = Σ_e w_e · c_e(a) c_e(b) / (|A_e| |B_e|) / Σ_e w_e, with c_e(a) the multiplicity of a in A_e.
  For single-valued features this is the ordinary empirical joint distribution; its marginals are the
  bag-normalised value frequencies.
* entities whose bag is empty for either feature are left out of that pair (FeatureTable never produces empty
  bags: a missing value is the feature's missing row).

The diagonal holds MI(V_i, V_i) = H(V_i) for single-valued features (the entropy). The matrix is cached on disk
keyed by a fingerprint of the encoded feature arrays and the weights (:func:`cached_mutual_information_matrix`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import sparse

from common_regs.io import atomic_path
from recsys.features import FeatureTable

logger = logging.getLogger(__name__)

__all__ = [
    "MIMatrix",
    "bag_mutual_information",
    "cached_mutual_information_matrix",
    "mutual_information_from_joint",
    "mutual_information_matrix",
    "top_partners",
]


def mutual_information_from_joint(joint: np.ndarray | sparse.spmatrix | sparse.sparray) -> float:
    """MI (nats) of a contingency table of non-negative counts or masses (normalised here); zero cells add 0."""
    table = sparse.csr_matrix(joint, dtype=np.float64)
    if table.nnz and float(table.data.min()) < 0:
        raise ValueError(f"`joint` must be non-negative, got a minimum of {float(table.data.min())}.")
    total = float(table.sum())
    if total <= 0:
        raise ValueError("`joint` has no mass: cannot estimate mutual information from an empty table.")
    table = table / total
    row = np.asarray(table.sum(axis=1)).ravel()
    col = np.asarray(table.sum(axis=0)).ravel()
    coo = table.tocoo()
    keep = coo.data > 0
    p, i, j = coo.data[keep], coo.row[keep], coo.col[keep]
    return float(max(np.sum(p * (np.log(p) - np.log(row[i]) - np.log(col[j]))), 0.0))


def _bag_joint(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], rows: tuple[int, int], weights: np.ndarray
) -> sparse.csr_matrix:
    """Joint mass of (value of A, value of B) over entities: ``w_e / (|A_e||B_e|)`` per pair in ``A_e × B_e``."""
    (a_values, a_lengths), (b_values, b_lengths) = a, b
    entities = a_lengths.size
    valid = (a_lengths > 0) & (b_lengths > 0) & (weights > 0)
    a_entity = np.repeat(np.arange(entities), a_lengths)
    repeats = np.where(valid, b_lengths, 0)[a_entity]  # each value of A pairs with every value of B of its entity
    pair_a = np.repeat(a_values, repeats)
    pair_entity = np.repeat(a_entity, repeats)
    b_offsets = np.concatenate([[0], np.cumsum(b_lengths)])
    within = np.arange(pair_a.size) - np.repeat(np.cumsum(repeats) - repeats, repeats)
    pair_b = b_values[b_offsets[pair_entity] + within]
    mass = weights[pair_entity] / (a_lengths[pair_entity] * b_lengths[pair_entity])
    return sparse.coo_matrix((mass, (pair_a, pair_b)), shape=rows).tocsr()  # duplicates are summed


def bag_mutual_information(
    a: tuple[np.ndarray, np.ndarray],
    b: tuple[np.ndarray, np.ndarray],
    *,
    rows: tuple[int, int] | None = None,
    weights: np.ndarray | None = None,
) -> float:
    """MI between two (possibly multi-valued) features given per entity as ``(values, lengths)`` jagged arrays.

    Args:
        a: ``(values, lengths)``: entity e owns ``values[offset_e : offset_e + lengths[e]]``.
        b: the second feature, same form and same entities as ``a``.
        rows: table sizes ``(|V_a|, |V_b|)``; default ``max(value) + 1``.
        weights: per-entity weight w_e >= 0; default 1 (module docstring).
    """
    a = (np.asarray(a[0], dtype=np.int64), np.asarray(a[1], dtype=np.int64))
    b = (np.asarray(b[0], dtype=np.int64), np.asarray(b[1], dtype=np.int64))
    for name, (values, lengths) in (("a", a), ("b", b)):
        if int(lengths.sum()) != values.size or (lengths < 0).any():
            raise ValueError(
                f"`{name}`: lengths must be >= 0 and sum to the {values.size} values, got {lengths.sum()}."
            )
    if a[1].size != b[1].size:
        raise ValueError(f"`a` and `b` must cover the same entities, got {a[1].size} and {b[1].size}.")
    w = np.ones(a[1].size) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != a[1].shape or (w < 0).any():
        raise ValueError(f"`weights` must be {a[1].size} non-negative values, got shape {w.shape}.")
    sizes = rows or (int(a[0].max(initial=-1)) + 1, int(b[0].max(initial=-1)) + 1)
    return mutual_information_from_joint(_bag_joint(a, b, sizes, w))


@dataclass(frozen=True)
class MIMatrix:
    """Pairwise MI of an entity table's features: ``values[i, j]`` = MI(``features[i]``, ``features[j]``) in nats."""

    features: tuple[str, ...]
    values: np.ndarray
    weighting: str
    fingerprint: str

    def __post_init__(self) -> None:
        k = len(self.features)
        if self.values.shape != (k, k):
            raise ValueError(f"`values` must be ({k}, {k}) for features {self.features}, got {self.values.shape}.")

    def save(self, path: str | os.PathLike[str]) -> Path:
        meta = json.dumps(
            {"features": list(self.features), "weighting": self.weighting, "fingerprint": self.fingerprint}
        )
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, values=self.values, meta=np.asarray(meta))
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MIMatrix:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            return cls(tuple(meta["features"]), data["values"], meta["weighting"], meta["fingerprint"])

    def check_features(self, keys: Sequence[str]) -> None:
        """Raise unless the matrix covers exactly ``keys`` in this order (the item table's features)."""
        if tuple(keys) != self.features:
            raise ValueError(f"the MI matrix covers features {list(self.features)}, the item table has {list(keys)}.")

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {
            a: {b: float(self.values[i, j]) for j, b in enumerate(self.features)} for i, a in enumerate(self.features)
        }


def _columns(table: FeatureTable) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    lookup = table.lookup(torch.arange(table.entity.size))  # catalogue entities; the OOV entity is left out
    return {name: (values.numpy(), lengths.numpy()) for name, (values, lengths) in lookup.items()}


def _fingerprint(table: FeatureTable, weights: np.ndarray | None, weighting: str) -> str:
    digest = hashlib.sha256(weighting.encode())
    for name, feature in table.features.items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(feature.values, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(feature.offsets, dtype=np.int64).tobytes())
    if weights is not None:
        digest.update(np.ascontiguousarray(weights, dtype=np.float64).tobytes())
    return digest.hexdigest()


def mutual_information_matrix(
    table: FeatureTable, *, weights: np.ndarray | None = None, weighting: str | None = None
) -> MIMatrix:
    """MI between every pair of ``table``'s features over its catalogue entities (module docstring).

    Args:
        table: encoded item (or user) features; every kind is categorical here (bucketized = bucket index).
        weights: per-entity weights (length ``table.entity.size``), e.g. training counts; None = uniform.
        weighting: label stored with the matrix (default "catalogue" / "custom").
    """
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (table.entity.size,):
            raise ValueError(f"`weights` must have one entry per entity ({table.entity.size}), got {weights.shape}.")
    columns = _columns(table)
    names = tuple(columns)
    values = np.zeros((len(names), len(names)))
    w = np.ones(table.entity.size) if weights is None else weights
    for i, a in enumerate(names):
        for j in range(i, len(names)):
            b = names[j]
            rows = (table.num_embeddings[a], table.num_embeddings[b])
            values[i, j] = values[j, i] = bag_mutual_information(columns[a], columns[b], rows=rows, weights=w)
    label = weighting or ("catalogue" if weights is None else "custom")
    return MIMatrix(names, values, label, _fingerprint(table, weights, label))


def cached_mutual_information_matrix(
    table: FeatureTable,
    cache_dir: str | os.PathLike[str] | None,
    *,
    weights: np.ndarray | None = None,
    weighting: str | None = None,
) -> MIMatrix:
    """:func:`mutual_information_matrix`, read from / written to ``cache_dir/mi_<fingerprint>.npz`` (None: none)."""
    label = weighting or ("catalogue" if weights is None else "custom")
    if cache_dir is None:
        return mutual_information_matrix(table, weights=weights, weighting=label)
    fingerprint = _fingerprint(table, None if weights is None else np.asarray(weights, dtype=np.float64), label)
    path = Path(cache_dir) / f"mi_{fingerprint[:16]}.npz"
    if path.is_file():
        cached = MIMatrix.load(path)
        if cached.fingerprint == fingerprint and cached.features == tuple(table.keys):
            logger.info("MI matrix: cache hit %s", path)
            return cached
    matrix = mutual_information_matrix(table, weights=weights, weighting=label)
    path.parent.mkdir(parents=True, exist_ok=True)
    matrix.save(path)
    logger.info("MI matrix (%s weighting) of %s computed and cached at %s", label, list(matrix.features), path)
    return matrix


def top_partners(mi: np.ndarray, seed: int, count: int) -> list[int]:
    """The ``count`` features with the highest MI with feature ``seed`` (seed excluded; ties: lower index first)."""
    k = mi.shape[0]
    if not 0 <= seed < k:
        raise ValueError(f"`seed` must be a feature index in [0, {k}), got {seed}.")
    if not 0 <= count < k:
        raise ValueError(f"`count` must be in [0, {k - 1}], got {count}.")
    order = np.lexsort((np.arange(k), -mi[seed]))
    return [int(j) for j in order if j != seed][:count]
