"""Shared pieces of the benchmarks that compare recsys trainer hooks (SSL, regularizers) against a baseline."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from recsys.trainer import Trainer


def step_time_ratios(
    make_trainer: Callable[[str], Trainer],
    variants: Sequence[str],
    baseline: str,
    *,
    steps: int,
    epoch: int = 0,
    warmup: int = 2,
    rounds: int = 2,
) -> dict[str, Any]:
    """Time ``steps`` trainer steps of each variant on the batches of ``epoch``, after ``warmup`` untimed ones.

    The variants are interleaved ``rounds`` times (a shared machine's load drifts); each gets a fresh trainer from
    ``make_trainer(variant)``. Returns the median step seconds per variant and each one's ratio to ``baseline``.
    """
    times: dict[str, list[float]] = {}
    for _ in range(rounds):
        for variant in variants:
            trainer = make_trainer(variant)
            batches = iter(trainer.batches.batches(epoch))
            for step in range(steps + warmup):
                batch = next(batches)
                started = time.perf_counter()
                trainer.train_step(batch)
                if step >= warmup:
                    times.setdefault(variant, []).append(time.perf_counter() - started)
    medians = {variant: statistics.median(values) for variant, values in times.items()}
    return {
        "timed_steps_per_variant": rounds * steps,
        "threads": torch.get_num_threads(),
        "median_step_seconds": medians,
        **{f"{v}_over_{baseline}": medians[v] / medians[baseline] for v in medians if v != baseline},
    }


def mean_and_std(group: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, float]:
    """``key`` → mean and ``"<key> std"`` → sample standard deviation (0 for one run) over the runs of ``group``."""
    summary: dict[str, float] = {}
    for key in keys:
        values = [row[key] for row in group]
        summary[key] = statistics.fmean(values)
        summary[f"{key} std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return summary
