"""``regkit recsys tune``: search spaces, trials scored on validation, pruning, resume, and the CLI's outputs."""

from __future__ import annotations

import json

import optuna
import planted_log
import pytest
import yaml

from pipelines.cli import main
from pipelines.config_files import ConfigError
from pipelines.recsys_data import RunData
from pipelines.recsys_run import fit_on_validation
from pipelines.recsys_tune import SPACES_DIR, load_search_space, trial_config, tune
from pipelines.run_config import recsys_config
from recsys.models import MODELS


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> planted_log.PlantedLog:
    return planted_log.make_planted_log(tmp_path_factory.mktemp("tune") / "data")


def _base(planted, model: dict, **train) -> dict:
    return {
        "seed": 0,
        "num_threads": 1,
        "data": {"dir": str(planted.folder), "train": "train.parquet", "test": "test.parquet",
                 "validation": {"method": "random_holdout", "fraction": 0.2, "seed": 0}},
        "model": model,
        "train": {"epochs": 4, "batch_size": 128, "eval_every": 1, "show_progress": False, "monitor": "R@10",
                  **train},
        "eval": {"ks": [5, 10]},
    }


def _space(tmp_path, text: str):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_every_model_ships_a_default_space_that_loads():
    assert sorted(p.stem for p in SPACES_DIR.glob("*.yaml")) == sorted(MODELS)
    for path in SPACES_DIR.glob("*.yaml"):
        for key in load_search_space(path):
            assert key.split(".")[0] in ("model", "train", "hooks")


