"""Label-free adaptation of the inference-free sparse retriever against BM25 on four collections, three seeds each.

For each collection: BM25 (Lucene, k1 0.9, b 0.4) once; per seed ``regkit retrieval adapt`` (pseudo-queries of the
corpus only, never its queries or judgments; the document mixture fitted by ensemble distillation) and the impact
index of the adapted model, searched with the test queries; one ablation: the same model with every mixture weight 0
(BM25 through the impact index with seed 0's k1 / b: the student's starting point). Significance: per-query nDCG@10
and R@100 averaged over the seeds, paired randomization test and bootstrap interval against BM25
(:mod:`pipelines.evaluation.ab`, what ``regkit ab compare`` runs), Holm-adjusted over the two measures. Latency:
batch search of all test queries, k=1000, per query, in the same process as BM25's.

    python -m pipelines.bench --only label_free            # runs/bench/label_free.json, ~40 min on 2 cores
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.bench import shared_data_dir
from pipelines.evaluation.ab import holm_adjust, paired_bootstrap_ci, paired_randomization_pvalue
from pipelines.evaluation.metrics import evaluate
from pipelines.retrieval_run import adapt_sparse
from pipelines.run_config import load_sparse_adapt_config
from retrieval.beir import load_beir
from retrieval.document_mixture import DocumentMixture
from retrieval.retriever import build_retriever

logger = logging.getLogger(__name__)

DATA = shared_data_dir() / "beir"
COLLECTIONS = ("cranfield", "cisi", "nfcorpus", "scifact")  # smallest first
SEEDS = (0, 1, 2)
MEASURES = ("nDCG@10", "R@100")
K = 1000


def _folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def _search(retriever: Any, index_dir: Path, queries: dict[str, str]) -> tuple[dict, float]:
    started = time.perf_counter()
    run = retriever.search(index_dir, queries, K)
    return run, (time.perf_counter() - started) / max(1, len(queries)) * 1000


def _sparse_row(model_dir: Path, corpus: Any, queries: dict[str, str], qrels: dict, index_dir: Path,
                states_dir: Path) -> tuple[dict[str, Any], dict]:
    retriever = build_retriever("sparse", {"model": str(model_dir), "states_dir": str(states_dir)})
    started = time.perf_counter()
    info = retriever.index(corpus, index_dir, overwrite=True)
    index_seconds = time.perf_counter() - started
    run, latency = _search(retriever, index_dir, queries)
    result = evaluate(qrels, run, MEASURES)
    return {**result.aggregate, "active_terms": info["avg_active_terms_indexed"], "index_seconds": index_seconds,
            "index_mb": _folder_mb(index_dir), "ms_per_query": latency}, result.per_query


def _significance(per_query_bm25: dict, per_query_seeds: list[dict]) -> dict[str, Any]:
    queries = sorted(per_query_bm25)
    out: dict[str, Any] = {}
    p_values = []
    for measure in MEASURES:
        base = np.array([per_query_bm25[q][measure] for q in queries])
        mean = np.mean([[seed[q][measure] for q in queries] for seed in per_query_seeds], axis=0)
        low, high = paired_bootstrap_ci(mean - base)
        p_values.append(paired_randomization_pvalue(base, mean))
        out[measure] = {"bm25": float(base.mean()), "adapted_mean_of_seeds": float(mean.mean()),
                        "difference": float((mean - base).mean()), "ci95": [low, high]}
    for measure, p in zip(MEASURES, holm_adjust(p_values), strict=True):
        out[measure]["p_holm"] = p
    return out


def run_collection(name: str, out_dir: Path, seeds: tuple[int, ...] = SEEDS) -> dict[str, Any]:
    """BM25, the adapted model per seed and the zero-weight ablation on collection ``name``'s test queries."""
    data = DATA / name
    dataset = load_beir(data, split="test")
    queries = {q: dataset.queries[q] for q in dataset.qrels}
    cache_dir, states_dir = out_dir / "cache", out_dir / "cache" / f"{name}-index-states"
    bm25 = build_retriever("bm25", {"threads": 2})
    started = time.perf_counter()
    bm25.index(dataset.corpus, out_dir / name / "bm25-index", overwrite=True)
    bm25_index_seconds = time.perf_counter() - started
    bm25_run, bm25_latency = _search(bm25, out_dir / name / "bm25-index", queries)
    bm25_eval = evaluate(dataset.qrels, bm25_run, MEASURES)
    rows: dict[str, Any] = {"bm25": {**bm25_eval.aggregate, "index_seconds": bm25_index_seconds,
                                     "index_mb": _folder_mb(out_dir / name / "bm25-index"),
                                     "ms_per_query": bm25_latency}}
    per_query_seeds = []
    for seed in seeds:
        config = load_sparse_adapt_config(None, data=str(data), out_dir=str(out_dir / name / f"adapt-s{seed}"),
                                          seed=seed, cache_dir=str(cache_dir))
        trained = adapt_sparse(config)
        row, per_query = _sparse_row(trained.model_dir, dataset.corpus, queries, dataset.qrels,
                                     out_dir / name / f"sparse-s{seed}-index", states_dir)
        mixture = DocumentMixture.load(trained.model_dir)
        rows[f"adapted seed {seed}"] = {**row, "adapt_seconds": trained.seconds + trained.setup_seconds,
                                        "mixture": dataclasses.asdict(mixture) if mixture else None}
        per_query_seeds.append(per_query)
    ablation = out_dir / name / "zero-mixture-model"
    shutil.copytree(out_dir / name / f"adapt-s{seeds[0]}" / "model", ablation, dirs_exist_ok=True)
    fitted = DocumentMixture.load(ablation)
    DocumentMixture(k1=fitted.k1 if fitted else 0.9, b=fitted.b if fitted else 0.4).save(ablation)
    rows["BM25 terms only (mixture weights 0, seed 0 k1/b)"], _ = _sparse_row(
        ablation, dataset.corpus, queries, dataset.qrels, out_dir / name / "zero-mixture-index", states_dir)
    return {"rows": rows, "significance": _significance(bm25_eval.per_query, per_query_seeds)}


def run(out_dir: Path, collections: tuple[str, ...] = COLLECTIONS, seeds: tuple[int, ...] = SEEDS) -> dict:
    """Every collection of ``collections`` (module docstring)."""
    return {name: run_collection(name, out_dir, seeds) for name in collections}
