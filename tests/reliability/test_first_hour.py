"""A newcomer's first hour, through the real ``regkit`` CLI: the split as files for another library, a run's TREC
output compared with ``regkit ab compare``, an ML-100K template reused on another log, unknown users at serving
time, and help that is readable at 80 columns."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import planted_log
import polars as pl
import pytest
import typer

from common_regs.registry import list_methods
from pipelines.cli import app, main
from pipelines.recsys_split import frame_sha256

CONFIGS = Path(__file__).resolve().parents[2] / "pipelines" / "configs"
OWN_LOG = CONFIGS / "own_log.yaml"
TINY = ["--set", "model={name: mf, embedding_dim: 8}", "--set", "train.epochs=2", "--set", "train.eval_every=1",
        "--set", "train.show_progress=false"]


@pytest.fixture(scope="module")
def first_hour(tmp_path_factory):
    """One log, its split written by ``data split`` and two runs trained by ``recsys train`` on the template."""
    root = tmp_path_factory.mktemp("first_hour")
    planted = planted_log.make_planted_log(root / "planted")
    log = root / "log.parquet"
    pl.concat([planted.train, planted.test]).write_parquet(log)
    use_log = ["--set", f"data.log={log}"]
    assert main(["data", "split", "--config", str(OWN_LOG), *use_log, "--out", str(root / "split")]) == 0
    for name, seed in (("a", 0), ("b", 1)):
        command = ["recsys", "train", "--config", str(OWN_LOG), *use_log, *TINY, "--seed", str(seed)]
        assert main([*command, "--output-dir", str(root / name)]) == 0
    return root


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def test_data_split_writes_the_files_recsys_train_trains_on(first_hour):
    split = _json(first_hour / "split" / "split.json")
    recorded = _json(first_hour / "a" / "metrics.json")["split_fingerprint"]
    assert split["fingerprint"] == recorded  # train, test, fit, valid: the same content as the run's logs
    assert set(recorded) == {"sha256", "train", "test", "fit", "valid"}
    folder = first_hour / "split"
    sides = {side: pl.read_parquet(folder / f"{side}.parquet") for side in ("train", "test", "fit", "valid")}
    for side, frame in sides.items():
        assert frame_sha256(frame) == recorded[side], f"{side}.parquet is not what the run used"
    assert sides["fit"].height + sides["valid"].height == sides["train"].height  # the carve splits train
    assert sides["train"].height + sides["test"].height == pl.read_parquet(first_hour / "log.parquet").height


def test_data_split_options_are_the_run_config_keys(first_hour, tmp_path):
    out = tmp_path / "split"
    split = ["data", "split", "--log", str(first_hour / "log.parquet"), "--out", str(out)]
    assert main([*split, "--split", "random_holdout", "--test-fraction", "0.2"]) == 0  # own_log.yaml's values
    assert _json(out / "split.json")["fingerprint"] == _json(first_hour / "split" / "split.json")["fingerprint"]
    assert main([*split, "--split", "leave_last_out", "--leave-last", "2"]) == 2  # the folder exists
    assert main([*split, "--split", "leave_last_out", "--leave-last", "2", "--overwrite"]) == 0
    test = pl.read_parquet(out / "test.parquet")
    assert _json(out / "split.json")["split"] == "leave_last_out(n=2)"
    assert test.group_by("user_id").len()["len"].max() == 2


def test_a_run_writes_a_trec_run_that_ab_compare_accepts_with_the_split_qrels(first_hour, tmp_path, capsys):
    runs = [first_hour / name / "test_run.trec" for name in ("a", "b")]
    qrels = first_hour / "split" / "test_qrels.trec"
    assert (first_hour / "a" / "test_qrels.trec").read_bytes() == qrels.read_bytes()
    out = tmp_path / "ab"
    command = ["ab", "compare", *map(str, runs), "--qrels", str(qrels), "--metric", "nDCG@20", "--metric", "R@10"]
    assert main([*command, "--resamples", "200", "--out", str(out)]) == 0
    comparisons = {c["metric"]: c for c in _json(out / "metrics.json")["comparisons"]}
    for side, name in (("mean_a", "a"), ("mean_b", "b")):
        test = _json(first_hour / name / "metrics.json")["test"]
        for metric in ("nDCG@20", "R@10"):  # the run file holds the lists the run's metrics were computed on
            assert comparisons[metric][side] == pytest.approx(test[metric], abs=1e-12)
        assert comparisons["R@10"]["queries"] == test["users"]


def test_a_leftover_ml100k_side_table_names_the_key_and_the_base_of_relative_paths(first_hour, tmp_path, monkeypatch,
                                                                                    capsys):
    monkeypatch.chdir(tmp_path)
    template = ["recsys", "train", "--config", str(CONFIGS / "ml100k_mf_bpr.yaml"), *TINY]
    log = ["--set", "data.split=random_holdout", "--set", f"data.log={first_hour / 'log.parquet'}"]
    assert main([*template, *log, "--output-dir", "leftover"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error
    assert "`data.users`: runs/data/ml100k/users.parquet not found" in error  # the key, as resolved
    assert "relative paths are resolved against `data.dir` = runs/data/ml100k, itself under the current directory " \
           f"{tmp_path})" in error
    assert "Fix the path, or set `data.users: null` to take the ids from the training log." in error
    without = ["--set", "data.users=null", "--set", "data.items=null", "--set", "data.dir=null"]
    assert main([*template, *log, *without, "--output-dir", "fixed"]) == 0

    own = ["recsys", "train", "--config", str(OWN_LOG), "--set", "data.log=mine.parquet", "--output-dir", "mine"]
    assert main(own) == 2
    assert "`data.log`: mine.parquet not found (relative paths are resolved against the current directory " \
           f"{tmp_path}" in capsys.readouterr().err


def test_recommend_says_when_it_serves_popular_items_and_names_a_wrong_id_type(first_hour, capsys):
    model = str(first_hour / "a" / "model")
    capsys.readouterr()
    assert main(["recsys", "recommend", "--model", model, "--user", "999999", "--user", "1", "--k", "3"]) == 0
    captured = capsys.readouterr()
    unknown, known = (json.loads(line) for line in captured.out.strip().splitlines())
    assert unknown["fallback"] == "popularity" and "fallback" not in known
    train = pl.read_parquet(first_hour / "split" / "train.parquet")  # the served model's training data
    popular = train.group_by("item_id").len().sort(["len", "item_id"], descending=[True, False])["item_id"][:3]
    assert unknown["items"] == popular.to_list()
    assert "user 999999 is not in the model's training data: serving the most popular items" in captured.err

    assert main(["recsys", "recommend", "--model", model, "--user", "abc"]) == 2
    error = capsys.readouterr().err
    assert "--user" in error and "'abc': this model's user ids are integers (e.g. 1, 2, 3)" in error


def test_regs_list_shows_every_method_name_in_full_at_80_columns(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["regs", "list"]) == 0
    out = capsys.readouterr().out
    names = [method.name for method in list_methods()]  # common_regs and every `regkit.methods` entry point
    listed = re.findall(r"^(\S+)  \S", out, flags=re.MULTILINE)
    assert sorted(listed) == sorted(names)
    assert max(len(line) for line in out.splitlines()) <= 80


def _command_paths(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [path]
    for name, sub in getattr(command, "commands", {}).items():  # Typer vendors click: duck-type groups
        paths += _command_paths(sub, (*path, name))
    return paths


@pytest.mark.parametrize("path", _command_paths(typer.main.get_command(app)), ids=lambda path: " ".join(path) or "-")
def test_help_at_80_columns_shows_every_option_and_command_summary_whole(path, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    where = f"`regkit {' '.join(path)} --help`"
    assert "…" not in out, where
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    for param in command.params:
        for option in (name for name in (*param.opts, *param.secondary_opts) if name.startswith("-")):
            assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", out), f"{option} cut in {where}"
    flat = " ".join(out.split())
    for sub in getattr(command, "commands", {}).values():
        first_sentence = " ".join(sub.help.split("\n\n")[0].split()).split(". ")[0]
        assert first_sentence in flat, f"summary of `{sub.name}` cut in {where}"
