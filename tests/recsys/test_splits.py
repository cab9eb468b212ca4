"""recsys.splits: given files, random per-user holdout, leave-last-out, global temporal split."""

from __future__ import annotations

import math

import polars as pl
import pytest

from recsys.data import LogSchemaError
from recsys.splits import given_split, leave_last_out_split, random_holdout_split, temporal_split


def _full_log(planted) -> pl.DataFrame:
    return pl.concat([planted.train, planted.test]).sort("user_id", "timestamp")


def _keys(frame: pl.DataFrame) -> set[tuple[int, int]]:
    return set(zip(frame["user_id"].to_list(), frame["item_id"].to_list(), strict=True))


def test_random_holdout_is_per_user_disjoint_and_seeded(planted):
    log = _full_log(planted)
    split = random_holdout_split(log.lazy(), test_fraction=0.25, seed=5)
    train, test = split.train.collect(), split.test.collect()
    assert train.columns == log.columns and train.height + test.height == log.height
    assert _keys(train) | _keys(test) == _keys(log) and not _keys(train) & _keys(test)
    sizes = log.group_by("user_id").len()
    held = test.group_by("user_id").len()
    for user, n in zip(sizes["user_id"], sizes["len"], strict=True):
        expected = min(math.floor(n * 0.25), n - 1)
        got = held.filter(pl.col("user_id") == user)["len"].to_list()
        assert (got[0] if got else 0) == expected
    again = random_holdout_split(log.lazy(), test_fraction=0.25, seed=5).test.collect()
    other = random_holdout_split(log.lazy(), test_fraction=0.25, seed=6).test.collect()
    assert _keys(again) == _keys(test) and _keys(other) != _keys(test)


def test_random_holdout_of_a_user_subset(planted):
    log = _full_log(planted)
    full = random_holdout_split(log.lazy(), test_fraction=0.4, seed=3).test.collect()
    subset = random_holdout_split(log.lazy(), test_fraction=0.4, seed=3, user_fraction=0.5).test.collect()
    # the chosen users lose exactly what the all-users holdout takes from them; the others lose nothing
    chosen = set(subset["user_id"].to_list())
    assert _keys(subset) == _keys(full.filter(pl.col("user_id").is_in(list(chosen))))
    users = log["user_id"].n_unique()
    assert abs(len(chosen) - users / 2) <= 3 * math.sqrt(users / 4)  # binomial(users, 0.5) within 3 sigma
    with pytest.raises(ValueError, match=r"`user_fraction` must be in \(0, 1\], got 0"):
        random_holdout_split(log.lazy(), user_fraction=0.0)


def test_leave_last_out_holds_out_the_latest(planted):
    log = _full_log(planted)
    split = leave_last_out_split(log.lazy(), n=2)
    test = split.test.collect()
    latest = log.sort("timestamp", descending=True).group_by("user_id", maintain_order=True).head(2)
    assert _keys(test) == _keys(latest)
    assert split.check() == {"train": log.height - test.height, "test": test.height}


def test_temporal_split_cutoff(planted):
    log = _full_log(planted)
    split = temporal_split(log.lazy(), test_fraction=0.2)
    train, test = split.train.collect(), split.test.collect()
    assert train["timestamp"].max() < test["timestamp"].min()
    assert abs(test.height / log.height - 0.2) < 0.02
    fixed = temporal_split(log.lazy(), cutoff=int(log["timestamp"].median()))
    assert fixed.test.collect()["timestamp"].min() > int(log["timestamp"].median())


def test_given_split_and_empty_side_error(planted, tmp_path):
    split = given_split(planted.folder / "train.parquet", planted.folder / "test.parquet")
    assert split.check() == {"train": planted.train.height, "test": planted.test.height}
    log = _full_log(planted)
    empty = temporal_split(log.lazy(), cutoff=int(log["timestamp"].max()))
    with pytest.raises(LogSchemaError, match="the `test` side is empty"):
        empty.check()
    written = split.write(tmp_path / "out")
    assert pl.read_parquet(written["test"]).height == planted.test.height


def test_splits_need_timestamps():
    log = pl.DataFrame({"user_id": [1], "item_id": [2]}).lazy()
    with pytest.raises(LogSchemaError, match="needs a `timestamp` column"):
        leave_last_out_split(log)
    with pytest.raises(ValueError, match=r"`test_fraction` must be in \(0, 1\), got 1.5"):
        random_holdout_split(log, test_fraction=1.5)