@pytest.mark.parametrize(("text", "message"), [
    ("train.lr: {type: float, low: 0.1, high: 0.01}\n", "space.yaml:1: `train.lr`: .*needs `low` < `high`"),
    ("train.lr: {type: float, low: 0, high: 1, log: true}\n", "`log`=true needs `low` > 0"),
    ("model.embedding_dim: {type: int, low: 8, high: 64.5}\n", "integer bounds"),
    ("train.loss: {type: categorical, choices: []}\n", "non-empty `choices`"),
    ("x: 1\ntrain.lr: {type: uniform, low: 0, high: 1}\n", "space.yaml:1: `x`"),
    ("train.lr: {type: float, low: 0.001, high: 0.1}\ndata.split_seed: {type: int, low: 0, high: 3}\n",
     "space.yaml:2: `data.split_seed` cannot be searched"),
])
def test_bad_search_spaces_are_refused_with_file_and_line(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_search_space(_space(tmp_path, text))


def test_a_key_the_config_does_not_have_is_refused_before_any_trial(planted, tmp_path):
    base = recsys_config(_base(planted, {"name": "ease"}))
    space = load_search_space(_space(tmp_path, "model.l3: {type: float, low: 1.0, high: 10.0}\n"))
    with pytest.raises(ConfigError, match="`model.l3` = 1.0 does not give a valid run config.*unknown key"):
        tune(base, space, tmp_path / "out", trials=2)
    assert not (tmp_path / "out" / "study.db").exists()


def test_hook_options_are_addressed_by_the_hook_name(planted):
    base = recsys_config(_base(planted, {"name": "mf", "embedding_dim": 8},
                               loss="bpr") | {"hooks": [{"name": "embedding_l2", "weight": 1e-4}]})
    config = trial_config(base, {"hooks.embedding_l2.weight": 0.5, "train.lr": 0.02})
    assert config.hooks[0]["weight"] == 0.5 and config.train.lr == 0.02
    with pytest.raises(ConfigError, match="exactly one hook named 'dropout'"):
        trial_config(base, {"hooks.dropout.p": 0.1})


def test_trials_score_the_validation_fit_and_the_best_config_is_the_best_trial(planted, tmp_path):
    base = recsys_config(_base(planted, {"name": "ease"}))
    space = load_search_space(_space(tmp_path, "model.l2: {type: float, low: 0.1, high: 1000.0, log: true}\n"))
    result = tune(base, space, tmp_path / "out", trials=5, seed=3)
    values = [trial["value"] for trial in result.trials]
    assert result.best_value == max(values) and len(set(values)) > 1
    best = recsys_config(yaml.safe_load((tmp_path / "out" / "best_config.yaml").read_text()))
    assert best.model.l2 == result.best_params["model.l2"]
    # the score is the validation metric of that config's validation fit, recomputed independently
    data = RunData(best.data)
    recomputed = fit_on_validation(best, data)[2].best_metrics["R@10"]
    assert recomputed == pytest.approx(result.best_value, abs=1e-12)
    assert data.valid_log.height > 0 and data.valid_log.height < planted.train.height
    records = json.loads((tmp_path / "out" / "trials.json").read_text())
    assert [r["params"]["model.l2"] for r in records] == [t["params"]["model.l2"] for t in result.trials]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "figures/" in report and "test split is never read" in report


def test_a_stopped_search_resumes_with_its_finished_trials(planted, tmp_path):
    base = recsys_config(_base(planted, {"name": "item_knn"}))
    space = load_search_space(_space(tmp_path, "model.neighbours: {type: int, low: 2, high: 40}\n"))
    first = tune(base, space, tmp_path / "out", trials=3, seed=1)
    second = tune(base, space, tmp_path / "out", trials=5, seed=1)
    assert len(second.trials) == 5
    assert [t["params"] for t in second.trials[:3]] == [t["params"] for t in first.trials]
    # another space in the same folder is a study of its own, not a continuation
    other = load_search_space(_space(tmp_path, "model.shrink: {type: float, low: 0.0, high: 50.0}\n"))
    assert len(tune(base, other, tmp_path / "out", trials=2, seed=1).trials) == 2


def test_each_validation_evaluation_reaches_the_pruner(planted, tmp_path):
    base = recsys_config(_base(planted, {"name": "mf", "embedding_dim": 8}))
    space = load_search_space(_space(tmp_path, "train.lr: {type: categorical, choices: [1.0e-7, 0.05]}\n"))
    # a threshold no fit reaches at its first evaluation: every trial is pruned there, after one report
    with pytest.raises(RuntimeError, match=r"no trial of .* finished \(states: \['PRUNED', 'PRUNED', 'PRUNED'\]\)"):
        tune(base, space, tmp_path / "out", trials=3, seed=0, pruner=optuna.pruners.ThresholdPruner(lower=1.1))
    study = optuna.load_study(study_name=optuna.get_all_study_names(f"sqlite:///{tmp_path / 'out' / 'study.db'}")[0],
                              storage=f"sqlite:///{tmp_path / 'out' / 'study.db'}")
    assert all(list(t.intermediate_values) == [0] for t in study.trials)
    # without a pruner verdict, every evaluation of the fit (eval_every 1, 4 epochs) is reported
    kept = tune(base, space, tmp_path / "kept", trials=1, seed=0, pruner=optuna.pruners.NopPruner())
    assert kept.trials[0]["state"] == "COMPLETE"
    study = optuna.load_study(study_name=optuna.get_all_study_names(f"sqlite:///{tmp_path / 'kept' / 'study.db'}")[0],
                              storage=f"sqlite:///{tmp_path / 'kept' / 'study.db'}")
    assert list(study.trials[0].intermediate_values) == [0, 1, 2, 3]


def test_tuning_needs_a_validation_split(planted, tmp_path):
    config = _base(planted, {"name": "ease"})
    config["data"]["validation"] = None
    with pytest.raises(ConfigError, match="validation split.*never the test split"):
        tune(recsys_config(config), {}, tmp_path / "out", trials=1)


def test_cli_tunes_with_the_default_space_and_guards_its_folder(planted, tmp_path, capsys):
    path = tmp_path / "ease.yaml"
    path.write_text(yaml.safe_dump(_base(planted, {"name": "ease"})))
    out = tmp_path / "tuned"
    assert main(["recsys", "tune", "--config", str(path), "--trials", "3", "--out", str(out)]) == 0
    for name in ("study.db", "trials.json", "best_config.yaml", "space.yaml", "report.md", "_SUCCESS.json"):
        assert (out / name).is_file(), name
    assert yaml.safe_load((out / "space.yaml").read_text()) == yaml.safe_load(
        (SPACES_DIR / "ease.yaml").read_text())
    assert "validation R@10" in capsys.readouterr().out
    assert main(["recsys", "tune", "--config", str(path), "--trials", "3", "--out", str(out)]) == 2  # finished
    assert main(["recsys", "tune", "--config", str(path), "--trials", "2", "--out", str(out), "--overwrite"]) == 0
    assert len(json.loads((out / "trials.json").read_text())) == 2  # started over
    train = tmp_path / "run"
    assert main(["recsys", "train", "--config", str(out / "best_config.yaml"), "--output-dir", str(train)]) == 0
