"""partition_by_user: one streaming pass splits a log by user; two logs split alike are co-partitioned."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recsys.data import LogSchemaError, Vocabulary, partition_by_user


def _log(rng: np.random.Generator, rows: int, *, strings: bool) -> pl.DataFrame:
    users = rng.integers(0, 40, rows)
    return pl.DataFrame(
        {
            "user_id": [f"u{u}" for u in users] if strings else users,
            "item_id": rng.integers(0, 30, rows),
            "timestamp": np.arange(rows, dtype=np.int64),
        }
    )


@pytest.mark.parametrize("strings", [False, True])
def test_parts_cover_the_log_once_split_by_user_index_and_keep_order(tmp_path, strings) -> None:
    rng = np.random.default_rng(0)
    log = _log(rng, 1000, strings=strings)
    log.write_parquet(tmp_path / "log.parquet", row_group_size=300)
    users = Vocabulary.from_values("user_id", log["user_id"][:900])  # some users unknown (OOV bucket)
    paths = partition_by_user(tmp_path / "log.parquet", users, tmp_path / "parts", parts=7, read_rows=128)
    assert [p.name for p in paths] == [f"part-{p:05d}.parquet" for p in range(7)]
    frames = [pl.read_parquet(p) for p in paths]
    assert all(f.columns == log.columns for f in frames)
    # every row exactly once (timestamps are row numbers), in log order within a part
    stamps = np.concatenate([f["timestamp"].to_numpy() for f in frames])
    np.testing.assert_array_equal(np.sort(stamps), np.arange(1000))
    for number, frame in enumerate(frames):
        assert np.all(np.diff(frame["timestamp"].to_numpy()) > 0)
        assert np.all(users.encode(frame["user_id"]) % 7 == number)
    owners = [set(f["user_id"].to_list()) for f in frames]
    assert sum(map(len, owners)) == len(set().union(*owners))  # no user in two parts


def test_two_logs_are_co_partitioned_and_bad_arguments_are_named(tmp_path) -> None:
    rng = np.random.default_rng(1)
    train, test = _log(rng, 500, strings=False), _log(rng, 80, strings=False)
    train.write_parquet(tmp_path / "train.parquet")
    test.write_parquet(tmp_path / "test.parquet")
    users = Vocabulary.from_values("user_id", train["user_id"])
    train_parts = partition_by_user(tmp_path / "train.parquet", users, tmp_path / "a", parts=3)
    test_parts = partition_by_user(tmp_path / "test.parquet", users, tmp_path / "b", parts=3)
    for train_part, test_part in zip(train_parts, test_parts, strict=True):
        test_users = set(pl.read_parquet(test_part)["user_id"].to_list())
        expected = train.filter(pl.col("user_id").is_in(list(test_users)))
        got = pl.read_parquet(train_part).filter(pl.col("user_id").is_in(list(test_users)))
        assert got.sort("timestamp").equals(expected.sort("timestamp"))  # all their training rows, in this part
    with pytest.raises(ValueError, match=r"`parts` must be >= 1, got 0"):
        partition_by_user(tmp_path / "train.parquet", users, tmp_path / "c", parts=0)
    with pytest.raises(FileExistsError):
        partition_by_user(tmp_path / "train.parquet", users, tmp_path / "a", parts=3)
    pl.DataFrame({"user": [1]}).write_parquet(tmp_path / "bad.parquet")
    with pytest.raises(LogSchemaError, match="missing required column `user_id`"):
        partition_by_user(tmp_path / "bad.parquet", users, tmp_path / "d", parts=2)


def test_iter_record_batches_reads_every_row_once_in_bounded_batches(tmp_path) -> None:
    from recsys.data import iter_record_batches

    log = _log(np.random.default_rng(2), 1000, strings=False)
    log.write_parquet(tmp_path / "log.parquet", row_group_size=300)  # 4 row groups: 300, 300, 300, 100
    batches = list(iter_record_batches(tmp_path / "log.parquet", 128, columns=["timestamp"]))
    assert [b.num_rows for b in batches] == [128, 128, 44] * 3 + [100]
    assert all(b.schema.names == ["timestamp"] for b in batches)
    stamps = np.concatenate([b.column(0).to_numpy() for b in batches])
    np.testing.assert_array_equal(stamps, np.arange(1000))
