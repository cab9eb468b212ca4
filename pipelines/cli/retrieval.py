"""``regkit retrieval``: Lucene indexes (BM25, or learned sparse with ``--model``), search, sparse-model training."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from pipelines.cli._config import config_option

app = typer.Typer(help="Lucene indexes (BM25, or learned sparse impact indexes), batch search, and training of "
                       "the inference-free sparse retriever.", no_args_is_help=True)
console = Console()


@app.command("index")
def index_command(
    config: Path = config_option(),
    data: Path = typer.Option(..., "--data", help="BEIR folder (its corpus.jsonl is indexed)."),
    index: Path = typer.Option(..., "--index", help="Output index folder."),
    threads: int = typer.Option(2, "--threads", help="Indexing threads."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an existing regkit index (a folder without regkit-index.json never is)."
    ),
    model: Path = typer.Option(None, "--model", help="Inference-free sparse model folder: build an impact index."),
    opensearch: Path = typer.Option(None, "--opensearch-bulk", help="With --model: also write OpenSearch NDJSON."),
    shard_size: int = typer.Option(1024, "--shard-size", help="With --model: documents per resumable shard."),
    force: bool = typer.Option(False, "--force", help="Take over an index lock held from another host."),
) -> None:
    """BM25 "flat" index of a BEIR corpus, or (``--model``) a Lucene impact index of learned sparse vectors.

    The index is locked while it is built (``.<index>.lock`` beside it) and published by one rename with
    ``_SUCCESS.json`` inside; with ``--model``, rerunning a killed command reuses the shards already encoded.
    An existing index is replaced only with ``--overwrite``, and only when it is a regkit index.
    """
    from common_regs.run_dir import OutputLock, lock_path_for, remove_stale_temporaries
    from retrieval.beir import read_corpus
    from retrieval.index import build_bm25_index, read_index_metadata

    if not data.is_dir():
        raise typer.BadParameter(f"{data}: not a BEIR dataset folder (directory not found).", param_hint="--data")
    corpus = read_corpus(data / "corpus.jsonl")
    with OutputLock(lock_path_for(index, inside=False), force=force):
        remove_stale_temporaries(index)  # index folders of killed builds (we hold the lock: none is live)
        if model is None:
            build_bm25_index(corpus, index, threads=threads, overwrite=overwrite)
            console.print(f"BM25 index at {index}: {read_index_metadata(index)['documents']:,} documents")
            return
        from retrieval.encoder import load_sparse_encoder
        from retrieval.resumable_encoding import encoding_work_dir
        from retrieval.sparse_index import index_with_model, write_opensearch_bulk

        documents = {doc_id: doc.contents for doc_id, doc in corpus.items()}
        vectors, stats, info = index_with_model(load_sparse_encoder(model), documents, index, threads=threads,
                                                overwrite=overwrite, work_dir=encoding_work_dir(index),
                                                shard_size=shard_size, inputs=[data / "corpus.jsonl", model])
    if opensearch is not None:
        write_opensearch_bulk(vectors, opensearch, index_name=data.name.lower())
    console.print(f"impact index at {index}: {read_index_metadata(index)['documents']:,} documents, "
                  f"{info['avg_active_terms_indexed']:.1f} active terms/doc, {stats.truncated:,} truncated, "
                  f"{stats.empty:,} empty")


@app.command("search")
def search_command(
    config: Path = config_option(),
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


@app.command("train")
def train_command(
    config: Path = typer.Option(..., "--config", help="YAML training config (see pipelines/configs/sparse_*.yaml)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config value: key=value, YAML-parsed "
                                                         "(repeatable), e.g. --set model.head_bias=-4.0."),
    out: Path = typer.Option(None, "--out", help="Override the config's out_dir (same as --set out_dir=...)."),
    steps: int = typer.Option(None, "--steps", help="Override the config's steps (same as --set steps=...)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Retrain into a finished out_dir (regkit's only)."),
    force: bool = typer.Option(False, "--force", help="Take over an out_dir lock held from another host."),
) -> None:
    """Train an inference-free learned sparse retriever (IDF-aware FLOPS, ensemble KD); saves <out_dir>/model.

    ``out_dir`` is locked while training and marked finished (``_SUCCESS.json``) at the end; a finished one is
    refused unless ``--overwrite``, a non-empty folder regkit did not write is refused always. With
    ``checkpoint_every``, rerunning the command of an unfinished run resumes it from its newest checkpoint.
    Regularizers come from the config's ``hooks`` (docs/hooks.md).
    """
    import json
    from dataclasses import asdict

    from pipelines.run_config import load_sparse_train_config
    from pipelines.run_guard import guarded_run_dir
    from pipelines.retrieval_run import train_sparse

    options = {"out_dir": None if out is None else str(out), "steps": steps}
    sets = [f"{key}={json.dumps(value)}" for key, value in options.items() if value is not None]
    resolved = load_sparse_train_config(config, [*overrides, *sets])  # the options are the last overrides
    with guarded_run_dir(resolved.out_dir, config=asdict(resolved), overwrite=overwrite, force=force,
                         extra={"job": "retrieval train"}):
        result = train_sparse(resolved)
    console.print(f"model at {result.model_dir} ({result.seconds:.0f} s training, {result.setup_seconds:.0f} s setup)")
