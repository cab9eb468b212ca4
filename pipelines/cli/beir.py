"""``regkit beir``: evaluate a first-stage retriever on a BEIR dataset (run file + metrics.json + table)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from pipelines.cli._config import config_option
from retrieval.retriever import available_retrievers

app = typer.Typer(help="BEIR evaluation of first-stage retrievers.", no_args_is_help=True)
console = Console()


def print_metrics(title: str, aggregate: dict[str, float]) -> None:
    """One-row table of aggregate metrics."""
    table = Table(title=title)
    for name in aggregate:
        table.add_column(name, justify="right")
    table.add_row(*(f"{value:.4f}" for value in aggregate.values()))
    console.print(table)


@app.command("eval")
def eval_command(
    config: Path = config_option(),
    data: Path = typer.Option(..., "--data", help="BEIR folder with corpus.jsonl, queries.jsonl, qrels/<split>.tsv."),
    retriever: str = typer.Option(
        "bm25", "--retriever", help=f"Registered retriever: {', '.join(available_retrievers())} (its options: the "
        "flags below that it takes; one it does not take is refused)."
    ),
    split: str = typer.Option("test", "--split", help="qrels split to evaluate."),
    out: Path = typer.Option(..., "--out", help="Output folder: run.trec, metrics.json, the index."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Rewrite a finished output folder (only a folder regkit wrote is ever rewritten)."
    ),
    k: int = typer.Option(1000, "--k", help="Hits per query."),
    k1: float = typer.Option(0.9, "--k1", help="BM25 k1 (Pyserini BEIR flat regression: 0.9)."),
    b: float = typer.Option(0.4, "--b", help="BM25 b (Pyserini BEIR flat regression: 0.4)."),
    threads: int = typer.Option(2, "--threads", help="Indexing threads."),
    search_threads: int = typer.Option(
        1, "--search-threads", help="bm25 / sparse search threads (1: Lucene directly; more: Pyserini's executor)."
    ),
    measures: str = typer.Option("nDCG@10,R@100,RR@10,AP,P@10", "--measures", help="Comma-separated measures."),
    model: str = typer.Option(
        None, "--model", help="dense: model (default bundled all-MiniLM-L6-v2); sparse: folder from retrieval train."
    ),
    idf: str = typer.Option("model", "--idf", help="sparse query weights: model (stored IDF) or corpus (recompute)."),
    states_dir: Path = typer.Option(
        None, "--states-dir", help="sparse, adapted model: keep the corpus' backbone states here for the next eval."
    ),
    ignore_identical_ids: bool = typer.Option(
        True, "--ignore-identical-ids/--keep-identical-ids", help="BEIR rule: drop hits whose id is the query id."
    ),
) -> None:
    """Index the corpus, search the split's queries, write run.trec and metrics.json, print the metrics.

    A finished ``--out`` (``_SUCCESS.json``) is refused unless ``--overwrite``; a non-empty folder regkit did not
    write is refused always.
    """
    from pipelines.evaluation.beir_eval import BeirEvalConfig, run_beir_eval

    config = BeirEvalConfig(
        data=str(data), out_dir=str(out), retriever=retriever, split=split, k=k, k1=k1, b=b, threads=threads,
        search_threads=search_threads, measures=[m.strip() for m in measures.split(",") if m.strip()], model=model,
        idf=idf, states_dir=str(states_dir) if states_dir is not None else None,
        ignore_identical_ids=ignore_identical_ids,
    )
    result = run_beir_eval(config, overwrite=overwrite)
    print_metrics(f"{data.name} ({split}) {retriever}", result.evaluation.aggregate)
    console.print(f"run: {result.run_path}  metrics: {result.metrics_path}")
