"""TREC run files: trec_eval order in the rank column, round trip, and errors naming file and line."""

from __future__ import annotations

import pytest

from retrieval.runs import RunFormatError, rank_documents, read_trec_run, write_trec_run


def test_rank_documents_is_trec_eval_order():
    docs = {"b": 1.0, "a": 1.0, "c": 2.0, "ab": 1.0, "z": 0.5}
    # score descending; ties by docid descending in byte order ("b" > "ab" > "a")
    assert [d for d, _ in rank_documents(docs)] == ["c", "b", "ab", "a", "z"]
    assert rank_documents(docs, 2) == [("c", 2.0), ("b", 1.0)]


def test_write_then_read_round_trip(tmp_path):
    run = {"q1": {"d1": 1.25, "d2": 3.5, "d3": 3.5}, "q2": {}, "q3": {"x": -0.5}}
    path = write_trec_run(run, tmp_path / "out" / "run.trec", tag="bm25")
    lines = path.read_text().splitlines()
    assert lines == [
        "q1 Q0 d3 1 3.500000 bm25",
        "q1 Q0 d2 2 3.500000 bm25",
        "q1 Q0 d1 3 1.250000 bm25",
        "q3 Q0 x 1 -0.500000 bm25",
    ]
    assert read_trec_run(path) == {"q1": {"d1": 1.25, "d2": 3.5, "d3": 3.5}, "q3": {"x": -0.5}}
    top1 = write_trec_run(run, tmp_path / "top1.trec", k=1)
    assert read_trec_run(top1) == {"q1": {"d3": 3.5}, "q3": {"x": -0.5}}


def test_bad_runs(tmp_path):
    with pytest.raises(ValueError, match="run `tag` 'two words'"):
        write_trec_run({"q": {"d": 1.0}}, tmp_path / "r", tag="two words")
    with pytest.raises(ValueError, match="document id 'd 1'"):
        write_trec_run({"q": {"d 1": 1.0}}, tmp_path / "r")
    with pytest.raises(ValueError, match="score must be finite"):
        write_trec_run({"q": {"d": float("inf")}}, tmp_path / "r")
    assert not (tmp_path / "r").exists()  # nothing half-written
    bad = tmp_path / "bad.trec"
    bad.write_text("q1 Q0 d1 1 2.0 t\nq1 Q0 d2 2 x t\n")
    with pytest.raises(RunFormatError, match=r"bad.trec:2: score 'x' is not a number"):
        read_trec_run(bad)
    bad.write_text("q1 Q0 d1 1 2.0\n")
    with pytest.raises(RunFormatError, match=r"bad.trec:1: expected 6 fields"):
        read_trec_run(bad)
    bad.write_text("q1 Q0 d1 1 2.0 t\nq1 Q0 d1 2 1.0 t\n")
    with pytest.raises(RunFormatError, match=r"bad.trec:2: document 'd1' appears twice"):
        read_trec_run(bad)
    with pytest.raises(RunFormatError, match="run file not found"):
        read_trec_run(tmp_path / "missing.trec")
