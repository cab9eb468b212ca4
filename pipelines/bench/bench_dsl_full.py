"""Dynamic Sparse Learning at the paper's run shape: validation-chosen run lengths, equal-memory comparison.

Wang et al., "Dynamic Sparse Learning: A Novel Paradigm for Efficient Recommendation", WSDM 2024, arXiv:2402.02855
(:class:`common_regs.sparsity.DSL`). ``bench_dsl`` trained for a fixed 40 epochs; here every model is trained to
convergence with its run length chosen on validation, and DSL's schedule is stretched to that length.

Protocol (``run(out_dir)``):

* data: ML-100K ``u1.base`` / ``u1.test`` (every rating a positive) and LastFM (the LightGCN reference split,
  ``train`` / ``test``); all items ranked, each user's training items excluded; Recall@20 / NDCG@20 through
  :func:`pipelines.evaluation.recsys.evaluate_recommendations`;
* models (``CONFIG["models"]``): MF-BPR (one sampled negative, Adam lr 0.005, embedding L2 1e-4: the
  ``ml100k_mf_bpr.yaml`` values) and MF with in-batch softmax + logQ (cosine, τ 0.2, weight decay 1e-5: the
  ``ml100k_mf_softmax.yaml`` values), D = 64 unless a variant scales it; no learning-rate schedule;
* variants (``CONFIG["variants"]``): dense at D; DSL d = 0.2 at D; and the equal-memory pairs of the paper's
  efficiency claim, DSL d = 0.5 at 2D and d = 0.25 at 4D (the same count of active entries as dense at D);
  DSL on both embedding tables, uniform init, r 0.5 → 0.005 cosine over the whole run (the official code's
  ``CosineDecay``), ΔT = total steps / ``updates_per_run`` (the official LightGCN run, 1000 epochs of ~1,200
  steps with ΔT = 3000, makes ~400 updates), at least ``min_update_interval`` steps (the smallest ΔT of
  ``bench_dsl_interval``'s validation table; shorter intervals churn the masks and cost an update per step);
* run length, chosen without the test split: stage 1 trains on 90 % of each user's training interactions
  (:func:`recsys.splits.random_holdout_split`, seed 0) one complete run per length of ``lengths`` (epochs; the
  DSL schedule spans each run, so every candidate ends annealed), and scores the final model's validation
  Recall@20; the sweep stops at the first length that scores below the one before (doubling the run no longer
  helps); stage 2 refits on the whole training split for the best length and is tested once. Early stopping inside
  a run is not used: it would score DSL models whose mask schedule has not finished;
* reported per (dataset, model, variant), mean ± population std over seeds: test R@20 / NDCG@20, the ratio to the
  dense model's R@20, chosen epochs, active entries, bytes of the exported tables (CSR: float32 values + int32
  indices, :func:`common_regs.sparsity.sparse_table.memory_report`; float32 dense for dense), training seconds;
* overhead: epochs of the dense model and of DSL d = 0.2 (ΔT of a ``overhead_epochs``-long run) alternate in one
  process on the same batches; the ratio of median epoch seconds, and the share of the DSL epoch spent in the
  update steps.

``REGKIT_DSL_FULL_DATASETS``, ``REGKIT_DSL_FULL_MODELS``, ``REGKIT_DSL_FULL_SEEDS`` (comma lists) shrink the grid;
``REGKIT_DSL_FULL_REPORT_ONLY=1`` trains nothing and reports every finished run. Every finished stage is appended to
``out_dir/stages.jsonl`` and skipped when the benchmark is started again.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import torch

from common_regs.io import atomic_write_text
from common_regs.sparsity import DSL
from common_regs.sparsity.sparse_table import memory_report, to_sparse_table
from pipelines.bench import shared_data_dir
from pipelines.bench._recsys_hook_bench import mean_and_std
from pipelines.evaluation.recsys import evaluate_recommendations
from pipelines.provenance import run_metadata
from recsys.data import InMemoryBatches, Interactions, NegativeSampler, Vocabulary, clean_log, encode_interactions
from recsys.features import FeatureSpec, FeatureTable
from recsys.losses import EmbeddingL2
from recsys.models import build_model
from recsys.models.base import Recommender as RecModel
from recsys.serving import Recommender
from recsys.splits import random_holdout_split
from recsys.trainer import TrainConfig, Trainer

logger = logging.getLogger(__name__)

__all__ = ["CONFIG", "Variant", "dsl_schedule", "run"]

REPO = Path(__file__).resolve().parents[2]
TABLES = ("user_table.weight", "item_table.weight")
CONFIG: dict[str, Any] = {
    "datasets": ["ml100k", "lastfm"],
    "models": {
        "mf_bpr": {"model": {}, "train": {"loss": "bpr", "num_negatives": 1, "lr": 0.005}, "l2": 1e-4},
        "mf_softmax": {
            "model": {"normalize": True, "temperature": 0.2},
            "train": {"loss": "softmax", "logq": "counts", "lr": 0.005, "weight_decay": 1e-5,
                      "sparse_weight_decay": 1e-5},
            "l2": 0.0,
        },
    },
    "variants": [("dense", 1.0, 1), ("dsl", 0.2, 1), ("dsl", 0.5, 2), ("dsl", 0.25, 4)],
    "embedding_dim": 64,
    "batch_size": 1024,
    "seeds": [0],
    "validation_fraction": 0.1,
    "lengths": [5, 10, 20, 40, 80, 160],
    "updates_per_run": 400,
    "min_update_interval": 10,
    "ratio": 0.5,
    "ratio_min": 0.005,
    "overhead_epochs": 3,
    "num_threads": 1,
}


@dataclass(frozen=True)
class Variant:
    """One row of the comparison: ``method`` (dense / dsl) at ``density`` with ``dim_factor`` × the base dim."""

    method: str
    density: float
    dim_factor: int

    @property
    def label(self) -> str:
        return "dense" if self.method == "dense" else f"dsl d={self.density} {self.dim_factor}xD"


def dsl_schedule(total_steps: int, updates_per_run: int, min_interval: int = 1) -> int:
    """ΔT for a run of ``total_steps``: ``updates_per_run`` updates spread over the run, at least ``min_interval``."""
    if min(total_steps, updates_per_run, min_interval) < 1:
        raise ValueError(
            f"`total_steps`, `updates_per_run` and `min_interval` must be >= 1, got {total_steps}, {updates_per_run}, "
            f"{min_interval}."
        )
    return max(min_interval, round(total_steps / updates_per_run))


# -- data --------------------------------------------------------------------------------------------------------


@dataclass
class _Data:
    """A train / evaluation log pair with id-only user and item feature tables."""

    train_log: pl.DataFrame
    test_log: pl.DataFrame
    users: Vocabulary
    items: Vocabulary

    def __post_init__(self) -> None:
        self.user_features = FeatureTable.build(self.users, [FeatureSpec("user_id", "id")])
        self.item_features = FeatureTable.build(self.items, [FeatureSpec("item_id", "id")])
        self.train: Interactions = encode_interactions(self.train_log, self.users, self.items, where="train")

    def carve(self, fraction: float) -> _Data:
        """Training split → (90 % train, 10 % validation) per user; the test log is not read."""
        split = random_holdout_split(self.train_log.lazy(), test_fraction=fraction)
        return _Data(split.train.collect(), split.test.collect(), self.users, self.items)


def _load(dataset: str, out_dir: Path) -> _Data:
    if dataset == "ml100k":
        from pipelines.datasets.movielens import convert_movielens_100k

        root, raw, train, test = out_dir / "data" / "ml100k", shared_data_dir() / "ml-100k", "u1.base", "u1.test"
        convert = convert_movielens_100k
    elif dataset == "lastfm":
        from pipelines.datasets.lastfm import convert_lastfm

        root, raw, train, test = out_dir / "data" / "lastfm", shared_data_dir() / "lastfm", "train", "test"
        convert = convert_lastfm
    else:
        raise ValueError(f"`dataset` must be 'ml100k' or 'lastfm', got {dataset!r}.")
    if not (root / "manifest.json").is_file():
        if not raw.is_dir():
            raise FileNotFoundError(f"{raw} not found; set REGKIT_SHARED_DATA to the folder holding it.")
        convert(raw, root, overwrite=True)
    train_log = clean_log(root / "splits" / f"{train}.parquet", where="train").collect()
    test_log = clean_log(root / "splits" / f"{test}.parquet", where="test").collect()
    both = pl.concat([train_log.select("user_id", "item_id"), test_log.select("user_id", "item_id")])
    return _Data(train_log, test_log, Vocabulary.from_values("user_id", both["user_id"]),
                 Vocabulary.from_values("item_id", both["item_id"]))


# -- one fit -----------------------------------------------------------------------------------------------------


def _trainer(data: _Data, model_key: str, variant: Variant, seed: int, epochs: int, *, schedule_epochs: int,
             validation: bool) -> tuple[Trainer, DSL | None, RecModel]:
    spec = CONFIG["models"][model_key]
    torch.manual_seed(seed)
    options = {"embedding_dim": CONFIG["embedding_dim"] * variant.dim_factor, **spec["model"]}
    model = build_model("mf", options, users=data.user_features, items=data.item_features, interactions=data.train)
    batches = InMemoryBatches(data.train, CONFIG["batch_size"], seed=seed)
    scheduler = None
    hooks: list[Any] = [EmbeddingL2(spec["l2"])] if spec["l2"] else []
    if variant.method == "dsl":
        total = len(batches) * schedule_epochs
        interval = dsl_schedule(total, CONFIG["updates_per_run"], CONFIG["min_update_interval"])
        scheduler = DSL(density=variant.density, update_interval=interval,
                        ratio=CONFIG["ratio"], ratio_min=CONFIG["ratio_min"], total_steps=total, seed=seed,
                        targets=list(TABLES))
        hooks.append(scheduler)
    config = TrainConfig(epochs=epochs, batch_size=CONFIG["batch_size"], optimizer="adam", seed=seed, eval_every=0,
                         restore_best=False, show_progress=False, **spec["train"])
    trainer = Trainer(
        model, batches, config, hooks=hooks, item_counts=data.train.item_counts(),
        negative_sampler=NegativeSampler.from_interactions(data.train, seed=seed),
        evaluate=(lambda m: _evaluate(data, m)) if validation else None,
    )
    return trainer, scheduler, model


def _evaluate(data: _Data, model: RecModel) -> dict[str, float]:
    service = Recommender(model, data.users, data.items, data.user_features, data.item_features, data.train)
    metrics = evaluate_recommendations(service, data.test_log, ks=(20,))
    return {"R@20": float(metrics["R@20"]), "nDCG@20": float(metrics["nDCG@20"])}


def _choose_epochs(data: _Data, model_key: str, variant: Variant, seed: int) -> dict[str, Any]:
    """Stage 1: one complete run per length on the validation carve; the length whose final model scores best."""
    carve = data.carve(CONFIG["validation_fraction"])
    curve: list[tuple[int, float]] = []
    seconds = 0.0
    for length in CONFIG["lengths"]:
        trainer, _, _ = _trainer(carve, model_key, variant, seed, length, schedule_epochs=length, validation=True)
        result = trainer.fit(resume=False)
        curve.append((length, float(result.history[-1]["R@20"])))
        seconds += result.train_seconds
        logger.info("dsl_full %s %s: %d epochs, validation R@20 %.4f", model_key, variant.label, *curve[-1])
        if len(curve) > 1 and curve[-1][1] < curve[-2][1]:
            break
    best = max(curve, key=lambda point: point[1])
    return {"epochs": best[0], "validation_R@20": best[1], "validation_curve": curve, "stage1_seconds": seconds}


def _refit(data: _Data, model_key: str, variant: Variant, seed: int, epochs: int) -> dict[str, Any]:
    """Stage 2: the whole training split for ``epochs``; the DSL schedule spans exactly this run."""
    trainer, scheduler, model = _trainer(data, model_key, variant, seed, epochs, schedule_epochs=epochs,
                                         validation=False)
    result = trainer.fit(resume=False)
    row: dict[str, Any] = {"steps": result.steps, "train_seconds": result.train_seconds, **_evaluate(data, model)}
    if scheduler is not None:
        tables = {name: to_sparse_table(scheduler.effective(name), scheduler.masks[name]) for name in TABLES}
        row.update(active_params=int(sum(int(scheduler.masks[n].sum()) for n in TABLES)),
                   export_bytes=memory_report(tables)["sparse_bytes"], update_interval=scheduler.update_interval,
                   dsl_updates=len(scheduler.history))
    else:
        count = int(sum(model.get_parameter(n).numel() for n in TABLES))
        row.update(active_params=count, export_bytes=4 * count)
    return row


# -- overhead ----------------------------------------------------------------------------------------------------


def _overhead(data: _Data, model_key: str) -> dict[str, Any]:
    """Dense and DSL d = 0.2 epochs alternating in one process on the same batches (per-epoch time ratio)."""
    epochs = CONFIG["overhead_epochs"]
    dense, _, _ = _trainer(data, model_key, Variant("dense", 1.0, 1), 0, epochs, schedule_epochs=epochs,
                           validation=False)
    sparse, scheduler, _ = _trainer(data, model_key, Variant("dsl", 0.2, 1), 0, epochs, schedule_epochs=epochs,
                                    validation=False)
    times: dict[str, list[float]] = {"dense": [], "dsl": [], "dsl_update_steps": []}
    for trainer in (dense, sparse):  # RegHooks.prepare runs on the first step: keep it out of the timings
        trainer.train_step(next(iter(trainer.batches.batches(0))))
    for epoch in range(epochs):
        for name, trainer in (("dense", dense), ("dsl", sparse)):
            spent, in_updates = 0.0, 0.0
            for batch in trainer.batches.batches(epoch):
                updates = len(scheduler.history) if scheduler is not None else 0
                started = time.perf_counter()
                trainer.train_step(batch)
                elapsed = time.perf_counter() - started
                spent += elapsed
                if name == "dsl" and scheduler is not None and len(scheduler.history) > updates:
                    in_updates += elapsed
            times[name].append(spent)
            if name == "dsl":
                times["dsl_update_steps"].append(in_updates)
    dense_s, dsl_s = statistics.median(times["dense"]), statistics.median(times["dsl"])
    return {"epochs_each": epochs, "dense_epoch_s": dense_s, "dsl_epoch_s": dsl_s, "ratio": dsl_s / dense_s,
            "update_steps_share": statistics.fmean(times["dsl_update_steps"]) / statistics.fmean(times["dsl"]),
            "update_interval": scheduler.update_interval if scheduler is not None else None}


# -- grid, resume, summary ---------------------------------------------------------------------------------------


def _env_list(name: str, default: Sequence[Any], cast: type) -> list[Any]:
    value = os.environ.get(name)
    return [cast(v) for v in value.split(",")] if value else list(default)


def _stages(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _append(path: Path, row: Mapping[str, Any]) -> None:
    """Append one finished stage (the file is rewritten atomically: a crash never leaves half a line)."""
    previous = path.read_text() if path.is_file() else ""
    atomic_write_text(path, previous + json.dumps(row, default=float) + "\n")


def _summary(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["model"], row["variant"]), []).append(row)
    table = []
    for (dataset, model, variant), group in groups.items():
        entry: dict[str, Any] = {"dataset": dataset, "model": model, "variant": variant, "seeds": len(group),
                                 "epochs": [g["epochs"] for g in group]}
        entry.update(mean_and_std(group, ("R@20", "nDCG@20", "train_seconds")))
        entry["active_params"] = group[0]["active_params"]
        entry["export_KiB"] = statistics.fmean(g["export_bytes"] for g in group) / 1024
        table.append(entry)
    dense = {(e["dataset"], e["model"]): e["R@20"] for e in table if e["variant"] == "dense"}
    for entry in table:
        if (entry["dataset"], entry["model"]) in dense:
            entry["R@20 / dense"] = entry["R@20"] / dense[(entry["dataset"], entry["model"])]
    return table


def _markdown(table: Sequence[Mapping[str, Any]], overhead: Mapping[str, Any]) -> str:
    lines = ["| dataset | model | variant | seeds | epochs | R@20 | NDCG@20 | R@20 / dense | active entries | "
             "exported KiB | train s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in table:
        ratio = f"{e['R@20 / dense']:.3f}" if "R@20 / dense" in e else "–"
        lines.append(
            f"| {e['dataset']} | {e['model']} | {e['variant']} | {e['seeds']} | {'/'.join(map(str, e['epochs']))} | "
            f"{e['R@20']:.4f} ± {e['R@20 std']:.4f} | {e['nDCG@20']:.4f} ± {e['nDCG@20 std']:.4f} | {ratio} | "
            f"{e['active_params']:,} | {e['export_KiB']:.0f} | {e['train_seconds']:.0f} |"
        )
    if overhead:
        lines += ["", "| dataset / model | dense epoch s | DSL d=0.2 epoch s | ratio | share of DSL epoch in updates |"
                  " ΔT |", "|---|---|---|---|---|---|"]
        lines += [f"| {key} | {o['dense_epoch_s']:.2f} | {o['dsl_epoch_s']:.2f} | {o['ratio']:.2f} | "
                  f"{o['update_steps_share']:.1%} | {o['update_interval']} |" for key, o in overhead.items()]
    return "\n".join(lines) + "\n"


def run(out_dir: str | Path) -> dict[str, Any]:
    threads = torch.get_num_threads()
    torch.set_num_threads(CONFIG["num_threads"])
    try:
        return _run(Path(out_dir))
    finally:
        torch.set_num_threads(threads)


def _run(out: Path) -> dict[str, Any]:
    started = time.perf_counter()
    datasets = _env_list("REGKIT_DSL_FULL_DATASETS", CONFIG["datasets"], str)
    models = _env_list("REGKIT_DSL_FULL_MODELS", list(CONFIG["models"]), str)
    seeds = _env_list("REGKIT_DSL_FULL_SEEDS", CONFIG["seeds"], int)
    variants = [Variant(*v) for v in CONFIG["variants"]]
    log = out / "stages.jsonl"
    done = {(r["stage"], r["dataset"], r["model"], r["variant"], r["seed"]): r for r in _stages(log)}
    report_only = os.environ.get("REGKIT_DSL_FULL_REPORT_ONLY") == "1"
    if report_only:  # summarize every finished run, train nothing
        tested = [k for k in done if k[0] == "test"]
        datasets, models, seeds = (sorted({k[i] for k in tested}) for i in (1, 2, 4))
    overhead: dict[str, Any] = {}
    for seed in [] if report_only else seeds:
        for dataset in datasets:
            data = _load(dataset, out)
            for model_key in models:
                for variant in variants:
                    key = (dataset, model_key, variant.label, seed)
                    if ("choose",) + key not in done:
                        row = {"stage": "choose", "dataset": dataset, "model": model_key, "variant": variant.label,
                               "seed": seed, **_choose_epochs(data, model_key, variant, seed)}
                        _append(log, row)
                        done[("choose",) + key] = row
                        logger.info("dsl_full choose %s: %d epochs (validation R@20 %.4f)", key, row["epochs"],
                                    row["validation_R@20"] or float("nan"))
                    if ("test",) + key not in done:
                        epochs = done[("choose",) + key]["epochs"]
                        row = {"stage": "test", "dataset": dataset, "model": model_key, "variant": variant.label,
                               "seed": seed, "epochs": epochs, **_refit(data, model_key, variant, seed, epochs)}
                        _append(log, row)
                        done[("test",) + key] = row
                        logger.info("dsl_full test %s: R@20 %.4f", key, row["R@20"])
    rows = [r for k, r in done.items() if k[0] == "test" and k[1] in datasets and k[2] in models and k[4] in seeds]
    for dataset, model_key in sorted({(r["dataset"], r["model"]) for r in rows}):
        overhead[f"{dataset} / {model_key}"] = _overhead(_load(dataset, out), model_key)
    table = _summary(rows)
    markdown = _markdown(table, overhead)
    atomic_write_text(out / "table.md", markdown)
    result = {"config": {**CONFIG, "datasets": datasets, "models": {m: CONFIG["models"][m] for m in models},
                         "seeds": seeds},
              "table": table, "overhead": overhead, "stages": [done[k] for k in sorted(done)],
              "wall_seconds": time.perf_counter() - started, "provenance": run_metadata()}
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2, default=float) + "\n")
    return result
