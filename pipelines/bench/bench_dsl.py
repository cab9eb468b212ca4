"""Dynamic Sparse Learning on ML-100K: dense vs. DSL vs. train-dense-then-prune, and the step-time overhead of DSL.

Protocol (``run(out_dir)``; the recommendation protocol of :mod:`pipelines.evaluation.recsys`):

* data: ML-100K canonical ``u1.base`` (train, every rating a positive) / ``u1.test`` (459 users with test items),
  converted from ``/work/shared/data/ml-100k`` (or ``$REGKIT_ML100K``) with ``pipelines.datasets.movielens``;
* ranking: all 1,682 items, each user's training items excluded; Recall@20 and NDCG@20 through
  :func:`pipelines.evaluation.recsys.evaluate_recommendations` (ir-measures, trec_eval-identical);
* models: MF-BPR and LightGCN (3 layers) of ``recsys.models``, D = 64, BPR with one sampled negative, Adam lr 0.005,
  embedding L2 1e-4 (``recsys.losses.EmbeddingL2``), trained by ``recsys.trainer.Trainer`` with the same number of
  steps for every method (MF: 40 epochs of batch 1024; LightGCN: 20 epochs of batch 2048); hyperparameters fixed a
  priori (those of ``pipelines/configs/ml100k_mf_bpr.yaml``), never tuned on ``u1.test``;
* methods, each through the trainer's ``common_regs`` hooks (no model code changes):
  ``dense``; ``dsl`` (:class:`common_regs.sparsity.DSL` on both embedding tables at density d, ΔT =
  ``update_interval``, r: 0.5 → 0.005 cosine over the run); ``prune_ft`` (dense for ``prune_at`` of the steps,
  then one-shot per-table magnitude pruning to density d with :class:`common_regs.sparsity.MagnitudePruning` and
  sparse fine-tuning for the rest: the same total steps); ``prune`` (the trained dense model magnitude-pruned to d
  at the end, no fine-tuning);
* reported per (model, method, density), mean ± std over seeds: Recall@20, NDCG@20, active parameters, bytes of the
  exported model (CSR tables for the sparse methods, float32 dense tables otherwise), training seconds;
  plus the active-parameter count over training (DSL vs. dense-then-prune) and the metric-vs-density plot in
  ``report.md`` / ``report.html``;
* overhead: median wall time of a trainer step with DSL (excluding update steps), of an update step, and the
  amortized mean, each divided by the dense model's median step, same batches, same process, 1 thread.

The grid is sized by ``CONFIG``; environment variables ``REGKIT_DSL_MODELS`` (e.g. ``mf``), ``REGKIT_DSL_SEEDS``
(e.g. ``0,1``) and ``REGKIT_DSL_SEEDS_<MODEL>`` (e.g. ``REGKIT_DSL_SEEDS_LIGHTGCN=0``) shrink it on a busy machine.
Finished runs are appended to ``out_dir/runs.jsonl`` and skipped when the benchmark is started again.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl
import torch
from tqdm import tqdm

from common_regs.api import TrainContext
from common_regs.io import atomic_write_text
from common_regs.sparsity import DSL, MagnitudePruning
from common_regs.sparsity.sparse_table import memory_report, to_sparse_table
from pipelines.datasets.movielens import convert_movielens_100k
from pipelines.evaluation.recsys import evaluate_recommendations
from pipelines.report import Report, line_plot
from recsys.data import InMemoryBatches, Interactions, NegativeSampler, Vocabulary, clean_log, encode_interactions
from recsys.features import FeatureSpec, FeatureTable
from recsys.losses import EmbeddingL2
from recsys.models import build_model
from recsys.models.base import Recommender as RecModel
from recsys.serving import Recommender
from recsys.splits import random_holdout_split
from recsys.trainer import TrainConfig, Trainer

logger = logging.getLogger(__name__)

__all__ = ["CONFIG", "dsl_report", "run"]

TABLES = ("user_table.weight", "item_table.weight")
CONFIG: dict[str, Any] = {
    # LightGCN propagates the whole graph every step (~0.1 s on one CPU thread): fewer, larger batches.
    "models": {
        "mf": {"model": {"embedding_dim": 64}, "lr": 0.005, "epochs": 40, "batch_size": 1024},
        "lightgcn": {"model": {"embedding_dim": 64, "num_layers": 3}, "lr": 0.005, "epochs": 20, "batch_size": 2048},
    },
    "densities": [0.5, 0.2, 0.1, 0.05],
    "seeds": [0, 1, 2],
    "l2": 1e-4,
    # ΔT in steps. DSL's code uses 3000 for 1000-epoch LightGCN runs; these runs have 800-3200 steps. Chosen on a
    # validation split of u1.base by bench_dsl_interval (MF, d = 0.2, seed 0): ΔT = 10 / 25 / 50 / 100 / 300 / never
    # gave validation R@20 0.2306 / 0.2240 / 0.2314 / 0.2112 / 0.1834 / 0.1272.
    "update_interval": 50,
    "ratio": 0.5,  # r0, DSL code --update_ratio
    "ratio_min": 0.005,  # DSL code CosineDecay eta_min
    "prune_at": 0.75,  # fraction of the steps trained dense before one-shot pruning (prune_ft)
    "record_every": 20,  # steps between active-parameter samples
    "timing_steps": 300,
    "num_threads": 1,
}


# -- data --------------------------------------------------------------------------------------------------------


class _Data:
    """u1.base / u1.test, or with ``validation_fraction`` a per-user random holdout of u1.base (u1.test unread)."""

    def __init__(self, root: Path, validation_fraction: float | None = None) -> None:
        if validation_fraction is None:
            self.train_log = clean_log(root / "splits" / "u1.base.parquet", where="train").collect()
            self.test_log = clean_log(root / "splits" / "u1.test.parquet", where="test").collect()
        else:
            split = random_holdout_split(
                clean_log(root / "splits" / "u1.base.parquet", where="train"), test_fraction=validation_fraction
            )
            self.train_log, self.test_log = split.train.collect(), split.test.collect()
        self.users = Vocabulary.from_values("user_id", pl.read_parquet(root / "users.parquet")["user_id"])
        self.items = Vocabulary.from_values("item_id", pl.read_parquet(root / "items.parquet")["item_id"])
        self.user_features = FeatureTable.build(self.users, [FeatureSpec.from_dict({"name": "user_id", "kind": "id"})])
        self.item_features = FeatureTable.build(self.items, [FeatureSpec.from_dict({"name": "item_id", "kind": "id"})])
        self.train: Interactions = encode_interactions(self.train_log, self.users, self.items, where="train")


def _prepare_data(out_dir: Path, validation_fraction: float | None = None) -> tuple[_Data, Path]:
    raw = Path(os.environ.get("REGKIT_ML100K", "/work/shared/data/ml-100k"))
    converted = out_dir / "data" / "ml100k"
    if not (converted / "splits" / "u1.base.parquet").is_file():
        if not raw.is_dir():
            raise FileNotFoundError(f"ML-100K not found at {raw}; set REGKIT_ML100K to the extracted ml-100k folder.")
        convert_movielens_100k(raw, converted, overwrite=True)
    return _Data(converted, validation_fraction), raw


# -- hooks -------------------------------------------------------------------------------------------------------


class _ActiveRecorder:
    """A ``mask_scheduler``-kind hook that only samples the number of active table entries every ``every`` steps."""

    hook_kind: ClassVar[str] = "mask_scheduler"

    def __init__(self, scheduler: Any | None, every: int) -> None:
        self.scheduler, self.every = scheduler, every
        self.model: torch.nn.Module | None = None
        self.points: list[tuple[int, int]] = []
        self._steps = 0

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        return {}

    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
        del optimizer
        self.model = model
        self.points.append((0, self._count()))

    def step(self, ctx: TrainContext) -> None:
        del ctx
        self._steps += 1
        if self._steps % self.every == 0:
            self.points.append((self._steps, self._count()))

    def _count(self) -> int:
        if self.scheduler is not None:
            return int(sum(int(m.sum()) for m in self.scheduler.masks.values()))
        return int(sum(self.model.get_parameter(name).numel() for name in TABLES)) if self.model is not None else 0


def _method_hooks(
    method: str, density: float | None, total_steps: int, seed: int, update_interval: int | None = None
) -> tuple[list[Any], Any]:
    """(hooks, scheduler) for a method; every run also gets the embedding L2 penalty."""
    scheduler: Any = None
    if method == "dsl" and density is not None:
        scheduler = DSL(
            density=density,
            update_interval=update_interval or CONFIG["update_interval"],
            ratio=CONFIG["ratio"],
            ratio_min=CONFIG["ratio_min"],
            total_steps=total_steps,
            seed=seed,
            targets=list(TABLES),
        )
    elif method == "prune_ft" and density is not None:
        scheduler = MagnitudePruning(
            sparsity=1.0 - density, prune_step=int(CONFIG["prune_at"] * total_steps), targets=list(TABLES)
        )
    return [EmbeddingL2(CONFIG["l2"]), *([scheduler] if scheduler is not None else [])], scheduler


# -- one run -----------------------------------------------------------------------------------------------------


def _train_config(model_name: str, seed: int, epochs: int) -> TrainConfig:
    return TrainConfig(
        epochs=epochs,
        batch_size=CONFIG["models"][model_name]["batch_size"],
        loss="bpr",
        num_negatives=1,
        optimizer="adam",
        lr=CONFIG["models"][model_name]["lr"],
        seed=seed,
        eval_every=0,
        restore_best=False,
        show_progress=False,
    )


def _build(data: _Data, model_name: str, seed: int) -> RecModel:
    torch.manual_seed(seed)
    np.random.seed(seed)
    return build_model(
        model_name,
        CONFIG["models"][model_name]["model"],
        users=data.user_features,
        items=data.item_features,
        interactions=data.train,
    )


def _evaluate(data: _Data, model: RecModel) -> dict[str, float]:
    service = Recommender(model, data.users, data.items, data.user_features, data.item_features, data.train)
    metrics = evaluate_recommendations(service, data.test_log, ks=(20,))
    return {"R@20": float(metrics["R@20"]), "nDCG@20": float(metrics["nDCG@20"])}


def _magnitude_prune_tables(model: RecModel, density: float) -> dict[str, torch.Tensor]:
    """Per-table masks keeping the ``density`` largest-|w| entries (the same count rule as MagnitudePruning)."""
    masks = {}
    for name in TABLES:
        weight = model.get_parameter(name).detach()
        keep = weight.numel() - int((1.0 - density) * weight.numel())
        flat = torch.zeros(weight.numel())
        flat[torch.topk(weight.abs().flatten(), keep).indices] = 1.0
        masks[name] = flat.view_as(weight)
    return masks


def _train_one(
    data: _Data, model_name: str, method: str, density: float | None, seed: int, update_interval: int | None = None
) -> tuple[dict[str, Any], RecModel]:
    model = _build(data, model_name, seed)
    epochs = CONFIG["models"][model_name]["epochs"]
    batches = InMemoryBatches(data.train, CONFIG["models"][model_name]["batch_size"], seed=seed)
    total_steps = len(batches) * epochs
    hooks, scheduler = _method_hooks(method, density, total_steps, seed, update_interval)
    recorder = _ActiveRecorder(scheduler, CONFIG["record_every"])
    trainer = Trainer(
        model,
        batches,
        _train_config(model_name, seed, epochs),
        hooks=[*hooks, recorder],
        negative_sampler=NegativeSampler.from_interactions(data.train, seed=seed),
    )
    result = trainer.fit(resume=False)
    row: dict[str, Any] = {
        "model": model_name,
        "method": method,
        "density": density if density else 1.0,
        "seed": seed,
        "steps": result.steps,
        "train_seconds": result.train_seconds,
    }
    row.update(_evaluate(data, model))
    if scheduler is not None:
        tables = {name: to_sparse_table(scheduler.effective(name), scheduler.masks[name]) for name in TABLES}
        row["active_params"] = int(sum(int(scheduler.masks[n].sum()) for n in TABLES))
        row["export_bytes"] = memory_report(tables)["sparse_bytes"]
    else:
        row["active_params"] = int(sum(model.get_parameter(n).numel() for n in TABLES))
        row["export_bytes"] = int(sum(model.get_parameter(n).numel() * 4 for n in TABLES))
    row["dense_bytes"] = (
        int(sum(model.get_parameter(n).numel() * 4 for n in TABLES))
        if scheduler is None
        else (int(sum(scheduler.masks[n].numel() * 4 for n in TABLES)))
    )
    if isinstance(scheduler, DSL):
        row["dsl_updates"] = len(scheduler.history)
    row["active_curve"] = recorder.points
    return row, model


def _prune_after(data: _Data, dense_model: RecModel, base: Mapping[str, Any], density: float) -> dict[str, Any]:
    """The trained dense model magnitude-pruned to ``density`` (no fine-tuning); the tables are restored after."""
    masks = _magnitude_prune_tables(dense_model, density)
    originals = {name: dense_model.get_parameter(name).detach().clone() for name in TABLES}
    try:
        with torch.no_grad():
            for name, mask in masks.items():
                dense_model.get_parameter(name).mul_(mask)
        tables = {name: to_sparse_table(dense_model.get_parameter(name), masks[name]) for name in TABLES}
        metrics = _evaluate(data, dense_model)
    finally:
        with torch.no_grad():
            for name, value in originals.items():
                dense_model.get_parameter(name).copy_(value)
    keep = ("model", "seed", "steps", "train_seconds", "dense_bytes")
    row = {**{k: base[k] for k in keep}, "method": "prune", "density": density, **metrics}
    row["active_params"] = int(sum(int(m.sum()) for m in masks.values()))
    row["export_bytes"] = memory_report(tables)["sparse_bytes"]
    return row


# -- overhead ----------------------------------------------------------------------------------------------------


def _step_times(data: _Data, model_name: str, method: str, steps: int) -> tuple[list[float], list[bool]]:
    model = _build(data, model_name, 0)
    batches = InMemoryBatches(data.train, CONFIG["models"][model_name]["batch_size"], seed=0)
    hooks, scheduler = _method_hooks(method, 0.2 if method == "dsl" else None, steps, 0)
    trainer = Trainer(
        model,
        batches,
        _train_config(model_name, 0, 1),
        hooks=hooks,
        negative_sampler=NegativeSampler.from_interactions(data.train, seed=0),
    )
    times, is_update = [], []
    epoch = 0
    while len(times) < steps:
        for batch in batches.batches(epoch):
            started = time.perf_counter()
            trainer.train_step(batch)
            times.append(time.perf_counter() - started)
            is_update.append(scheduler is not None and trainer.step % CONFIG["update_interval"] == 0)
            if len(times) >= steps:
                break
        epoch += 1
    return times, is_update


def _overhead(data: _Data, model_name: str) -> dict[str, float]:
    steps = CONFIG["timing_steps"]
    warm = 20
    dense, _ = _step_times(data, model_name, "dense", steps)
    sparse, is_update = _step_times(data, model_name, "dsl", steps)
    dense_median = statistics.median(dense[warm:])
    regular = [t for t, u in zip(sparse[warm:], is_update[warm:], strict=True) if not u]
    updates = [t for t, u in zip(sparse, is_update, strict=True) if u]
    return {
        "dense_step_ms": 1e3 * dense_median,
        "dsl_step_ms": 1e3 * statistics.median(regular),
        "dsl_update_step_ms": 1e3 * statistics.median(updates) if updates else float("nan"),
        "dsl_step_ratio": statistics.median(regular) / dense_median,
        "dsl_update_step_ratio": statistics.median(updates) / dense_median if updates else float("nan"),
        "dsl_amortized_ratio": statistics.fmean(sparse[warm:]) / statistics.fmean(dense[warm:]),
        "update_interval": CONFIG["update_interval"],
        "timed_steps": steps - warm,
    }


# -- aggregation and report --------------------------------------------------------------------------------------


def _aggregate(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str, float], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["method"], row["density"]), []).append(row)
    table = []
    for (model, method, density), members in groups.items():
        entry: dict[str, Any] = {"model": model, "method": method, "density": density, "seeds": len(members)}
        for key in ("R@20", "nDCG@20"):
            values = [m[key] for m in members]
            entry[key] = statistics.fmean(values)
            entry[f"{key} std"] = statistics.pstdev(values) if len(values) > 1 else 0.0
        entry["active_params"] = int(statistics.fmean(m["active_params"] for m in members))
        entry["export_KiB"] = statistics.fmean(m["export_bytes"] for m in members) / 1024
        entry["train_s"] = statistics.fmean(m["train_seconds"] for m in members)
        table.append(entry)
    dense_recall = {e["model"]: e["R@20"] for e in table if e["method"] == "dense"}
    for entry in table:
        if entry["model"] in dense_recall:
            entry["R@20 / dense"] = entry["R@20"] / dense_recall[entry["model"]]
    order = {"dense": 0, "dsl": 1, "prune_ft": 2, "prune": 3}
    return sorted(table, key=lambda e: (e["model"], order.get(e["method"], 9), -e["density"]))


def dsl_report(
    table: Sequence[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    overhead: Mapping[str, Any],
    out_dir: str | os.PathLike[str],
    *,
    config: Mapping[str, Any] | None = None,
    inputs: Sequence[str | os.PathLike[str]] = (),
) -> Path:
    """Write the run report: the table, Recall@20 vs. density per model, and active parameters over training."""
    report = Report("Dynamic Sparse Learning on ML-100K (u1.base / u1.test)")
    report.text(
        "Mean over seeds; R@20 / dense is the ratio to the dense model's Recall@20. Active parameters and "
        "exported bytes cover the two embedding tables (CSR for sparse methods, float32 dense otherwise)."
    )
    report.table(table, caption="dense vs. DSL vs. dense-then-prune")
    for model in sorted({e["model"] for e in table}):
        series: dict[str, tuple[list[float], list[float]]] = {}
        for method in ("dsl", "prune_ft", "prune"):
            points = sorted((e["density"], e["R@20"]) for e in table if e["model"] == model and e["method"] == method)
            if points:
                series[method] = ([p[0] for p in points], [p[1] for p in points])
        dense = [e["R@20"] for e in table if e["model"] == model and e["method"] == "dense"]
        if dense and series:
            xs = sorted({x for xs_, _ in series.values() for x in xs_} | {1.0})
            series["dense"] = (xs, [dense[0]] * len(xs))
        if series:
            figure = line_plot(
                series,
                xlabel="density (fraction of embedding entries kept)",
                ylabel="Recall@20",
                title=f"{model}: Recall@20 vs. density",
            )
            figure.axes[0].set_xscale("log")
            report.figure(figure, f"{model}: Recall@20 vs. density (mean over seeds)")
        curves = {}
        for row in rows:
            if (
                row["model"] == model
                and row["seed"] == rows[0]["seed"]
                and row.get("active_curve")
                and (row["method"] == "dense" or row["density"] == 0.2)
            ):
                xs, ys = zip(*row["active_curve"], strict=True)
                curves[f"{row['method']} d={row['density']}"] = (list(xs), list(ys))
        if curves:
            report.figure(
                line_plot(
                    curves,
                    xlabel="optimizer step",
                    ylabel="active embedding parameters",
                    title=f"{model}: active parameters over training",
                ),
                f"{model}: active parameters over training (seed {rows[0]['seed']})",
            )
    if overhead:
        report.heading("Step-time overhead of DSL (same process, 1 thread)")
        report.table([{"model": model, **values} for model, values in overhead.items()])
    paths = report.write(
        out_dir, metrics={"table": list(table), "overhead": dict(overhead)}, config=config, inputs=inputs
    )
    return paths.markdown


def run(out_dir: Path) -> dict[str, Any]:
    out_dir = Path(out_dir)
    threads = torch.get_num_threads()
    torch.set_num_threads(CONFIG["num_threads"])
    try:
        return _run(out_dir)
    finally:
        torch.set_num_threads(threads)


def _env_list(name: str, default: Sequence[Any], cast: type) -> list[Any]:
    value = os.environ.get(name)
    return [cast(v) for v in value.split(",")] if value else list(default)


def _run(out_dir: Path) -> dict[str, Any]:
    data, raw = _prepare_data(out_dir)
    models = _env_list("REGKIT_DSL_MODELS", list(CONFIG["models"]), str)
    seeds = {
        m: _env_list(f"REGKIT_DSL_SEEDS_{m.upper()}", _env_list("REGKIT_DSL_SEEDS", CONFIG["seeds"], int), int)
        for m in models
    }
    densities = CONFIG["densities"]
    log_path = out_dir / "runs.jsonl"
    rows: list[dict[str, Any]] = []
    if log_path.is_file():
        rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    done = {(r["model"], r["method"], r["density"], r["seed"]) for r in rows}
    jobs = [  # seed-major: a complete one-seed table for every model comes first
        (m, s, method, d)
        for s in sorted({s for m in models for s in seeds[m]})
        for m in models
        if s in seeds[m]
        for method, ds in (("dense", [None]), ("dsl", densities), ("prune_ft", densities))
        for d in ds
        if (m, method, d if d else 1.0, s) not in done
    ]
    for model_name, seed, method, density in tqdm(jobs, desc="bench_dsl runs"):
        row, model = _train_one(data, model_name, method, density, seed)
        new = [row] + ([_prune_after(data, model, row, d) for d in densities] if method == "dense" else [])
        rows += new
        _append_lines(log_path, new)
        logger.info(
            "%s %s d=%s seed %d: R@20 %.4f nDCG@20 %.4f (%.0fs)",
            model_name,
            method,
            density,
            seed,
            row["R@20"],
            row["nDCG@20"],
            row["train_seconds"],
        )
    rows = [r for r in rows if r["model"] in models and r["seed"] in seeds[r["model"]]]
    overhead = {model_name: _overhead(data, model_name) for model_name in models}
    table = _aggregate(rows)
    config = {**CONFIG, "seeds": seeds, "models": {m: CONFIG["models"][m] for m in models}}
    report = dsl_report(table, rows, overhead, out_dir, config=config, inputs=[raw / "u1.base", raw / "u1.test"])
    logger.info("DSL report written to %s", report)
    return {
        "config": config,
        "table": table,
        "overhead": overhead,
        "runs": [{k: v for k, v in r.items() if k != "active_curve"} for r in rows],
    }


def _append_lines(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Append finished runs to the resume log (rewritten atomically, so a crash never leaves half a line)."""
    previous = path.read_text() if path.is_file() else ""
    atomic_write_text(path, previous + "".join(json.dumps(r, default=float) + "\n" for r in rows))
