"""``regkit recsys train`` with ``data.streaming: true``: in-memory test metrics, training log never collected."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import planted_log
import polars as pl
import pytest
import yaml

from pipelines.cli import main
from pipelines.recsys_run import train_run
from recsys.data import NegativeSampler
from recsys.serving import Recommender


def _config(folder: Path, *, streaming: bool) -> dict:
    return {
        "seed": 3,
        "num_threads": 1,
        "data": {
            "dir": str(folder),
            "split": "given",
            "train": "train.parquet",
            "test": "test.parquet",
            "duplicates": "keep",
            "validation": {"method": "none"},
            "streaming": streaming,
            "streaming_part_rows": 500,  # 3240 training rows → 7 user partitions
        },
        "model": {"name": "mf", "embedding_dim": 16},
        "train": {"epochs": 8, "batch_size": 64, "lr": 0.02, "logq": "counts", "show_progress": False},
        "eval": {"ks": [5, 10]},
    }


class _CollectSpy:
    """Largest ``LazyFrame.collect`` result that carries both id columns (rows), over a run."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.largest = 0
        original = pl.LazyFrame.collect

        def collect(frame: pl.LazyFrame, *args, **kwargs):
            result = original(frame, *args, **kwargs)
            if isinstance(result, pl.DataFrame) and {"user_id", "item_id"} <= set(result.columns):
                self.largest = max(self.largest, result.height)
            return result

        monkeypatch.setattr(pl.LazyFrame, "collect", collect)


@pytest.mark.torchrec
def test_streaming_run_matches_in_memory_and_never_collects_the_training_log(tmp_path, monkeypatch):
    planted = planted_log.make_planted_log(tmp_path / "data", items=200, per_user=30)
    train_rows = planted.train.height
    assert planted.test.height < train_rows / 2  # so a collected test log cannot pass for a training one
    spy = _CollectSpy(monkeypatch)

    in_memory = train_run(_config(planted.folder, streaming=False), output_dir=tmp_path / "memory")
    assert spy.largest == train_rows  # the spy sees the in-memory path collect the whole training log

    spy.largest = 0
    path = tmp_path / "streaming.yaml"
    path.write_text(yaml.safe_dump(_config(planted.folder, streaming=True)))
    assert main(["recsys", "train", "--config", str(path), "--output-dir", str(tmp_path / "streaming")]) == 0
    assert 0 < spy.largest <= train_rows / 2  # only partitions (7 parts of ~460 rows) were ever collected
    streamed = json.loads((tmp_path / "streaming" / "metrics.json").read_text())

    # Same seed, same rows; StreamingBatches shuffles its (single, 1Mi-row) buffer with another salt than
    # InMemoryBatches, so the batch order differs and the metrics agree within tolerance, not bit for bit.
    for key in ("R@5", "R@10", "nDCG@5", "nDCG@10"):
        assert streamed["test"][key] == pytest.approx(in_memory["test"][key], abs=0.05), key
    # planted clusters: random ranking gives R@10 ≈ 10/173 ≈ 0.06; ranking the ~26 unseen own-cluster items first
    # (90% of test items) gives at most ≈ 0.9 · 10/26 ≈ 0.35
    assert streamed["test"]["R@10"] > 0.2
    assert streamed["test"]["users"] == in_memory["test"]["users"] == planted.test["user_id"].n_unique()
    assert streamed["train"]["steps"] == in_memory["train"]["steps"]  # 51 batches per epoch either way

    # the served model's seen table, built partition by partition, equals the in-memory one
    memory_model = Recommender.load(tmp_path / "memory" / "model")
    streamed_model = Recommender.load(tmp_path / "streaming" / "model")
    np.testing.assert_array_equal(streamed_model.seen_indptr, memory_model.seen_indptr)
    np.testing.assert_array_equal(streamed_model.seen_items, memory_model.seen_items)
    np.testing.assert_array_equal(streamed_model.popularity, memory_model.popularity)


def test_streamed_bpr_negatives_avoid_training_pairs(tmp_path, monkeypatch):
    planted = planted_log.make_planted_log(tmp_path / "data", items=200, per_user=30)
    drawn = []
    original = NegativeSampler.sample

    def sample(self, users, num_negatives, step):
        negatives = original(self, users, num_negatives, step)
        drawn.append((users.numpy().copy(), negatives.numpy()[:, 0].copy()))
        return negatives

    monkeypatch.setattr(NegativeSampler, "sample", sample)
    config = _config(planted.folder, streaming=True)
    config["train"].update({"loss": "bpr", "epochs": 2})
    train_run(config, output_dir=tmp_path / "run")
    served = Recommender.load(tmp_path / "run" / "model")
    users = np.concatenate([u for u, _ in drawn])
    negatives = np.concatenate([n for _, n in drawn])
    hits = [negative in served.seen_of(int(user)) for user, negative in zip(users, negatives, strict=True)]
    # a uniform draw hits one of the user's ~27 training items among 200 with p ≈ 0.13; five re-draw rounds
    # leave p ≈ 0.13⁶ ≈ 5e-6 (the in-memory sampler's behaviour)
    assert len(hits) == 2 * planted.train.height
    assert np.mean(hits) < 1e-3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": {"validation": {"method": "random_holdout", "fraction": 0.1}}},
         "`data.validation.method`='none'"),
        ({"data": {"duplicates": "drop"}}, "`data.duplicates`='keep'"),
        ({"data": {"rating_threshold": 4}}, "`data.rating_threshold`=null"),
        ({"model": {"name": "lightgcn"}}, "`model.name`='lightgcn'"),
        ({"model": {"name": "two_tower", "embedding_dim": 8}, "ssl": {"mode": "cfm"}}, "cannot run `ssl`"),
    ],
)
def test_streaming_refuses_in_memory_steps(tmp_path, change, message):
    config = _config(tmp_path, streaming=True)
    for section, values in change.items():
        config[section] = {**config.get(section, {}), **values} if section != "model" else values
    with pytest.raises(ValueError, match=r"^`data.streaming`=true .*" + message.replace(".", r"\.")):
        train_run(config, output_dir=tmp_path / "run")


def test_streaming_refuses_log_ids_missing_from_the_side_table(tmp_path):
    planted = planted_log.make_planted_log(tmp_path / "data")
    planted.items.filter(planted.items["item_id"] != 101).write_parquet(planted.folder / "few_items.parquet")
    config = _config(planted.folder, streaming=True)
    config["data"]["items"] = "few_items.parquet"
    with pytest.raises(ValueError, match=r"^train: 1 `item_id` values are not in .*few_items\.parquet \(first 101\)"):
        train_run(config, output_dir=tmp_path / "run")
