"""Interaction logs in parquet, read lazily with polars and validated up front.

Schema of an interaction log (one row per interaction):

============  =====================================  ========
column        type                                   required
============  =====================================  ========
user_id       integer or string                      yes
item_id       integer or string                      yes
timestamp     integer (unix seconds) or datetime     no
rating        number                                 no
weight        number                                 no
propensity    number in (0, 1]                       no
============  =====================================  ========

Errors name the file and the column (and the first offending row where there is one). Every problem found in a
file is a :class:`LogSchemaError`, including rows that cannot be decoded (a corrupted data page behind a valid
footer) and values that cannot be converted (a ``uint64`` timestamp beyond ``int64``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

from common_regs.io import atomic_dir, atomic_path

logger = logging.getLogger(__name__)

__all__ = [
    "ID_COLUMNS",
    "InMemoryBatches",
    "IndexBatch",
    "Interactions",
    "LogSchemaError",
    "LogSummary",
    "NegativeSampler",
    "StreamingBatches",
    "Vocabulary",
    "clean_log",
    "encode_interactions",
    "item_frequencies",
    "iter_record_batches",
    "partition_by_user",
    "read_log_schema",
    "scan_log",
    "validate_log",
]

ID_COLUMNS = ("user_id", "item_id")
_NUMERIC_COLUMNS = ("rating", "weight", "propensity")


class LogSchemaError(ValueError):
    """An interaction log does not match the schema; the message names the file and column."""


_READ_ERRORS: tuple[type[BaseException], ...] = (
    pl.exceptions.PolarsError,
    pl.exceptions.PanicException,  # a BaseException: polars' Rust reader panics on some corrupted pages
    pa.ArrowException,
    OSError,
)


def _reason(err: BaseException) -> str:
    return f"{type(err).__name__}: " + (str(err).strip().splitlines() or [""])[0]


def _decode_pages(path: Path) -> None:
    """Decode every data page with pyarrow (page checksums verified where the writer stored them).

    pyarrow reports a corrupted page as an exception; polars' reader can abort the whole process on some (a
    failed multi-exabyte allocation after a flipped length byte), so :func:`validate_log` runs this first.
    """
    try:
        parquet = pq.ParquetFile(path, page_checksum_verification=True)
        for group in range(parquet.num_row_groups):  # one row group at a time: see iter_record_batches
            parquet.read_row_group(group)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise LogSchemaError(
            f"{path}: not a readable parquet file (a data page does not decode: {_reason(err)})."
        ) from None


def _collect(frame: pl.LazyFrame, where: object, *, streaming: bool = True) -> pl.DataFrame:
    """``frame.collect()``; failures to decode or convert the file's rows are raised as :class:`LogSchemaError`."""
    try:
        return frame.collect(engine="streaming") if streaming else frame.collect()
    except _READ_ERRORS as err:
        raise LogSchemaError(f"{where}: could not read the log's rows ({_reason(err)}).") from None


_INT64_MAX = int(np.iinfo(np.int64).max)


def _unusable_ids(column: str, dtype: pa.DataType | pl.DataType) -> tuple[pl.Expr, str, str] | None:
    """Ids the vocabularies cannot hold faithfully: ``(predicate, what they are, advice)``, or None for this dtype.

    Integer ids are held as int64, so a ``uint64`` id above 2**63 - 1 would wrap around to a negative one; string
    ids as numpy unicode arrays, which drop trailing NULs (``"a\\x00"`` would merge with ``"a"``).
    """
    if isinstance(dtype, pa.DataType):
        unsigned64, string = pa.types.is_uint64(dtype), pa.types.is_string(dtype) or pa.types.is_large_string(dtype)
    else:
        unsigned64, string = dtype == pl.UInt64, dtype == pl.String
    if unsigned64:
        return pl.col(column) > _INT64_MAX, "ids above 2**63 - 1", "ids are held as int64: store these as strings"
    if string:
        return pl.col(column).str.ends_with("\x00"), "ids ending in NUL", "numpy cannot tell 'a\\x00' from 'a'"
    return None


def _check_ids(lazy: pl.LazyFrame, stats: dict, column: str, dtype: pa.DataType | pl.DataType, where: object) -> None:
    """Raise on the ids :func:`_unusable_ids` flags, counted in ``stats[f"unusable:{column}"]``."""
    problem = _unusable_ids(column, dtype)
    if problem is not None and stats.get(f"unusable:{column}"):
        predicate, what, advice = problem
        raise LogSchemaError(
            f"{where}: column `{column}` has {stats[f'unusable:{column}']} {what} (first at row "
            f"{_first_row(lazy, predicate, where)}); {advice}."
        )


