"""``make demo`` (``regkit demo``): the main job on the bundled data (``data/demo``), end to end, with progress.

1. **Data** — read (or generate) the demo parquet logs and BEIR corpus, validate them, split the log per user.
2. **Recommendation** — train the configured recommenders (default: a two-tower, the same two-tower with CFM-SSL,
   and an MF-BPR trained sparse with DSL) through :func:`pipelines.recsys_run.train_run` (early stopping on a
   validation split, FAISS serving), print top-k recommendations for two users, evaluate Recall/nDCG@K with
   head/tail slices.
3. **Retrieval** — BEIR evaluation of Lucene BM25 and of an inference-free learned sparse retriever trained briefly
   on the demo corpus's train split (ensemble distillation, IDF-aware FLOPS) and encoded into a Lucene impact index.
4. **Offline A/B** — paired comparisons (:func:`pipelines.evaluation.ab.compare_runs`) of one model pair per domain.
5. **Report** — ``report.md`` + ``report.html`` (plots) + ``metrics.json`` in the output folder
   (:mod:`pipelines.demo_report`).

Configuration: ``pipelines/configs/demo.yaml`` ← ``--config FILE`` ← ``--set a.b=value``, read once into a typed
:class:`pipelines.run_config.DemoConfig` (:func:`pipelines.run_config.load_demo_config`). Every recsys model entry is
a ``regkit recsys train`` config fragment; the sparse retriever's entry holds
:class:`retrieval.sparse_config.SparseTrainConfig` fields. A model's name becomes its sub-folder, so it must be a
plain name (``[A-Za-z0-9._-]+``).

The output folder is a run folder (:func:`pipelines.run_guard.guarded_run_dir`): a finished demo is refused unless
``overwrite``, a non-empty folder regkit did not write is refused always, and ``_SUCCESS.json`` is written last.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import yaml
from rich.console import Console
from rich.table import Table

from common_regs.io import atomic_write_text
from pipelines.datasets.demo import DemoSpec, write_demo_data
from pipelines.demo_outcome import DemoOutcome
from pipelines.run_config import DemoConfig, load_demo_config
from pipelines.run_guard import guarded_run_dir

logger = logging.getLogger(__name__)

__all__ = ["DEMO_DATA", "load_demo_config", "run_demo"]

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_DATA = REPO_ROOT / "data" / "demo"


# -- running ---------------------------------------------------------------------------------------------------


@contextmanager
def _step(title: str, console: Console, timings: dict[str, float]) -> Iterator[None]:
    console.rule(f"[bold]{title}")
    started = time.perf_counter()
    yield
    timings[title] = time.perf_counter() - started
    console.print(f"[green]done[/green]: {title} in {timings[title]:.1f} s")


def _prepare_data(config: DemoConfig, out: Path) -> Path:
    data = config.data
    if data.generate is not None:
        return write_demo_data(out / "data", data.generate, overwrite=True)
    folder = Path(data.dir) if data.dir else DEMO_DATA
    needed = [folder / "recsys" / "interactions.parquet", folder / "beir" / "corpus.jsonl"]
    if not all(p.is_file() for p in needed):
        if folder.resolve() != DEMO_DATA.resolve():
            raise FileNotFoundError(f"`data.dir` {folder} lacks {[str(p) for p in needed if not p.is_file()]}.")
        logger.info("demo data missing at %s; generating it (regkit data demo)", folder)
        write_demo_data(folder, DemoSpec(), overwrite=True)
    return folder


def _print_table(console: Console, title: str, rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        return
    table = Table(title=title)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in (row.get(c, "") for c in columns)))
    console.print(table)


def run_demo(
    config: DemoConfig, out: str | Path, console: Console | None = None, *, overwrite: bool = False
) -> DemoOutcome:
    """Run the demo configured by ``config`` (:func:`load_demo_config`) into ``out``; returns what it measured.

    Raises:
        FileExistsError: ``out`` holds a finished demo and ``overwrite`` is false, or it is a non-empty folder
            regkit did not write (:class:`common_regs.output_folders.ForeignFolderError`, also with ``overwrite``).
    """
    console = console or Console(width=None if sys.stdout.isatty() else 160)  # logs and pipes: no squeezed tables
    out = Path(out)
    with guarded_run_dir(out, config=config.to_dict(), overwrite=overwrite, extra={"job": "demo"}):
        return _run_steps(config, out, console)


def _run_steps(config: DemoConfig, out: Path, console: Console) -> DemoOutcome:
    from pipelines.demo_ab import run_ab
    from pipelines.demo_recsys import run_recsys
    from pipelines.demo_report import write_demo_report
    from pipelines.demo_retrieval import run_retrieval

    outcome = DemoOutcome()
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with _step("1. data", console, timings):
        data_dir = _prepare_data(config, out)
        outcome.metrics["data"] = _describe_data(data_dir, console)
    with _step("2. recommendation: two-tower (± CFM-SSL), DSL-sparse MF, FAISS serving", console, timings):
        recsys = run_recsys(config, data_dir, out / "recsys", console, outcome)
    with _step("3. retrieval: BM25 and an inference-free learned sparse model, BEIR-style", console, timings):
        retrieval = run_retrieval(config, data_dir, out / "retrieval", console, outcome)
    with _step("4. offline A/B comparisons", console, timings):
        run_ab(config, recsys, retrieval, out / "ab", console, outcome)
    with _step("5. report", console, timings):
        outcome.metrics["timings_s"] = {**timings, "total": time.perf_counter() - started}
        atomic_write_text(out / "resolved_config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
        outcome.report = write_demo_report(out, config, outcome, inputs=[data_dir])
    total = time.perf_counter() - started
    console.print(f"demo finished in {total:.0f} s; outputs in {out.resolve()}", soft_wrap=True)
    console.print(f"report: {outcome.report.html.resolve()} (markdown: {outcome.report.markdown.resolve()})",
                  soft_wrap=True)
    return outcome


def _describe_data(data_dir: Path, console: Console) -> dict[str, Any]:
    from recsys.data import validate_log
    from retrieval.beir import load_beir

    summary = validate_log(data_dir / "recsys" / "interactions.parquet")
    items = pl.read_parquet(data_dir / "recsys" / "items.parquet")
    counts = {"interactions": summary.rows, "users": summary.users, "items": summary.items,
              "duplicate rows": summary.duplicate_rows, "item features": ", ".join(items.columns[1:])}
    for split in ("train", "test"):
        if (data_dir / "beir" / "qrels" / f"{split}.tsv").is_file():
            dataset = load_beir(data_dir / "beir", split=split)
            counts.update({f"BEIR {key}": value for key, value in dataset.summary().items()})
    console.print(f"data: {data_dir}", soft_wrap=True)
    _print_table(console, "demo data (validated)", [{"field": k, "value": v} for k, v in counts.items()])
    return counts
