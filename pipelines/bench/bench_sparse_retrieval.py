"""Inference-free learned sparse retrieval on SciFact (train → test) and zero-shot on Cranfield.

Rows (nDCG@10, R@100 with trec_eval semantics; query latency one query at a time, k = 1000, 1 thread, BM25 and the
sparse model interleaved on the same Lucene engine):

* BM25 flat (Lucene, k1 0.9, b 0.4); dense all-MiniLM-L6-v2 (exact inner product);
* the min-max ensemble teacher itself (BM25 + dense, equal weights, candidates = union of each top 100);
* the inference-free model trained with (a) plain FLOPS + InfoNCE, (b) IDF-aware FLOPS + InfoNCE,
  (c) IDF-aware FLOPS + ensemble KD (configs ``pipelines/configs/sparse_scifact_{a,b,c}.yaml``).

Measurement shortcuts (exact, documented in docs/sparse_retrieval.md): documents are encoded from the cached frozen
backbone (head-only models share it); the evaluation index holds each document's weights for the wordpieces of the
evaluation queries only — a token's weight does not depend on the others and a query only reads its own tokens, so
scores, rankings, FLOPS and the query-term posting lists (latency) are those of the full index. The average document
length in active terms needs the full vocabulary and is estimated on a random sample of documents (± std. error).
Run: ``python -m pipelines.bench --out runs/bench --only sparse_retrieval`` (about 1.5 h on 2 busy CPU cores).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.bench import shared_data_dir

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {"a": "sparse_scifact_a.yaml", "b": "sparse_scifact_b.yaml", "c": "sparse_scifact_c.yaml"}
LABELS = {"a": "(a) plain FLOPS + InfoNCE", "b": "(b) IDF-aware FLOPS + InfoNCE",
          "c": "(c) IDF-aware FLOPS + ensemble KD"}
REFERENCE = {"bm25": 0.6789, "dense": 0.6451, "ensemble": 0.7328}  # SciFact test nDCG@10, measured on this machine
MEASURES = ["nDCG@10", "R@100"]
SAMPLE_DOCS = 200


def _data_root() -> Path:
    return shared_data_dir() / "beir"


def _latency(fn, items: list[tuple[str, str]]) -> list[float]:
    times = []
    for qid, text in items:
        started = time.perf_counter()
        fn(qid, text)
        times.append(time.perf_counter() - started)
    return times


def _summary(times: list[float]) -> dict[str, float]:
    return {"p50_ms": 1e3 * float(np.percentile(times, 50)), "mean_ms": 1e3 * float(np.mean(times))}


class _Collection:
    """One BEIR collection: BM25 index and searcher, backbone cache, dense run, ensemble teacher run."""

    def __init__(self, name: str, cache_dir: Path, out_dir: Path, *, cache: Any = None) -> None:
        """``cache``: an already loaded and checked :class:`retrieval.hidden_cache.HiddenStates` to use as is."""
        import torch

        from retrieval.beir import load_beir
        from retrieval.encoder import SparseEncoderConfig, build_sparse_encoder, default_backbone
        from retrieval.hidden_cache import build_hidden_cache, cache_fingerprint
        from retrieval.index import build_bm25_index

        self.name, self.data = name, _data_root() / name
        self.dataset = load_beir(self.data, split="test")
        self.queries = {q: t for q, t in self.dataset.split_queries.items()}
        self.bm25_index = cache_dir / f"{name}-bm25"
        if not (self.bm25_index / "regkit-index.json").is_file():
            build_bm25_index(self.dataset.corpus, self.bm25_index, overwrite=True, show_progress=False)
        texts = {d: doc.contents for d, doc in self.dataset.corpus.items()}
        started = time.perf_counter()
        if cache is not None:
            self.cache = cache
        else:
            probe = build_sparse_encoder(SparseEncoderConfig(), idf=torch.ones(30522))
            self.cache = build_hidden_cache(probe, texts, cache_dir / f"{name}-model-L256",
                                            fingerprint=cache_fingerprint(self.data, default_backbone(), 256))
        self.cache_seconds = time.perf_counter() - started
        self.out_dir = out_dir / name

    def evaluate(self, run: dict) -> dict[str, float]:
        from pipelines.evaluation.metrics import evaluate

        return evaluate(self.dataset.qrels, run, MEASURES).aggregate

    def baselines(self) -> dict[str, dict[str, Any]]:
        from pipelines.retrieval_run import dense_query_embeddings
        from retrieval.mining import dense_topk, ensemble_run, mine_candidates
        from retrieval.search import Bm25Searcher

        qids = list(self.queries)
        with Bm25Searcher(self.bm25_index) as searcher:
            bm25 = searcher.search(self.queries, k=1000, show_progress=False)
        query_emb = dense_query_embeddings([self.queries[q] for q in qids])
        rows, scores = dense_topk(query_emb, self.cache.dense, 1000)
        dense = {q: {self.cache.doc_ids[r]: float(s) for r, s in zip(rows[i], scores[i], strict=True)}
                 for i, q in enumerate(qids)}
        candidates = mine_candidates(
            self.queries, bm25_index=self.bm25_index, doc_ids=self.cache.doc_ids, doc_embeddings=self.cache.dense,
            query_embeddings=query_emb, k=100, cache_path=self.bm25_index.parent / f"{self.name}-test-candidates.json",
            fingerprint={**self.cache.meta["fingerprint"], "split": "test"}, show_progress=False)
        reference = REFERENCE if self.name == "scifact" else {}
        rows = {"BM25 (Lucene flat)": (bm25, "bm25"), "dense all-MiniLM-L6-v2": (dense, "dense"),
                "ensemble teacher (BM25 + dense, min-max)": (ensemble_run(candidates), "ensemble")}
        return {label: {**self.evaluate(run), **({"reference": reference[key]} if key in reference else {})}
                for label, (run, key) in rows.items()}

    @contextmanager
    def query_idf(self, model: Any, recompute: bool) -> Iterator[None]:
        """Within the block the model's query side is the IDF of this collection's corpus if ``recompute``."""
        from retrieval.encoder import corpus_idf, idf_weights, mlm_parts, set_idf

        stored = idf_weights(model)
        if recompute:
            set_idf(model, corpus_idf((d.contents for d in self.dataset.corpus.values()),
                                      mlm_parts(model)[0].tokenizer))
        try:
            yield
        finally:
            set_idf(model, stored)

    def sparse(self, model: Any, label: str, *, recompute_idf: bool = False) -> dict[str, Any]:
        """Evaluate a head-only model on this collection (see the module docstring for the exact shortcuts)."""
        import torch

        from retrieval.encoder import query_weights
        from retrieval.hidden_cache import encode_from_cache
        from retrieval.impact import MAX_DOC_IMPACT, ImpactQuantization, quantize_weights

        with self.query_idf(model, recompute_idf):
            weights = query_weights(model, self.queries)
            vocabulary = sorted({t for w in weights.values() for t in w})
            started = time.perf_counter()
            vectors, stats = encode_from_cache(model, self.cache, vocabulary=vocabulary, show_progress=False)
            encode_seconds = time.perf_counter() - started
            scale = ImpactQuantization().doc_scale
            rows = random.Random(0).sample(range(len(self.cache.doc_ids)), min(SAMPLE_DOCS, len(self.cache.doc_ids)))
            sample, _ = encode_from_cache(model, self.cache, rows=rows, compute_dtype=torch.bfloat16,
                                          show_progress=False)
            lengths = [len(quantize_weights(v, scale, where=d, limit=MAX_DOC_IMPACT)) for d, v in sample.items()]
            result = self.evaluate_vectors(model, vectors, label, lengths)
        return {**result, "encode_seconds_query_vocab": encode_seconds, "truncated_docs": stats.truncated,
                "empty_docs": stats.empty}

    def evaluate_vectors(
        self, model: Any, vectors: dict[str, dict[str, float]], label: str, lengths: list[int]
    ) -> dict[str, Any]:
        """Index ``vectors`` (impact index ``impact-<label>``), search with ``model``'s IDF query side; metrics,
        FLOPS, active terms (mean ± s.e. of ``lengths``) and latency interleaved with BM25 on the same engine."""
        from retrieval.encoder import query_weights
        from retrieval.impact import MAX_DOC_IMPACT, ImpactQuantization, ImpactSearcher, quantize_weights
        from retrieval.search import Bm25Searcher
        from retrieval.sparse_index import flops, index_vectors

        weights = query_weights(model, self.queries)
        index_dir = self.out_dir / f"impact-{label}"
        info = index_vectors(vectors, index_dir, overwrite=True)
        scale = ImpactQuantization().doc_scale
        quantized = {d: quantize_weights(v, scale, where=d, limit=MAX_DOC_IMPACT) for d, v in vectors.items()}
        with ImpactSearcher(index_dir) as impact, Bm25Searcher(self.bm25_index) as bm25:
            run = impact.search(weights, k=1000, show_progress=False)
            items = list(self.queries.items())
            for qid, text in items[:20]:  # JIT warm-up of both paths
                impact.search(query_weights(model, {qid: text}), k=1000, threads=1, show_progress=False)
                bm25.search({qid: text}, k=1000, threads=1, show_progress=False)
            sparse_t, bm25_t = [], []
            for qid, text in items:
                sparse_t += _latency(lambda q, t: impact.search(query_weights(model, {q: t}), k=1000, threads=1,
                                                                show_progress=False), [(qid, text)])
                bm25_t += _latency(lambda q, t: bm25.search({q: t}, k=1000, threads=1, show_progress=False),
                                   [(qid, text)])
        sparse_lat, bm25_lat = _summary(sparse_t), _summary(bm25_t)
        return {
            **self.evaluate(run),
            "avg_doc_active_terms": float(np.mean(lengths)),
            "avg_doc_active_terms_se": float(np.std(lengths, ddof=1) / np.sqrt(len(lengths))),
            "flops": flops({q: {t: 1.0 for t in w} for q, w in weights.items()}, quantized),
            "latency_p50_ms": sparse_lat["p50_ms"], "latency_mean_ms": sparse_lat["mean_ms"],
            "bm25_latency_p50_ms": bm25_lat["p50_ms"], "bm25_latency_mean_ms": bm25_lat["mean_ms"],
            "latency_ratio_vs_bm25_mean": sparse_lat["mean_ms"] / bm25_lat["mean_ms"],
            "index": str(index_dir), "indexed_terms_query_vocab": info,
        }


def run(out_dir: Path, variants: tuple[str, ...] = ("a", "b", "c")) -> dict:
    """Train the variants, evaluate every row on SciFact test and zero-shot on Cranfield; write report.md."""
    from pipelines.report import Report
    from pipelines.retrieval_run import train_sparse
    from pipelines.run_config import load_sparse_train_config
    from retrieval.encoder import load_sparse_encoder

    logging.getLogger("retrieval").setLevel(logging.INFO)
    if not (_data_root() / "scifact").is_dir():
        return {"skipped": f"needs {_data_root() / 'scifact'} (../shared/data)"}
    out_dir = Path(out_dir)
    cache_dir = ROOT / "runs" / "sparse" / "cache"
    scifact = _Collection("scifact", cache_dir, out_dir)
    zero_shot = _Collection("cranfield", cache_dir, out_dir) if (_data_root() / "cranfield").is_dir() else None
    results: dict[str, Any] = {"scifact": scifact.baselines(), "backbone_cache_seconds": scifact.cache_seconds}
    if zero_shot is not None:
        results["cranfield"] = zero_shot.baselines()
    from retrieval.encoder import SparseEncoderConfig, build_sparse_encoder

    untrained = build_sparse_encoder(SparseEncoderConfig(), corpus_texts=(
        d.contents for d in scifact.dataset.corpus.values()))
    label = "untrained (identity head init, SciFact IDF)"
    results["scifact"][label] = scifact.sparse(untrained, "init")
    if zero_shot is not None:
        results["cranfield"][label.replace("SciFact IDF", "Cranfield IDF")] = zero_shot.sparse(
            untrained, "init-idf-corpus", recompute_idf=True)
    training = {}
    for variant in variants:
        config = load_sparse_train_config(ROOT / "pipelines" / "configs" / CONFIGS[variant],
                                          data=str(scifact.data), out_dir=str(out_dir / f"train-{variant}"),
                                          cache_dir=str(cache_dir))
        trained = train_sparse(config, show_progress=False)
        training[variant] = {"train_seconds": trained.seconds, "setup_seconds": trained.setup_seconds,
                             "steps": config.steps, "config": CONFIGS[variant]}
        model = load_sparse_encoder(trained.model_dir)
        results["scifact"][LABELS[variant]] = {**scifact.sparse(model, variant), **training[variant]}
        if zero_shot is not None:
            results["cranfield"][LABELS[variant] + ", SciFact IDF"] = zero_shot.sparse(model, f"{variant}-idf-model")
            results["cranfield"][LABELS[variant] + ", Cranfield IDF"] = zero_shot.sparse(
                model, f"{variant}-idf-corpus", recompute_idf=True)
    results["training"] = training
    report = Report("Inference-free learned sparse retrieval (Geng et al. 2024, arXiv:2411.04403)")
    for collection in ("scifact", "cranfield"):
        if collection in results:
            rows = [{"row": name, **{k: v for k, v in values.items() if not isinstance(v, (dict, str))}}
                    for name, values in results[collection].items()]
            report.heading(collection).table(rows)
    report.write(out_dir, metrics=results, inputs=[scifact.data / "qrels"])
    return results