def _unusable_id_counts(columns: dict[str, pa.DataType | pl.DataType]) -> list[pl.Expr]:
    return [
        problem[0].sum().alias(f"unusable:{column}")
        for column, dtype in columns.items()
        if (problem := _unusable_ids(column, dtype)) is not None
    ]


def _bad_value_predicate(column: str, dtype: pa.DataType | pl.DataType) -> pl.Expr:
    """Rows whose numeric ``column`` is null, NaN or ±inf (integers can only be null)."""
    floating = pa.types.is_floating(dtype) if isinstance(dtype, pa.DataType) else dtype.is_float()
    return pl.col(column).is_null() | (~pl.col(column).is_finite() if floating else pl.lit(False))


@dataclass(frozen=True)
class LogSummary:
    path: str
    rows: int
    users: int
    items: int
    time_min: int | None
    time_max: int | None
    duplicate_rows: int
    nulls: dict[str, int]

    def as_dict(self) -> dict:
        return asdict(self)


def _is_id_type(dtype: pa.DataType) -> bool:
    return pa.types.is_integer(dtype) or pa.types.is_string(dtype) or pa.types.is_large_string(dtype)


def read_log_schema(path: str | os.PathLike[str]) -> pa.Schema:
    """Read and check the parquet schema of an interaction log without reading its rows."""
    path = Path(path)
    if not path.is_file():
        raise LogSchemaError(f"{path}: interaction log not found.")
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError, ValueError) as err:  # ValueError: e.g. a footer string that is not UTF-8
        raise LogSchemaError(f"{path}: not a readable parquet file ({_reason(err)}).") from None
    repeated = sorted({name for name in schema.names if schema.names.count(name) > 1})
    if repeated:
        raise LogSchemaError(f"{path}: duplicate column names {repeated} (columns present: {schema.names}).")
    for column in ID_COLUMNS:
        if column not in schema.names:
            raise LogSchemaError(f"{path}: missing required column `{column}` (columns present: {schema.names}).")
        if not _is_id_type(schema.field(column).type):
            raise LogSchemaError(
                f"{path}: column `{column}` must be integer or string, got {schema.field(column).type}."
            )
    if "timestamp" in schema.names:
        dtype = schema.field("timestamp").type
        if not (pa.types.is_integer(dtype) or pa.types.is_timestamp(dtype)):
            raise LogSchemaError(f"{path}: column `timestamp` must be integer seconds or a timestamp, got {dtype}.")
    for column in _NUMERIC_COLUMNS:
        if column in schema.names:
            dtype = schema.field(column).type
            if not (pa.types.is_integer(dtype) or pa.types.is_floating(dtype)):
                raise LogSchemaError(f"{path}: column `{column}` must be numeric, got {dtype}.")
    return schema


def scan_log(path: str | os.PathLike[str]) -> pl.LazyFrame:
    """A lazy, schema-checked scan of an interaction log (rows are read only when collected)."""
    read_log_schema(path)
    return pl.scan_parquet(path)


