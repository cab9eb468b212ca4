"""``regkit beir eval``: BEIR's identical-id rule never drops a judged-relevant hit without saying so.

On collections whose query and document ids only share a numbering (ADI, CISI, MEDLINE) the rule drops documents
the qrels judge relevant; the run must warn with their count and the flag that keeps them, and metrics.json must
record it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.cli import main

pytestmark = pytest.mark.java


def _numbered_beir(folder: Path) -> Path:
    """Query 1 judges document 1 relevant (a shared numbering); query 3 retrieves document 3, judged not relevant."""
    docs = {"1": "Domestic cats purr and sleep most of the day.", "2": "Stock prices fell as investors sold shares.",
            "3": "Python is a popular programming language.", "4": "Learn Python programming in a week of practice."}
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n"
                                                 for d, t in docs.items()))
    queries = {"1": "why do cats purr", "3": "python programming"}
    lines = [json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()]
    (folder / "queries.jsonl").write_text("".join(lines))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\t1\t1\n3\t4\t1\n")
    return folder


def test_dropped_judged_relevant_self_hits_are_warned_and_recorded(tmp_path: Path, capsys) -> None:
    data = _numbered_beir(tmp_path / "numbered")
    runs = {}
    for flag in ("--ignore-identical-ids", "--keep-identical-ids"):
        out = tmp_path / flag.strip("-")
        assert main(["beir", "eval", "--data", str(data), "--out", str(out), "--k", "3", flag]) == 0
        runs[flag] = (json.loads((out / "metrics.json").read_text()), capsys.readouterr().err)
    metrics, err = runs["--ignore-identical-ids"]
    assert metrics["identical_id_hits"] == {"rule": "drop", "hits": 2, "judged_relevant": 1,
                                           "judged_relevant_queries": ["1"], "keep_flag": "--keep-identical-ids"}
    assert "dropped 1 judged-relevant hit(s)" in err and "--keep-identical-ids" in err, err
    assert metrics["per_query"]["1"]["RR@10"] == 0.0
    metrics, err = runs["--keep-identical-ids"]
    assert metrics["identical_id_hits"]["rule"] == "keep" and metrics["identical_id_hits"]["judged_relevant"] == 1
    assert "judged-relevant" not in err
    assert metrics["per_query"]["1"]["RR@10"] == 1.0
