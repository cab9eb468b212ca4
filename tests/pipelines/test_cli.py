"""The `regkit` console script: help on every command, data commands, one-line errors with exit status 2."""

from __future__ import annotations

import subprocess
import sys

import polars as pl
import pytest
import typer

from pipelines.cli import app, main


def _all_command_paths(command, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, sub in getattr(command, "commands", {}).items():  # Typer vendors click: duck-type groups
        paths += _all_command_paths(sub, (*prefix, name))
    return paths


@pytest.mark.parametrize(
    "path", _all_command_paths(typer.main.get_command(app)), ids=lambda path: " ".join(path) or "regkit"
)
def test_every_command_has_help(path, capsys):
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage:" in out
    command = typer.main.get_command(app)
    for name in path:
        command = command.commands[name]
    assert command.help, f"`regkit {' '.join(path)}` has no help text"


def test_python_dash_m_runs_the_same_app():
    result = subprocess.run([sys.executable, "-m", "pipelines", "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "data" in result.stdout


def test_beir_command_reports_scifact_counts(scifact_dir, capsys):
    assert main(["data", "beir", "--from", str(scifact_dir)]) == 0
    out = capsys.readouterr().out
    assert "5,183" in out and "1,109" in out and "300" in out


def test_validate_prints_summary_and_fails_cleanly(tmp_path, capsys):
    good = tmp_path / "good.parquet"
    pl.DataFrame({"user_id": [1, 2], "item_id": [3, 3], "timestamp": [10, 20]}).write_parquet(good)
    assert main(["data", "validate", str(good)]) == 0
    assert "valid interaction log" in capsys.readouterr().out
    bad = tmp_path / "bad.parquet"
    pl.DataFrame({"user": [1]}).write_parquet(bad)
    assert main(["data", "validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing required column `user_id`" in err[0] and "bad.parquet" in err[0]


def test_usage_error_exit_status(capsys):
    assert main(["data", "beir"]) == 2
    err = capsys.readouterr().err
    assert "Usage:" in err and "--from" in err
