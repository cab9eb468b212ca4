"""Time to quality on ML-100K u1: every shipped model through ``regkit recsys train``, next to ``implicit`` ALS.

Each run is the CLI as a user starts it (a fresh ``python -m pipelines recsys train`` process, so the wall time
includes interpreter and library start-up, data loading, evaluation, checkpoints and writing the run folder), with
the config's early stopping on its validation carve and then, with ``eval.refit`` true (the shipped default), a
refit on the whole training split for the chosen number of epochs; with ``eval.refit`` false the early-stopped
model is served. Reported per (model, refit): wall seconds, training seconds (the trainer's own clock, validation
fit + refit), the share of the wall time that is not training, and the test R@20 / nDCG@20.

The peer is ``implicit``'s ``AlternatingLeastSquares`` used directly, in this process: fit on ``u1.base`` with the
settings of ``pipelines/configs/ml100k_als.yaml`` and a numpy full ranking of the test users
(:func:`pipelines.bench._speed_baselines.numpy_full_ranking`); its time is fit + evaluation only (no start-up).

Needs the MovieLens-100K raw files (``$REGKIT_SHARED_DATA/ml-100k``).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

CONFIGS = ("mf_bpr", "mf_softmax", "lightgcn", "two_tower_features", "als", "ease")


def _regkit_run(config: Path, data_dir: Path, out: Path, refit: bool) -> dict[str, Any]:
    command = [sys.executable, "-m", "pipelines", "recsys", "train", "--config", str(config), "--output-dir",
               str(out), "--overwrite", "--set", f"data.dir={data_dir}", "--set", f"eval.refit={str(refit).lower()}"]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - started
    metrics = json.loads((out / "metrics.json").read_text())
    train = metrics["train"]["train_seconds"]
    # the served model is the validation fit itself without a refit: count its training once
    if refit and "validation" in metrics:
        train += metrics["validation"]["train_seconds"]
    return {"wall_s": wall, "train_s": train, "not_training_share": 1 - train / wall,
            "R@20": metrics["test"]["R@20"], "nDCG@20": metrics["test"]["nDCG@20"]}


def _implicit_als(config: Path, data_dir: Path) -> dict[str, Any]:
    """The peer on u1 with the settings of ``ml100k_als.yaml``: timed from reading the split files to the metrics."""
    import polars as pl

    from pipelines.bench._speed_baselines import implicit_als_full_ranking
    from pipelines.run_config import load_recsys_config

    options = load_recsys_config(config, [f"data.dir={data_dir}"]).model.options()
    started = time.perf_counter()
    metrics = implicit_als_full_ranking(pl.read_parquet(data_dir / "splits" / "u1.base.parquet"),
                                        pl.read_parquet(data_dir / "splits" / "u1.test.parquet"), options, (20,))
    return {"wall_s": time.perf_counter() - started, "R@20": metrics["R@20"], "nDCG@20": metrics["nDCG@20"],
            "note": "test pairs with items outside u1.base dropped (regkit counts them as misses)"}


def run(out_dir: Path) -> list[dict[str, Any]]:
    from pipelines.bench.bench_recsys import REPO, _data

    try:
        data_dir = _data(Path(out_dir)).resolve()
    except FileNotFoundError as err:
        logger.warning("time-to-quality benchmark skipped: %s", err)
        return []
    configs = REPO / "pipelines" / "configs"
    rows = [{"model": "implicit ALS (direct, no start-up)", **_implicit_als(configs / "ml100k_als.yaml", data_dir)}]
    logger.info("%s", rows[-1])
    for name in CONFIGS:
        for refit in (True, False):
            result = _regkit_run(configs / f"ml100k_{name}.yaml", data_dir, Path(out_dir) / f"{name}-refit{refit}",
                                 refit)
            rows.append({"model": name, "refit": refit, **result})
            logger.info("%s", rows[-1])
    return rows
