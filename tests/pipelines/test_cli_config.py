"""Every ``regkit`` command documents itself, job commands take ``--config`` (YAML) with command-line overrides,
and bad input ends with exit status 2 and one line."""

from __future__ import annotations

import json

import click
import pytest
import typer

from pipelines.cli import app, main

JOB_COMMANDS = {
    "data movielens", "data beir", "data demo", "recsys train", "recsys recommend", "recsys eval", "retrieval index",
    "retrieval search", "retrieval train", "beir eval", "ab compare", "ab offpolicy", "demo",
}


def _commands(group: click.Command, prefix: str = "") -> dict[str, click.Command]:
    found = {}
    for name, command in getattr(group, "commands", {}).items():
        path = f"{prefix} {name}".strip()
        found[path] = command
        found.update(_commands(command, path))
    return found


def test_every_command_and_option_has_help_and_job_commands_take_config():
    commands = _commands(typer.main.get_command(app))
    assert JOB_COMMANDS <= set(commands)
    for path, command in commands.items():
        assert (command.help or "").strip(), f"`regkit {path}` has no help text"
        for param in command.params:
            if isinstance(param, click.Option):
                assert (param.help or "").strip(), f"`regkit {path}` option {param.opts} has no help"
        if path in JOB_COMMANDS:
            assert any("--config" in getattr(p, "opts", ()) for p in command.params), f"`regkit {path}` lacks --config"


def _tiny_runs(tmp_path):
    qrels = tmp_path / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq3\td3\t1\n")
    a, b = tmp_path / "a.run", tmp_path / "b.run"
    a.write_text("q1 Q0 d9 1 2.0 a\nq1 Q0 d1 2 1.0 a\nq2 Q0 d2 1 1.0 a\nq3 Q0 d9 1 1.0 a\n")
    b.write_text("q1 Q0 d1 1 2.0 b\nq2 Q0 d2 1 1.0 b\nq3 Q0 d3 1 1.0 b\n")
    return qrels, a, b


def test_config_file_supplies_options_and_the_command_line_overrides_it(tmp_path, capsys):
    qrels, a, b = _tiny_runs(tmp_path)
    config = tmp_path / "ab.yaml"
    config.write_text(f"run_a: {a}\nrun_b: {b}\nqrels: {qrels}\nmetric: [RR@10, P@1]\nout: {tmp_path / 'from-file'}\n"
                      "resamples: 200\n")
    assert main(["ab", "compare", "--config", str(config), "--out", str(tmp_path / "cli"), "--metric", "RR@10"]) == 0
    printed = capsys.readouterr().out
    assert "report:" in printed and str(tmp_path / "cli") in printed.replace("\n", "")
    saved = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert [c["metric"] for c in saved["comparisons"]] == ["RR@10"]  # the CLI list replaced the file's list
    comparison = saved["comparisons"][0]
    # RR@10 by hand: A = (1/2, 1, 0), B = (1, 1, 1)
    assert comparison["mean_a"] == pytest.approx(0.5) and comparison["mean_b"] == pytest.approx(1.0)
    assert not (tmp_path / "from-file").exists()


@pytest.mark.parametrize(("content", "message"), [
    ("k: 10\nbogus: 1\n", "unknown keys ['bogus']"),
    ("- just\n- a list\n", "expected a mapping"),
])
def test_bad_config_files_fail_with_status_2(tmp_path, capsys, content, message):
    config = tmp_path / "bad.yaml"
    config.write_text(content)
    assert main(["beir", "eval", "--config", str(config)]) == 2
    assert message in capsys.readouterr().err.replace("\n", " ").replace("│", " ")


def test_failures_exit_2_with_one_line(tmp_path, capsys):
    assert main(["recsys", "recommend", "--model", str(tmp_path / "none"), "--user", "1"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("regkit: error:") and "no serving.json" in error and "\n" not in error
    assert main(["regs", "list", "--kind", "nope"]) == 2
    assert "kinds:" in capsys.readouterr().err


def test_regs_list_includes_methods_registered_by_recsys_and_retrieval(capsys):
    assert main(["regs", "list", "--kind", "batch_transform"]) == 0
    listed = capsys.readouterr().out
    assert "ssl_rfm" in listed and "ssl_cfm" in listed
    assert main(["regs", "list", "--kind", "loss"]) == 0
    listed = capsys.readouterr().out
    assert "idf_aware_flops" in listed and "ssl_infonce" in listed
