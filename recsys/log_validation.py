"""Interaction logs in parquet: the schema, and the checks that run before any row is trained on.

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

String ids hold at most :data:`MAX_ID_LENGTH` (1,024) characters and do not end in NUL. Errors name the file and
the column, and the first offending row where there is one (rows count from 0, in the file's order). Every problem
found in a file is a :class:`LogSchemaError`, including rows that cannot be decoded (a corrupted data page behind a
valid footer) and values that cannot be converted (a ``uint64`` timestamp beyond ``int64``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

__all__ = [
    "ID_COLUMNS",
    "MAX_ID_LENGTH",
    "LogSchemaError",
    "LogSummary",
    "check_log_content",
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

MAX_ID_LENGTH = 1024
"""Longest string id accepted, in characters (regkit convention). Ids are keys: UUIDs, hashes, URLs and product
codes fit with room to spare; every id is held in the vocabularies, the saved model and each run's lists, so a much
longer value in an id column (a text field stored as the id) is refused by :func:`validate_log` and on the training
path before anything is allocated for it."""


def _unusable_ids(column: str, dtype: pa.DataType | pl.DataType) -> list[tuple[pl.Expr, str, str]]:
    """Ids the vocabularies cannot hold faithfully, as ``(predicate, what they are, advice)`` for this dtype.

    Integer ids are held as int64, so a ``uint64`` id above 2**63 - 1 would wrap around to a negative one. String
    ids that end in NUL would merge with the id without it wherever they pass through a numpy unicode array (raw ids
    given to :meth:`recsys.serving.Recommender.recommend`); ids longer than :data:`MAX_ID_LENGTH` are refused.
    """
    if isinstance(dtype, pa.DataType):
        unsigned64, string = pa.types.is_uint64(dtype), pa.types.is_string(dtype) or pa.types.is_large_string(dtype)
    else:
        unsigned64, string = dtype == pl.UInt64, dtype == pl.String
    if unsigned64:
        return [(pl.col(column) > _INT64_MAX, "ids above 2**63 - 1", "ids are held as int64: store these as strings")]
    if string:
        return [
            (pl.col(column).str.ends_with("\x00"), "ids ending in NUL", "numpy cannot tell 'a\\x00' from 'a'"),
            (
                pl.col(column).str.len_chars() > MAX_ID_LENGTH,
                f"ids longer than the {MAX_ID_LENGTH:,}-character limit",
                "shorten or hash them (is a text column stored as the id?)",
            ),
        ]
    return []


def _unusable_id_counts(columns: dict[str, pa.DataType | pl.DataType]) -> list[pl.Expr]:
    return [
        predicate.sum().alias(f"unusable:{column}:{number}")
        for column, dtype in columns.items()
        for number, (predicate, _, _) in enumerate(_unusable_ids(column, dtype))
    ]


def _check_ids(lazy: pl.LazyFrame, stats: dict, column: str, dtype: pa.DataType | pl.DataType, where: object) -> None:
    """Raise on the ids :func:`_unusable_ids` flags, counted by :func:`_unusable_id_counts` into ``stats``."""
    for number, (predicate, what, advice) in enumerate(_unusable_ids(column, dtype)):
        count = stats.get(f"unusable:{column}:{number}")
        if count:
            raise LogSchemaError(
                f"{where}: column `{column}` has {count} {what} (first at row {_first_row(lazy, predicate, where)}); "
                f"{advice}."
            )


def _bad_value_predicate(column: str, dtype: pa.DataType | pl.DataType) -> pl.Expr:
    """Rows whose numeric ``column`` is null, NaN or ±inf (integers can only be null)."""
    floating = pa.types.is_floating(dtype) if isinstance(dtype, pa.DataType) else dtype.is_float()
    return pl.col(column).is_null() | (~pl.col(column).is_finite() if floating else pl.lit(False))


@dataclass(frozen=True)
class LogSummary:
    """Counts of a validated interaction log: rows, users, items, time range, duplicate rows, nulls per column."""

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


def check_log_content(source: pl.LazyFrame | str | os.PathLike[str], *, where: object | None = None) -> int:
    """Check what training reads from a log, in one streaming pass; return its row count.

    Args:
        source: a log file, or a lazy frame of one (rows are then counted in the frame's order).
        where: how errors name the log. Default: the file, or ``"log"`` for a frame.

    Raises:
        LogSchemaError: a missing or mistyped id column, a non-numeric ``rating``, null ids, ids the vocabularies
            cannot hold (``uint64`` ids beyond int64, string ids ending in NUL or longer than
            :data:`MAX_ID_LENGTH` characters), NaN / ±inf / null ratings, or no rows. The message names ``where``,
            the column, the count and the first offending row.
    """
    if isinstance(source, pl.LazyFrame):
        lazy, where = source, "log" if where is None else where
    else:
        lazy, where = scan_log(source), source if where is None else where
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
    return stats["rows"]
