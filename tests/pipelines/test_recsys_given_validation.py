"""``data.validation: {method: given, file: ...}``: early stopping on a held-out file, in memory and streamed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import planted_log
import polars as pl
import pytest

from pipelines.evaluation.recsys import evaluate_recommendations
from pipelines.recsys_run import train_run
from pipelines.run_config import ConfigError
from recsys.serving import Recommender
from recsys.splits import random_holdout_split

KS = [5, 10]


@pytest.fixture(scope="module")
def three_files(tmp_path_factory) -> Path:
    """train / valid / test parquet files: the planted log's training side split 85 / 15 per user."""
    planted = planted_log.make_planted_log(tmp_path_factory.mktemp("given") / "data", items=120, per_user=24)
    split = random_holdout_split(planted.train.lazy(), test_fraction=0.15, seed=1)
    split.train.collect().write_parquet(planted.folder / "fit.parquet")
    split.test.collect().write_parquet(planted.folder / "valid.parquet")
    return planted.folder


def _config(folder: Path, *, streaming: bool) -> dict:
    return {
        "seed": 1,
        "num_threads": 1,
        "data": {
            "dir": str(folder),
            "split": "given",
            "train": "fit.parquet",
            "test": "test.parquet",
            "duplicates": "keep",
            "validation": {"method": "given", "file": "valid.parquet"},
            "streaming": streaming,
            "streaming_part_rows": 400,
        },
        "model": {"name": "mf", "embedding_dim": 16},
        "train": {"epochs": 12, "batch_size": 64, "lr": 0.02, "patience": 3, "monitor": "R@10",
                  "show_progress": False},
        "eval": {"ks": KS},
    }


@pytest.mark.parametrize("streaming", [False, True], ids=["in_memory", "streamed"])
def test_the_served_model_is_the_best_validation_epoch(three_files, tmp_path, streaming):
    report = train_run(_config(three_files, streaming=streaming), output_dir=tmp_path / "run")
    validation = report["validation"]
    assert validation["split"] == "given:valid.parquet"
    scored = [entry for entry in validation["history"] if "R@10" in entry]
    assert len(scored) >= 2
    assert validation["metrics"]["R@10"] == max(entry["R@10"] for entry in scored)
    assert validation["best_epoch"] < scored[-1]["epoch"]  # early stopping ran past the best epoch, then restored it

    served = Recommender.load(tmp_path / "run" / "model")
    # trained on fit.parquet only: the validation pairs are neither training data nor excluded from rankings
    fit = pl.read_parquet(three_files / "fit.parquet")
    assert served.seen_items.size == fit.height
    # ranking the validation file with the served model reproduces the best epoch's validation metrics
    valid = pl.read_parquet(three_files / "valid.parquet")
    again = evaluate_recommendations(served, valid, ks=KS, head_fraction=0.2)
    for key in ("R@5", "R@10", "nDCG@10"):
        assert again[key] == pytest.approx(validation["metrics"][key], abs=1e-9), key
    # planted clusters: random ranking gives R@10 ≈ 10/100; the model is far above it
    assert validation["metrics"]["R@10"] > 0.3
    assert report["train"]["epochs"] == len([e for e in validation["history"] if "loss/total" in e])
    assert np.isfinite(report["test"]["R@10"])


@pytest.mark.parametrize(
    ("validation", "error", "message"),
    [
        ({"method": "given"}, ValueError, r"`data.validation`: `method`='given' needs `file`"),
        ({"method": "given", "file": "gone.parquet"}, FileNotFoundError, r"`data.validation.file`: \S*gone\.parquet "),
        ({"method": "random_holdout", "fraction": "0.1"}, ConfigError, r"`data.validation.fraction` must be a number"),
        ({"method": "holdout"}, ConfigError, r"`data.validation.method` must be one of \['none', 'given'"),
        ({"method": "random_holdout", "frac": 0.2}, ConfigError,
         r"unknown key `data.validation.frac` \(did you mean `fraction`\?\)"),
    ],
)
def test_bad_validation_sections_are_refused_clearly(three_files, tmp_path, validation, error, message):
    config = _config(three_files, streaming=False)
    config["data"]["validation"] = validation
    with pytest.raises(error, match=message):
        train_run(config, output_dir=tmp_path / "run")
