"""``regkit retrieval``: build a Lucene BM25 index from a BEIR corpus and search it into a TREC run file."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(help="Lucene indexes (BM25 through Pyserini) and batch search.", no_args_is_help=True)
console = Console()


@app.command("index")
def index_command(
    data: Path = typer.Option(..., "--data", help="BEIR folder (its corpus.jsonl is indexed)."),
    index: Path = typer.Option(..., "--index", help="Output index folder."),
    threads: int = typer.Option(2, "--threads", help="Indexing threads."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing index folder."),
) -> None:
    """BM25 "flat" index (title + text in one field) of a BEIR corpus."""
    from retrieval.beir import read_corpus
    from retrieval.index import build_bm25_index, read_index_metadata

    if not data.is_dir():
        raise typer.BadParameter(f"{data}: not a BEIR dataset folder (directory not found).", param_hint="--data")
    build_bm25_index(read_corpus(data / "corpus.jsonl"), index, threads=threads, overwrite=overwrite)
    console.print(f"BM25 index at {index}: {read_index_metadata(index)['documents']:,} documents")


@app.command("search")
def search_command(
    index: Path = typer.Option(..., "--index", help="A BM25 index folder (regkit retrieval index)."),
    queries: Path = typer.Option(..., "--queries", help="BEIR queries.jsonl, or a BEIR folder (its split's queries)."),
    out: Path = typer.Option(..., "--out", help="Output TREC run file."),
    split: str = typer.Option("test", "--split", help="With a BEIR folder: search the queries judged in this split."),
    k: int = typer.Option(1000, "--k", help="Hits per query."),
    k1: float = typer.Option(0.9, "--k1", help="BM25 k1."),
    b: float = typer.Option(0.4, "--b", help="BM25 b."),
    threads: int = typer.Option(2, "--threads", help="Search threads."),
) -> None:
    """Batch BM25 search; writes a TREC run (trec_eval order)."""
    from retrieval.beir import load_beir, read_queries
    from retrieval.runs import write_trec_run
    from retrieval.search import Bm25Searcher

    texts = load_beir(queries, split=split).split_queries if queries.is_dir() else read_queries(queries)[0]
    with Bm25Searcher(index, k1=k1, b=b) as searcher:
        run = searcher.search(texts, k=k, threads=threads)
    write_trec_run(run, out, tag="regkit-bm25")
    empty = sum(1 for docs in run.values() if not docs)
    console.print(f"{len(run):,} queries searched ({empty:,} without results) → {out}")
