"""Step 2 of the demo: recommenders on the demo log (train, serve from FAISS, show, evaluate with head/tail slices).

Every model is one :func:`pipelines.recsys_run.train_run` on the same per-user random split (written once to
``<out>/split/{train,test}.parquet``), with early stopping on a validation split carved from the training side
(``eval.refit: false``: the served model is the best validation epoch). For the A/B step each model's top-K lists
for the test users are written as a TREC run (``<out>/<model>/test.run``) next to ``<out>/test_qrels.tsv``, so
``regkit ab compare`` can redo any comparison. A model's folder must lie inside ``<out>``: its name is checked before
anything is written (an absolute name or ``..`` would otherwise point the overwrite of a model run elsewhere).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl
import torch
from rich.console import Console
from rich.table import Table

from common_regs.io import atomic_write_text
from common_regs.output_folders import check_name, path_inside
from pipelines.demo_outcome import DemoOutcome, DomainRuns
from pipelines.run_config import DemoConfig
from pipelines.run_config.demo import DemoRecsys

logger = logging.getLogger(__name__)

__all__ = ["metric_rows", "recommendation_run", "run_recsys"]

SHOWN_METRICS = ("R@10", "R@20", "nDCG@10", "nDCG@20", "head/R@20", "tail/R@20", "coverage@20")


def recommendation_run(service: Any, test: pl.DataFrame, k: int) -> dict[str, dict[str, float]]:
    """Top-``k`` lists (seen items excluded) of the test users as a run (ids as in ``pipelines.evaluation.recsys``)."""
    from pipelines.evaluation.recsys import run_from_lists

    users = test["user_id"].unique(maintain_order=True).to_list()
    ranked = service.recommend(users, k, exclude_seen=True)
    return run_from_lists(users, [[item for item, _ in row] for row in ranked])


def _nonzero_share(model: torch.nn.Module) -> tuple[int, float]:
    total = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())
    return total, nonzero / max(total, 1)


def run_recsys(
    config: DemoConfig, data_dir: Path, out: Path, console: Console, outcome: DemoOutcome
) -> DomainRuns:
    """Train, serve, show and evaluate every configured model; fills ``outcome`` (metrics, figures, examples)."""
    from pipelines.evaluation.recsys import qrels_from_log
    from pipelines.recsys_run import train_run
    from recsys.data import scan_log
    from recsys.serving import Recommender
    from recsys.splits import random_holdout_split
    from retrieval.runs import write_trec_run

    rec = config.recsys
    run_dirs = {name: path_inside(out, check_name(name, "`recsys.models` key")) for name in rec.named()}
    split = random_holdout_split(scan_log(data_dir / "recsys" / "interactions.parquet"),
                                 test_fraction=rec.split.test_fraction, seed=rec.split.seed)
    split.check()
    paths = split.write(out / "split")
    test = pl.read_parquet(paths["test"])
    console.print(f"split: {split.name}: train {pl.scan_parquet(paths['train']).select(pl.len()).collect().item():,} "
                  f"rows, test {test.height:,} rows ({test['user_id'].n_unique():,} users)")
    k = max(rec.ks)
    metrics: dict[str, Any] = {}
    runs: dict[str, dict[str, dict[str, float]]] = {}
    run_paths: dict[str, Path] = {}
    services: dict[str, Any] = {}
    for name, run_dir in run_dirs.items():
        console.print(f"[bold cyan]training {name}[/]")
        started = time.perf_counter()
        tables = {side: data_dir / "recsys" / f"{side}.parquet" for side in ("users", "items")}
        run_config = config.recsys_run(name, {**paths, **tables})
        logger.info("demo recsys model %s: %s", name, run_config.model)
        report = train_run(run_config, output_dir=run_dir, overwrite=True)
        service = Recommender.load(run_dir / "model")
        parameters, nonzero = _nonzero_share(service.model)
        runs[name] = recommendation_run(service, test, k)
        run_paths[name] = write_trec_run(runs[name], run_dir / "test.run", tag=name)
        services[name] = service
        validation = report.get("validation", {})
        metrics[name] = {
            "test": {key: value for key, value in report["test"].items() if isinstance(value, int | float)},
            "best_epoch": validation.get("best_epoch"),
            "history": validation.get("history", []),
            "parameters": parameters,
            "nonzero_share": nonzero,
            "train_seconds": validation.get("train_seconds", report["train"]["train_seconds"]),
            "seconds": time.perf_counter() - started,
            "ssl_mi": report.get("ssl", {}).get("mi"),
            "ssl_mi_weighting": report.get("ssl", {}).get("mi_weighting"),
            "run_dir": str(run_dir),
        }
    qrels = qrels_from_log(test)
    qrels_path = atomic_write_text(out / "test_qrels.tsv", "query-id\tcorpus-id\tscore\n" + "".join(
        f"{user}\t{item}\t{grade}\n" for user, items in qrels.items() for item, grade in items.items()))
    _print_metrics(console, metrics)
    outcome.examples["recommendations"] = _show_users(console, rec, services, data_dir, test)
    outcome.metrics["recsys"] = metrics
    return DomainRuns(qrels=qrels, runs=runs, qrels_path=qrels_path, run_paths=run_paths)


def metric_rows(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per model: test metrics, parameter count, share of non-zero parameters, training time."""
    rows = []
    for name, entry in metrics.items():
        row: dict[str, Any] = {"model": name}
        row.update({key: entry["test"][key] for key in SHOWN_METRICS if key in entry["test"]})
        row.update({"parameters": entry["parameters"], "non-zero": entry["nonzero_share"],
                    "best epoch": entry["best_epoch"] if entry["best_epoch"] is not None else "",
                    "train s": f"{entry['train_seconds']:.1f}"})
        rows.append(row)
    return rows


