"""``regkit retrieval``: index and search with any registered retriever (``--retriever``), sparse-model training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from pipelines.cli._config import config_option, options_as_overrides
from retrieval.retriever import available_retrievers

app = typer.Typer(help="Indexes and batch search with a registered retriever (BM25, dense, learned sparse), and "
                       "training of the inference-free sparse retriever.", no_args_is_help=True)
console = Console()


def _set_by_user(ctx: typer.Context) -> list[str]:
    """Options whose value is not the command's default (given on the command line or in ``--config``)."""
    return [p.name for p in ctx.command.params if p.name in ctx.params and ctx.params[p.name] != p.default]


_DEFAULT = "bm25"
_DEFAULT_WITH_MODEL = "sparse"  # `retrieval index --model DIR` without --retriever builds an impact index, as before


def _retriever_option() -> Any:
    return typer.Option(None, "--retriever", help=f"Registered retriever: {', '.join(available_retrievers())}. "
                        f"Default: {_DEFAULT}, or {_DEFAULT_WITH_MODEL} with --model.")


def _chosen(retriever: str | None, model: Path | None) -> str:
    return retriever or (_DEFAULT_WITH_MODEL if model is not None else _DEFAULT)


@app.command("index")
def index_command(
    ctx: typer.Context,
    config: Path = config_option(),
    data: Path = typer.Option(..., "--data", help="BEIR folder (its corpus.jsonl is indexed)."),
    index: Path = typer.Option(..., "--index", help="Output index folder."),
    retriever: str = _retriever_option(),
    threads: int = typer.Option(2, "--threads", help="Indexing threads."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an existing regkit index (a folder without regkit-index.json never is)."
    ),
    model: Path = typer.Option(None, "--model", help="Model of the retriever (sparse: a `retrieval train` folder)."),
    opensearch_bulk: Path = typer.Option(None, "--opensearch-bulk", help="sparse: also write OpenSearch bulk NDJSON."),
    shard_size: int = typer.Option(1024, "--shard-size", help="sparse: documents per resumable encoding shard."),
    force: bool = typer.Option(False, "--force", help="Take over an index lock held from another host."),
) -> None:
    """Index a BEIR corpus with a retriever.

    A BM25 "flat" Lucene index, a dense FAISS index, or (``--model DIR``, i.e. ``--retriever sparse``) a Lucene
    impact index of learned sparse vectors.

    The index is locked while it is built (``.<index>.lock`` beside it) and published by one rename with
    ``_SUCCESS.json`` inside; with ``sparse``, rerunning a killed command reuses the shards already encoded.
    An existing index is replaced only with ``--overwrite``, and only when it is a regkit index. An option the
    retriever does not take is refused.
    """
    from common_regs.run_dir import OutputLock, lock_path_for, remove_stale_temporaries
    from retrieval.beir import read_corpus
    from retrieval.retriever import build_retriever

    if not data.is_dir():
        raise typer.BadParameter(f"{data}: not a BEIR dataset folder (directory not found).", param_hint="--data")
    options = {"threads": threads, "model": model, "opensearch_bulk": opensearch_bulk, "shard_size": shard_size,
               "corpus_file": data / "corpus.jsonl"}
    retriever = _chosen(retriever, model)
    built = build_retriever(retriever, options, explicit=_set_by_user(ctx))
    corpus = read_corpus(data / "corpus.jsonl")
    with OutputLock(lock_path_for(index, inside=False), force=force):
        remove_stale_temporaries(index)  # index folders of killed builds (we hold the lock: none is live)
        stats = built.index(corpus, index, overwrite=overwrite)
    shown = ", ".join(f"{key} {value:,.1f}" if isinstance(value, float) else f"{key} {value:,}"
                      for key, value in stats.items())
    console.print(f"{retriever} index at {index}: {shown}", soft_wrap=True)


