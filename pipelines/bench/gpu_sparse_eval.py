"""Evaluate the document vectors that ``gpu_sparse_finetune`` brought back from the GPU machine, like the bench does.

``python -m pipelines.bench.gpu_sparse_eval --results runs/sparse/gpu`` reads ``summary.json`` and the
``vectors_<variant>*.npz`` files (:mod:`retrieval.sparse_vectors`), builds one Lucene impact index per variant and
collection from the **full-vocabulary** vectors (no query-vocabulary shortcut needed: the vectors are complete),
and measures on SciFact test and, zero-shot, on Cranfield (with the SciFact IDF the model was trained with and with
IDF recomputed on the Cranfield corpus): nDCG@10 and R@100 (ir-measures, trec_eval semantics), FLOPS, active terms
per document (exact, all documents), and query latency one query at a time, k = 1000, 1 thread, interleaved with
BM25 on the same Anserini/Lucene engine in the same process
(:meth:`pipelines.bench.bench_sparse_retrieval._Collection.evaluate_vectors`, the code path of the bench).
The baselines (BM25, dense all-MiniLM-L6-v2, the min-max ensemble teacher) are measured again in the same run.
Each SciFact model is also compared with BM25 query by query (nDCG@10: paired bootstrap 95 % CI, paired
randomization test, Holm-adjusted over the models; :func:`pipelines.evaluation.ab.compare_runs`).
Writes ``<out>/metrics.json``, ``<out>/report.md`` and ``<out>/comparisons.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from pipelines.bench.bench_sparse_retrieval import LABELS, ROOT, _Collection, _data_root

logger = logging.getLogger(__name__)


OVERRIDE_LABELS = {"ranking_loss": "ranking loss {}", "temperature": "KD τ {:g} (×τ²)", "score_scale": "scale {:g}",
                   "docs_per_query": "{} candidates/query", "flops_weight": "λ {:g}"}


def _label(variant: str, entry: dict[str, Any] | None = None) -> str:
    """Row label: the variant's description, then its lr (``<v>-lr<x>``) or config overrides and step count."""
    base, _, lr = variant.partition("-lr")
    if lr or not entry or "-" not in variant:
        return f"{LABELS[base]}, full fine-tuning" + (f", lr {lr}" if lr else "")
    parts = [OVERRIDE_LABELS[k].format(v) for k, v in entry.get("overrides", {}).items()]
    return ", ".join([f"{LABELS[variant.split('-')[0]]}, full fine-tuning", *parts, f"{entry['steps']} steps"])


def _packed(results: Path, entry: dict[str, Any]) -> dict[str, Any]:
    from retrieval.sparse_vectors import load_packed

    corpora: dict[str, Any] = {}
    for name in entry["files"]:
        corpora.update(load_packed(results / name))
    return corpora


def checked_cache(name: str, cache_dir: Path, *, sample: int = 8) -> Any:
    """The cached backbone states of ``name`` if they still describe the corpus, else None (the bench rebuilds).

    The cache's fingerprint includes the corpus file's mtime, which changes whenever ``../shared/data`` is copied
    again. Accepted here when the corpus path and size match, the document ids are the corpus' in order, and the
    cached dense embeddings of ``sample`` random documents equal a fresh all-MiniLM-L6-v2 encoding (max abs.
    difference < 1e-4).
    """
    import random

    import numpy as np

    from pipelines.retrieval_run import dense_query_embeddings
    from retrieval.beir import read_corpus
    from retrieval.hidden_cache import HiddenStates

    folder = cache_dir / f"{name}-model-L256"
    if not (folder / "meta.json").is_file():
        return None
    cache = HiddenStates.load(folder)
    corpus_path = _data_root() / name / "corpus.jsonl"
    stored = cache.meta["fingerprint"]
    corpus = read_corpus(corpus_path)
    if (Path(stored["corpus"]) != corpus_path.resolve() or stored["size"] != corpus_path.stat().st_size
            or cache.doc_ids != list(corpus)):
        return None
    rows = random.Random(0).sample(range(len(cache.doc_ids)), min(sample, len(cache.doc_ids)))
    fresh = dense_query_embeddings([corpus[cache.doc_ids[r]].contents for r in rows])
    gap = float(np.abs(fresh - np.asarray(cache.dense[rows], dtype=np.float32)).max())
    logger.info("%s: cached backbone states checked on %d documents (max dense difference %.2e)", name, len(rows), gap)
    return cache if gap < 1e-4 else None


def compare_with_bm25(collection: Any, model: Any, index_dirs: dict[str, Path]) -> dict[str, Any]:
    """Per-query nDCG@10 of each impact index against BM25 on ``collection`` (module docstring)."""
    from pipelines.evaluation.ab import compare_runs, holm_adjust
    from retrieval.encoder import query_weights
    from retrieval.impact import ImpactSearcher
    from retrieval.search import Bm25Searcher

    with Bm25Searcher(collection.bm25_index) as bm25:
        reference = bm25.search(collection.queries, k=1000, show_progress=False)
    weights = query_weights(model, collection.queries)
    out = {}
    for label, index_dir in index_dirs.items():
        with ImpactSearcher(index_dir) as impact:
            run = impact.search(weights, k=1000, show_progress=False)
        (comparison,) = compare_runs(collection.dataset.qrels, reference, run, ["nDCG@10"])
        out[label] = comparison
    adjusted = holm_adjust([c.p_randomization for c in out.values()])
    return {label: {**c.as_dict(), "p_holm_over_models": p, "verdict": c.verdict("BM25", label)}
            for (label, c), p in zip(out.items(), adjusted, strict=True)}


