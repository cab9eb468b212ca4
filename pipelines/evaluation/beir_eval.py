"""End-to-end BEIR evaluation of a first-stage retriever: load → index → search → run file → metrics.json.

``run_beir_eval`` is what ``regkit beir eval`` calls. ``out_dir`` is a run folder
(:func:`pipelines.run_guard.guarded_run_dir`): a finished one (``_SUCCESS.json``) is refused unless ``overwrite``, one
that regkit did not write is refused always. Outputs in ``out_dir``:

* ``run.trec``: the top-k run (TREC format, trec_eval order);
* ``metrics.json``: aggregate and per-query metrics, dataset counts, timings, the index's statistics (``index``:
  its folder and what the retriever reports, e.g. document count), the resolved config, and the hits
  whose id is their query id (``identical_id_hits``: how many, how many judged relevant, dropped or kept);
* ``report.md`` / ``report.html`` (metric table, timings, per-query histogram; provenance and data fingerprint);
* ``resolved_config.yaml`` and ``run.json`` (versions, git commit, config);
* the index it built, in the retriever's ``index_folder`` (``index/`` for BM25, ``dense-index/`` for the dense
  baseline, ``impact-index/`` for the inference-free sparse model), reusable with
  ``regkit retrieval search --retriever NAME``;
* ``_STARTED.json`` first and ``_SUCCESS.json`` last (config hash, versions, time).
"""

from __future__ import annotations

import logging
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from common_regs.io import atomic_write_text
from pipelines.evaluation.metrics import DEFAULT_MEASURES, Evaluation, evaluate, parse_measures
from pipelines.provenance import write_run_metadata
from pipelines.report import Report, ReportPaths, histogram_plot
from pipelines.run_guard import guarded_run_dir
from retrieval.beir import BeirDataset, load_beir
from retrieval.retriever import Retriever, build_retriever, check_run
from retrieval.runs import write_trec_run

logger = logging.getLogger(__name__)

__all__ = ["BeirEvalConfig", "BeirEvalResult", "run_beir_eval"]

_RETRIEVER_OPTIONS = ("k1", "b", "threads", "search_threads", "model", "batch_size", "idf", "states_dir")


@dataclass
class BeirEvalConfig:
    """Everything ``regkit beir eval`` needs; defaults are Pyserini's BEIR regression settings.

    Args:
        data: BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/{split}.tsv``).
        out_dir: output folder.
        retriever: a registered retriever name (:func:`retrieval.retriever.available_retrievers`): ``bm25`` (Lucene
            flat index), ``dense`` (all-MiniLM-L6-v2 + FAISS flat IP), ``sparse`` (an inference-free sparse encoder
            folder, ``model``: documents encoded into a Lucene impact index, queries = IDF weights of their
            wordpieces), or one registered with :func:`retrieval.retriever.register_retriever`.
        split: qrels split. Default ``test`` (BEIR convention).
        k: hits per query. Default 1000 (source: Pyserini/BEIR runs).
        measures: ir-measures names.
        k1, b: BM25 parameters. Defaults 0.9 / 0.4 (source: Pyserini BEIR ``flat`` regressions).
        threads: indexing threads. Default 2.
        search_threads: ``bm25`` / ``sparse`` search threads. Default 1: Lucene searched directly, faster than
            Pyserini's batch executor on two threads (docs/speed.md); larger machines may gain from more.
        model: sentence-transformers model for ``dense`` (None: the bundled all-MiniLM-L6-v2); required for
            ``sparse`` (a folder written by ``regkit retrieval train``).
        batch_size: dense encoding batch size.
        idf: ``sparse`` query weights: ``model`` (the IDF stored in the model) or ``corpus`` (BM25 IDF recomputed
            over this dataset's corpus, e.g. zero-shot on a new collection). Default "model".
        states_dir: ``sparse`` with a document mixture (``regkit retrieval adapt``): keep the corpus' backbone
            states here, so the next evaluation of the same corpus skips the transformer pass. Default None.
        ignore_identical_ids: drop hits whose id equals the query id. Default True (source: BEIR); set False for
            collections whose query and document ids merely share a numbering (Cranfield, CISI, ADI, MEDLINE).
            Dropped hits that qrels judge relevant are counted in ``metrics.json`` (``identical_id_hits``) and
            logged as a warning.

    Note:
        ``k1``, ``b``, ``threads``, ``search_threads``, ``model``, ``batch_size``, ``idf`` and ``states_dir`` are
        retriever options: each goes to the retriever's constructor when it takes it, and is validated there. One set
        to a value other than its default that the chosen retriever does not take is an error rather than silently
        ignored.
    """

    data: str
    out_dir: str
    retriever: str = "bm25"
    split: str = "test"
    k: int = 1000
    k1: float = 0.9
    b: float = 0.4
    threads: int = 2
    search_threads: int = 1
    measures: list[str] = field(default_factory=lambda: list(DEFAULT_MEASURES))
    model: str | None = None
    batch_size: int = 64
    idf: Literal["model", "corpus"] = "model"
    states_dir: str | None = None
    ignore_identical_ids: bool = True

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"`k` must be >= 1, got {self.k}.")
        parse_measures(self.measures)  # fail before hours of indexing
        self.make_retriever()  # unknown name or bad option: fail before loading the dataset

    def make_retriever(self) -> Retriever:
        """The configured retriever, built through the registry (cheap: models load when indexing starts)."""
        options = {name: getattr(self, name) for name in _RETRIEVER_OPTIONS}
        defaults = {f.name: f.default for f in fields(self) if f.default is not MISSING}
        explicit = [name for name, value in options.items() if value != defaults[name]]
        return build_retriever(self.retriever, options, explicit=explicit)


@dataclass(frozen=True)
class BeirEvalResult:
    """What ``regkit beir eval`` produced: the evaluation, the run and metrics files, timings and index statistics."""

    evaluation: Evaluation
    run_path: Path
    metrics_path: Path
    timings: dict[str, float]
    index: dict[str, Any] = field(default_factory=dict)


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
    retriever = config.make_retriever()
    index_dir = out_dir / retriever.index_folder
    started = time.perf_counter()
    index = {"folder": retriever.index_folder, **retriever.index(dataset.corpus, index_dir, overwrite=True)}
    indexed = time.perf_counter()
    queries = dataset.split_queries
    run = check_run(config.retriever, retriever.search(index_dir, queries, config.k), queries, config.k)
    timings = {"index_s": indexed - started, "search_s": time.perf_counter() - indexed}
    evaluation = evaluate(dataset.qrels, run, config.measures, ignore_identical_ids=config.ignore_identical_ids)
    identical = _identical_id_hits(dataset.qrels, run, dropped=config.ignore_identical_ids)
    run_path = write_trec_run(run, out_dir / "run.trec", tag=f"regkit-{config.retriever}")
    resolved = asdict(config)
    payload = {
        "dataset": {"name": dataset.name, "path": str(Path(config.data).resolve()), **dataset.summary()},
        "retriever": config.retriever,
        "config": resolved,
        "timings": timings,
        "index": index,
        "queries_without_results": sorted(qid for qid in dataset.qrels if not run.get(qid)),
        "identical_id_hits": identical,
        **evaluation.as_dict(),
    }
    metrics_path = _write_report(dataset, config, evaluation, payload, out_dir).metrics
    atomic_write_text(out_dir / "resolved_config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    write_run_metadata(out_dir, config=resolved)
    return BeirEvalResult(evaluation=evaluation, run_path=run_path, metrics_path=metrics_path, timings=timings,
                          index=index)