@app.command("search")
def search_command(
    ctx: typer.Context,
    config: Path = config_option(),
    index: Path = typer.Option(..., "--index", help="An index folder built by the same retriever."),
    queries: Path = typer.Option(..., "--queries", help="BEIR queries.jsonl, or a BEIR folder (its split's queries)."),
    out: Path = typer.Option(..., "--out", help="Output TREC run file."),
    retriever: str = _retriever_option(),
    split: str = typer.Option("test", "--split", help="With a BEIR folder: search the queries judged in this split."),
    k: int = typer.Option(1000, "--k", help="Hits per query."),
    k1: float = typer.Option(0.9, "--k1", help="BM25 k1."),
    b: float = typer.Option(0.4, "--b", help="BM25 b."),
    search_threads: int = typer.Option(
        1, "--threads", help="Search threads: 1 searches Lucene directly; more use Pyserini's parallel batch search."
    ),
    model: Path = typer.Option(None, "--model", help="Model of the retriever (sparse: the one that built --index)."),
) -> None:
    """Batch search of an index with its retriever; writes a TREC run (trec_eval order)."""
    from retrieval.beir import load_beir, read_queries
    from retrieval.retriever import build_retriever, check_run
    from retrieval.runs import write_trec_run

    options = {"k1": k1, "b": b, "search_threads": search_threads, "model": model}
    retriever = _chosen(retriever, model)
    searcher = build_retriever(retriever, options, explicit=_set_by_user(ctx))
    texts = load_beir(queries, split=split).split_queries if queries.is_dir() else read_queries(queries)[0]
    run = check_run(retriever, searcher.search(index, texts, k), texts, k)
    write_trec_run(run, out, tag=f"regkit-{retriever}")
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
    from pipelines.retrieval_run import train_sparse
    from pipelines.run_config import load_sparse_train_config

    sets = options_as_overrides(out_dir=None if out is None else str(out), steps=steps)
    resolved = load_sparse_train_config(config, [*overrides, *sets])  # the options are the last overrides
    _guarded(resolved, "retrieval train", train_sparse, overwrite=overwrite, force=force)


@app.command("adapt")
def adapt_command(
    data: Path = typer.Option(..., "--data", help="BEIR folder: only its corpus.jsonl is read, never queries/qrels."),
    out: Path = typer.Option(..., "--out", help="Output folder (the model is <out>/model)."),
    config: Path = typer.Option(None, "--config", help="Optional YAML run config: retrieval train's keys (no split) "
                                                       "and pseudo_queries (count, mix, ...)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config value: key=value, YAML-parsed "
                                                         "(repeatable), e.g. --set pseudo_queries.count=500."),
    steps: int = typer.Option(None, "--steps", help="Optimizer steps (same as --set steps=...)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Adapt again into a finished --out (regkit's only)."),
    force: bool = typer.Option(False, "--force", help="Take over an --out lock held from another host."),
) -> None:
    """Adapt the inference-free sparse retriever to a corpus without labels; saves <out>/model.

    Pseudo-queries (sentences cut from documents, titles, high-IDF keywords; docs/sparse_retrieval.md) are mined
    with BM25 and the dense model and distilled from their min-max ensemble, with the IDF-aware FLOPS penalty.
    Locking, ``--overwrite`` and resuming (every ``checkpoint_every`` = 50 steps by default) as ``retrieval train``.
    """
    from pipelines.retrieval_run import adapt_sparse
    from pipelines.run_config import load_sparse_adapt_config

    sets = options_as_overrides(data=str(data), out_dir=str(out), steps=steps)
    resolved = load_sparse_adapt_config(config, [*overrides, *sets])
    _guarded(resolved, "retrieval adapt", adapt_sparse, overwrite=overwrite, force=force)


def _guarded(resolved: Any, job: str, run: Any, *, overwrite: bool, force: bool) -> None:
    """Run ``run(resolved)`` in its locked, resumable ``out_dir`` and report where the model is."""
    from dataclasses import asdict

    from pipelines.run_guard import guarded_run_dir

    with guarded_run_dir(resolved.out_dir, config=asdict(resolved), overwrite=overwrite, force=force,
                         extra={"job": job}):
        result = run(resolved)
    console.print(f"model at {result.model_dir} ({result.seconds:.0f} s training, {result.setup_seconds:.0f} s setup)")
