"""bench_dsl_full on LastFM at toy length: validation-chosen epochs, DSL schedule over the refit, equal memory,
the resume log, and the overhead row."""

from __future__ import annotations

import json

import pytest

from pipelines.bench import bench_dsl_full
from pipelines.bench.bench_dsl_full import dsl_schedule


def test_dsl_schedule_spreads_the_updates_over_the_run() -> None:
    assert dsl_schedule(1_209_000, 400) == 3022  # the official LightGCN run: ~1,209 steps x 1000 epochs, ΔT 3000
    assert dsl_schedule(79 * 150, 400) == 30 and dsl_schedule(10, 400) == 1 and dsl_schedule(79 * 10, 400, 10) == 10
    with pytest.raises(ValueError, match="updates_per_run"):
        dsl_schedule(100, 0)


def test_bench_runs_resumes_and_compares_at_equal_memory(lastfm_raw, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("REGKIT_SHARED_DATA", str(lastfm_raw.parent))
    monkeypatch.setitem(bench_dsl_full.CONFIG, "datasets", ["lastfm"])
    monkeypatch.setitem(bench_dsl_full.CONFIG, "models", {"mf_bpr": bench_dsl_full.CONFIG["models"]["mf_bpr"]})
    monkeypatch.setitem(bench_dsl_full.CONFIG, "variants", [("dense", 1.0, 1), ("dsl", 0.5, 2)])
    monkeypatch.setitem(bench_dsl_full.CONFIG, "embedding_dim", 8)
    for key, value in {"lengths": [1, 2, 3], "updates_per_run": 5, "min_update_interval": 1,
                       "overhead_epochs": 1}.items():
        monkeypatch.setitem(bench_dsl_full.CONFIG, key, value)
    result = bench_dsl_full.run(tmp_path)
    stages = [json.loads(line) for line in (tmp_path / "stages.jsonl").read_text().splitlines()]
    assert [(s["stage"], s["variant"]) for s in stages] == [
        ("choose", "dense"), ("test", "dense"), ("choose", "dsl d=0.5 2xD"), ("test", "dsl d=0.5 2xD")
    ]
    chosen = {s["variant"]: s for s in stages if s["stage"] == "choose"}
    for row in chosen.values():  # one complete run per length until a longer one scores lower; the best is kept
        lengths, scores = zip(*row["validation_curve"], strict=True)
        assert list(lengths) == [1, 2, 3][: len(lengths)] and row["validation_R@20"] == max(scores)
        assert len(lengths) == 3 or scores[-1] < scores[-2]
        assert row["epochs"] == lengths[scores.index(max(scores))]
    tested = {s["variant"]: s for s in stages if s["stage"] == "test"}
    for variant, row in tested.items():
        assert row["epochs"] == chosen[variant]["epochs"] <= 3 and 0.0 < row["R@20"] < 1.0
    dsl = tested["dsl d=0.5 2xD"]
    assert dsl["active_params"] == tested["dense"]["active_params"]  # equal memory: half of a table twice as wide
    assert dsl["update_interval"] == dsl_schedule(dsl["steps"], 5) and dsl["dsl_updates"] == dsl["steps"] // dsl[
        "update_interval"]
    assert result["overhead"]["lastfm / mf_bpr"]["ratio"] > 0
    assert "| lastfm | mf_bpr | dsl d=0.5 2xD |" in (tmp_path / "table.md").read_text()
    bench_dsl_full.run(tmp_path)  # every stage is in the log: nothing is retrained
    assert len((tmp_path / "stages.jsonl").read_text().splitlines()) == 4
    monkeypatch.setenv("REGKIT_DSL_FULL_REPORT_ONLY", "1")
    monkeypatch.setitem(bench_dsl_full.CONFIG, "variants", [("dsl", 0.2, 1)])  # would train a new run
    report = bench_dsl_full.run(tmp_path)
    assert len((tmp_path / "stages.jsonl").read_text().splitlines()) == 4
    assert [e["variant"] for e in report["table"]] == ["dense", "dsl d=0.5 2xD"]
