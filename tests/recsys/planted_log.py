"""A generated interaction log with planted cluster structure, for recsys tests.

Users and items are split into ``clusters`` groups; each user interacts with ``per_user`` items, 90% from its
own cluster. Item features: ``genres`` = [its cluster's genre, sometimes a second random genre], ``year``
drawn per cluster. A model that learns the structure ranks the held-out same-cluster items far above random.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import polars as pl
import torch

from common_regs.api import TrainContext


@dataclass
class PlantedLog:
    train: pl.DataFrame
    test: pl.DataFrame
    items: pl.DataFrame
    users: pl.DataFrame
    user_cluster: np.ndarray
    item_cluster: np.ndarray
    folder: Path


def make_planted_log(
    folder: Path,
    *,
    users: int = 120,
    items: int = 60,
    clusters: int = 4,
    per_user: int = 14,
    test_per_user: int = 3,
    seed: int = 0,
) -> PlantedLog:
    rng = np.random.default_rng(seed)
    user_cluster = rng.integers(0, clusters, size=users)
    item_cluster = np.arange(items) % clusters
    rows = []
    for user in range(users):
        own = np.flatnonzero(item_cluster == user_cluster[user])
        other = np.flatnonzero(item_cluster != user_cluster[user])
        n_own = int(round(per_user * 0.9))
        chosen = np.concatenate(
            [rng.choice(own, n_own, replace=False), rng.choice(other, per_user - n_own, replace=False)]
        )
        times = rng.permutation(per_user) + 1_000_000 + user
        for item, ts in zip(chosen, times, strict=True):
            rows.append(
                (
                    user + 1,
                    int(item) + 101,
                    int(ts),
                    float(rng.integers(1, 6)),
                    item_cluster[item] == user_cluster[user],
                )
            )
    log = pl.DataFrame(
        rows,
        schema={
            "user_id": pl.Int64,
            "item_id": pl.Int64,
            "timestamp": pl.Int64,
            "rating": pl.Float64,
            "own": pl.Boolean,
        },
        orient="row",
    )
    # hold out test_per_user own-cluster interactions per user
    log = log.with_columns(pl.int_range(pl.len()).over("user_id").alias("_n"))
    test_mask = pl.col("own") & (pl.col("_n") < test_per_user)
    train = log.filter(~test_mask).drop("own", "_n")
    test = log.filter(test_mask).drop("own", "_n")
    genres = ["Action", "Comedy", "Drama", "Horror", "Sci-Fi", "Romance"]
    item_rows = []
    for item in range(items):
        names = [genres[item_cluster[item]]]
        if rng.random() < 0.3:
            names.append(genres[4 + int(rng.integers(0, 2))])
        item_rows.append(
            {
                "item_id": item + 101,
                "genres": names,
                "year": 1950 + 10 * int(item_cluster[item]) + int(rng.integers(0, 5)),
            }
        )
    items_frame = pl.DataFrame(item_rows, schema={"item_id": pl.Int64, "genres": pl.List(pl.String), "year": pl.Int32})
    users_frame = pl.DataFrame({"user_id": np.arange(1, users + 1), "segment": [f"s{c}" for c in user_cluster]})
    folder.mkdir(parents=True, exist_ok=True)
    train.write_parquet(folder / "train.parquet")
    test.write_parquet(folder / "test.parquet")
    items_frame.write_parquet(folder / "items.parquet")
    users_frame.write_parquet(folder / "users.parquet")
    return PlantedLog(train, test, items_frame, users_frame, user_cluster, item_cluster, folder)


def recall_at_k(recommended: np.ndarray, test: dict[int, set[int]], k: int) -> float:
    """Mean over test users of |top-k ∩ test| / |test| (independent of pipelines.evaluation)."""
    values = [len(set(recommended[user, :k].tolist()) & items) / len(items) for user, items in test.items()]
    return float(np.mean(values))


class CrashAt:
    """A loss hook that raises at one trainer step (a simulated crash) and adds nothing otherwise."""

    hook_kind: ClassVar[str] = "loss"

    def __init__(self, at_step: int | None) -> None:
        self.at_step = at_step

    def __call__(self, ctx: TrainContext) -> torch.Tensor:
        if ctx.step == self.at_step:
            raise RuntimeError("simulated crash")
        return torch.zeros(())
