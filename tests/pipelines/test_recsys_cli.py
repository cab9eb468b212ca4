"""``regkit recsys train|recommend|eval`` end to end on a generated log with planted structure."""

from __future__ import annotations

import json

import planted_log
import pytest
import yaml

from pipelines.cli import main


@pytest.mark.torchrec
def test_train_recommend_eval(tmp_path, capsys):
    planted = planted_log.make_planted_log(tmp_path / "data")
    config = {
        "seed": 1,
        "num_threads": 1,
        "data": {
            "dir": str(planted.folder),
            "split": "given",
            "train": "train.parquet",
            "test": "test.parquet",
            "items": "items.parquet",
            "item_features": [
                {"name": "item_id", "kind": "id"},
                {"name": "genres", "kind": "multi_categorical", "column": "genres"},
                {"name": "year", "kind": "bucketized", "column": "year", "num_buckets": 4},
            ],
            "validation": {"method": "random_holdout", "fraction": 0.2, "seed": 0},
        },
        "model": {"name": "two_tower", "embedding_dim": 16, "tower_layers": [32, 16], "temperature": 0.2},
        "train": {"epochs": 12, "batch_size": 64, "lr": 0.01, "eval_every": 4, "patience": 1, "show_progress": False},
        "eval": {"ks": [10, 20]},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    assert main(["recsys", "train", "--config", str(path), "--output-dir", str(run), "--set", "train.lr=0.02"]) == 0
    report = json.loads((run / "metrics.json").read_text())
    resolved = yaml.safe_load((run / "resolved_config.yaml").read_text())
    assert resolved["train"]["lr"] == 0.02 and resolved["seed"] == 1  # the --set override wins over the file
    assert json.loads((run / "run.json").read_text())["seed"] == 1
    best_epoch = report["validation"]["best_epoch"]
    assert report["train"]["epochs"] == best_epoch + 1  # refit for the epochs chosen on validation
    assert report["test"]["R@10"] > 0.6  # planted clusters: random ranking gives about 0.2
    assert main(["recsys", "train", "--config", str(path), "--output-dir", str(run)]) == 2  # exists, no --overwrite

    capsys.readouterr()
    assert main(["recsys", "recommend", "--model", str(run / "model"), "--user", "1", "--user", "5", "--k", "3"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [line["user"] for line in lines] == [1, 5] and all(len(line["items"]) == 3 for line in lines)
    seen = set(planted.train.filter(planted.train["user_id"] == 1)["item_id"].to_list())
    assert not seen & set(lines[0]["items"])

    out = tmp_path / "eval.json"
    assert (
        main(
            [
                "recsys",
                "eval",
                "--model",
                str(run / "model"),
                "--test",
                str(planted.folder / "test.parquet"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    metrics = json.loads(out.read_text())
    assert metrics["R@10"] == pytest.approx(report["test"]["R@10"])  # the saved model serves what was measured
    assert metrics["users"] == planted.test["user_id"].n_unique()


def test_bad_config_messages(tmp_path, capsys):
    assert main(["recsys", "train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("bogus: 1\n")
    assert main(["recsys", "train", "--config", str(bad)]) == 2
    assert f"{bad}:1: unknown key `bogus`" in capsys.readouterr().err
