"""End-to-end BEIR evaluation of a first-stage retriever: load → index → search → run file → metrics.json.

``run_beir_eval`` is what ``regkit beir eval`` calls. ``out_dir`` is a run folder
(:func:`pipelines.run_guard.guarded_run_dir`): a finished one (``_SUCCESS.json``) is refused unless ``overwrite``, one
that regkit did not write is refused always. Outputs in ``out_dir``:

* ``run.trec``: the top-k run (TREC format, trec_eval order);
* ``metrics.json``: aggregate and per-query metrics, dataset counts, timings, the resolved config, and the hits
  whose id is their query id (``identical_id_hits``: how many, how many judged relevant, dropped or kept);
* ``report.md`` / ``report.html`` (metric table, timings, per-query histogram; provenance and data fingerprint);
* ``resolved_config.yaml`` and ``run.json`` (versions, git commit, config);
* the index it built (``index/`` for BM25, ``dense-index/`` for the dense baseline, ``impact-index/`` for the
  inference-free sparse model), reusable with ``regkit retrieval search``;
* ``_STARTED.json`` first and ``_SUCCESS.json`` last (config hash, versions, time).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from common_regs.io import atomic_write_text
from pipelines.evaluation.metrics import DEFAULT_MEASURES, Evaluation, evaluate, parse_measures
from pipelines.provenance import write_run_metadata
from pipelines.report import Report, ReportPaths, histogram_plot
from pipelines.run_guard import guarded_run_dir
from retrieval.beir import BeirDataset, load_beir
from retrieval.runs import write_trec_run

logger = logging.getLogger(__name__)

__all__ = ["RETRIEVERS", "BeirEvalConfig", "BeirEvalResult", "run_beir_eval"]

Retriever = Literal["bm25", "dense", "sparse"]
RETRIEVERS: tuple[str, ...] = ("bm25", "dense", "sparse")


@dataclass
class BeirEvalConfig:
    """Everything ``regkit beir eval`` needs; defaults are Pyserini's BEIR regression settings.

    Args:
        data: BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/{split}.tsv``).
        out_dir: output folder.
        retriever: ``bm25`` (Lucene flat index), ``dense`` (all-MiniLM-L6-v2 + FAISS flat IP) or ``sparse``
            (an inference-free sparse encoder folder, ``model``: documents encoded into a Lucene impact index,
            queries = IDF weights of their wordpieces).
        split: qrels split. Default ``test`` (BEIR convention).
        k: hits per query. Default 1000 (source: Pyserini/BEIR runs).
        k1, b: BM25 parameters. Defaults 0.9 / 0.4 (source: Pyserini BEIR ``flat`` regressions).
        threads: indexing / search threads.
        measures: ir-measures names.
        model: sentence-transformers model for ``dense`` (None: the bundled all-MiniLM-L6-v2); required for
            ``sparse`` (a folder written by ``regkit retrieval train``).
        batch_size: dense encoding batch size.
        idf: ``sparse`` query weights: ``model`` (the IDF stored in the model) or ``corpus`` (BM25 IDF recomputed
            over this dataset's corpus, e.g. zero-shot on a new collection). Default "model".
        ignore_identical_ids: drop hits whose id equals the query id. Default True (source: BEIR); set False for
            collections whose query and document ids merely share a numbering (Cranfield, CISI, ADI, MEDLINE).
            Dropped hits that qrels judge relevant are counted in ``metrics.json`` (``identical_id_hits``) and
            logged as a warning.
    """

    data: str
    out_dir: str
    retriever: Retriever = "bm25"
    split: str = "test"
    k: int = 1000
    k1: float = 0.9
    b: float = 0.4
    threads: int = 2
    measures: list[str] = field(default_factory=lambda: list(DEFAULT_MEASURES))
    model: str | None = None
    batch_size: int = 64
    idf: Literal["model", "corpus"] = "model"
    ignore_identical_ids: bool = True

    def __post_init__(self) -> None:
        if self.retriever not in RETRIEVERS:
            raise ValueError(f"`retriever` must be one of {list(RETRIEVERS)}, got {self.retriever!r}.")
        if self.k < 1:
            raise ValueError(f"`k` must be >= 1, got {self.k}.")
        if self.threads < 1:
            raise ValueError(f"`threads` must be >= 1, got {self.threads}.")
        if self.retriever == "sparse" and not self.model:
            raise ValueError("`model` is required with retriever 'sparse' (a folder from `regkit retrieval train`).")
        if self.idf not in ("model", "corpus"):
            raise ValueError(f"`idf` must be 'model' or 'corpus', got {self.idf!r}.")
        parse_measures(self.measures)  # fail before hours of indexing


@dataclass(frozen=True)
class BeirEvalResult:
    evaluation: Evaluation
    run_path: Path
    metrics_path: Path
    timings: dict[str, float]


def _bm25_run(config: BeirEvalConfig, dataset: BeirDataset, out_dir: Path) -> tuple[dict, dict[str, float]]:
    from retrieval.index import build_bm25_index
    from retrieval.search import Bm25Searcher

    started = time.perf_counter()
    index_dir = build_bm25_index(dataset.corpus, out_dir / "index", threads=config.threads, overwrite=True)
    indexed = time.perf_counter()
    with Bm25Searcher(index_dir, k1=config.k1, b=config.b) as searcher:
        run = searcher.search(dataset.split_queries, k=config.k, threads=config.threads)
    return run, {"index_s": indexed - started, "search_s": time.perf_counter() - indexed}


def _dense_run(config: BeirEvalConfig, dataset: BeirDataset, out_dir: Path) -> tuple[dict, dict[str, float]]:
    from retrieval.dense import DenseRetriever

    retriever = DenseRetriever(config.model, batch_size=config.batch_size)
    started = time.perf_counter()
    index = retriever.build_index(dataset.corpus)
    encoded = time.perf_counter()
    index.save(out_dir / "dense-index", metadata={"model": retriever.model_name}, overwrite=True)
    run = retriever.search(dataset.split_queries, index, k=config.k)
    return run, {"encode_s": encoded - started, "search_s": time.perf_counter() - encoded}


def _sparse_run(config: BeirEvalConfig, dataset, out_dir: Path) -> tuple[dict, dict[str, float]]:
    from retrieval.encoder import corpus_idf, load_sparse_encoder, mlm_parts, set_idf
    from retrieval.sparse_index import index_with_model, search_with_model

    model = load_sparse_encoder(config.model)
    if config.idf == "corpus":
        tokenizer = mlm_parts(model)[0].tokenizer
        set_idf(model, corpus_idf((doc.contents for doc in dataset.corpus.values()), tokenizer))
    started = time.perf_counter()
    documents = {doc_id: doc.contents for doc_id, doc in dataset.corpus.items()}
    _, stats, info = index_with_model(model, documents, out_dir / "impact-index", threads=config.threads,
                                      overwrite=True)
    indexed = time.perf_counter()
    run = search_with_model(model, out_dir / "impact-index", dataset.split_queries, k=config.k, threads=config.threads)
    logger.info("sparse: %s; %s", stats.as_dict(), info)
    return run, {"encode_index_s": indexed - started, "search_s": time.perf_counter() - indexed,
                 "avg_active_terms_indexed": info["avg_active_terms_indexed"],
                 "truncated_documents": stats.truncated, "empty_documents": stats.empty}


def _identical_id_hits(qrels: dict, run: dict, *, dropped: bool) -> dict:
    """Hits whose document id is their query id (BEIR's rule drops them), and which of them qrels judge relevant.

    A judged-relevant one means query and document ids only share a numbering (ADI, CISI, MEDLINE): dropping it
    lowers recall with no other sign, so it is warned about with the flag that keeps it.
    """
    hits = sorted(str(qid) for qid, docs in run.items() if any(str(did) == str(qid) for did in docs))
    relevant = [qid for qid in hits if qrels.get(qid, {}).get(qid, 0) > 0]
    if dropped and relevant:
        shown = ", ".join(relevant[:10]) + (", ..." if len(relevant) > 10 else "")
        logger.warning(
            "BEIR rule dropped %d judged-relevant hit(s) whose document id equals the query id (queries %s); they "
            "count as not retrieved. Pass --keep-identical-ids (ignore_identical_ids=False) when query and document "
            "ids only share a numbering.", len(relevant), shown,
        )
    return {"rule": "drop" if dropped else "keep", "hits": len(hits), "judged_relevant": len(relevant),
            "judged_relevant_queries": relevant, "keep_flag": "--keep-identical-ids"}


def _write_report(
    dataset: BeirDataset, config: BeirEvalConfig, evaluation: Evaluation, payload: dict, out_dir: Path
) -> ReportPaths:
    """``report.md`` / ``report.html`` (metrics, per-query distribution of the first measure) + ``metrics.json``."""
    first = next(iter(evaluation.aggregate))
    report = Report(f"BEIR {dataset.name} ({config.split}): {config.retriever}")
    report.table([{"dataset": dataset.name, "retriever": config.retriever, **evaluation.aggregate}],
                 caption=f"{len(dataset.qrels)} judged queries")
    report.table([{"step": step, "seconds": seconds} for step, seconds in payload["timings"].items()
                  if isinstance(seconds, (int, float))], caption="timings")
    report.figure(histogram_plot([values[first] for values in evaluation.per_query.values()], xlabel=first,
                                 title=f"per-query {first}", zero_line=False), caption=f"per-query {first}")
    return report.write(out_dir, metrics=payload, config=payload["config"], inputs=[Path(config.data)])


def run_beir_eval(config: BeirEvalConfig, *, overwrite: bool = False) -> BeirEvalResult:
    """Index, search and evaluate one retriever on one BEIR split; write the outputs listed in the module doc.

    Raises:
        FileExistsError: ``out_dir`` holds a finished evaluation and ``overwrite`` is false, or it is a folder
            regkit did not write (:class:`common_regs.output_folders.ForeignFolderError`, also with ``overwrite``).
    """
    dataset = load_beir(config.data, split=config.split)
    out_dir = Path(config.out_dir)
    with guarded_run_dir(out_dir, config=asdict(config), overwrite=overwrite, extra={"job": "beir eval"}):
        return _evaluate(config, dataset, out_dir)


def _evaluate(config: BeirEvalConfig, dataset: BeirDataset, out_dir: Path) -> BeirEvalResult:
    logger.info("BEIR %s (%s split): %s", dataset.name, config.split, dataset.summary())
    runner = {"bm25": _bm25_run, "dense": _dense_run, "sparse": _sparse_run}[config.retriever]
    run, timings = runner(config, dataset, out_dir)
    evaluation = evaluate(dataset.qrels, run, config.measures, ignore_identical_ids=config.ignore_identical_ids)
    identical = _identical_id_hits(dataset.qrels, run, dropped=config.ignore_identical_ids)
    run_path = write_trec_run(run, out_dir / "run.trec", tag=f"regkit-{config.retriever}")
    resolved = asdict(config)
    payload = {
        "dataset": {"name": dataset.name, "path": str(Path(config.data).resolve()), **dataset.summary()},
        "retriever": config.retriever,
        "config": resolved,
        "timings": timings,
        "queries_without_results": sorted(qid for qid in dataset.qrels if not run.get(qid)),
        "identical_id_hits": identical,
        **evaluation.as_dict(),
    }
    metrics_path = _write_report(dataset, config, evaluation, payload, out_dir).metrics
    atomic_write_text(out_dir / "resolved_config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    write_run_metadata(out_dir, config=resolved)
    return BeirEvalResult(evaluation=evaluation, run_path=run_path, metrics_path=metrics_path, timings=timings)

