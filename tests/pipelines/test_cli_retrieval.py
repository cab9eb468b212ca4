"""``regkit retrieval index|search`` and ``regkit beir eval`` end to end, and their one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.evaluation.metrics import evaluate
from retrieval.beir import load_beir
from retrieval.runs import read_trec_run

pytestmark = pytest.mark.java


def _tiny_beir(folder: Path) -> Path:
    docs = {
        "cats": ("Cats", "Domestic cats purr and sleep most of the day."),
        "stocks": ("Markets", "Stock prices fell sharply as investors sold shares."),
        "python": ("Programming", "Python is a popular programming language."),
        "bread": ("Baking", "Knead the dough and let the bread rise before baking."),
    }
    queries = {"1": "why do cats purr", "2": "stock market shares", "3": "python programming", "4": "the of"}
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, "title": t, "text": x}) + "\n" for d, (t, x) in docs.items())
    )
    lines = [json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()]
    (folder / "queries.jsonl").write_text("".join(lines))
    judged = [("1", "cats", 1), ("2", "stocks", 2), ("3", "python", 1), ("4", "bread", 1)]
    rows = "".join(f"{q}\t{d}\t{r}\n" for q, d, r in judged)
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    return folder


def test_beir_eval_bm25_on_demo_data(demo_data, tmp_path, capsys):
    out = tmp_path / "bm25"
    assert main(["beir", "eval", "--data", str(demo_data / "beir"), "--retriever", "bm25", "--out", str(out),
                 "--k", "100", "--measures", "nDCG@10,R@100,MRR@10"]) == 0
    printed = capsys.readouterr().out
    assert "nDCG@10" in printed and "MRR@10" in printed
    saved = json.loads((out / "metrics.json").read_text())
    qrels = load_beir(demo_data / "beir").qrels
    recomputed = evaluate(qrels, read_trec_run(out / "run.trec"), ["nDCG@10", "R@100", "MRR@10"]).aggregate
    assert saved["aggregate"] == pytest.approx(recomputed, abs=1e-4)
    assert 0 < saved["aggregate"]["nDCG@10"] <= 1
    assert (out / "index" / "regkit-index.json").is_file() and (out / "resolved_config.yaml").is_file()
    page = (out / "report.html").read_text()
    assert "data:image/png;base64," in page and f"{saved['aggregate']['nDCG@10']:.4f}" in page


def test_beir_eval_dense_and_retrieval_commands(tmp_path, capsys):
    data = _tiny_beir(tmp_path / "tiny")
    assert main(["beir", "eval", "--data", str(data), "--retriever", "dense", "--out", str(tmp_path / "dense"),
                 "--k", "2"]) == 0
    dense = json.loads((tmp_path / "dense" / "metrics.json").read_text())
    assert dense["per_query"]["1"]["RR@10"] == 1.0 and dense["per_query"]["3"]["RR@10"] == 1.0
    assert (tmp_path / "dense" / "dense-index" / "index.faiss").is_file()

    index = tmp_path / "idx"
    assert main(["retrieval", "index", "--data", str(data), "--index", str(index), "--threads", "1"]) == 0
    assert main(["retrieval", "search", "--index", str(index), "--queries", str(data), "--out",
                 str(tmp_path / "run.trec"), "--k", "3"]) == 0
    run = read_trec_run(tmp_path / "run.trec")
    assert "4" not in run  # stopword-only query: no results, so no lines
    assert max(run["2"], key=run["2"].get) == "stocks"
    assert "4 queries searched (1 without results)" in capsys.readouterr().out


def test_beir_eval_search_threads_give_the_same_run(tmp_path):
    data = _tiny_beir(tmp_path / "tiny")
    runs = []
    for threads in ("1", "2"):  # Lucene searched directly, then Pyserini's batch executor
        out = tmp_path / f"bm25-{threads}"
        assert main(["beir", "eval", "--data", str(data), "--out", str(out), "--k", "3", "--threads", "1",
                     "--search-threads", threads]) == 0
        runs.append((out / "run.trec").read_text())
    assert runs[0] == runs[1] and runs[0]


def test_errors_are_one_line_exit_2(tmp_path, capsys):
    data = _tiny_beir(tmp_path / "tiny")
    cases = [
        (["beir", "eval", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
         "not a BEIR dataset folder"),
        (["beir", "eval", "--data", str(data), "--retriever", "splade", "--out", str(tmp_path / "o")],
         "`retriever` must be one of"),
        (["beir", "eval", "--data", str(data), "--split", "dev", "--out", str(tmp_path / "o")],
         "no qrels for split 'dev'"),
        (["beir", "eval", "--data", str(data), "--measures", "nDCG@x", "--out", str(tmp_path / "o")],
         "unknown measure"),
        (["retrieval", "search", "--index", str(tmp_path / "missing"), "--queries", str(data),
          "--out", str(tmp_path / "r.trec")], "index folder not found"),
        (["beir", "eval", "--data", str(data), "--retriever", "dense", "--search-threads", "2", "--out",
          str(tmp_path / "o")], "search_threads"),
    ]
    for argv, message in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("regkit: error:") and message in err and "\n" not in err, err


def test_identical_ids_rule_can_be_switched_off(tmp_path):
    data = _tiny_beir(tmp_path / "tiny")
    (data / "queries.jsonl").write_text(json.dumps({"_id": "cats", "text": "cats purr"}) + "\n")
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\ncats\tcats\t1\n")
    for flag, expected in (("--ignore-identical-ids", 0.0), ("--keep-identical-ids", 1.0)):
        out = tmp_path / flag
        assert main(["beir", "eval", "--data", str(data), "--out", str(out), "--k", "3", flag]) == 0
        assert json.loads((out / "metrics.json").read_text())["aggregate"]["RR@10"] == expected
