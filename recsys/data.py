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

Errors name the file and the column (and the first offending row where there is one).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

__all__ = ["ID_COLUMNS", "LogSchemaError", "LogSummary", "read_log_schema", "scan_log", "validate_log"]

ID_COLUMNS = ("user_id", "item_id")
_NUMERIC_COLUMNS = ("rating", "weight", "propensity")


class LogSchemaError(ValueError):
    """An interaction log does not match the schema; the message names the file and column."""


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
    except (pa.ArrowInvalid, OSError) as err:
        raise LogSchemaError(f"{path}: not a readable parquet file ({err}).") from None
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
        LogSchemaError: schema mismatch, an empty log, null ids, or null / NaN values in a numeric column.
    """
    path = Path(path)
    schema = read_log_schema(path)
    columns = schema.names
    lazy = pl.scan_parquet(path)
    has_time = "timestamp" in columns
    time_expr = pl.col("timestamp").cast(pl.Int64) if has_time and pa.types.is_integer(schema.field("timestamp").type) else (
        pl.col("timestamp").dt.epoch("s") if has_time else None
    )
    aggregates = [
        pl.len().alias("rows"),
        pl.col("user_id").drop_nulls().n_unique().alias("users"),
        pl.col("item_id").drop_nulls().n_unique().alias("items"),
        *[pl.col(c).null_count().alias(f"null:{c}") for c in columns],
        *[pl.col(c).is_nan().sum().alias(f"nan:{c}") for c in _NUMERIC_COLUMNS if c in columns
          and pa.types.is_floating(schema.field(c).type)],
    ]
    if time_expr is not None:
        aggregates += [time_expr.min().alias("time_min"), time_expr.max().alias("time_max")]
    stats = lazy.select(aggregates).collect(engine="streaming").row(0, named=True)
    key = [c for c in ("user_id", "item_id", "timestamp") if c in columns]
    unique_rows = lazy.select(key).unique().select(pl.len()).collect(engine="streaming").item()
    if stats["rows"] == 0:
        raise LogSchemaError(f"{path}: the log has no rows.")
    for column in ID_COLUMNS:
        if stats[f"null:{column}"]:
            first = _first_row(lazy, pl.col(column).is_null())
            raise LogSchemaError(f"{path}: column `{column}` has {stats[f'null:{column}']} null ids (first at row {first}).")
    for column in _NUMERIC_COLUMNS:
        bad = stats.get(f"null:{column}", 0) + stats.get(f"nan:{column}", 0)
        if bad:
            predicate = pl.col(column).is_null() | pl.col(column).cast(pl.Float64).is_nan()
            raise LogSchemaError(
                f"{path}: column `{column}` has {bad} null/NaN values (first at row {_first_row(lazy, predicate)})."
            )
    if "propensity" in columns:
        outside = lazy.filter((pl.col("propensity") <= 0) | (pl.col("propensity") > 1)).select(pl.len()).collect().item()
        if outside:
            raise LogSchemaError(f"{path}: column `propensity` must lie in (0, 1]; {outside} rows do not.")
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


def _first_row(lazy: pl.LazyFrame, predicate: pl.Expr) -> int:
    return lazy.with_row_index("_row").filter(predicate).select("_row").head(1).collect().item()
