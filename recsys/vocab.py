"""Id vocabularies: raw user / item / category ids ↔ contiguous indices, with one out-of-vocabulary bucket.

String ids are held in numpy's variable-width ``StringDType``: each id takes its own length, where a fixed-width
unicode array would give every id the room of the longest (one id of a million characters among 15,000 would take
60 GB). Ids longer than :data:`recsys.log_validation.MAX_ID_LENGTH` characters are refused.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from common_regs.io import atomic_path
from recsys.log_validation import _INT64_MAX, MAX_ID_LENGTH, _collect

__all__ = ["Vocabulary", "pack_ids", "unpack_ids"]

_STRING_IDS = np.dtypes.StringDType()


def _raw_ids(values: object) -> np.ndarray:
    if isinstance(values, pl.Series):
        return values.to_numpy()  # strings come as Python objects: no padding
    if isinstance(values, np.ndarray):
        return values
    return np.asarray(list(values), dtype=object)  # np.asarray(values) would pad every string to the longest


def _string_ids(strings: list, *, what: str) -> np.ndarray:
    """Python strings → a ``StringDType`` array, refusing ids a vocabulary cannot hold faithfully."""
    if any(value is None for value in strings):
        raise ValueError(f"`{what}` contains null ids; drop or fill them before encoding.")
    if not all(isinstance(value, str) for value in strings):
        odd = next(value for value in strings if not isinstance(value, str))
        raise TypeError(f"`{what}` mixes string ids with {type(odd).__name__} ids ({odd!r}); use one id type.")
    trailing_nul = next((value for value in strings if value.endswith("\x00")), None)
    if trailing_nul is not None:  # numpy unicode arrays drop trailing NULs: "a\x00" would merge with "a"
        raise ValueError(
            f"`{what}` holds the id {trailing_nul!r}, which ends in NUL; numpy cannot tell it from "
            f"{trailing_nul.rstrip(chr(0))!r}. Strip or replace the NUL characters."
        )
    longest = max(strings, key=len, default="")
    if len(longest) > MAX_ID_LENGTH:
        raise ValueError(
            f"`{what}` holds an id of {len(longest):,} characters ({longest[:40]!r}…); ids are limited to "
            f"{MAX_ID_LENGTH:,} characters: shorten or hash them (is a text column stored as the id?)."
        )
    return np.asarray(strings, dtype=_STRING_IDS)


def _as_id_array(values: object, *, what: str) -> np.ndarray:
    """Raw ids (polars Series, numpy array or sequence) → int64, or strings in a ``StringDType`` array."""
    array = _raw_ids(values)
    if array.dtype.kind == "O":
        items = array.tolist()
        if not items:
            return np.empty(0, dtype=np.int64)
        if not all(isinstance(value, int | np.integer) and not isinstance(value, bool) for value in items):
            return _string_ids(items, what=what)
        array = np.asarray(items)  # int64, uint64 at or above 2**63, object beyond 2**64 (refused below)
    if array.dtype.kind in "iu":
        if array.dtype.kind == "u" and array.size and int(array.max()) > _INT64_MAX:
            raise ValueError(
                f"`{what}` holds unsigned ids above 2**63 - 1 (e.g. {int(array.max())}), which int64 cannot hold; "
                "store them as strings."
            )
        return array.astype(np.int64, copy=False)
    if array.dtype.kind in "UT":
        return _string_ids(array.tolist(), what=what)
    raise TypeError(f"`{what}` must hold integer or string ids, got dtype {array.dtype}.")


def pack_ids(ids: np.ndarray, key: str) -> dict[str, np.ndarray]:
    """Ids as arrays that ``np.savez`` writes without pickle or padding.

    Int64 ids go under ``key``; strings as their UTF-8 bytes (``key/utf8``) and the end offset of each (``key/ends``).
    :func:`unpack_ids` reads them back.
    """
    if ids.dtype.kind != "T":
        return {key: ids}
    encoded = [value.encode("utf-8") for value in ids.tolist()]
    ends = np.cumsum([len(value) for value in encoded], dtype=np.int64)
    return {f"{key}/utf8": np.frombuffer(b"".join(encoded), dtype=np.uint8), f"{key}/ends": ends}


def unpack_ids(arrays: Mapping[str, np.ndarray], key: str) -> np.ndarray | None:
    """The ids :func:`pack_ids` stored under ``key``, or None when there are none.

    Also reads a plain array under ``key``, as older files hold.
    """
    if f"{key}/utf8" not in arrays:
        return arrays.get(key)
    data, ends = arrays[f"{key}/utf8"].tobytes(), arrays[f"{key}/ends"].tolist()
    starts = [0, *ends[:-1]]
    return np.asarray([data[a:b].decode("utf-8") for a, b in zip(starts, ends, strict=True)], dtype=_STRING_IDS)


@dataclass(frozen=True)
class Vocabulary:
    """Raw ids ↔ contiguous indices ``0 … size-1``; every unknown id maps to one out-of-vocabulary bucket.

    The OOV bucket is index ``size`` (the last row of an embedding table of ``num_embeddings = size + 1`` rows),
    so known ids keep the same index whether or not the OOV row exists downstream (FAISS holds known items only).

    Args:
        name: what the ids are (``"user_id"``, ``"item_id"``, ``"genres"``), used in error messages.
        ids: sorted unique raw ids, position = index: int64, or strings held by numpy's variable-width
            ``StringDType`` (an array of unicode strings or Python objects given here is converted to it).
        counts: optional occurrence count of each id in the data it was built from.
    """

    name: str
    ids: np.ndarray
    counts: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.ids.dtype.kind in "UO":
            object.__setattr__(self, "ids", _as_id_array(self.ids, what=self.name))
        if self.ids.ndim != 1:
            raise ValueError(f"`ids` of vocabulary {self.name!r} must be 1-D, got shape {self.ids.shape}.")
        if self.ids.size > 1 and not bool(np.all(self.ids[1:] > self.ids[:-1])):
            raise ValueError(f"`ids` of vocabulary {self.name!r} must be sorted and unique.")
        if self.counts is not None and self.counts.shape != self.ids.shape:
            raise ValueError(
                f"`counts` of vocabulary {self.name!r} must have shape {self.ids.shape}, got {self.counts.shape}."
            )

    @property
    def size(self) -> int:
        """Number of known ids."""
        return int(self.ids.size)

    @property
    def oov_index(self) -> int:
        return self.size

    @property
    def num_embeddings(self) -> int:
        """Rows an embedding table needs: every known id plus the OOV bucket."""
        return self.size + 1

    @classmethod
    def from_values(cls, name: str, values: object, *, min_count: int = 1) -> Vocabulary:
        """Vocabulary of the distinct ``values`` seen at least ``min_count`` times (rarer ones fall into OOV)."""
        if min_count < 1:
            raise ValueError(f"`min_count` must be >= 1, got {min_count}.")
        array = _as_id_array(values, what=name)
        ids, counts = np.unique(array, return_counts=True)
        keep = counts >= min_count
        return cls(name=name, ids=ids[keep], counts=counts[keep].astype(np.int64))

    @classmethod
    def from_log(cls, log: pl.LazyFrame, column: str, *, min_count: int = 1) -> Vocabulary:
        """Vocabulary of ``column`` of a lazy log, counted in one streaming pass (only distinct ids are held)."""
        if column not in log.collect_schema().names():
            raise ValueError(f"`column` {column!r} is not in the log (columns: {log.collect_schema().names()}).")
        counts = _collect(log.group_by(column).agg(pl.len().alias("count")).sort(column), f"column `{column}`")
        if counts[column].null_count():
            raise ValueError(f"column `{column}` holds null ids; drop them before building a vocabulary.")
        return cls.from_counts(column, counts[column], counts["count"], min_count=min_count)

    @classmethod
    def from_counts(cls, name: str, ids: object, counts: object, *, min_count: int = 1) -> Vocabulary:
        array = _as_id_array(ids, what=name)
        count_array = np.asarray(counts.to_numpy() if isinstance(counts, pl.Series) else counts, dtype=np.int64)
        order = np.argsort(array, kind="stable")
        array, count_array = array[order], count_array[order]
        if array.size > 1 and not bool(np.all(array[1:] > array[:-1])):
            raise ValueError(f"`ids` of vocabulary {name!r} are not unique.")
        keep = count_array >= min_count
        return cls(name=name, ids=array[keep], counts=count_array[keep])

    @property
    def id_type(self) -> str:
        """``"string"`` or ``"integer"``: the type of the raw ids."""
        return "string" if self.ids.dtype.kind == "T" else "integer"

    def _check_kind(self, array: np.ndarray) -> None:
        given = "string" if array.dtype.kind == "T" else "integer"
        if self.size and array.size and given != self.id_type:
            raise TypeError(
                f"ids for vocabulary {self.name!r} are {given}s but the vocabulary holds {self.id_type}s; "
                "cast the column to the vocabulary's id type."
            )

    def contains(self, values: object) -> np.ndarray:
        """Boolean mask: which raw ids are known."""
        return self.encode(values) != self.oov_index

    @functools.cached_property
    def _positions(self) -> pl.DataFrame:
        """``id → index`` for string lookups: a hash join, about 10x faster than ``searchsorted`` over StringDType."""
        return pl.DataFrame({"id": self.ids, "index": np.arange(self.size, dtype=np.int64)})

    def encode(self, values: object) -> np.ndarray:
        """Raw ids → int64 indices; unknown ids get :attr:`oov_index`."""
        array = _as_id_array(values, what=self.name)
        self._check_kind(array)
        if self.size == 0:
            return np.full(array.shape, self.oov_index, dtype=np.int64)
        if array.dtype.kind == "T":
            found = pl.DataFrame({"id": array}).join(self._positions, on="id", how="left", maintain_order="left")
            return found["index"].fill_null(self.oov_index).to_numpy().astype(np.int64, copy=False)
        position = np.searchsorted(self.ids, array)
        clipped = np.minimum(position, self.size - 1)
        known = self.ids[clipped] == array
        return np.where(known, clipped, self.oov_index).astype(np.int64)

    def decode(self, indices: object) -> np.ndarray:
        """Indices → raw ids. Raises on the OOV index or out-of-range values (no raw id exists for them)."""
        index_array = np.asarray(indices, dtype=np.int64)
        bad = (index_array < 0) | (index_array >= self.size)
        if bad.any():
            raise ValueError(
                f"`indices` for vocabulary {self.name!r} must lie in [0, {self.size}), got {int(index_array[bad][0])}."
            )
        return self.ids[index_array]

    def to_frame(self) -> pl.DataFrame:
        data: dict[str, object] = {"id": self.ids}
        if self.counts is not None:
            data["count"] = self.counts
        return pl.DataFrame(data)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the vocabulary as parquet (``id`` and optional ``count`` columns), atomically."""
        with atomic_path(path) as tmp:
            self.to_frame().write_parquet(tmp)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], name: str | None = None) -> Vocabulary:
        frame = pl.read_parquet(path)
        if "id" not in frame.columns:
            raise ValueError(f"{path}: not a vocabulary file (no `id` column; columns: {frame.columns}).")
        counts = frame["count"].to_numpy().astype(np.int64) if "count" in frame.columns else None
        return cls(name=name or Path(path).stem, ids=_as_id_array(frame["id"], what=str(path)), counts=counts)