def validate_log(path: str | os.PathLike[str]) -> LogSummary:
    """Check schema and content of a log in one streaming pass; return a summary.

    Raises:
        LogSchemaError: schema mismatch, an empty log, null ids, ``uint64`` ids beyond int64, null / NaN /
            infinite values in a numeric column, or a data page that does not decode (every page is decoded with
            pyarrow before polars reads the file: run this on untrusted files before training on them).
    """
    path = Path(path)
    schema = read_log_schema(path)
    _decode_pages(path)
    columns = schema.names
    lazy = pl.scan_parquet(path)
    has_time = "timestamp" in columns
    time_expr = (
        pl.col("timestamp").cast(pl.Int64)
        if has_time and pa.types.is_integer(schema.field("timestamp").type)
        else (pl.col("timestamp").dt.epoch("s") if has_time else None)
    )
    aggregates = [
        pl.len().alias("rows"),
        pl.col("user_id").drop_nulls().n_unique().alias("users"),
        pl.col("item_id").drop_nulls().n_unique().alias("items"),
        *[pl.col(c).null_count().alias(f"null:{c}") for c in columns],
        *_unusable_id_counts({c: schema.field(c).type for c in ID_COLUMNS}),
        *[
            (~pl.col(c).is_finite()).sum().alias(f"nan:{c}")
            for c in _NUMERIC_COLUMNS
            if c in columns and pa.types.is_floating(schema.field(c).type)
        ],
    ]
    if time_expr is not None:
        aggregates += [time_expr.min().alias("time_min"), time_expr.max().alias("time_max")]
    stats = _collect(lazy.select(aggregates), path).row(0, named=True)
    key = [c for c in ("user_id", "item_id", "timestamp") if c in columns]
    unique_rows = _collect(lazy.select(key).unique().select(pl.len()), path).item()
    if stats["rows"] == 0:
        raise LogSchemaError(f"{path}: the log has no rows.")
    for column in ID_COLUMNS:
        if stats[f"null:{column}"]:
            first = _first_row(lazy, pl.col(column).is_null(), path)
            raise LogSchemaError(
                f"{path}: column `{column}` has {stats[f'null:{column}']} null ids (first at row {first})."
            )
        _check_ids(lazy, stats, column, schema.field(column).type, path)
    for column in _NUMERIC_COLUMNS:
        bad = stats.get(f"null:{column}", 0) + stats.get(f"nan:{column}", 0)
        if bad:
            predicate = _bad_value_predicate(column, schema.field(column).type)
            raise LogSchemaError(
                f"{path}: column `{column}` has {bad} null/NaN/infinite values "
                f"(first at row {_first_row(lazy, predicate, path)})."
            )
    if "propensity" in columns:
        out_of_range = (pl.col("propensity") <= 0) | (pl.col("propensity") > 1)
        outside = _collect(lazy.filter(out_of_range).select(pl.len()), path).item()
        if outside:
            raise LogSchemaError(
                f"{path}: column `propensity` must lie in (0, 1]; {outside} rows do not "
                f"(first at row {_first_row(lazy, out_of_range, path)})."
            )
    return LogSummary(
        path=str(path),
        rows=stats["rows"],
        users=stats["users"],
        items=stats["items"],
        time_min=stats.get("time_min"),
        time_max=stats.get("time_max"),
        duplicate_rows=stats["rows"] - unique_rows,
        nulls={c: stats[f"null:{c}"] for c in columns},
    )


def _first_row(lazy: pl.LazyFrame, predicate: pl.Expr, where: object = "log") -> int:
    first = lazy.with_row_index("_row").filter(predicate).select("_row").head(1)
    return _collect(first, where, streaming=False).item()


# ---------------------------------------------------------------------------------------------------------------
# Id vocabularies
# ---------------------------------------------------------------------------------------------------------------


def _as_id_array(values: object, *, what: str) -> np.ndarray:
    """Raw ids (polars Series, numpy array or sequence) → a numpy array of int64 or unicode strings."""
    if isinstance(values, pl.Series):
        array = values.to_numpy()
    else:
        array = np.asarray(values)
        if array.dtype.kind == "U" and not isinstance(values, np.ndarray):  # keep trailing NULs to check them
            array = np.asarray(list(values), dtype=object)
    if array.dtype.kind in "iu":
        if array.dtype.kind == "u" and array.size and int(array.max()) > _INT64_MAX:
            raise ValueError(
                f"`{what}` holds unsigned ids above 2**63 - 1 (e.g. {int(array.max())}), which int64 cannot hold; "
                "store them as strings."
            )
        return array.astype(np.int64, copy=False)
    if array.dtype.kind in "UO" or array.dtype.kind == "T":
        if array.size and any(value is None for value in array.tolist()):
            raise ValueError(f"`{what}` contains null ids; drop or fill them before encoding.")
        strings = [str(value) for value in array.tolist()]
        trailing_nul = next((value for value in strings if value.endswith("\x00")), None)
        if trailing_nul is not None:  # numpy unicode arrays drop trailing NULs: "a\x00" would merge with "a"
            raise ValueError(
                f"`{what}` holds the id {trailing_nul!r}, which ends in NUL; numpy cannot tell it from "
                f"{trailing_nul.rstrip(chr(0))!r}. Strip or replace the NUL characters."
            )
        return np.asarray(strings, dtype=np.str_)
    raise TypeError(f"`{what}` must hold integer or string ids, got dtype {array.dtype}.")


