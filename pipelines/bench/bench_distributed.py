"""Sharded (torchrec DMP, 2 gloo processes) vs. single-process two-tower training throughput on one generated log.

Every configuration trains the same model (ids + a multi-valued genre feature, EBC tables, MLP towers, in-batch
softmax with logQ, Adagrad = fbgemm EXACT_ADAGRAD on the sharded tables) on the same global batches for the same
number of steps, each in a fresh process; throughput is global examples per second of ``Trainer.fit`` (start-up,
planning and data loading excluded). Rows:

* ``single_1thread``: one process, ``torch.set_num_threads(1)``;
* ``single_2threads``: one process, 2 intra-op threads (all the cores this machine has);
* ``sharded_2ranks``: ``torchrun --nproc_per_node 2``, gloo, 1 thread per rank, tables table-wise.

Each row is measured ``REPEATS`` times, alternating, and the best run is kept (the machine is shared; the
median is reported too). The ratio sharded / single is the figure ``make bench`` reports.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from common_regs.io import atomic_write_text

logger = logging.getLogger(__name__)

USERS, ITEMS, GENRES, PER_USER = 20_000, 5_000, 20, 25  # 500,000 interactions
BATCH, STEPS, SEED, REPEATS = 2048, 40, 0, 2
EMBEDDING_DIM, LAYERS = 32, (64, 32)


def make_log(folder: Path, *, seed: int = SEED) -> Path:
    """Zipf-popular items, users with one favourite genre (60% of their items); train.parquet + items.parquet."""
    if (folder / "train.parquet").is_file():
        return folder
    rng = np.random.default_rng(seed)
    item_genre = rng.integers(0, GENRES, size=ITEMS)
    popularity = 1.0 / np.arange(1, ITEMS + 1) ** 0.8
    taste = rng.integers(0, GENRES, size=USERS)
    users = np.repeat(np.arange(USERS), PER_USER)
    own = rng.random(users.size) < 0.6
    by_genre = [np.flatnonzero(item_genre == genre) for genre in range(GENRES)]
    items = rng.choice(ITEMS, size=users.size, p=popularity / popularity.sum())
    for genre in range(GENRES):
        rows = np.flatnonzero(own & (taste[users] == genre))
        weights = popularity[by_genre[genre]]
        items[rows] = rng.choice(by_genre[genre], size=rows.size, p=weights / weights.sum())
    folder.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"user_id": users + 1, "item_id": items + 1, "timestamp": np.arange(users.size)}).unique(
        ["user_id", "item_id"], keep="first", maintain_order=True
    ).write_parquet(folder / "train.parquet")
    genres = [[f"g{g}", f"g{(g + 1) % GENRES}"] if i % 3 == 0 else [f"g{g}"] for i, g in enumerate(item_genre)]
    pl.DataFrame({"item_id": np.arange(1, ITEMS + 1), "genres": genres}).write_parquet(folder / "items.parquet")
    return folder


def _setup(folder: Path) -> tuple[Any, Any, Any, Any]:
    import torch

    from recsys.data import InMemoryBatches, Vocabulary, encode_interactions
    from recsys.features import FeatureSpec, FeatureTable
    from recsys.models.two_tower import TwoTower
    from recsys.trainer import TrainConfig

    train = pl.read_parquet(folder / "train.parquet")
    items_frame = pl.read_parquet(folder / "items.parquet")
    users = Vocabulary.from_values("user_id", train["user_id"])
    items = Vocabulary.from_values("item_id", items_frame["item_id"])
    user_table = FeatureTable.build(users, [FeatureSpec("user_id", "id")])
    item_specs = [FeatureSpec("item_id", "id"), FeatureSpec("genres", "multi_categorical", column="genres")]
    item_table = FeatureTable.build(items, item_specs, items_frame)
    interactions = encode_interactions(train, users, items)
    torch.manual_seed(SEED)
    model = TwoTower(user_table, item_table, embedding_dim=EMBEDDING_DIM, tower_layers=LAYERS, temperature=0.2)
    config = TrainConfig(epochs=1, max_steps=STEPS, batch_size=BATCH, optimizer="adagrad", lr=0.05, seed=SEED,
                         eval_every=0, restore_best=False, show_progress=False)
    return model, InMemoryBatches(interactions, BATCH, seed=SEED), config, interactions


def worker(folder: str, out: str, mode: str) -> None:
    """One measurement: ``mode`` = single_1thread | single_2threads | sharded (under torchrun)."""
    import torch

    from recsys.trainer import Trainer

    torch.set_num_threads(2 if mode == "single_2threads" else 1)
    model, batches, config, interactions = _setup(Path(folder))
    rank = 0
    if mode == "sharded":
        from recsys.distributed import DistributedTrainer, RankSlicedBatches, init_distributed, shard_two_tower

        env = init_distributed()
        rank = env.rank
        sharded = shard_two_tower(model, env, config)
        trainer: Trainer = DistributedTrainer(sharded, RankSlicedBatches(batches, env.rank, env.world_size), config,
                                              item_counts=interactions.item_counts())
    else:
        trainer = Trainer(model, batches, config, item_counts=interactions.item_counts())
    result = trainer.fit()
    if rank == 0:
        payload = {"mode": mode, "steps": result.steps, "examples": result.examples,
                   "train_seconds": result.train_seconds, "examples_per_second": result.examples_per_second,
                   "threads": torch.get_num_threads()}
        atomic_write_text(out, json.dumps(payload) + "\n")
    if mode == "sharded":
        import torch.distributed as dist

        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _measure(folder: Path, out_dir: Path, row: str, repeat: int) -> dict[str, Any]:
    out = out_dir / f"{row}_{repeat}.json"
    module = ["-m", "pipelines.bench.bench_distributed", "--worker", str(folder), str(out)]
    if row == "sharded_2ranks":
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                   "127.0.0.1", "--master_port", str(_free_port()), *module, "sharded"]
    else:
        command = [sys.executable, *module, row]
    env = {**os.environ, "OMP_NUM_THREADS": "2" if row == "single_2threads" else "1"}
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900,
                          cwd=Path(__file__).resolve().parents[2])
    if done.returncode != 0:
        raise RuntimeError(f"{row} run {repeat} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(out.read_text())
    result["wall_seconds"] = time.perf_counter() - started
    return result


def run(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    out_dir = Path(out_dir)
    folder = make_log(out_dir / "log")
    interactions = pl.scan_parquet(folder / "train.parquet").select(pl.len()).collect().item()
    rows = ("single_1thread", "single_2threads", "sharded_2ranks")
    runs: dict[str, list[dict[str, Any]]] = {row: [] for row in rows}
    for repeat in range(REPEATS):
        for row in rows:
            runs[row].append(_measure(folder, out_dir, row, repeat))
            logger.info("%s run %d: %.0f examples/s", row, repeat, runs[row][-1]["examples_per_second"])
    best = {row: max(r["examples_per_second"] for r in measured) for row, measured in runs.items()}
    median = {row: statistics.median(r["examples_per_second"] for r in measured) for row, measured in runs.items()}
    results = {
        "log": {"interactions": interactions, "users": USERS, "items": ITEMS, "genres": GENRES},
        "model": {"embedding_dim": EMBEDDING_DIM, "tower_layers": list(LAYERS), "optimizer": "adagrad",
                  "batch_size": BATCH, "steps": STEPS, "sharding": "table_wise, fused TBE, gloo"},
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15min_at_end": list(os.getloadavg()),
        "examples_per_second_best": best,
        "examples_per_second_median": median,
        "ratio_sharded_vs_single_1thread": best["sharded_2ranks"] / best["single_1thread"],
        "ratio_sharded_vs_single_2threads": best["sharded_2ranks"] / best["single_2threads"],
        "runs": runs,
        "note": "best of alternating repeats on a shared 2-core machine; absolute numbers are noisy, ratios are "
                "from the same bench run",
    }
    return results


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        logging.basicConfig(level=logging.WARNING)
        worker(*sys.argv[2:5])
    else:
        raise SystemExit("usage: python -m pipelines.bench --only distributed")
