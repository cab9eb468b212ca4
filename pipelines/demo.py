"""``make demo``: the main job on the bundled data (``data/demo``), end to end.

Today: validate the demo interaction log, build a BM25 index of the demo corpus, search its queries,
evaluate BEIR-style, print the best hits and the metrics, and write run file, metrics and provenance.
Later issues extend it with the recommenders, the learned sparse retriever and offline A/B.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from rich.console import Console
from rich.table import Table

from common_regs.io import atomic_write_text
from pipelines.datasets.demo import write_demo_data
from pipelines.evaluation.metrics import evaluate
from pipelines.provenance import write_run_metadata

logger = logging.getLogger(__name__)

__all__ = ["DEMO_DATA", "run_demo"]

DEMO_DATA = Path(__file__).resolve().parents[1] / "data" / "demo"
DEMO_MEASURES = ("nDCG@10", "R@100", "RR@10", "AP", "P@10")


def _ensure_demo_data(data_dir: Path) -> Path:
    if not (data_dir / "beir" / "corpus.jsonl").is_file():
        logger.info("demo data missing at %s; generating it", data_dir)
        write_demo_data(data_dir, overwrite=True)
    return data_dir


def run_demo(out: Path, data_dir: Path = DEMO_DATA, console: Console | None = None) -> dict:
    """Run the demo into ``out``; returns the aggregate metrics."""
    from recsys.data import validate_log
    from retrieval.beir import load_beir
    from retrieval.index import build_bm25_index
    from retrieval.runs import write_trec_run
    from retrieval.search import Bm25Searcher

    console = console or Console()
    out.mkdir(parents=True, exist_ok=True)
    data_dir = _ensure_demo_data(data_dir)

    console.rule("[bold]1. data")
    summary = validate_log(data_dir / "recsys" / "interactions.parquet")
    console.print(f"interaction log: {summary.rows:,} rows, {summary.users:,} users, {summary.items:,} items, "
                  f"{summary.duplicate_rows} duplicates")
    dataset = load_beir(data_dir / "beir", split="test")
    console.print(f"BEIR demo corpus: {dataset.summary()}")

    console.rule("[bold]2. BM25 (Lucene via Pyserini)")
    index_dir = build_bm25_index(dataset.corpus, out / "bm25-index", overwrite=True)
    run = Bm25Searcher(index_dir).search(dataset.split_queries, k=100)
    write_trec_run(run, out / "bm25.run", tag="bm25")
    evaluation = evaluate(dataset.qrels, run, DEMO_MEASURES)
    for qid in list(dataset.split_queries)[:2]:
        hits = Table(title=f"query {qid}: {dataset.queries[qid]!r}")
        for column in ("rank", "docid", "score", "relevance"):
            hits.add_column(column)
        ranked = sorted(run[qid].items(), key=lambda item: -item[1])[:5]
        for rank, (docid, score) in enumerate(ranked, start=1):
            hits.add_row(str(rank), docid, f"{score:.3f}", str(dataset.qrels[qid].get(docid, 0)))
        console.print(hits)
    metrics = Table(title="BM25 on the demo corpus (test split)")
    for name in DEMO_MEASURES:
        metrics.add_column(name, justify="right")
    metrics.add_row(*(f"{evaluation.aggregate[name]:.4f}" for name in DEMO_MEASURES))
    console.print(metrics)

    atomic_write_text(out / "metrics.json", json.dumps({"bm25": evaluation.aggregate}, indent=2) + "\n")
    write_run_metadata(out, config={"data": str(data_dir), "retriever": "bm25", "k1": 0.9, "b": 0.4})
    console.print(f"outputs written to {out.resolve()}", soft_wrap=True)
    return evaluation.aggregate
