"""The ``ssl: none | rfm | cfm`` switch of recsys runs: hooks in the trainer, run report with the MI heatmap."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import planted_log
import pytest
import yaml

from pipelines.cli import main
from pipelines.recsys_run import train_run
from pipelines.run_config import load_recsys_config
from recsys.data import Vocabulary
from recsys.feature_mi import mutual_information_matrix
from recsys.features import FeatureSpec, FeatureTable

ITEM_FEATURES = [
    {"name": "item_id", "kind": "id"},
    {"name": "genres", "kind": "multi_categorical", "column": "genres"},
    {"name": "year", "kind": "bucketized", "column": "year", "num_buckets": 4},
]


def _config(folder: Path) -> dict:
    return {
        "seed": 0,
        "num_threads": 1,
        "data": {
            "dir": str(folder),
            "split": "given",
            "train": "train.parquet",
            "test": "test.parquet",
            "items": "items.parquet",
            "item_features": ITEM_FEATURES,
            "validation": {"method": "none"},
        },
        "model": {"name": "two_tower", "embedding_dim": 16, "tower_layers": [16], "temperature": 0.2},
        "train": {"epochs": 4, "batch_size": 64, "lr": 0.02, "show_progress": False},
    }


@pytest.mark.torchrec
def test_cfm_run_writes_the_mi_heatmap_report(tmp_path) -> None:
    planted = planted_log.make_planted_log(tmp_path / "data")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**_config(planted.folder), "ssl": "cfm"}))
    run = tmp_path / "run"
    assert main(["recsys", "train", "--config", str(path), "--output-dir", str(run), "--set", "ssl.alpha=0.3"]) == 0
    resolved = yaml.safe_load((run / "resolved_config.yaml").read_text())
    assert resolved["ssl"]["mode"] == "cfm" and resolved["ssl"]["alpha"] == 0.3  # shorthand + override both kept
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["R@10"] > 0.5  # planted clusters: random ranking gives about 0.2
    # the reported MI is the matrix of the item table (independent recomputation)
    items = Vocabulary.from_values("item_id", planted.items["item_id"])
    table = FeatureTable.build(items, [FeatureSpec.from_dict(spec) for spec in ITEM_FEATURES], planted.items)
    expected = mutual_information_matrix(table)
    reported = metrics["ssl"]["mi"]
    got = np.array([[reported[a][b] for b in expected.features] for a in expected.features])
    np.testing.assert_allclose(got, expected.values, rtol=1e-12)
    report = (run / "report.md").read_text()
    assert "Item-feature mutual information" in report and "![pairwise MI between item features]" in report
    assert (run / "figures" / "figure1.png").stat().st_size > 1000 and (run / "report.html").is_file()
    assert list((run / "cache").glob("mi_*.npz"))  # the MI matrix is cached with the run


@pytest.mark.torchrec
def test_ssl_none_is_the_default_and_ssl_needs_a_two_tower(tmp_path) -> None:
    assert load_recsys_config(None).ssl.mode == "none"
    assert load_recsys_config(None, ["ssl=rfm", "model.name=two_tower"]).ssl.mode == "rfm"
    with pytest.raises(ValueError, match="needs `model.name`='two_tower'"):  # refused when the config is read
        load_recsys_config(None, ["ssl=rfm"])
    planted = planted_log.make_planted_log(tmp_path / "data")
    config = {**_config(planted.folder), "model": {"name": "mf", "embedding_dim": 8}, "ssl": "rfm"}
    with pytest.raises(ValueError, match="needs `model.name`='two_tower'"):
        train_run(config, output_dir=tmp_path / "mf")
    config = {**_config(planted.folder), "ssl": "none"}
    config["train"] = {**config["train"], "epochs": 1}
    report = train_run(config, output_dir=tmp_path / "plain")
    # every run has a report (issue 8); only SSL runs carry the SSL section
    assert "ssl" not in report and "mutual information" not in (tmp_path / "plain" / "report.md").read_text()
