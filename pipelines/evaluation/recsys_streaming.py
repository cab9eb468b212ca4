"""Recommendation evaluation of logs too large for memory: one user partition at a time.

:func:`pipelines.evaluation.recsys.evaluate_recommendations` holds the test log, its qrels and the training
log's seen-item CSR in memory, which grows with the logs. Here both parquet logs are first split by user in one
streaming pass each (:func:`recsys.data.partition_by_user`, same vocabulary and number of parts, so part ``p`` of
the training log holds all training rows of the test users in part ``p``); each part is then evaluated with
:meth:`recsys.serving.Recommender.with_seen` (the part's training items excluded, the whole log's popularity
kept), and the per-user metrics are pooled. Memory follows the part size (``max_rows_per_part`` rows), not the
log size; the cost is one extra write and read of both logs.

The pooled metrics equal the in-memory evaluation exactly for every metric that is a mean over users
(``R@K``, ``nDCG@K`` and their ``head/`` and ``tail/`` slices: sums of per-user values over the parts divided by
the total user count); ``coverage@K``, ``head_share@K`` and ``avg_popularity@K`` are not pooled (not returned).
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from common_regs.run_dir import scratch_folder
from pipelines.evaluation.recsys import _measures, evaluate_recommendations, unknown_users_warnings
from recsys.data import Interactions, encode_interactions, partition_by_user
from recsys.serving import Recommender

logger = logging.getLogger(__name__)

__all__ = ["evaluate_recommendations_streaming"]


def evaluate_recommendations_streaming(
    service: Recommender,
    train: str | os.PathLike[str],
    test: str | os.PathLike[str],
    *,
    popularity: np.ndarray | None = None,
    ks: tuple[int, ...] | list[int] = (10, 20),
    head_fraction: float = 0.2,
    max_rows_per_part: int = 2_000_000,
    work_dir: str | os.PathLike[str] | None = None,
    show_progress: bool | None = None,
) -> dict[str, Any]:
    """Full-catalogue evaluation of ``service`` on parquet logs, one user partition at a time (module docstring).

    Args:
        service: the recommender (its ``seen`` items are replaced part by part; its vocabularies define the parts).
        train: parquet log with raw ``user_id`` / ``item_id``; its rows are the seen items.
        test: parquet log with raw ``user_id`` / ``item_id``; its rows are the relevant items.
        popularity: training count of every known item (e.g. :func:`recsys.data.item_frequencies`); default the
            service's own.
        ks: cutoffs, as :func:`pipelines.evaluation.recsys.evaluate_recommendations`.
        head_fraction: share of items counted as the popular head, as
            :func:`pipelines.evaluation.recsys.evaluate_recommendations`.
        max_rows_per_part: parts = ``ceil(max(train rows, test rows) / max_rows_per_part)``. Default 2,000,000
            (regkit convention: about 100 MB of ids per part).
        work_dir: where the partitioned copies go (removed afterwards, or by the next run if this one is killed;
            :func:`common_regs.run_dir.scratch_folder`). Default: the system temp folder.
        show_progress: progress bar over the parts (None = when this logger is at INFO or below).

    Returns:
        ``R@K``, ``nDCG@K``, ``head/…``, ``tail/…`` (means over users with test items), ``users``,
        ``cold_users``, ``unknown_test_users``, ``unknown_test_items``, ``head/users``, ``tail/users``, ``parts``,
        ``seconds`` and, when no test user is in the training data, ``warnings``.
    """
    if max_rows_per_part < 1:
        raise ValueError(f"`max_rows_per_part` must be >= 1, got {max_rows_per_part}.")
    rows = max(pq.ParquetFile(train).metadata.num_rows, pq.ParquetFile(test).metadata.num_rows)
    parts = max(1, math.ceil(rows / max_rows_per_part))
    started = time.perf_counter()
    keys = _measures(ks)
    sums: dict[str, float] = {}
    counts = {"users": 0, "cold_users": 0, "unknown_test_users": 0, "unknown_test_items": 0, "head/users": 0,
              "tail/users": 0}
    show = logger.getEffectiveLevel() <= logging.INFO if show_progress is None else show_progress
    with scratch_folder("eval-parts", work_dir) as folder:
        train_parts = partition_by_user(train, service.users, Path(folder) / "train", parts=parts)
        test_parts = partition_by_user(test, service.users, Path(folder) / "test", parts=parts)
        for train_part, test_part in tqdm(
            list(zip(train_parts, test_parts, strict=True)), desc="evaluating parts", disable=not show
        ):
            test_frame = pl.read_parquet(test_part, columns=["user_id", "item_id"])
            if test_frame.height == 0:
                continue
            metrics = evaluate_recommendations(
                service.with_seen(_seen_items(service, train_part, where=str(train)), popularity=popularity),
                test_frame, ks=ks, head_fraction=head_fraction,
                warn=False,  # warnings are about the whole test log: computed from the pooled counts below
            )
            _accumulate(metrics, keys, sums, counts)
    result: dict[str, Any] = {**_pooled_means(sums, counts, keys), **counts}
    result.update({"parts": parts, "seconds": time.perf_counter() - started})
    warnings = unknown_users_warnings(counts["users"], counts["unknown_test_users"])
    return {**result, "warnings": warnings} if warnings else result


def _seen_items(service: Recommender, train_part: str | os.PathLike[str], *, where: str) -> Interactions:
    """The training interactions of one part, encoded with the service's vocabularies (unknown ids dropped)."""
    train_frame = pl.read_parquet(train_part, columns=["user_id", "item_id"])
    if train_frame.height:
        return encode_interactions(train_frame, service.users, service.items, where=where, unknown="drop")
    return Interactions(
        users=np.empty(0, dtype=np.int64),
        items=np.empty(0, dtype=np.int64),
        num_users=service.users.size,
        num_items=service.items.size,
    )


def _accumulate(metrics: dict[str, Any], keys: list[str], sums: dict[str, float], counts: dict[str, int]) -> None:
    """Add one part's user-weighted metric sums (overall, head/, tail/) and its counts into ``sums`` / ``counts``."""
    for prefix, weight in (("", metrics["users"]), ("head/", metrics["head/users"]), ("tail/", metrics["tail/users"])):
        for key in keys:
            if prefix + key in metrics:
                sums[prefix + key] = sums.get(prefix + key, 0.0) + metrics[prefix + key] * weight
    for key in counts:
        counts[key] += int(metrics[key])


def _pooled_means(sums: dict[str, float], counts: dict[str, int], keys: list[str]) -> dict[str, float]:
    """Means over all users of the parts: each pooled sum divided by the total user count of its slice."""
    result: dict[str, float] = {}
    for prefix, total in (("", counts["users"]), ("head/", counts["head/users"]), ("tail/", counts["tail/users"])):
        for key in keys:
            if total and prefix + key in sums:
                result[prefix + key] = sums[prefix + key] / total
    return result