@dataclass(frozen=True)
class Vocabulary:
    """Raw ids ↔ contiguous indices ``0 … size-1``; every unknown id maps to one out-of-vocabulary bucket.

    The OOV bucket is index ``size`` (the last row of an embedding table of ``num_embeddings = size + 1`` rows),
    so known ids keep the same index whether or not the OOV row exists downstream (FAISS holds known items only).

    Args:
        name: what the ids are (``"user_id"``, ``"item_id"``, ``"genres"``), used in error messages.
        ids: sorted unique raw ids (int64 or unicode); position = index.
        counts: optional occurrence count of each id in the data it was built from.
    """

    name: str
    ids: np.ndarray
    counts: np.ndarray | None = None

    def __post_init__(self) -> None:
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

    def _check_kind(self, array: np.ndarray) -> None:
        if self.size and array.size and (array.dtype.kind == "U") != (self.ids.dtype.kind == "U"):
            raise TypeError(
                f"ids for vocabulary {self.name!r} are {array.dtype} but the vocabulary holds {self.ids.dtype}; "
                "cast the column to the vocabulary's id type."
            )

    def contains(self, values: object) -> np.ndarray:
        """Boolean mask: which raw ids are known."""
        return self.encode(values) != self.oov_index

    def encode(self, values: object) -> np.ndarray:
        """Raw ids → int64 indices; unknown ids get :attr:`oov_index`."""
        array = _as_id_array(values, what=self.name)
        self._check_kind(array)
        if self.size == 0:
            return np.full(array.shape, self.oov_index, dtype=np.int64)
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


# ---------------------------------------------------------------------------------------------------------------
# Encoded interactions and batches
# ---------------------------------------------------------------------------------------------------------------

DuplicatePolicy = Literal["drop", "keep", "error"]
UnknownPolicy = Literal["error", "drop", "keep"]


@dataclass(frozen=True)
class Interactions:
    """Interactions as vocabulary indices (``users[r]`` interacted with ``items[r]``), in log order.

    ``unknown_items`` / ``unknown_users`` count the rows whose raw id was not in the vocabulary (kept as the
    OOV index when the policy was ``"keep"``).
    """

    users: np.ndarray
    items: np.ndarray
    num_users: int
    num_items: int
    timestamps: np.ndarray | None = None
    unknown_users: int = 0
    unknown_items: int = 0

    def __len__(self) -> int:
        return int(self.users.size)

    def item_counts(self) -> np.ndarray:
        """Interactions per known item (length ``num_items``; OOV rows are not counted)."""
        known = self.items < self.num_items
        return np.bincount(self.items[known], minlength=self.num_items).astype(np.int64)

    def user_counts(self) -> np.ndarray:
        known = self.users < self.num_users
        return np.bincount(self.users[known], minlength=self.num_users).astype(np.int64)

    def pair_keys(self) -> np.ndarray:
        """Sorted unique ``user * num_items + item`` keys of the known pairs (membership tests)."""
        known = (self.users < self.num_users) & (self.items < self.num_items)
        return np.unique(self.users[known] * self.num_items + self.items[known])

    def by_user(self) -> dict[int, np.ndarray]:
        """Known items of each user (index → sorted unique item indices)."""
        order = np.lexsort((self.items, self.users))
        users, items = self.users[order], self.items[order]
        boundaries = np.flatnonzero(np.diff(users)) + 1
        return {
            int(group_users[0]): np.unique(group_items)
            for group_users, group_items in zip(np.split(users, boundaries), np.split(items, boundaries), strict=True)
            if group_users.size
        }


def _frame(source: pl.LazyFrame | pl.DataFrame | str | os.PathLike[str]) -> pl.LazyFrame:
    if isinstance(source, pl.LazyFrame):
        return source
    if isinstance(source, pl.DataFrame):
        return source.lazy()
    return scan_log(source)