def run(results: Path, out_dir: Path, *, compare_only: bool = False) -> dict[str, Any]:
    """Evaluate every trained variant of ``results/summary.json`` (module docstring)."""
    import numpy as np
    import torch

    from common_regs.io import atomic_write_text
    from pipelines.report import Report
    from retrieval.encoder import SparseEncoderConfig, build_sparse_encoder, idf_weights

    summary = json.loads((results / "summary.json").read_text(encoding="utf-8"))
    cache_dir = ROOT / "runs" / "sparse" / "cache"
    scifact = _Collection("scifact", cache_dir, out_dir, cache=checked_cache("scifact", cache_dir))
    # query side: BM25 IDF of the SciFact corpus (what the models were trained with; the document route is unused)
    queries = build_sparse_encoder(SparseEncoderConfig(), corpus_texts=(
        d.contents for d in scifact.dataset.corpus.values()))
    trained = [v for v, entry in summary["variants"].items() if "skipped" not in entry]
    index_dirs = {_label(v, summary["variants"][v]): scifact.out_dir / f"impact-gpu-{v}-idf-model" for v in trained}
    if compare_only:
        comparisons = compare_with_bm25(scifact, queries, index_dirs)
        atomic_write_text(out_dir / "comparisons.json", json.dumps(comparisons, indent=2) + "\n")
        return {"comparisons": comparisons}
    cranfield = _Collection("cranfield", cache_dir, out_dir, cache=checked_cache("cranfield", cache_dir))
    out: dict[str, Any] = {"scifact": scifact.baselines(), "cranfield": cranfield.baselines(), "training": {}}
    payload_idf = ROOT / ".gpu_payload" / "scifact_idf.npy"
    if payload_idf.is_file():
        same = torch.equal(idf_weights(queries), torch.from_numpy(np.load(payload_idf, allow_pickle=False)))
        out["idf_equals_training_idf"] = bool(same)
        if not same:
            raise ValueError(f"{payload_idf}: the IDF sent to the GPU machine differs from the SciFact IDF here.")
    for variant, entry in summary["variants"].items():
        if "skipped" in entry:
            logger.warning("%s was skipped on the GPU machine: %s", variant, entry["skipped"])
            continue
        packed = _packed(results, entry)
        out["training"][variant] = {"steps": entry["steps"], "train_seconds": entry["train_seconds"],
                                    "lr": entry["config"]["lr"], "device": summary["environment"].get("gpu")}
        label = _label(variant, entry)
        for name, collection in (("scifact", scifact), ("cranfield", cranfield)):
            vectors = packed[name].weights()
            lengths = packed[name].active_terms.tolist()
            settings = [(False, "")] if name == "scifact" else [(False, ", SciFact IDF"), (True, ", Cranfield IDF")]
            for recompute, suffix in settings:
                with collection.query_idf(queries, recompute):
                    row = collection.evaluate_vectors(
                        queries, vectors, f"gpu-{variant}-{'idf-corpus' if recompute else 'idf-model'}", lengths)
                row.pop("indexed_terms_query_vocab", None)
                extra = {"train_s_gpu": entry["train_seconds"], "steps": entry["steps"]} if name == "scifact" else {}
                out[name][label + suffix] = {**row, **extra}
                logger.info("%s %s%s: nDCG@10 %.4f", name, label, suffix, row["nDCG@10"])
    report = Report("Inference-free sparse retrieval, full fine-tuning on a GPU (Geng et al. 2024, arXiv:2411.04403)")
    for collection in ("scifact", "cranfield"):
        rows = [{"row": name, **{k: v for k, v in values.items() if not isinstance(v, (dict, str))}}
                for name, values in out[collection].items()]
        report.heading(collection).table(rows)
    out["device_summary"] = {k: summary[k] for k in ("environment", "calibration", "setup_s", "elapsed_s")
                             if k in summary}
    out["comparisons"] = compare_with_bm25(scifact, queries, index_dirs)
    atomic_write_text(out_dir / "comparisons.json", json.dumps(out["comparisons"], indent=2) + "\n")
    report.write(out_dir, metrics=out, inputs=[results / "summary.json", _data_root() / "scifact" / "qrels"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.bench.gpu_sparse_eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=ROOT / "runs" / "sparse" / "gpu",
                        help="folder with summary.json and vectors_*.npz from the GPU machine")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "sparse" / "gpu-eval")
    parser.add_argument("--compare-only", action="store_true",
                        help="only the paired comparisons with BM25, on the indexes of an earlier run into --out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("retrieval").setLevel(logging.WARNING)
    out = run(args.results, args.out, compare_only=args.compare_only)
    for comparison in out["comparisons"].values():
        print(f"{comparison['verdict']} (Holm over models p={comparison['p_holm_over_models']:.3g})")
    if args.compare_only:
        return 0
    for collection in ("scifact", "cranfield"):
        print(f"\n{collection}")
        for name, row in out[collection].items():
            print(f"  {name}: nDCG@10 {row['nDCG@10']:.4f}  R@100 {row['R@100']:.4f}"
                  + (f"  terms {row['avg_doc_active_terms']:.1f}  FLOPS {row['flops']:.2f}  latency ratio "
                     f"{row['latency_ratio_vs_bm25_mean']:.2f}" if "flops" in row else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
