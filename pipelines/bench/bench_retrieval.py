"""Retrieval baseline benchmark on BEIR SciFact (test): BM25 indexing/search speed and the dense encoder's throughput.

Measured in one process, each against a baseline from the same run:

* BM25 indexing throughput (docs/s) with 1 thread (baseline) and ``threads`` threads;
* BM25 query latency, one query per call (p50 / p95 ms, k=1000), and batch QPS with ``threads`` threads
  (ratio against the one-at-a-time QPS);
* effectiveness of both runs: BM25 flat (published 0.6789 / 0.9253) and all-MiniLM-L6-v2 (published 0.645);
* dense encoding throughput (documents/s and queries/s) and FAISS flat-IP search time.

Needs ``../shared/data/beir/scifact`` (or ``REGKIT_SHARED_DATA``); skipped with a reason otherwise.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from pipelines.bench import shared_data_dir

logger = logging.getLogger(__name__)

PUBLISHED = {"bm25": {"nDCG@10": 0.6789, "R@100": 0.9253}, "dense": {"nDCG@10": 0.645}}
MEASURES = ["nDCG@10", "R@100"]


def _scifact() -> Path | None:
    folder = shared_data_dir() / "beir" / "scifact"
    return folder if folder.is_dir() else None


def _bm25(dataset, out_dir: Path, threads: int) -> dict:
    from pipelines.evaluation.metrics import evaluate
    from retrieval.index import build_bm25_index
    from retrieval.search import Bm25Searcher

    docs = len(dataset.corpus)
    index_seconds = {}
    for n in (1, threads):
        started = time.perf_counter()
        build_bm25_index(dataset.corpus, out_dir / f"bm25-index-{n}t", threads=n, overwrite=True, show_progress=False)
        index_seconds[n] = time.perf_counter() - started
    queries = dataset.split_queries
    with Bm25Searcher(out_dir / f"bm25-index-{threads}t") as searcher:
        searcher.search(dict(list(queries.items())[:20]), k=1000, threads=1, show_progress=False)  # JIT warm-up
        latencies = []
        for qid, text in queries.items():
            started = time.perf_counter()
            searcher.search({qid: text}, k=1000, threads=1, show_progress=False)
            latencies.append(time.perf_counter() - started)
        started = time.perf_counter()
        run = searcher.search(queries, k=1000, threads=threads, show_progress=False)
        batch_seconds = time.perf_counter() - started
    sequential_qps = len(latencies) / sum(latencies)
    batch_qps = len(queries) / batch_seconds
    return {
        "documents": docs,
        "index_docs_per_s": {f"{n}_threads": docs / s for n, s in index_seconds.items()},
        "index_speedup_vs_1_thread": index_seconds[1] / index_seconds[threads],
        "query_latency_ms": {"p50": 1e3 * float(np.percentile(latencies, 50)),
                             "p95": 1e3 * float(np.percentile(latencies, 95))},
        "sequential_qps": sequential_qps,
        "batch_qps": batch_qps,
        "batch_vs_sequential_qps": batch_qps / sequential_qps,
        "metrics": evaluate(dataset.qrels, run, MEASURES).aggregate,
        "published": PUBLISHED["bm25"],
    }


def _dense(dataset) -> dict:
    from pipelines.evaluation.metrics import evaluate
    from retrieval.dense import DenseIndex, DenseRetriever, document_text

    retriever = DenseRetriever()
    doc_ids = list(dataset.corpus)
    started = time.perf_counter()
    embeddings = retriever.encode([document_text(dataset.corpus[d]) for d in doc_ids], show_progress=False)
    encode_seconds = time.perf_counter() - started
    index = DenseIndex(embeddings, doc_ids)
    queries = dataset.split_queries
    started = time.perf_counter()
    query_embeddings = retriever.encode(list(queries.values()), show_progress=False)
    query_seconds = time.perf_counter() - started
    started = time.perf_counter()
    run = index.search(list(queries), query_embeddings, 1000)
    search_seconds = time.perf_counter() - started
    return {
        "model": retriever.model_name,
        "encode_docs_per_s": len(doc_ids) / encode_seconds,
        "encode_queries_per_s": len(queries) / query_seconds,
        "faiss_search_ms_per_query": 1e3 * search_seconds / len(queries),
        "metrics": evaluate(dataset.qrels, run, MEASURES).aggregate,
        "published": PUBLISHED["dense"],
    }


def run(out_dir: Path) -> dict:
    """Benchmark BM25 and the dense baseline on SciFact test; returns JSON-serialisable results."""
    from retrieval.beir import load_beir

    folder = _scifact()
    if folder is None:
        return {"skipped": "needs ../shared/data/beir/scifact (set REGKIT_SHARED_DATA to relocate)"}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = load_beir(folder, split="test")
    threads = max(2, min(4, os.cpu_count() or 2))
    # the machine may be shared: record its load so that timings can be read in context
    results = {"dataset": str(folder), "cpu_count": os.cpu_count(), "threads": threads,
               "load_average_1m_at_start": os.getloadavg()[0]}
    results["bm25"] = _bm25(dataset, out_dir, threads)
    logger.info("bm25: %s", results["bm25"])
    results["dense"] = _dense(dataset)
    results["dense_vs_bm25_ndcg10"] = results["dense"]["metrics"]["nDCG@10"] / results["bm25"]["metrics"]["nDCG@10"]
    return results