def clean_log(
    source: pl.LazyFrame | pl.DataFrame | str | os.PathLike[str],
    *,
    where: str = "log",
    rating_threshold: float | None = None,
    duplicates: DuplicatePolicy = "drop",
) -> pl.LazyFrame:
    """Check a log's content and return it as implicit feedback (a lazy frame; nothing is read until collected).

    * ids that are not integers or strings, a non-numeric ``rating``, null ids or NaN / ±inf / null ratings →
      :class:`LogSchemaError` naming ``where`` (the file when ``source`` is a path), the column, count and first row;
    * ``rating_threshold``: keep rows with ``rating >= threshold`` (``None`` keeps every row as a positive);
    * duplicate ``(user_id, item_id)`` rows: ``"drop"`` keeps the first (logged with the count), ``"keep"``
      leaves them (they then weigh more in training), ``"error"`` raises.
    """
    if duplicates not in ("drop", "keep", "error"):
        raise ValueError(f"`duplicates` must be 'drop', 'keep' or 'error', got {duplicates!r}.")
    if where == "log" and isinstance(source, (str, os.PathLike)):
        where = str(source)
    lazy = _frame(source)
    schema = lazy.collect_schema()
    names = schema.names()
    for column in ID_COLUMNS:
        if column not in names:
            raise LogSchemaError(f"{where}: missing required column `{column}` (columns present: {names}).")
        if not (schema[column].is_integer() or schema[column] == pl.String):
            raise LogSchemaError(f"{where}: column `{column}` must be integer or string, got {schema[column]}.")
    if "rating" in names and not (schema["rating"].is_integer() or schema["rating"].is_float()):
        raise LogSchemaError(f"{where}: column `rating` must be numeric, got {schema['rating']}.")
    checks = [pl.col(c).null_count().alias(f"null:{c}") for c in ID_COLUMNS]
    checks += _unusable_id_counts({c: schema[c] for c in ID_COLUMNS})
    bad_rating = _bad_value_predicate("rating", schema["rating"]) if "rating" in names else None
    if bad_rating is not None:
        checks.append(bad_rating.sum().alias("bad:rating"))
    checks.append(pl.len().alias("rows"))
    stats = _collect(lazy.select(checks), where).row(0, named=True)
    for column in ID_COLUMNS:
        if stats[f"null:{column}"]:
            first = _first_row(lazy, pl.col(column).is_null(), where)
            raise LogSchemaError(
                f"{where}: column `{column}` has {stats[f'null:{column}']} null ids (first at row {first})."
            )
        _check_ids(lazy, stats, column, schema[column], where)
    if bad_rating is not None and stats["bad:rating"]:
        first = _first_row(lazy, bad_rating, where)
        raise LogSchemaError(
            f"{where}: column `rating` has {stats['bad:rating']} NaN/null values (first at row {first}); "
            "ratings must be finite (±inf counts as bad too): drop or impute them before training."
        )
    if stats["rows"] == 0:
        raise LogSchemaError(f"{where}: the log has no rows (empty split?).")
    if rating_threshold is not None:
        if "rating" not in names:
            raise LogSchemaError(
                f"{where}: `rating_threshold`={rating_threshold} needs a `rating` column (got {names})."
            )
        lazy = lazy.filter(pl.col("rating") >= rating_threshold)
    if duplicates != "keep":
        pairs = _collect(
            lazy.select(pl.len().alias("rows"), pl.struct(*ID_COLUMNS).n_unique().alias("unique")), where
        ).row(0, named=True)
        extra = pairs["rows"] - pairs["unique"]
        if extra and duplicates == "error":
            raise LogSchemaError(
                f"{where}: {extra} duplicate (user_id, item_id) rows; "
                "pass duplicates='drop' to keep the first of each."
            )
        if extra:
            logger.warning("%s: dropped %d duplicate (user_id, item_id) rows (kept the first of each)", where, extra)
            lazy = lazy.unique(subset=list(ID_COLUMNS), keep="first", maintain_order=True)
    return lazy


