"""bench_ssl_rich at toy length on ML-100K: title words as an item feature, CFM with the id outside the MI
grouping, validation-chosen and equal run lengths, the resume log."""

from __future__ import annotations

import json

from pipelines.bench import bench_ssl_rich


def test_bench_runs_the_variants_and_resumes(ml100k_raw, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("REGKIT_SHARED_DATA", str(ml100k_raw.parent))
    monkeypatch.setitem(bench_ssl_rich.CONFIG, "variants", {k: bench_ssl_rich.CONFIG["variants"][k]
                                                            for k in ("none", "cfm_noid")})
    monkeypatch.setitem(bench_ssl_rich.CONFIG, "seeds", [0])
    monkeypatch.setitem(bench_ssl_rich.CONFIG, "max_epochs", 1)
    monkeypatch.setitem(bench_ssl_rich.CONFIG, "eval_every", 1)
    result = bench_ssl_rich.run(tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert [(r["variant"], r["length"], r["epochs"]) for r in rows] == [
        ("none", "own", 1), ("cfm_noid", "own", 1), ("cfm_noid", "equal", 1)
    ]
    assert all(0.0 < r["R@20"] < 1.0 and 0.0 <= r["tail/R@20"] <= r["R@20"] + 1.0 for r in rows)
    mi = result["mi"]
    assert list(mi) == ["item_id", "genres", "year", "title"]
    for feature in ("genres", "year", "title"):  # raw MI: the id is every feature's top partner
        assert max((g for g in mi if g != feature), key=lambda g: mi[feature][g]) == "item_id"
    resolved = (tmp_path / "runs" / "cfm_noid_own_s0" / "resolved_config.yaml").read_text()
    assert "cfm_exclude_id: true" in resolved and "title_tokens" in resolved
    assert "| cfm_noid | own | 1 | 1 |" in (tmp_path / "table.md").read_text()
    bench_ssl_rich.run(tmp_path)  # every job is in the log: nothing is retrained
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 3


def test_alpha_check_runs_for_its_seeds_at_its_own_length_only(monkeypatch) -> None:
    monkeypatch.setitem(bench_ssl_rich.CONFIG, "alpha_seeds", [0])
    jobs = bench_ssl_rich._jobs([], [0, 1])
    alpha = [job for job in jobs if "α" in job[0]]
    assert alpha and {(seed, length) for _, seed, length in alpha} == {(0, "own")}
    assert ("cfm_noid", 1, "equal") in jobs and ("none", 0, "equal") not in jobs
    assert ("rfm", 0, "own") not in bench_ssl_rich._jobs([{"variant": "rfm", "seed": 0, "length": "own"}], [0])
