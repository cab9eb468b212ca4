"""Worker of tests/recsys/test_distributed.py, started by ``torchrun``; also builds the single-process reference.

``python -m torch.distributed.run --nproc_per_node N tests/recsys/distributed_worker.py FOLDER OUT STEPS [CKPT]``
trains the planted-log two-tower (item features, CFM SSL, DSL on the MLPs) for STEPS steps under
``recsys.distributed`` and rank 0 writes the unsharded weights to OUT. With CKPT, checkpoints go there every step
(and a run finds and resumes the newest one).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import polars as pl
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common_regs.sparsity.dsl import DSL  # noqa: E402
from recsys.data import InMemoryBatches, Vocabulary, encode_interactions  # noqa: E402
from recsys.features import FeatureSpec, FeatureTable  # noqa: E402
from recsys.models.two_tower import TwoTower  # noqa: E402
from recsys.ssl import SSLConfig, build_ssl_hooks  # noqa: E402
from recsys.trainer import TrainConfig  # noqa: E402

BATCH = 64
SEED = 3


def setup(folder: Path, steps: int):
    """Model (seeded), batches, hooks and config: identical for the distributed and the single-process run."""
    items_frame = pl.read_parquet(folder / "items.parquet")
    train = pl.read_parquet(folder / "train.parquet")
    users = Vocabulary.from_values("user_id", train["user_id"])
    items = Vocabulary.from_values("item_id", items_frame["item_id"])
    user_table = FeatureTable.build(users, [FeatureSpec("user_id", "id")])
    specs = [
        FeatureSpec("item_id", "id"),
        FeatureSpec("genres", "multi_categorical", column="genres"),
        FeatureSpec("year", "bucketized", column="year", num_buckets=4),
    ]
    item_table = FeatureTable.build(items, specs, items_frame)
    interactions = encode_interactions(train, users, items)
    torch.manual_seed(SEED)
    model = TwoTower(user_table, item_table, embedding_dim=8, tower_layers=(16, 8), temperature=0.2)
    config = TrainConfig(epochs=10, max_steps=steps, batch_size=BATCH, optimizer="sgd", lr=0.2, seed=SEED,
                         eval_every=0, restore_best=False, show_progress=False)
    ssl = build_ssl_hooks(SSLConfig(mode="cfm", batch_size=16, alpha=0.3), item_table,
                          item_counts=interactions.item_counts(), seed=SEED)
    hooks = [*ssl, DSL(density=0.5, update_interval=2, targets=["*mlp*weight"], seed=SEED)]
    batches = InMemoryBatches(interactions, BATCH, seed=SEED)
    return model, batches, config, hooks, interactions


def main(folder: str, out: str, steps: str, checkpoints: str | None = None) -> None:
    from recsys.distributed import (
        DistributedTrainer,
        RankSlicedBatches,
        init_distributed,
        shard_two_tower,
        shutdown_distributed,
    )

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("recsys").setLevel(logging.INFO)
    env = init_distributed()
    model, batches, config, hooks, interactions = setup(Path(folder), int(steps))
    sharded = shard_two_tower(model, env, config, hooks=hooks)
    trainer = DistributedTrainer(
        sharded, RankSlicedBatches(batches, env.rank, env.world_size), config, hooks=hooks,
        item_counts=interactions.item_counts(), checkpoint_dir=checkpoints,
    )
    result = trainer.fit()
    state = sharded.state_dict()
    if env.is_writer:
        torch.save({"state": state, "steps": result.steps, "examples": result.examples}, out)
    shutdown_distributed()


if __name__ == "__main__":
    main(*sys.argv[1:])