def encode_interactions(
    source: pl.LazyFrame | pl.DataFrame | str | os.PathLike[str],
    users: Vocabulary,
    items: Vocabulary,
    *,
    where: str = "log",
    unknown: UnknownPolicy = "error",
) -> Interactions:
    """Map a (cleaned) log's raw ids to vocabulary indices.

    Args:
        source: a log (path, lazy or eager frame) with ``user_id`` and ``item_id``; see :func:`clean_log`.
        users: user vocabulary. items: item vocabulary.
        where: name of the split for messages (``"train"``, ``"test"``).
        unknown: rows with an id outside the vocabulary: ``"error"`` raises naming the first such id, ``"drop"``
            removes them (logged), ``"keep"`` keeps them as the OOV index (a test item nobody can recommend still
            counts as a miss; a test user with no training data is a cold-start user).
    """
    if unknown not in ("error", "drop", "keep"):
        raise ValueError(f"`unknown` must be 'error', 'drop' or 'keep', got {unknown!r}.")
    columns = [c for c in (*ID_COLUMNS, "timestamp") if c in _frame(source).collect_schema().names()]
    frame = _collect(_frame(source).select(columns), where)
    if frame.height == 0:
        raise LogSchemaError(f"{where}: no interactions (empty split, or everything filtered out).")
    user_index = users.encode(frame["user_id"])
    item_index = items.encode(frame["item_id"])
    bad_users = user_index == users.oov_index
    bad_items = item_index == items.oov_index
    timestamps = _timestamps(frame, where) if "timestamp" in columns else None
    if bad_users.any() or bad_items.any():
        detail = [
            _unknown_detail(frame[column], bad, kind)
            for column, bad, kind in (("user_id", bad_users, "user"), ("item_id", bad_items, "item"))
            if bad.any()
        ]
        message = f"{where}: " + "; ".join(detail)
        if unknown == "error":
            raise LogSchemaError(
                message + ". Pass unknown='drop' or 'keep', or build the vocabulary from the catalogue."
            )
        if unknown == "drop":
            logger.warning("%s; dropped them", message)
            keep = ~(bad_users | bad_items)
            user_index, item_index = user_index[keep], item_index[keep]
            timestamps = timestamps[keep] if timestamps is not None else None
            if user_index.size == 0:
                raise LogSchemaError(f"{where}: no interactions left after dropping unknown ids.")
        else:
            logger.warning("%s; kept them as out-of-vocabulary", message)
    return Interactions(
        users=user_index,
        items=item_index,
        num_users=users.size,
        num_items=items.size,
        timestamps=timestamps,
        unknown_users=int(bad_users.sum()) if unknown == "keep" else 0,
        unknown_items=int(bad_items.sum()) if unknown == "keep" else 0,
    )


def _unknown_detail(column: pl.Series, bad: np.ndarray, kind: str) -> str:
    unknown = column.filter(pl.Series(bad))
    return (
        f"{int(bad.sum())} rows with {kind} ids not in the {kind} vocabulary "
        f"({unknown.n_unique()} {kind}s, first {unknown[0]!r})"
    )


def _timestamps(frame: pl.DataFrame, where: object) -> np.ndarray:
    column = frame["timestamp"]
    if column.dtype == pl.Datetime or isinstance(column.dtype, pl.Datetime):
        column = column.dt.epoch("s")
    elif not column.dtype.is_integer():
        raise LogSchemaError(f"{where}: column `timestamp` must be integer seconds or a datetime, got {column.dtype}.")
    try:
        return column.cast(pl.Int64).to_numpy()
    except _READ_ERRORS as err:  # uint64 seconds beyond int64
        raise LogSchemaError(f"{where}: column `timestamp` does not fit int64 seconds ({_reason(err)}).") from None


@dataclass
class IndexBatch:
    """A training batch as indices: ``users[b]`` interacted with ``items[b]``; ``rows`` are log positions."""

    users: Tensor
    items: Tensor
    rows: Tensor

    def __len__(self) -> int:
        return int(self.users.numel())


def _epoch_generator(seed: int, epoch: int, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, salt]))


