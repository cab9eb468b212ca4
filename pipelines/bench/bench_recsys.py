"""Recommendation benchmark on MovieLens-100K (u1.base → u1.test, implicit, full ranking, train items excluded).

Rows, all measured in this run on this machine:

* MostPopular (training counts);
* EASE (Steck 2019; closed form, λ chosen on a validation split of u1.base) as a strong linear reference;
* ``implicit`` ALS (32 factors, regularization 30, 30 iterations, alpha 5: the reference baseline) and ``implicit``
  BPR (128 factors) — ``implicit`` is a benchmark-only dependency (``pip install 'regkit[bench]'``);
* regkit MF-BPR, MF (softmax), LightGCN, two-tower (ids), two-tower (ids + features) from
  ``pipelines/configs/ml100k_*.yaml`` through :func:`pipelines.recsys_run.train_run` (epochs chosen on a
  validation split of u1.base, then refit on all of u1.base).

Plus: training throughput (examples/s) of the torchrec two-tower vs. the same model on plain ``nn.EmbeddingBag``
(same weights, same batches, same thread count), and full-catalogue evaluation time.

``REGKIT_BENCH_RECSYS_ONLY=mf_bpr,lightgcn`` limits the model rows (the throughput part always runs).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from pipelines.bench import shared_data_dir
from recsys.models.ease import ease_weights

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
CONFIGS = {
    "mf_bpr": ("MF-BPR", "ml100k_mf_bpr.yaml"),
    "mf_softmax": ("MF (in-batch softmax + logQ)", "ml100k_mf_softmax.yaml"),
    "lightgcn": ("LightGCN", "ml100k_lightgcn.yaml"),
    "two_tower_ids": ("two-tower (ids only)", "ml100k_two_tower_ids.yaml"),
    "two_tower_features": ("two-tower (ids + user/item features)", "ml100k_two_tower_features.yaml"),
}
KS = (10, 20)


def _data(out_dir: Path) -> Path:
    from pipelines.datasets.movielens import convert_movielens_100k

    shared = shared_data_dir() / "ml-100k"
    if not shared.is_dir():
        raise FileNotFoundError(f"MovieLens-100K raw files not found at {shared} (set REGKIT_SHARED_DATA).")
    target = out_dir / "data" / "ml100k"
    if not (target / "manifest.json").is_file():
        convert_movielens_100k(shared, target, overwrite=True)
    return target


def _lists_metrics(
    test: pl.DataFrame, users: list[int], lists: list[list[int]], popularity: dict[int, int], n_items: int
) -> dict[str, float]:
    """R@K / nDCG@K / coverage through pipelines.evaluation for externally produced top-k lists."""
    from pipelines.evaluation.metrics import evaluate
    from pipelines.evaluation.recsys import qrels_from_log, run_from_lists

    qrels = qrels_from_log(test)
    result = evaluate(qrels, run_from_lists(users, lists), [f"{m}@{k}" for m in ("R", "nDCG") for k in KS])
    metrics = dict(result.aggregate)
    for k in KS:
        metrics[f"coverage@{k}"] = len({item for ranked in lists for item in ranked[:k]}) / n_items
    return metrics


def _baselines(data: Path) -> list[dict[str, Any]]:
    import scipy.sparse as sp

    train = pl.read_parquet(data / "splits" / "u1.base.parquet")
    test = pl.read_parquet(data / "splits" / "u1.test.parquet")
    items = pl.read_parquet(data / "items.parquet")["item_id"].to_numpy()
    n_users = int(max(train["user_id"].max(), test["user_id"].max()))
    item_index = {int(item): index for index, item in enumerate(items)}
    rows = train["user_id"].to_numpy() - 1
    cols = np.array([item_index[int(i)] for i in train["item_id"].to_numpy()])
    matrix = sp.csr_matrix((np.ones(rows.size, dtype=np.float32), (rows, cols)), shape=(n_users, items.size))
    test_users = sorted(test["user_id"].unique().to_list())
    counts = np.asarray(matrix.sum(0)).ravel()
    popularity = {int(items[i]): int(c) for i, c in enumerate(counts)}
    out = []
    started = time.perf_counter()
    order = np.lexsort((np.arange(items.size), -counts))
    lists = []
    for user in test_users:
        seen = set(matrix[user - 1].indices.tolist())
        lists.append([int(items[i]) for i in order if i not in seen][: max(KS)])
    out.append(
        {
            "model": "MostPopular",
            "train_seconds": time.perf_counter() - started,
            **_lists_metrics(test, test_users, lists, popularity, items.size),
        }
    )
    out.append(_ease(train, test, items, n_users, popularity))
    try:
        import implicit
        from threadpoolctl import threadpool_limits
    except ImportError as err:
        logger.warning(
            "implicit not installed (pip install 'regkit[bench]'): skipping the ALS / BPR reference (%s)", err
        )
        return out
    for name, model in (
        (
            "implicit ALS (32 f, reg 30, 30 it, alpha 5)",
            implicit.cpu.als.AlternatingLeastSquares(
                factors=32, regularization=30.0, iterations=30, alpha=5.0, random_state=0
            ),
        ),
        ("implicit BPR (128 f)", implicit.cpu.bpr.BayesianPersonalizedRanking(factors=128, random_state=0)),
    ):
        with threadpool_limits(1):
            started = time.perf_counter()
            model.fit(matrix, show_progress=False)
            seconds = time.perf_counter() - started
            ids, _ = model.recommend(
                np.asarray(test_users) - 1,
                matrix[np.asarray(test_users) - 1],
                N=max(KS),
                filter_already_liked_items=True,
            )
        lists = [[int(items[i]) for i in row if i >= 0] for row in ids]
        out.append(
            {
                "model": name,
                "train_seconds": seconds,
                "implicit_version": implicit.__version__,
                **_lists_metrics(test, test_users, lists, popularity, items.size),
            }
        )
    return out


EASE_LAMBDAS = (50.0, 100.0, 200.0, 300.0, 500.0, 800.0)


def ease_scores(matrix: np.ndarray, diagonal_penalty: np.ndarray) -> np.ndarray:
    """X·B of EASE (recsys.models.ease); penalty λ for EASE, p/(1−p)·G_ii + λ for EDLAE."""
    return matrix @ ease_weights(matrix, diagonal_penalty)


def _ease_top(log: pl.DataFrame, users: list[int], items: np.ndarray, n_users: int, lam: float, k: int) -> list:
    """Top-k lists of EASE with penalty λ, training items excluded."""
    item_index = {int(item): index for index, item in enumerate(items)}
    matrix = np.zeros((n_users, items.size), dtype=np.float64)
    matrix[log["user_id"].to_numpy() - 1, [item_index[int(i)] for i in log["item_id"].to_numpy()]] = 1.0
    rows = np.asarray(users) - 1
    scores = ease_scores(matrix, np.full(items.size, lam))[rows]
    scores[matrix[rows] > 0] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [[int(items[i]) for i in row] for row in top]


def _ease(
    train: pl.DataFrame, test: pl.DataFrame, items: np.ndarray, n_users: int, popularity: dict[int, int]
) -> dict[str, Any]:
    """EASE reference row: λ chosen on a 10 % per-user holdout of u1.base (never on u1.test), then refit."""
    from recsys.splits import random_holdout_split

    holdout = random_holdout_split(train.lazy(), test_fraction=0.1, seed=0)
    fit, valid = holdout.train.collect(), holdout.test.collect()
    valid_users = sorted(valid["user_id"].unique().to_list())
    validation = {
        lam: _lists_metrics(valid, valid_users, _ease_top(fit, valid_users, items, n_users, lam, 20), popularity,
                            items.size)["R@20"]
        for lam in EASE_LAMBDAS
    }
    best = max(validation, key=validation.get)
    started = time.perf_counter()
    test_users = sorted(test["user_id"].unique().to_list())
    lists = _ease_top(train, test_users, items, n_users, best, max(KS))
    return {
        "model": f"EASE (λ {best:g}, chosen on validation)",
        "train_seconds": time.perf_counter() - started,
        "validation_R@20_by_lambda": validation,
        **_lists_metrics(test, test_users, lists, popularity, items.size),
    }


def _regkit_rows(data: Path, out_dir: Path, only: set[str] | None) -> list[dict[str, Any]]:
    from pipelines.recsys_run import train_run
    from pipelines.run_config import load_recsys_config

    rows = []
    for key, (label, config_name) in CONFIGS.items():
        if only and key not in only:
            continue
        config = load_recsys_config(
            REPO / "pipelines" / "configs" / config_name, [f"data.dir={data}", "train.show_progress=false"]
        )
        started = time.perf_counter()
        report = train_run(config, output_dir=out_dir / key, overwrite=True)
        test = report["test"]
        rows.append(
            {
                "model": f"regkit {label}",
                "config": f"pipelines/configs/{config_name}",
                "train_seconds": report["train"]["train_seconds"],
                "tuning_seconds": report.get("validation", {}).get("train_seconds"),
                "epochs": report["train"]["epochs"],
                "wall_seconds": time.perf_counter() - started,
                "validation_R@20": report.get("validation", {}).get("metrics", {}).get("R@20"),
                "eval_seconds": test["seconds"],
                **{
                    k: test[k]
                    for k in (
                        *(f"{m}@{k}" for m in ("R", "nDCG") for k in KS),
                        "coverage@10",
                        "coverage@20",
                        "head/R@20",
                        "tail/R@20",
                    )
                },
            }
        )
        logger.info("%s: %s", label, rows[-1])
    return rows


def _throughput(data: Path, steps: int = 150, batch_size: int = 1024) -> dict[str, Any]:
    """Examples/s of the feature two-tower on torchrec EBC vs. plain nn.EmbeddingBag, same weights and batches."""
    from pipelines.recsys_data import RunData
    from pipelines.run_config import ValidationConfig, load_recsys_config
    from recsys.data import InMemoryBatches
    from recsys.models import TwoTower
    from recsys.trainer import TrainConfig, Trainer

    config = load_recsys_config(REPO / "pipelines" / "configs" / "ml100k_two_tower_features.yaml",
                                [f"data.dir={data}"])
    prepared = RunData(config.data.model_copy(update={"validation": ValidationConfig(method="none")}))
    model_options = {k: v for k, v in config.model.options().items() if k != "embedding_backend"}  # set below
    results: dict[str, Any] = {"steps": steps, "batch_size": batch_size, "threads": torch.get_num_threads()}
    torch.manual_seed(0)
    reference = TwoTower(prepared.user_features, prepared.item_features, embedding_backend="torchrec", **model_options)
    initial = {k: v.clone() for k, v in reference.state_dict().items()}
    for _ in range(2):  # interleave the two backends twice: the shared machine's load drifts
        for backend in ("torchrec", "torch"):
            model = TwoTower(
                prepared.user_features, prepared.item_features, embedding_backend=backend, **model_options
            )
            model.load_state_dict(initial)
            train_config = TrainConfig(
                epochs=100, max_steps=steps, batch_size=batch_size, lr=0.005, show_progress=False, seed=0
            )
            trainer = Trainer(
                model,
                InMemoryBatches(prepared.train, batch_size, seed=0),
                train_config,
                item_counts=prepared.train.item_counts(),
            )
            result = trainer.fit(resume=False)
            results.setdefault(backend, []).append(result.examples_per_second)
    for backend in ("torchrec", "torch"):
        results[f"{backend}_examples_per_second"] = max(results[backend])
    results["torchrec_over_plain"] = results["torchrec_examples_per_second"] / results["torch_examples_per_second"]
    return results


def _markdown(rows: list[dict[str, Any]]) -> str:
    header = "| model | R@10 | R@20 | nDCG@10 | nDCG@20 | coverage@20 | train s |\n|---|---|---|---|---|---|---|\n"
    lines = [
        f"| {row['model']} | {row['R@10']:.3f} | {row['R@20']:.3f} | {row['nDCG@10']:.3f} | {row['nDCG@20']:.3f} | "
        f"{row['coverage@20']:.3f} | {row['train_seconds']:.1f} |"
        for row in rows
    ]
    return header + "\n".join(lines) + "\n"


def run(out_dir: Path) -> dict[str, Any]:
    torch.set_num_threads(1)  # the reference box is a shared 2-core machine; one thread per run is reproducible
    out_dir = Path(out_dir)
    data = _data(out_dir)
    only_env = os.environ.get("REGKIT_BENCH_RECSYS_ONLY")
    only = {name.strip() for name in only_env.split(",")} if only_env else None
    rows = _baselines(data)
    rows += _regkit_rows(data, out_dir, only)
    als = next((row for row in rows if row["model"].startswith("implicit ALS")), None)
    if als is not None:
        for row in rows:
            row["R@20_vs_ALS"] = row["R@20"] / als["R@20"]
    throughput = _throughput(data)
    table = _markdown(rows)
    from common_regs.io import atomic_write_text

    atomic_write_text(out_dir / "table.md", table)
    logger.info("\n%s", table)
    return {
        "protocol": "ML-100K u1.base -> u1.test, implicit, all 1682 items ranked, train items excluded",
        "rows": rows,
        "throughput": throughput,
        "table_markdown": table,
    }
