"""Tuned neural recommenders against tuned baselines, on ML-100K u1 and on LastFM (the LightGCN reference split).

Every model gets the same budget: ``TRIALS`` trials of ``regkit recsys tune`` with its default space
(``pipelines/configs/spaces``; most popular has nothing to tune, one trial), scored on a 10 % per-user random carve of
the training split; the best config is then trained by ``regkit recsys train`` (validation epoch choice, refit on
the whole training split) and tested. ``regkit recsys compare`` does all of it and tests every model against the
best baseline (chosen on validation) with paired per-user tests on the test split.

The configs are the shipped ML-100K ones (``pipelines/configs/ml100k_*.yaml``); on LastFM only their data section
changes (no side tables). Also measured, in the same process: MF-BPR training throughput against the plain torch
loop of the speed benchmark (1 thread, batch 1024, the anchor of the recommender work).

Needs ``$REGKIT_SHARED_DATA/ml-100k`` and ``$REGKIT_SHARED_DATA/lastfm``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipelines.bench import shared_data_dir

logger = logging.getLogger(__name__)

TRIALS = 12
MODELS = {
    "mf_softmax": "ml100k_mf_softmax.yaml",
    "lightgcn": "ml100k_lightgcn.yaml",
    "two_tower": "ml100k_two_tower_ids.yaml",
    "ease": "ml100k_ease.yaml",
    "item_knn": "ml100k_item_knn.yaml",
    "als": "ml100k_als.yaml",
    "most_popular": "ml100k_most_popular.yaml",
}


def _lastfm(out_dir: Path) -> Path:
    from pipelines.datasets.lastfm import convert_lastfm

    shared = shared_data_dir()
    target = out_dir / "data" / "lastfm"
    if not (target / "manifest.json").is_file():
        convert_lastfm(shared / "lastfm", target, overwrite=True)
    return target


def _datasets(out_dir: Path) -> dict[str, list[str]]:
    from pipelines.bench.bench_recsys import _data

    lastfm = _lastfm(out_dir)
    return {
        "ml100k_u1": [f"data.dir={_data(out_dir)}"],
        "lastfm": [f"data.dir={lastfm}", "data.train=splits/train.parquet", "data.test=splits/test.parquet",
                   "data.users=null", "data.items=null"],
    }


def _throughput_row(ml100k: Path) -> dict[str, Any]:
    import torch

    from pipelines.bench._speed_baselines import PlainSetup
    from pipelines.bench.bench_recsys import REPO
    from pipelines.bench.bench_speed import CONFIGS, STEPS, _interleaved, _plain_train, _regkit_train, _row
    from pipelines.recsys_data import RunData
    from pipelines.run_config import ValidationConfig, load_recsys_config

    config = load_recsys_config(REPO / "pipelines" / "configs" / "ml100k_mf_bpr.yaml", [f"data.dir={ml100k}"])
    train = RunData(config.data.model_copy(update={"validation": ValidationConfig(method="none")})).train
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        setup = PlainSetup(train.users, train.items, train.num_users, train.num_items, loss="bpr", batch_size=1024,
                           **CONFIGS["bpr"])
        steps = STEPS["bpr", 1024]
        paired = _interleaved(lambda: _regkit_train(setup, train, steps), lambda: _plain_train(setup, steps))
    finally:
        torch.set_num_threads(threads)
    return _row("MF-BPR training, dim 64, batch 1024, 1 thread", paired, "positives/s", 1.0, True,
                peer_name="plain torch loop")


def run(out_dir: Path) -> dict[str, Any]:
    from pipelines.bench.bench_recsys import REPO
    from pipelines.recsys_compare import compare_configs
    from pipelines.run_config import load_recsys_config

    try:
        datasets = _datasets(Path(out_dir))
    except FileNotFoundError as err:
        logger.warning("recsys_tuned benchmark skipped: %s", err)
        return {}
    results: dict[str, Any] = {"trials_per_model": TRIALS}
    for dataset, overrides in datasets.items():
        configs = {
            name: load_recsys_config(REPO / "pipelines" / "configs" / file,
                                     [*overrides, "train.show_progress=false", "num_threads=1"])
            for name, file in MODELS.items()
        }
        results[dataset] = compare_configs(configs, Path(out_dir) / dataset, trials=TRIALS)
    results["throughput"] = _throughput_row(Path(datasets["ml100k_u1"][0].split("=", 1)[1]))
    return results
