"""User and item feature tables: categorical, multi-valued categorical (genres) and bucketized numeric features.

A :class:`FeatureTable` turns a parquet side table (``items.parquet``: item_id, genres, year, ...) into, per
feature, a jagged array of embedding-row indices for every entity of a :class:`~recsys.data.Vocabulary`, so a
batch of entity indices becomes ``{feature: (values, lengths)}``: exactly the input of a torchrec
``KeyedJaggedTensor`` (one embedding table per feature, id features included).

Index conventions (per feature, so each feature's table has ``num_embeddings`` rows):

==================  =======================================================  ===========================
kind                row index                                                missing / unseen value
==================  =======================================================  ===========================
``id``              the entity's own vocabulary index                        entity OOV row
``categorical``     value's index in a vocabulary built from the table       the vocabulary's OOV row
``multi_categorical`` one index per list element (length = list length)      one OOV index (empty/null list)
``bucketized``      ``searchsorted(boundaries, x, side="right")``            ``len(boundaries) + 1``
==================  =======================================================  ===========================

Entities of the vocabulary absent from the side table (and the OOV entity) get the missing index for every
non-id feature. :attr:`EncodedFeature.default_index` is that missing row: an augmentation that masks a feature
(SSL, Yao et al. 2021) can map the feature to it, or give it length 0 (an all-zero pooled embedding).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import torch
from torch import Tensor

from common_regs.io import atomic_path
from recsys.data import Vocabulary
from recsys.vocab import pack_ids, unpack_ids

logger = logging.getLogger(__name__)

__all__ = ["EncodedFeature", "FeatureSpec", "FeatureTable", "jagged_lookup"]

FeatureKind = Literal["id", "categorical", "multi_categorical", "bucketized"]
_KINDS = ("id", "categorical", "multi_categorical", "bucketized")


@dataclass(frozen=True)
class FeatureSpec:
    """How to encode one feature.

    Args:
        name: feature (and embedding table) name, unique within a tower.
        kind: ``"id"``, ``"categorical"``, ``"multi_categorical"`` or ``"bucketized"``.
        column: source column of the side table (``None`` for ``id``).
        boundaries: bucket edges for ``bucketized`` (ascending); or give ``num_buckets`` for quantile edges.
        num_buckets: number of equal-frequency buckets computed from the side table's column.
        min_count: categorical values seen fewer times share the OOV row. Default 1 (keep every value).
    """

    name: str
    kind: FeatureKind
    column: str | None = None
    boundaries: tuple[float, ...] | None = None
    num_buckets: int | None = None
    min_count: int = 1

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"feature {self.name!r}: `kind` must be one of {_KINDS}, got {self.kind!r}.")
        if self.kind != "id" and not self.column:
            raise ValueError(f"feature {self.name!r}: `column` is required for kind {self.kind!r}.")
        if self.kind == "bucketized":
            if (self.boundaries is None) == (self.num_buckets is None):
                raise ValueError(
                    f"feature {self.name!r}: give exactly one of `boundaries` or `num_buckets` "
                    "for a bucketized feature."
                )
            if self.boundaries is not None and list(self.boundaries) != sorted(set(self.boundaries)):
                raise ValueError(
                    f"feature {self.name!r}: `boundaries` must be strictly ascending, got {self.boundaries}."
                )
            if self.num_buckets is not None and self.num_buckets < 2:
                raise ValueError(f"feature {self.name!r}: `num_buckets` must be >= 2, got {self.num_buckets}.")
        if self.min_count < 1:
            raise ValueError(f"feature {self.name!r}: `min_count` must be >= 1, got {self.min_count}.")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureSpec:
        known = {"name", "kind", "column", "boundaries", "num_buckets", "min_count"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"feature spec {dict(data)}: unknown keys {sorted(unknown)}; allowed: {sorted(known)}.")
        values = dict(data)
        if values.get("boundaries") is not None:
            values["boundaries"] = tuple(float(b) for b in values["boundaries"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if data["boundaries"] is not None:
            data["boundaries"] = list(data["boundaries"])
        return data


@dataclass
class EncodedFeature:
    """Jagged row indices of one feature for entities ``0 … n`` (``n`` = OOV entity).

    Entity ``e`` has values ``values[offsets[e]:offsets[e + 1]]``.
    """

    spec: FeatureSpec
    values: np.ndarray
    offsets: np.ndarray
    num_embeddings: int
    default_index: int
    categories: Vocabulary | None = None
    boundaries: np.ndarray | None = None

    @property
    def name(self) -> str:
        return self.spec.name


def jagged_lookup(values: Tensor, offsets: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
    """Gather the jagged rows ``indices`` of ``(values, offsets)``: returns concatenated values and lengths."""
    starts = offsets[indices]
    lengths = offsets[indices + 1] - starts
    total = int(lengths.sum())
    if total == 0:
        return values.new_empty(0), lengths
    row_start = torch.repeat_interleave(starts, lengths)
    within = torch.arange(total, dtype=torch.int64) - torch.repeat_interleave(
        torch.cumsum(lengths, 0) - lengths, lengths
    )
    return values[row_start + within], lengths


def _single(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return index.astype(np.int64), np.arange(index.size + 1, dtype=np.int64)


class FeatureTable:
    """Encoded features of one entity type (users or items), indexed by the entity vocabulary.

    Build with :meth:`build`; ``lookup(indices)`` gives ``{feature: (values, lengths)}`` for a batch.
    """

    def __init__(self, entity: Vocabulary, features: Sequence[EncodedFeature]) -> None:
        names = [feature.name for feature in features]
        if len(set(names)) != len(names):
            raise ValueError(f"feature names must be unique, got {names}.")
        if not features:
            raise ValueError("a feature table needs at least one feature (use kind 'id' for ids only).")
        for feature in features:
            if feature.offsets.size != entity.num_embeddings + 1:
                raise ValueError(
                    f"feature {feature.name!r}: `offsets` must have {entity.num_embeddings + 1} entries "
                    f"(entities + OOV + 1), got {feature.offsets.size}."
                )
        self.entity = entity
        self.features = {feature.name: feature for feature in features}
        self._tensors = {
            name: (torch.from_numpy(f.values.astype(np.int64)), torch.from_numpy(f.offsets.astype(np.int64)))
            for name, f in self.features.items()
        }

    @property
    def keys(self) -> list[str]:
        return list(self.features)

    @property
    def num_embeddings(self) -> dict[str, int]:
        return {name: feature.num_embeddings for name, feature in self.features.items()}

    @classmethod
    def build(
        cls,
        entity: Vocabulary,
        specs: Sequence[FeatureSpec],
        table: pl.DataFrame | pl.LazyFrame | str | os.PathLike[str] | None = None,
        *,
        key: str | None = None,
    ) -> FeatureTable:
        """Encode ``specs`` for every entity of ``entity`` from the side ``table`` (keyed by ``key``).

        Args:
            entity: the entity vocabulary (user or item ids); the table is aligned to it.
            specs: features to encode; an ``id`` feature needs no table.
            table: side table (parquet path or frame) with one row per entity; required unless all specs are ids.
            key: the table's id column; default the vocabulary's name (``user_id`` / ``item_id``).
        """
        key = key or entity.name
        frame = None
        if any(spec.kind != "id" for spec in specs):
            if table is None:
                raise ValueError(
                    f"features {[s.name for s in specs if s.kind != 'id']} need a side `table`, got None."
                )
            frame = _read_table(table)
            if key not in frame.columns:
                raise ValueError(f"side table has no key column `{key}` (columns: {frame.columns}).")
            if frame[key].is_duplicated().any():
                raise ValueError(
                    f"side table: key column `{key}` has duplicate ids, "
                    f"e.g. {frame.filter(frame[key].is_duplicated())[key][0]!r}."
                )
            rows = entity.encode(frame[key])
            known = rows != entity.oov_index
            if (~known).any():
                logger.info("side table: %d rows with ids outside the %s vocabulary ignored", int((~known).sum()), key)
            frame = frame.filter(pl.Series(known))
            rows = rows[known]
        encoded = []
        for spec in specs:
            if spec.kind == "id":
                values, offsets = _single(np.arange(entity.num_embeddings))
                encoded.append(EncodedFeature(spec, values, offsets, entity.num_embeddings, entity.oov_index))
                continue
            if frame is None:  # unreachable: a non-id spec makes `table` required above
                raise ValueError(f"feature {spec.name!r} needs a side `table`.")
            if spec.column not in frame.columns:
                raise ValueError(
                    f"feature {spec.name!r}: column `{spec.column}` is not in the side table {frame.columns}."
                )
            encoded.append(_encode(spec, frame[spec.column], rows, entity.num_embeddings))
        return cls(entity, encoded)

    def lookup(self, indices: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        """``{feature: (values, lengths)}`` for the entity indices of a batch (OOV index allowed)."""
        indices = indices.to(torch.int64)
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) > self.entity.oov_index):
            raise ValueError(
                f"`indices` must lie in [0, {self.entity.oov_index}] for {self.entity.name}, got "
                f"[{int(indices.min())}, {int(indices.max())}]."
            )
        return {name: jagged_lookup(values, offsets, indices) for name, (values, offsets) in self._tensors.items()}

    # -- persistence -----------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> Path:
        """One ``.npz`` file (atomic) holding the entity ids, every feature's arrays and its spec."""
        arrays: dict[str, np.ndarray] = pack_ids(self.entity.ids, "entity_ids")
        meta: dict[str, Any] = {"entity": self.entity.name, "features": []}
        for name, feature in self.features.items():
            arrays[f"{name}/values"] = feature.values
            arrays[f"{name}/offsets"] = feature.offsets
            if feature.categories is not None:
                arrays.update(pack_ids(feature.categories.ids, f"{name}/categories"))
            if feature.boundaries is not None:
                arrays[f"{name}/boundaries"] = feature.boundaries
            meta["features"].append(
                {
                    "spec": feature.spec.to_dict(),
                    "num_embeddings": feature.num_embeddings,
                    "default_index": feature.default_index,
                }
            )
        arrays["meta"] = np.asarray(json.dumps(meta))
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FeatureTable:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            entity = Vocabulary(name=meta["entity"], ids=unpack_ids(data, "entity_ids"))
            features = []
            for item in meta["features"]:
                spec = FeatureSpec.from_dict(item["spec"])
                categories = unpack_ids(data, f"{spec.name}/categories")
                boundaries = data.get(f"{spec.name}/boundaries")
                features.append(
                    EncodedFeature(
                        spec=spec,
                        values=data[f"{spec.name}/values"],
                        offsets=data[f"{spec.name}/offsets"],
                        num_embeddings=int(item["num_embeddings"]),
                        default_index=int(item["default_index"]),
                        categories=Vocabulary(spec.name, categories) if categories is not None else None,
                        boundaries=boundaries,
                    )
                )
        return cls(entity, features)


