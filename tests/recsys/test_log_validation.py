"""Interaction-log schema validation: summaries of valid logs, clear errors naming file and column otherwise."""

from __future__ import annotations

import math

import polars as pl
import pytest

from recsys.data import LogSchemaError, scan_log, validate_log


def _log(tmp_path, **columns) -> str:
    path = tmp_path / "log.parquet"
    pl.DataFrame(columns).write_parquet(path)
    return path


def test_summary_of_a_valid_log(tmp_path):
    path = _log(tmp_path, user_id=[1, 1, 2, 2, 2], item_id=[10, 11, 10, 10, 12], timestamp=[5, 6, 7, 7, 9],
                rating=[1.0, 2.0, 3.0, 3.0, 4.0])
    summary = validate_log(path)
    assert (summary.rows, summary.users, summary.items) == (5, 2, 3)
    assert (summary.time_min, summary.time_max) == (5, 9)
    assert summary.duplicate_rows == 1  # (2, 10, 7) twice
    assert summary.nulls == {"user_id": 0, "item_id": 0, "timestamp": 0, "rating": 0}
    assert scan_log(path).collect().height == 5


def test_string_ids_and_datetime_timestamps_are_accepted(tmp_path):
    path = tmp_path / "log.parquet"
    pl.DataFrame({"user_id": ["u1", "u2"], "item_id": ["i1", "i1"]}).with_columns(
        timestamp=pl.datetime_range(pl.datetime(2024, 1, 1), pl.datetime(2024, 1, 2), "1d", eager=True)
    ).write_parquet(path)
    summary = validate_log(path)
    assert summary.users == 2 and summary.items == 1
    assert summary.time_max - summary.time_min == 86_400


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"user_id": [1], "timestamp": [1]}, r"missing required column `item_id`"),
        ({"user_id": [1.5], "item_id": [1]}, r"column `user_id` must be integer or string, got double"),
        ({"user_id": [1, None], "item_id": [1, 2]}, r"column `user_id` has 1 null ids \(first at row 1\)"),
        ({"user_id": [1, 2], "item_id": [1, 2], "rating": [1.0, math.nan]}, r"column `rating` has 1 null/NaN"),
        ({"user_id": [1], "item_id": [1], "timestamp": ["yesterday"]}, r"column `timestamp` must be integer"),
        ({"user_id": [1], "item_id": [1], "propensity": [0.0]}, r"`propensity` must lie in \(0, 1\]"),
    ],
)
def test_bad_logs_name_the_column(tmp_path, columns, message):
    with pytest.raises(LogSchemaError, match=message):
        validate_log(_log(tmp_path, **columns))


def test_empty_missing_and_non_parquet_files(tmp_path):
    empty = tmp_path / "empty.parquet"
    schema = {"user_id": pl.Int64, "item_id": pl.Int64}
    pl.DataFrame({"user_id": [], "item_id": []}, schema=schema).write_parquet(empty)
    with pytest.raises(LogSchemaError, match="empty.parquet: the log has no rows"):
        validate_log(empty)
    with pytest.raises(LogSchemaError, match="interaction log not found"):
        validate_log(tmp_path / "absent.parquet")
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"this is not parquet")
    with pytest.raises(LogSchemaError, match="garbage.parquet: not a readable parquet file"):
        validate_log(garbage)
