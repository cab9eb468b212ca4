"""recsys.data: vocabularies, log cleaning, encoding, batches (in-memory and streaming), negatives, frequencies."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from recsys.data import (
    InMemoryBatches,
    LogSchemaError,
    NegativeSampler,
    StreamingBatches,
    Vocabulary,
    clean_log,
    encode_interactions,
    item_frequencies,
)


def test_vocabulary_oov_bucket_and_round_trip(tmp_path):
    vocab = Vocabulary.from_values("item_id", [30, 10, 20, 10, 10, 20])
    assert vocab.ids.tolist() == [10, 20, 30]
    assert vocab.counts.tolist() == [3, 2, 1]
    assert vocab.encode([20, 99, 10, 31]).tolist() == [1, 3, 0, 3]  # 3 = OOV bucket = size
    assert vocab.oov_index == vocab.size == 3 and vocab.num_embeddings == 4
    assert vocab.decode([2, 0]).tolist() == [30, 10]
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        vocab.decode([3])
    rare = Vocabulary.from_values("item_id", [30, 10, 20, 10, 10, 20], min_count=2)
    assert rare.ids.tolist() == [10, 20] and rare.encode([30]).tolist() == [2]
    loaded = Vocabulary.load(vocab.save(tmp_path / "v.parquet"), name="item_id")
    assert loaded.ids.tolist() == vocab.ids.tolist() and loaded.counts.tolist() == vocab.counts.tolist()


def test_vocabulary_strings_and_type_mismatch():
    vocab = Vocabulary.from_values("user_id", ["b", "a", "c"])
    assert vocab.encode(pl.Series(["c", "zz", "a"])).tolist() == [2, 3, 0]
    with pytest.raises(TypeError, match="are integers but the vocabulary holds strings"):
        vocab.encode([1, 2])


def test_vocabulary_from_log_streams_counts(planted):
    vocab = Vocabulary.from_log(pl.scan_parquet(planted.folder / "train.parquet"), "item_id")
    expected = planted.train.group_by("item_id").len().sort("item_id")
    assert vocab.ids.tolist() == expected["item_id"].to_list()
    assert vocab.counts.tolist() == expected["len"].to_list()


def _log(**columns):
    return pl.DataFrame(columns)


def test_clean_log_errors_name_the_problem():
    with pytest.raises(LogSchemaError, match=r"train: column `rating` has 1 NaN/null values \(first at row 1\)"):
        clean_log(_log(user_id=[1, 2], item_id=[1, 2], rating=[4.0, float("nan")]), where="train")
    with pytest.raises(LogSchemaError, match=r"test: the log has no rows"):
        clean_log(pl.DataFrame(schema={"user_id": pl.Int64, "item_id": pl.Int64}), where="test")
    with pytest.raises(LogSchemaError, match="missing required column `item_id`"):
        clean_log(_log(user_id=[1]), where="x")
    with pytest.raises(LogSchemaError, match="1 duplicate"):
        clean_log(_log(user_id=[1, 1, 2], item_id=[5, 5, 5]), duplicates="error").collect()


def test_clean_log_drops_duplicates_and_thresholds(caplog):
    log = _log(user_id=[1, 1, 2, 2], item_id=[5, 5, 5, 6], rating=[5.0, 1.0, 2.0, 4.0])
    with caplog.at_level("WARNING"):
        kept = clean_log(log, where="train").collect()
    assert kept.height == 3 and "dropped 1 duplicate" in caplog.text
    assert kept.filter(pl.col("user_id") == 1)["rating"].to_list() == [5.0]  # the first row wins
    assert clean_log(log, rating_threshold=4.0).collect()["item_id"].to_list() == [5, 6]


def test_encode_interactions_unknown_policies():
    users, items = Vocabulary.from_values("user_id", [1, 2]), Vocabulary.from_values("item_id", [5, 6])
    log = _log(user_id=[1, 2, 3], item_id=[5, 7, 6])
    with pytest.raises(
        LogSchemaError, match=r"test: 1 rows with user ids not in the user vocabulary .*first 3.*1 rows with item ids"
    ):
        encode_interactions(log, users, items, where="test")
    dropped = encode_interactions(log, users, items, unknown="drop")
    assert dropped.users.tolist() == [0] and dropped.items.tolist() == [0]
    kept = encode_interactions(log, users, items, unknown="keep")
    assert kept.users.tolist() == [0, 1, 2] and kept.items.tolist() == [0, 2, 1]
    assert kept.unknown_users == 1 and kept.unknown_items == 1
    assert kept.item_counts().tolist() == [1, 1]  # the OOV row is not counted


def _encoded(planted):
    users = Vocabulary.from_values("user_id", planted.users["user_id"])
    items = Vocabulary.from_values("item_id", planted.items["item_id"])
    return users, items, encode_interactions(planted.train, users, items)


def test_in_memory_batches_are_a_seeded_permutation_and_resumable(planted):
    _, _, train = _encoded(planted)
    batches = InMemoryBatches(train, 100, seed=3)
    epoch = list(batches.batches(0))
    rows = torch.cat([b.rows for b in epoch])
    assert sorted(rows.tolist()) == list(range(len(train)))
    assert len(epoch) == len(batches) == -(-len(train) // 100)
    assert torch.equal(torch.cat([b.rows for b in batches.batches(0, start=4)]), rows[400:])
    assert not torch.equal(torch.cat([b.rows for b in batches.batches(1)]), rows)
    assert all(torch.equal(b.users, torch.from_numpy(train.users)[b.rows]) for b in epoch)


def test_streaming_batches_cover_the_file_once(planted):
    users, items, train = _encoded(planted)
    stream = StreamingBatches(
        planted.folder / "train.parquet", users, items, 64, seed=1, buffer_rows=300, read_rows=128
    )
    epoch = list(stream.batches(0))
    rows = torch.cat([b.rows for b in epoch])
    assert sorted(rows.tolist()) == list(range(len(train)))
    users_by_row = torch.empty(len(train), dtype=torch.int64)
    users_by_row[rows] = torch.cat([b.users for b in epoch])
    assert torch.equal(users_by_row, torch.from_numpy(train.users))
    resumed = list(stream.batches(0, start=3))
    assert all(torch.equal(a.rows, b.rows) for a, b in zip(resumed, epoch[3:], strict=True))
    assert not torch.equal(torch.cat([b.rows for b in stream.batches(1)]), rows)


def test_negative_sampler_avoids_training_items_and_is_seeded(planted):
    _, _, train = _encoded(planted)
    sampler = NegativeSampler.from_interactions(train, seed=0, max_tries=20)
    users = torch.from_numpy(train.users[:500])
    negatives = sampler.sample(users, 4, step=7)
    assert negatives.shape == (500, 4)
    assert torch.equal(negatives, sampler.sample(users, 4, step=7))
    assert not torch.equal(negatives, sampler.sample(users, 4, step=8))
    positives = set(train.pair_keys().tolist())
    hits = sum(
        int(u) * train.num_items + int(j) in positives for u, row in zip(users, negatives, strict=True) for j in row
    )
    assert hits == 0


def test_negative_sampler_table_and_binary_search_draw_the_same(planted, monkeypatch):
    """The dense membership table (small catalogues) and the sorted-key search (large ones) agree draw for draw."""
    import recsys.data

    _, _, train = _encoded(planted)
    users = torch.from_numpy(train.users[:500])
    table = NegativeSampler.from_interactions(train, seed=3)
    monkeypatch.setattr(recsys.data, "_TABLE_MAX_KEYS", 0)
    searched = NegativeSampler.from_interactions(train, seed=3)
    assert table._table is not None and searched._table is None
    for step in range(5):
        assert torch.equal(table.sample(users, 2, step=step), searched.sample(users, 2, step=step))


def test_item_frequencies_match_numpy(planted):
    _, items, train = _encoded(planted)
    counts = item_frequencies(planted.folder / "train.parquet", items)
    assert counts.tolist() == np.bincount(train.items, minlength=items.size).tolist()
