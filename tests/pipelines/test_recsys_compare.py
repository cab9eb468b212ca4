"""``regkit recsys compare``: several configs on one split, the best baseline chosen on validation, paired tests."""

from __future__ import annotations

import json

import planted_log
import pytest
import yaml

from pipelines.cli import main
from pipelines.recsys_compare import compare_configs
from pipelines.run_config import recsys_config


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> planted_log.PlantedLog:
    return planted_log.make_planted_log(tmp_path_factory.mktemp("compare") / "data")


def _config(planted, model: dict, test: str = "test.parquet") -> dict:
    return {
        "seed": 0,
        "num_threads": 1,
        "data": {"dir": str(planted.folder), "train": "train.parquet", "test": test,
                 "validation": {"method": "random_holdout", "fraction": 0.2, "seed": 0}},
        "model": model,
        "train": {"epochs": 6, "batch_size": 128, "eval_every": 2, "show_progress": False, "monitor": "R@10"},
        "eval": {"ks": [5, 10]},
    }


def test_models_are_tested_against_the_baseline_best_on_validation(planted, tmp_path):
    configs = {
        "popular": recsys_config(_config(planted, {"name": "most_popular"})),
        "ease": recsys_config(_config(planted, {"name": "ease", "l2": 5.0})),
        "mf": recsys_config(_config(planted, {"name": "mf", "embedding_dim": 16, "normalize": True,
                                              "temperature": 0.2})),
    }
    summary = compare_configs(configs, tmp_path / "cmp", metrics=["R@10", "nDCG@10"])
    rows = {row["name"]: row for row in summary["rows"]}
    assert rows["ease"]["validation R@10"] > rows["popular"]["validation R@10"]
    assert summary["best_baseline"] == "ease"
    assert [row["name"] for row in summary["rows"]] == sorted(rows, key=lambda name: -rows[name]["R@10"])
    for name in ("popular", "mf"):
        # the paired test's means come from ir-measures on the written TREC runs: they must agree with the runs'
        # own metrics (regkit's evaluator), an independent computation
        for metric in ("R@10", "nDCG@10"):
            assert rows[name][f"Δ {metric} vs ease"] == pytest.approx(rows[name][metric] - rows["ease"][metric],
                                                                      abs=1e-9)
            low, high = rows[name][f"CI {metric}"]
            assert low <= rows[name][f"Δ {metric} vs ease"] <= high and 0 <= rows[name][f"p {metric}"] <= 1
    assert rows["popular"]["p R@10"] < 0.05 and "popular worse than ease" in rows["popular"]["verdict"]
    assert json.loads((tmp_path / "cmp" / "metrics.json").read_text())["best_baseline"] == "ease"
    model_file = tmp_path / "cmp" / "runs" / "mf" / "model" / "serving.json"
    written = model_file.stat().st_mtime_ns
    compare_configs(configs, tmp_path / "cmp", metrics=["R@10", "nDCG@10"])  # finished steps are reused
    assert model_file.stat().st_mtime_ns == written


def test_configs_on_different_splits_are_refused(planted, tmp_path):
    other = planted.test.head(planted.test.height // 2)
    other.write_parquet(planted.folder / "test_half.parquet")
    configs = {"a": recsys_config(_config(planted, {"name": "ease"})),
               "b": recsys_config(_config(planted, {"name": "ease"}, test="test_half.parquet"))}
    with pytest.raises(ValueError, match="do not share one split"):
        compare_configs(configs, tmp_path / "cmp")


def test_cli_tunes_then_compares(planted, tmp_path, capsys):
    paths = []
    for name, model in (("ease", {"name": "ease"}), ("knn", {"name": "item_knn"})):
        paths += ["--config", str(tmp_path / f"{name}.yaml")]
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(_config(planted, model)))
    out = tmp_path / "cmp"
    assert main(["recsys", "compare", *paths, "--trials", "2", "--metric", "R@10", "--out", str(out)]) == 0
    assert "best baseline on validation" in capsys.readouterr().out
    for name in ("ease", "knn"):
        assert len(json.loads((out / "tune" / name / "trials.json").read_text())) == 2
        tuned = yaml.safe_load((out / "tune" / name / "best_config.yaml").read_text())["model"]
        served = yaml.safe_load((out / "runs" / name / "resolved_config.yaml").read_text())["model"]
        assert served == tuned  # the run trains the tuned config
    assert main(["recsys", "compare", "--config", str(tmp_path / "ease.yaml"), "--config", str(tmp_path / "ease.yaml"),
                 "--out", str(tmp_path / "dup")]) == 2
