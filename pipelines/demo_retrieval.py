"""Step 3 of the demo: BM25 and an inference-free learned sparse retriever on the demo corpus, evaluated BEIR-style.

BM25 is :func:`pipelines.evaluation.beir_eval.run_beir_eval` (Lucene flat index through Pyserini). The sparse model
is a short :func:`pipelines.retrieval_run.train_sparse` run on the corpus's ``train`` split (head-only training
on the frozen all-MiniLM-L6-v2 body: ensemble distillation from BM25 + the dense MiniLM teacher, IDF-aware FLOPS),
then the same BEIR evaluation with ``retriever: sparse``: every document encoded into a Lucene impact index,
queries weighted by IDF alone (no network at query time). Runs, metrics and indexes land in ``<out>/{bm25,sparse}``.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pipelines.demo_outcome import DemoOutcome, DomainRuns
from pipelines.run_config import DemoConfig

logger = logging.getLogger(__name__)

__all__ = ["run_retrieval"]


def run_retrieval(config: DemoConfig, data_dir: Path, out: Path, console: Console,
                  outcome: DemoOutcome) -> DomainRuns:
    """Evaluate BM25, train + evaluate the sparse model; fills ``outcome`` (metrics, figures, examples)."""
    from pipelines.evaluation.beir_eval import BeirEvalConfig, run_beir_eval
    from pipelines.retrieval_run import train_sparse
    from retrieval.beir import load_beir
    from retrieval.encoder import load_sparse_encoder, mlm_parts, query_weights
    from retrieval.runs import read_trec_run

    settings = config.retrieval
    beir = data_dir / "beir"
    dataset = load_beir(beir, split="test")
    common = {"data": str(beir), "k": settings.k, "measures": list(settings.measures), "threads": config.threads}
    console.print("[bold cyan]BM25[/] (Lucene flat index through Pyserini, k1=0.9, b=0.4)")
    # the demo's own folder, already checked (pipelines.demo.run_demo): its evaluations are rewritten on a rerun
    bm25 = run_beir_eval(BeirEvalConfig(out_dir=str(out / "bm25"), retriever="bm25", **common), overwrite=True)

    console.print("[bold cyan]inference-free sparse model[/]: short training on the train split "
                  f"({settings.sparse.steps} steps, ensemble distillation + IDF-aware FLOPS)")
    shutil.rmtree(out / "cache", ignore_errors=True)  # mining caches are keyed by folder name, not content
    trained = train_sparse(config.sparse_train(beir, out / "sparse-model", out / "cache"))
    console.print(f"trained in {trained.seconds:.1f} s (+{trained.setup_seconds:.1f} s setup: backbone states, "
                  f"BM25 + dense candidates); model at {trained.model_dir}", soft_wrap=True)
    console.print("[bold cyan]encoding the corpus into a Lucene impact index[/] and searching with IDF query weights")
    sparse = run_beir_eval(BeirEvalConfig(out_dir=str(out / "sparse"), retriever="sparse",
                                          model=str(trained.model_dir), **common), overwrite=True)

    results = {"bm25": bm25, "sparse": sparse}
    rows = [{"retriever": name, **{m: r.evaluation.aggregate[m] for m in settings.measures}}
            for name, r in results.items()]
    table = Table(title=f"BEIR-style evaluation on the demo corpus (test split, {len(dataset.qrels)} queries)")
    for column in rows[0]:
        table.add_column(column, justify="left" if column == "retriever" else "right")
    for row in rows:
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()))
    console.print(table)
    model = load_sparse_encoder(trained.model_dir)
    vocabulary = len(mlm_parts(model)[0].tokenizer)
    active = sparse.index.get("avg_active_terms_indexed", float("nan"))
    console.print(f"sparse documents: {active:.1f} active terms on average (of a {vocabulary:,}-wordpiece vocabulary)")

    runs = {name: read_trec_run(r.run_path) for name, r in results.items()}
    examples = _show_queries(console, dataset, runs, settings.show_queries, model, query_weights)
    last = trained.log[-1] if trained.log else {}
    outcome.metrics["retrieval"] = {
        **{name: r.evaluation.aggregate for name, r in results.items()},
        "sparse_training": {"steps": len(trained.log), "train_seconds": trained.seconds,
                            "setup_seconds": trained.setup_seconds, "final": last,
                            "model_dir": str(trained.model_dir)},
        "sparse_index": {**sparse.timings, **sparse.index},
        "bm25_timings": bm25.timings,
    }
    outcome.figures["sparse_log"] = trained.log
    outcome.examples["queries"] = examples
    return DomainRuns(qrels=dataset.qrels, runs=runs, qrels_path=beir / "qrels" / "test.tsv",
                      run_paths={name: r.run_path for name, r in results.items()})


def _ranked(run: Mapping[str, float], depth: int) -> list[tuple[str, float]]:
    return sorted(run.items(), key=lambda item: (-item[1], item[0]))[:depth]


def _show_queries(console: Console, dataset: Any, runs: Mapping[str, Mapping[str, Mapping[str, float]]],
                  count: int, model: Any, query_weights: Any) -> list[dict[str, Any]]:
    shown = []
    for qid in list(dataset.qrels)[:count]:
        text = dataset.queries[qid]
        weights = query_weights(model, {qid: text})[qid]
        vector = ", ".join(f"{token}:{weight:.2f}" for token, weight in sorted(weights.items(), key=lambda x: -x[1]))
        table = Table(title=f"query {qid}: {text!r}; sparse query vector (IDF only, no network): {vector}")
        for column in ("rank", "BM25 doc", "grade", "sparse doc", "grade "):
            table.add_column(column)
        lists = {name: _ranked(run.get(qid, {}), 5) for name, run in runs.items()}
        for rank in range(5):
            cells = [str(rank + 1)]
            for name in ("bm25", "sparse"):
                doc = lists[name][rank][0] if rank < len(lists[name]) else ""
                grade = dataset.qrels[qid].get(doc, 0) if doc else ""
                cells += [f"{doc} {dataset.corpus[doc].title!r}" if doc else "", str(grade)]
                shown.append({"query": qid, "text": text, "retriever": name, "rank": rank + 1, "doc": doc,
                              "title": dataset.corpus[doc].title if doc else "", "grade": grade})
            table.add_row(*cells)
        console.print(table)
    return shown