class InMemoryBatches:
    """Shuffled mini-batches over encoded interactions; the order of epoch ``e`` depends only on ``(seed, e)``.

    That makes a resumed run see exactly the batches an uninterrupted one would: ``batches(epoch, start=k)``
    skips the first ``k`` batches without touching any global random state.
    """

    def __init__(self, interactions: Interactions, batch_size: int, *, seed: int = 0, drop_last: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
        if len(interactions) == 0:
            raise ValueError("`interactions` is empty: nothing to train on.")
        self.interactions = interactions
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        self._users = torch.from_numpy(interactions.users)
        self._items = torch.from_numpy(interactions.items)

    def __len__(self) -> int:
        full, rest = divmod(len(self.interactions), self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def batches(self, epoch: int, start: int = 0) -> Iterator[IndexBatch]:
        order = torch.from_numpy(_epoch_generator(self.seed, epoch).permutation(len(self.interactions)))
        for number in range(start, len(self)):
            rows = order[number * self.batch_size : (number + 1) * self.batch_size]
            yield IndexBatch(users=self._users[rows], items=self._items[rows], rows=rows)


def iter_record_batches(
    path: str | os.PathLike[str], read_rows: int, *, columns: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """Record batches of at most ``read_rows`` rows of a parquet file, one row group decoded at a time.

    Memory is one row group (pyarrow writes at most 1Mi rows per group by default, polars 512² rows), whatever the
    file's length. ``pyarrow.parquet.ParquetFile.iter_batches`` is not used: with pyarrow 26 its resident memory
    grew by ~4.5 bytes per row read (measured on a 20M-row log: 207 MB peak vs 142 MB at 5M rows, while reading row
    group by row group stayed flat; cf. apache/arrow#39808 for the dataset reader).
    """
    parquet = pq.ParquetFile(path)
    for group in range(parquet.num_row_groups):
        yield from parquet.read_row_group(group, columns=columns).to_batches(max_chunksize=read_rows)


class StreamingBatches:
    """Mini-batches read from a parquet log in record batches, for logs larger than memory.

    Rows are shuffled within a buffer of ``buffer_rows`` (seeded per epoch), so memory stays at one buffer plus
    the vocabularies. Unknown ids are dropped (the vocabularies are built from the same log beforehand with
    :meth:`Vocabulary.from_log`, which streams too). ``rows`` are positions in the file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        users: Vocabulary,
        items: Vocabulary,
        batch_size: int,
        *,
        seed: int = 0,
        buffer_rows: int = 1 << 20,
        read_rows: int = 1 << 16,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
        if buffer_rows < batch_size:
            raise ValueError(f"`buffer_rows` must be >= `batch_size` ({batch_size}), got {buffer_rows}.")
        read_log_schema(path)
        self.path = Path(path)
        self.users_vocab, self.items_vocab = users, items
        self.batch_size, self.seed, self.buffer_rows, self.read_rows = batch_size, seed, buffer_rows, read_rows
        self._rows = pq.ParquetFile(self.path).metadata.num_rows
        if self._rows == 0:
            raise LogSchemaError(f"{self.path}: the log has no rows.")

    def __len__(self) -> int:
        """Upper bound on batches per epoch (exact unless rows with unknown ids are dropped)."""
        return -(-self._rows // self.batch_size)

    def _buffers(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        held, offset = 0, 0
        for record_batch in iter_record_batches(self.path, self.read_rows, columns=list(ID_COLUMNS)):
            frame = pl.from_arrow(record_batch)
            users = self.users_vocab.encode(frame["user_id"])
            items = self.items_vocab.encode(frame["item_id"])
            rows = np.arange(offset, offset + frame.height, dtype=np.int64)
            offset += frame.height
            keep = (users != self.users_vocab.oov_index) & (items != self.items_vocab.oov_index)
            pending.append((users[keep], items[keep], rows[keep]))
            held += int(keep.sum())
            if held >= self.buffer_rows:
                yield tuple(np.concatenate(parts) for parts in zip(*pending, strict=True))  # type: ignore[misc]
                pending, held = [], 0
        if held:
            yield tuple(np.concatenate(parts) for parts in zip(*pending, strict=True))  # type: ignore[misc]

    def batches(self, epoch: int, start: int = 0) -> Iterator[IndexBatch]:
        number = 0
        carry: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        for buffer_number, buffer in enumerate(self._buffers(epoch)):
            order = _epoch_generator(self.seed, epoch, buffer_number + 1).permutation(buffer[0].size)
            users, items, rows = (part[order] for part in buffer)
            if carry is not None:
                users, items, rows = (np.concatenate([c, p]) for c, p in zip(carry, (users, items, rows), strict=True))
            full = users.size // self.batch_size * self.batch_size
            for begin in range(0, full, self.batch_size):
                if number >= start:
                    end = begin + self.batch_size
                    yield _index_batch(users[begin:end], items[begin:end], rows[begin:end])
                number += 1
            carry = (users[full:], items[full:], rows[full:])
        if carry is not None and carry[0].size and number >= start:
            yield _index_batch(*carry)


def _index_batch(users: np.ndarray, items: np.ndarray, rows: np.ndarray) -> IndexBatch:
    return IndexBatch(
        users=torch.from_numpy(users.copy()), items=torch.from_numpy(items.copy()), rows=torch.from_numpy(rows.copy())
    )


class NegativeSampler:
    """Uniform negative items for each positive pair, re-drawn (up to ``max_tries`` rounds) when the draw is one of
    the user's training items, as the LightGCN reference code does (He et al., SIGIR 2020, arXiv:2002.02126).

    Draws come from a generator seeded by ``(seed, step)``, so a resumed run draws the same negatives. Without
    ``pair_keys`` (a streamed log too large to index) negatives are plain uniform draws.

    Args:
        num_items: catalogue size. pair_keys: sorted ``user * num_items + item`` keys of the training pairs
            (:meth:`Interactions.pair_keys`). seed: base seed. max_tries: re-draw rounds for collisions.
    """

    def __init__(
        self, num_items: int, *, pair_keys: np.ndarray | None = None, seed: int = 0, max_tries: int = 5
    ) -> None:
        if num_items < 2:
            raise ValueError(f"negative sampling needs at least 2 items, got `num_items`={num_items}.")
        self.num_items = num_items
        self.keys = pair_keys if pair_keys is not None else np.empty(0, dtype=np.int64)
        self.seed = seed
        self.max_tries = max_tries

    @classmethod
    def from_interactions(cls, interactions: Interactions, *, seed: int = 0, max_tries: int = 5) -> NegativeSampler:
        return cls(interactions.num_items, pair_keys=interactions.pair_keys(), seed=seed, max_tries=max_tries)

    def sample(self, users: Tensor, num_negatives: int, step: int) -> Tensor:
        """``(B, num_negatives)`` int64 item indices."""
        if num_negatives < 1:
            raise ValueError(f"`num_negatives` must be >= 1, got {num_negatives}.")
        generator = _epoch_generator(self.seed, step, 0x5EED)
        user_array = users.numpy()[:, None]
        negatives = generator.integers(0, self.num_items, size=(user_array.shape[0], num_negatives))
        for _ in range(self.max_tries if self.keys.size else 0):
            keys = user_array * self.num_items + negatives
            position = np.minimum(np.searchsorted(self.keys, keys), self.keys.size - 1)
            collided = self.keys[position] == keys
            if not collided.any():
                break
            negatives[collided] = generator.integers(0, self.num_items, size=int(collided.sum()))
        return torch.from_numpy(negatives.astype(np.int64))


def item_frequencies(source: pl.LazyFrame | str | os.PathLike[str], items: Vocabulary) -> np.ndarray:
    """Interaction count of every known item, aggregated by a streaming group-by (no full log in memory)."""
    counts = _frame(source).group_by("item_id").agg(pl.len().alias("count")).collect(engine="streaming")
    index = items.encode(counts["item_id"])
    known = index != items.oov_index
    return np.bincount(index[known], weights=counts["count"].to_numpy()[known], minlength=items.size).astype(np.int64)


def partition_by_user(
    path: str | os.PathLike[str],
    users: Vocabulary,
    out_dir: str | os.PathLike[str],
    *,
    parts: int,
    read_rows: int = 1 << 16,
    overwrite: bool = False,
) -> list[Path]:
    """Split a parquet log into ``parts`` files by user in one streaming pass (memory: one record batch).

    Row ``r`` goes to ``part-{p:05d}.parquet`` with ``p = users.encode(user_id_r) mod parts`` (unknown users share
    the OOV index, hence one part), so two logs split with the same vocabulary and ``parts`` are co-partitioned:
    part ``p`` of the training log holds every training row of the users in part ``p`` of the test log. Rows keep
    their columns and their order within a part; every part file exists (possibly with zero rows). ``out_dir`` is
    written atomically.

    Raises:
        ValueError: ``parts`` or ``read_rows`` < 1. LogSchemaError: not a valid log (see :func:`read_log_schema`).
        FileExistsError: ``out_dir`` exists and ``overwrite`` is false.
    """
    if parts < 1:
        raise ValueError(f"`parts` must be >= 1, got {parts}.")
    if read_rows < 1:
        raise ValueError(f"`read_rows` must be >= 1, got {read_rows}.")
    schema = read_log_schema(path)
    names = [f"part-{p:05d}.parquet" for p in range(parts)]
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        writers = [pq.ParquetWriter(tmp / name, schema) for name in names]
        try:
            for record_batch in iter_record_batches(path, read_rows):
                part = users.encode(pl.from_arrow(record_batch.column("user_id")).alias("user_id")) % parts
                order = np.argsort(part, kind="stable")
                bounds = np.searchsorted(part[order], np.arange(parts + 1))
                table = pa.Table.from_batches([record_batch]).take(pa.array(order))
                for number in np.flatnonzero(np.diff(bounds)):
                    writers[number].write_table(table.slice(bounds[number], bounds[number + 1] - bounds[number]))
        finally:
            for writer in writers:
                writer.close()
    out_dir = Path(out_dir)
    logger.info("%s: %d user partitions under %s", path, parts, out_dir)
    return [out_dir / name for name in names]
