"""The retriever interface (``retrieval.retriever``): a new retriever is one class in one file.

This file is that file: it defines and registers a toy retriever (exact term overlap), and ``regkit beir eval`` /
``regkit retrieval index|search`` run it by name through the real CLI, with no other change to regkit. The run and
the metrics are checked against values worked out by hand. The built-in ``bm25``, ``dense`` and ``sparse`` are
checked to be registered and to satisfy the same interface.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from pipelines.cli import main
from retrieval.beir import Document
from retrieval.retriever import (
    Retriever,
    available_retrievers,
    build_retriever,
    check_run,
    get_retriever,
    register_retriever,
    retriever_options,
)
from retrieval.runs import read_trec_run


@register_retriever("toy")
class TermOverlapRetriever:
    """Score = number of distinct lower-cased whitespace tokens a query shares with a document; ties by doc id."""

    index_folder: ClassVar[str] = "toy-index"

    def index(self, corpus: Mapping[str, Document], index_dir: Path, *, overwrite: bool = False) -> dict[str, Any]:
        index_dir.mkdir(parents=True, exist_ok=overwrite)
        terms = {doc_id: sorted(set(doc.contents.lower().split())) for doc_id, doc in corpus.items()}
        (index_dir / "terms.json").write_text(json.dumps(terms), encoding="utf-8")
        return {"documents": len(terms)}

    def search(self, index_dir: Path, queries: Mapping[str, str], k: int) -> dict[str, dict[str, float]]:
        terms = {d: set(t) for d, t in json.loads((index_dir / "terms.json").read_text(encoding="utf-8")).items()}
        run = {}
        for qid, text in queries.items():
            scores = {d: float(len(set(text.lower().split()) & t)) for d, t in terms.items()}
            ranked = sorted((item for item in scores.items() if item[1] > 0), key=lambda item: (-item[1], item[0]))
            run[qid] = dict(ranked[:k])
        return run


def _beir(folder: Path) -> Path:
    """d1 "red apple pie", d2 "green apple", d3 "red car"; q1 judges d1, q2 judges d1, q3 judges d3."""
    (folder / "qrels").mkdir(parents=True)
    docs = {"d1": ("", "red apple pie"), "d2": ("", "green apple"), "d3": ("Red", "car")}
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, "title": t, "text": x}) + "\n" for d, (t, x) in docs.items()))
    queries = {"q1": "red apple", "q2": "green apple car", "q3": "blue"}
    lines = [json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()]
    (folder / "queries.jsonl").write_text("".join(lines))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td1\t1\nq3\td3\t1\n")
    return folder


# By hand, k=2. q1 "red apple": d1 shares {red, apple} = 2, d2 {apple} = 1, d3 {red} = 1 -> d1, d2 (tie: d2 < d3).
# q2 "green apple car": d2 {green, apple} = 2, d1 {apple} = 1, d3 {car} = 1 -> d2, d1. q3 "blue": nothing.
EXPECTED_RUN = {"q1": {"d1": 2.0, "d2": 1.0}, "q2": {"d2": 2.0, "d1": 1.0}}
# RR@10: q1 1 (d1 first), q2 1/2 (d1 second), q3 0; P@1: q1 1, q2 0, q3 0.
EXPECTED_METRICS = {"q1": {"RR@10": 1.0, "P@1": 1.0}, "q2": {"RR@10": 0.5, "P@1": 0.0},
                    "q3": {"RR@10": 0.0, "P@1": 0.0}}


def test_a_retriever_registered_in_one_file_runs_through_beir_eval(tmp_path: Path) -> None:
    data, out = _beir(tmp_path / "tiny"), tmp_path / "out"
    assert main(["beir", "eval", "--data", str(data), "--retriever", "toy", "--out", str(out), "--k", "2",
                 "--measures", "RR@10,P@1"]) == 0
    assert read_trec_run(out / "run.trec") == EXPECTED_RUN
    assert (out / "run.trec").read_text().splitlines()[0] == "q1 Q0 d1 1 2.000000 regkit-toy"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["retriever"] == "toy" and metrics["per_query"] == EXPECTED_METRICS  # 1, 1/2 and 0 are exact
    assert metrics["aggregate"] == pytest.approx({"RR@10": 0.5, "P@1": 1 / 3})
    assert metrics["queries_without_results"] == ["q3"]
    assert metrics["index"] == {"folder": "toy-index", "documents": 3} and (out / "toy-index" / "terms.json").is_file()


def test_retrieval_index_and_search_dispatch_through_the_registry(tmp_path: Path, capsys) -> None:
    data, index = _beir(tmp_path / "tiny"), tmp_path / "idx"
    assert main(["retrieval", "index", "--data", str(data), "--index", str(index), "--retriever", "toy"]) == 0
    assert f"toy index at {index}: documents 3" in capsys.readouterr().out
    assert main(["retrieval", "search", "--retriever", "toy", "--index", str(index), "--queries", str(data),
                 "--out", str(tmp_path / "run.trec"), "--k", "2"]) == 0
    assert read_trec_run(tmp_path / "run.trec") == EXPECTED_RUN


@pytest.mark.parametrize(("argv", "message"), [
    (["beir", "eval", "--retriever", "toy", "--model", "m"], "retriever 'toy' takes no option `model` (its options: "
     "[]); it is an option of ['dense', 'sparse']"),
    (["beir", "eval", "--retriever", "bm25", "--idf", "corpus"], "retriever 'bm25' takes no option `idf`"),
    (["beir", "eval", "--retriever", "sparse"], "`model` is required with retriever 'sparse'"),
    (["beir", "eval", "--retriever", "splade"], "`retriever` must be one of ['bm25', 'dense', 'sparse', 'toy']"),
    (["retrieval", "search", "--retriever", "toy", "--k1", "1.2"], "retriever 'toy' takes no option `k1`"),
    (["retrieval", "index", "--retriever", "bm25", "--opensearch-bulk", "b.ndjson"],
     "retriever 'bm25' takes no option `opensearch_bulk`"),
])
def test_options_are_checked_by_the_retriever_with_one_line(argv, message, tmp_path: Path, capsys) -> None:
    data = _beir(tmp_path / "tiny")
    where = {"beir": ["--data", str(data), "--out", str(tmp_path / "o")],
             "index": ["--data", str(data), "--index", str(tmp_path / "i")],
             "search": ["--index", str(tmp_path / "i"), "--queries", str(data), "--out", str(tmp_path / "r.trec")]}
    capsys.readouterr()
    assert main([*argv, *where[argv[0] if argv[0] == "beir" else argv[1]]]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("regkit: error:") and message in err and "\n" not in err, err
    assert not (tmp_path / "o").exists() and not (tmp_path / "i").exists()


def test_the_built_in_retrievers_are_registered_and_satisfy_the_interface() -> None:
    assert {"bm25", "dense", "sparse"} <= set(available_retrievers())
    built = {name: build_retriever(name, {"model": "a-model-folder"}, explicit=[]) for name in ("bm25", "dense")}
    built["sparse"] = build_retriever("sparse", {"model": "a-model-folder"}, explicit=["model"])
    for name, retriever in built.items():
        assert isinstance(retriever, Retriever) and type(retriever) is get_retriever(name), name
    assert {type(r).index_folder for r in built.values()} == {"index", "dense-index", "impact-index"}
    assert retriever_options(get_retriever("bm25")) == ["b", "k1", "search_threads", "threads"]
    assert "model" in retriever_options(get_retriever("dense")) and "idf" in retriever_options(get_retriever("sparse"))


def test_registration_and_returned_runs_are_checked() -> None:
    with pytest.raises(TypeError, match="lacks `search`"):
        register_retriever("no-search")(type("NoSearch", (), {"index_folder": "x", "index": lambda self: None}))
    with pytest.raises(ValueError, match="already registered"):
        register_retriever("toy")(type("Other", (TermOverlapRetriever,), {}))
    queries = {"q1": "a", "q2": "b"}
    assert check_run("toy", {"q1": {"d": 1}}, queries, 1) == {"q1": {"d": 1.0}, "q2": {}}
    with pytest.raises(ValueError, match="returned query id 'q9'"):
        check_run("toy", {"q9": {}}, queries, 1)
    with pytest.raises(ValueError, match="more than k=1"):
        check_run("toy", {"q1": {"d": 1.0, "e": 0.5}}, queries, 1)
    with pytest.raises(ValueError, match="score must be a finite number"):
        check_run("toy", {"q1": {"d": float("nan")}}, queries, 1)