def _read_table(table: pl.DataFrame | pl.LazyFrame | str | os.PathLike[str]) -> pl.DataFrame:
    if isinstance(table, pl.DataFrame):
        return table
    if isinstance(table, pl.LazyFrame):
        return table.collect()
    path = Path(table)
    if not path.is_file():
        raise ValueError(f"side table {path} not found.")
    return pl.read_parquet(path)


def _encode(spec: FeatureSpec, column: pl.Series, rows: np.ndarray, num_entities: int) -> EncodedFeature:
    """Encode one side-table column; ``rows[r]`` is the entity index of table row ``r``."""
    if spec.kind == "bucketized":
        if not column.dtype.is_numeric():
            raise TypeError(f"feature {spec.name!r}: column `{spec.column}` must be numeric, got {column.dtype}.")
        numbers = column.cast(pl.Float64).fill_nan(None).to_numpy()
        present = ~np.isnan(numbers)
        if spec.boundaries is not None:
            boundaries = np.asarray(spec.boundaries, dtype=np.float64)
        else:
            if not present.any():
                raise ValueError(
                    f"feature {spec.name!r}: column `{spec.column}` has no values to compute quantiles from."
                )
            quantiles = np.linspace(0.0, 1.0, spec.num_buckets + 1)[1:-1]  # type: ignore[operator]
            boundaries = np.unique(np.quantile(numbers[present], quantiles))
        missing = boundaries.size + 1
        index = np.full(num_entities, missing, dtype=np.int64)
        index[rows[present]] = np.searchsorted(boundaries, numbers[present], side="right")
        values, offsets = _single(index)
        return EncodedFeature(spec, values, offsets, boundaries.size + 2, missing, boundaries=boundaries)
    if spec.kind == "categorical":
        if isinstance(column.dtype, pl.List):
            raise TypeError(
                f"feature {spec.name!r}: column `{spec.column}` holds lists; use kind 'multi_categorical'."
            )
        strings = column.cast(pl.String)
        categories = Vocabulary.from_values(spec.name, strings.drop_nulls(), min_count=spec.min_count)
        index = np.full(num_entities, categories.oov_index, dtype=np.int64)
        present = strings.is_not_null().to_numpy()
        index[rows[present]] = categories.encode(strings.filter(pl.Series(present)))
        values, offsets = _single(index)
        return EncodedFeature(spec, values, offsets, categories.num_embeddings, categories.oov_index, categories)
    # multi_categorical
    if not isinstance(column.dtype, pl.List):
        raise TypeError(f"feature {spec.name!r}: column `{spec.column}` must be a list column, got {column.dtype}.")
    lists = column.cast(pl.List(pl.String))
    flat = lists.explode().drop_nulls()
    categories = Vocabulary.from_values(spec.name, flat, min_count=spec.min_count)
    per_entity: list[np.ndarray] = [np.asarray([categories.oov_index], dtype=np.int64)] * num_entities
    for row, values_list in zip(rows.tolist(), lists.to_list(), strict=True):
        cleaned = [value for value in (values_list or []) if value is not None]
        if cleaned:
            per_entity[row] = categories.encode(np.asarray(cleaned, dtype=np.str_))
    lengths = np.fromiter((part.size for part in per_entity), dtype=np.int64, count=num_entities)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = np.concatenate(per_entity).astype(np.int64)
    return EncodedFeature(spec, values, offsets, categories.num_embeddings, categories.oov_index, categories)
