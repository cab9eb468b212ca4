"""SSL item-tower regularization (Yao et al. 2021, arXiv:2007.12865): two-tower without SSL vs. RFM vs. CFM.

Protocol (``run(out_dir)``; the recommendation protocol of :mod:`pipelines.evaluation.recsys`):

* ML-100K: canonical ``u1.base`` / ``u1.test`` (implicit, every rating a positive), full-catalogue ranking with the
  user's training items excluded, through :func:`pipelines.recsys_run.train_run` with
  ``pipelines/configs/ml100k_two_tower_features.yaml`` (item features: item id, genres, 10 release-year buckets;
  user features: id, age, gender, occupation, zip prefix) and ``--set ssl=<mode>``;
* long tail: :func:`pipelines.datasets.longtail.write_longtail_log` (2,000 users, 2,000 Zipf(1.0) items, 12 genres,
  72 genre-bound brands, users who like 3 brands), per-user random 20% test holdout (split seed 0); item
  features: id, genres, brand, 8 year buckets; users by id only; same model and training options as ML-100K;
* epochs: for each (dataset, mode) the number of epochs is chosen on a 10% per-user validation split carved from
  the training split (seed 0, early stopping on validation R@20, evaluated every ``eval_every`` epochs, patience
  2), then the model is refit on the whole training split; seeds 1, 2 reuse seed 0's epoch count (saves a third of
  the compute on the shared machine); the test split is never used for any choice;
* SSL settings: the defaults of :class:`recsys.ssl.SSLConfig` (α 0.1, τ 0.1, mask ratio 0.5, value dropout 0.1, SSL
  batch = main batch, MI over the catalogue), fixed a priori, not tuned;
* reported per (dataset, mode), mean ± sample std over seeds: Recall@20, NDCG@20 overall and on the tail slice
  (items outside the top 20% by training popularity; only each user's tail test items count), training seconds;
  the MI heatmaps; and the SSL per-step overhead: median wall time of a trainer step with RFM / CFM hooks divided
  by the no-SSL step, same batches, same process, 1 thread, interleaved.

``REGKIT_SSL_SEEDS`` (e.g. ``0``) and ``REGKIT_SSL_DATASETS`` (e.g. ``longtail``) shrink the grid; finished runs are
appended to ``out_dir/runs.jsonl`` and skipped when the benchmark is started again.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from common_regs.io import atomic_write_text
from pipelines.bench import shared_data_dir
from pipelines.bench._recsys_hook_bench import mean_and_std, step_time_ratios
from pipelines.recsys_data import RunData
from pipelines.recsys_run import train_run
from pipelines.recsys_ssl import mi_heatmap
from pipelines.report import Report, bar_plot
from pipelines.run_config import DataConfig, load_recsys_config
from recsys.data import InMemoryBatches
from recsys.models import build_model
from recsys.ssl import SSLConfig, build_ssl_hooks, ssl_mutual_information
from recsys.trainer import TrainConfig, Trainer

logger = logging.getLogger(__name__)

__all__ = ["CONFIG", "run"]

REPO = Path(__file__).resolve().parents[2]
CONFIG: dict[str, Any] = {
    "datasets": ["ml100k", "longtail"],
    "modes": ["none", "rfm", "cfm"],
    "seeds": [0, 1, 2],
    "eval_every": 2,
    "overhead_steps": 15,
}
METRICS = ("R@20", "nDCG@20", "tail/R@20", "tail/nDCG@20", "head/R@20")


def _ml100k_data(out_dir: Path) -> Path:
    from pipelines.datasets.movielens import convert_movielens_100k

    shared = shared_data_dir() / "ml-100k"
    target = out_dir / "data" / "ml100k"
    if not (target / "manifest.json").is_file():
        if not shared.is_dir():
            raise FileNotFoundError(f"MovieLens-100K raw files not found at {shared} (set REGKIT_SHARED_DATA).")
        convert_movielens_100k(shared, target, overwrite=True)
    return target


def _base_config(dataset: str, out_dir: Path) -> dict[str, Any]:
    config = load_recsys_config(
        REPO / "pipelines" / "configs" / "ml100k_two_tower_features.yaml",
        ["train.show_progress=false", f"train.eval_every={CONFIG['eval_every']}"],
    ).to_dict()
    if dataset == "ml100k":
        config["data"]["dir"] = str(_ml100k_data(out_dir))
        return config
    from pipelines.datasets.longtail import write_longtail_log

    folder = out_dir / "data" / "longtail"
    if not (folder / "spec.json").is_file():
        write_longtail_log(folder, overwrite=True)
    config["data"].update(
        {
            "dir": str(folder),
            "log": "interactions.parquet",
            "split": "random_holdout",
            "test_fraction": 0.2,
            "split_seed": 0,
            "train": None,
            "test": None,
            "users": None,
            "items": "items.parquet",
            "user_features": [{"name": "user_id", "kind": "id"}],
            "item_features": [
                {"name": "item_id", "kind": "id"},
                {"name": "genres", "kind": "multi_categorical", "column": "genres"},
                {"name": "brand", "kind": "categorical", "column": "brand"},
                {"name": "year", "kind": "bucketized", "column": "year", "num_buckets": 8},
            ],
        }
    )
    return config


def _job(dataset: str, mode: str, seed: int, out_dir: Path, epochs: int | None) -> dict[str, Any]:
    config = _base_config(dataset, out_dir)
    config.update({"seed": seed, "ssl": {**SSLConfig(mode=mode).to_dict(), "mi_cache_dir": str(out_dir / "cache")}})
    config["train"]["seed"] = seed
    if epochs is not None:  # seeds > 0: seed 0's validation-chosen epoch count, no second tuning run
        config["data"]["validation"] = {"method": "none"}
        config["train"].update({"epochs": epochs, "patience": None})
    started = time.perf_counter()
    report = train_run(config, output_dir=out_dir / "runs" / f"{dataset}_{mode}_s{seed}", overwrite=True)
    test = report["test"]
    return {
        "dataset": dataset,
        "mode": mode,
        "seed": seed,
        "epochs": report["train"]["epochs"],
        "best_epoch": report.get("validation", {}).get("best_epoch"),
        "validation_R@20": report.get("validation", {}).get("metrics", {}).get("R@20"),
        "train_seconds": report["train"]["train_seconds"],
        "wall_seconds": time.perf_counter() - started,
        **{key: test[key] for key in METRICS},
        "tail_users": test["tail/users"],
    }


def _overhead(out_dir: Path, steps: int) -> dict[str, Any]:
    """Median step time with SSL hooks / without, ML-100K feature two-tower, same batches, interleaved twice."""
    config = _base_config("ml100k", out_dir)
    data = RunData(DataConfig.model_validate({**config["data"], "validation": {"method": "none"}}))
    options = {k: v for k, v in config["model"].items() if k != "name"}
    train = TrainConfig(**{**config["train"], "show_progress": False})
    def make_trainer(mode: str) -> Trainer:
        torch.manual_seed(0)
        model = build_model("two_tower", options, users=data.user_features, items=data.item_features)
        hooks = build_ssl_hooks(SSLConfig(mode=mode, mi_cache_dir=str(out_dir / "cache")), data.item_features)
        return Trainer(model, InMemoryBatches(data.train, train.batch_size, seed=0), train, hooks=hooks,
                       item_counts=data.train.item_counts())

    return {"batch_size": train.batch_size, **step_time_ratios(make_trainer, CONFIG["modes"], "none", steps=steps)}


def _summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table = []
    for dataset in dict.fromkeys(row["dataset"] for row in rows):
        for mode in CONFIG["modes"]:
            group = [row for row in rows if row["dataset"] == dataset and row["mode"] == mode]
            if not group:
                continue
            entry: dict[str, Any] = {
                "dataset": dataset,
                "ssl": mode,
                "seeds": len(group),
                "epochs": group[0]["epochs"],
            }
            entry.update(mean_and_std(group, (*METRICS, "train_seconds")))
            table.append(entry)
    return table


def _markdown(summary: list[dict[str, Any]], overhead: dict[str, Any] | None) -> str:
    lines = [
        "| dataset | SSL | seeds | R@20 | NDCG@20 | tail R@20 | tail NDCG@20 | head R@20 | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in summary:
        cells = [f"{e[k]:.4f} ± {e[f'{k} std']:.4f}" for k in METRICS]
        lines.append(
            f"| {e['dataset']} | {e['ssl']} | {e['seeds']} | " + " | ".join(cells) + f" | {e['train_seconds']:.0f} |"
        )
    if overhead:
        lines += [
            "",
            "SSL step-time overhead (median step with SSL / without, ML-100K, batch "
            f"{overhead['batch_size']}, {overhead['threads']} thread): "
            + ", ".join(
                f"{m.split('_')[0].upper()} {v:.2f}x" for m, v in overhead.items() if m.endswith("_over_none")
            ),
        ]
    return "\n".join(lines) + "\n"


def run(out_dir: str | Path) -> dict[str, Any]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    seeds = [int(s) for s in os.environ.get("REGKIT_SSL_SEEDS", ",".join(map(str, CONFIG["seeds"]))).split(",")]
    datasets = os.environ.get("REGKIT_SSL_DATASETS", ",".join(CONFIG["datasets"])).split(",")
    log_path = out / "runs.jsonl"
    rows = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.is_file() else []
    done = {(row["dataset"], row["mode"], row["seed"]) for row in rows}
    for seed in seeds:
        for dataset in datasets:
            for mode in CONFIG["modes"]:
                if (dataset, mode, seed) in done:
                    continue
                tuned = [row for row in rows if (row["dataset"], row["mode"], row["seed"]) == (dataset, mode, 0)]
                epochs = tuned[0]["epochs"] if seed != 0 and tuned else None
                row = _job(dataset, mode, seed, out, epochs)
                rows.append(row)
                with open(log_path, "a") as handle:
                    handle.write(json.dumps(row) + "\n")
                logger.info("ssl bench %s", row)
    overhead = _overhead(out, CONFIG["overhead_steps"]) if "ml100k" in datasets else None
    summary = _summary([row for row in rows if row["seed"] in seeds and row["dataset"] in datasets])
    report = Report(title="SSL item-tower regularization (RFM / CFM) on ML-100K and a long-tail log")
    report.heading("Results").text(_markdown(summary, overhead))
    report.table(summary, caption="mean and sample std over seeds")
    tail = {e["dataset"]: {s["ssl"]: s["tail/R@20"] for s in summary if s["dataset"] == e["dataset"]} for e in summary}
    report.figure(
        bar_plot(tail, ylabel="tail Recall@20", title="tail slice (items outside the top 20%)"),
        caption="tail Recall@20 by SSL mode (mean over seeds)",
    )
    for dataset in datasets:
        section = {**_base_config(dataset, out)["data"], "validation": {"method": "none"}}
        data = RunData(DataConfig.model_validate(section))
        mi = ssl_mutual_information(SSLConfig(mode="cfm", mi_cache_dir=str(out / "cache")), data.item_features)
        report.figure(mi_heatmap(mi, title=f"{dataset}: item-feature MI (nats)"), caption=f"{dataset} item-feature MI")
    report.write(out, metrics={"summary": summary, "overhead": overhead, "runs": rows}, config=CONFIG)
    atomic_write_text(out / "table.md", _markdown(summary, overhead))
    return {"summary": summary, "overhead": overhead}