def _print_metrics(console: Console, metrics: Mapping[str, Any]) -> None:
    rows = metric_rows(metrics)
    table = Table(title="recommenders on the held-out test interactions (full catalogue, seen items excluded)")
    for column in rows[0]:
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in rows:
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)
                        for v in row.values()))
    console.print(table)
    console.print("head = the 20% most popular items in training, tail = the rest; non-zero = share of non-zero "
                  "parameters (DSL keeps its density budget)")


def _show_users(console: Console, rec: DemoRecsys, services: Mapping[str, Any], data_dir: Path,
                test: pl.DataFrame) -> list[dict[str, Any]]:
    items = pl.read_parquet(data_dir / "recsys" / "items.parquet")
    info = {row["item_id"]: row for row in items.iter_rows(named=True)}
    held_out: dict[Any, set] = {}
    for user, item in zip(test["user_id"].to_list(), test["item_id"].to_list(), strict=True):
        held_out.setdefault(user, set()).add(item)
    name = next((n for n in ("two_tower_cfm", *services) if n in services), None)
    shown = []
    for user in rec.show_users:
        ranked = services[name].recommend([user], rec.top_k, exclude_seen=True)[0]
        table = Table(title=f"top-{rec.top_k} for user {user} ({name}); ✓ = a held-out test item")
        for column in ("rank", "item", "genres", "studio", "year", "score", "held out"):
            table.add_column(column)
        rows = []
        for rank, (item, score) in enumerate(ranked, start=1):
            meta = info.get(item, {})
            row = {"user": user, "rank": rank, "item": item, "genres": ", ".join(meta.get("genres") or []),
                   "studio": meta.get("studio", ""), "year": str(meta.get("year", "")), "score": round(score, 4),
                   "held out": "✓" if item in held_out.get(user, set()) else ""}
            rows.append(row)
            table.add_row(*(str(row[c]) for c in ("rank", "item", "genres", "studio", "year", "score", "held out")))
        console.print(table)
        shown += rows
    return shown
