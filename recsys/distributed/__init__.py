"""Model-parallel two-tower training with torchrec ``DistributedModelParallel`` (DMP), started by ``torchrun``.

The same :class:`~recsys.trainer.Trainer` loop runs on every rank; this module supplies the pieces that change:

* :func:`init_distributed` joins the process group from torchrun's environment (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): gloo on CPU, NCCL on CUDA.
* :func:`shard_two_tower` plans the embedding tables with torchrec's ``EmbeddingShardingPlanner``
  (``Topology(world_size, compute_device)``), logs the plan on rank 0, wraps the model in DMP (tables sharded
  with fbgemm's fused TBE kernel and optimizer, the MLPs replicated under ``DistributedDataParallel``) and returns
  a :class:`ShardedTwoTower`, a :class:`~recsys.models.base.Recommender` the trainer, the SSL hooks and the
  evaluator use like the single-process model.
* :class:`RankSlicedBatches` gives each rank its contiguous slice of every *global* batch (the batch order is the
  single-process one: it depends only on ``(seed, epoch)``).
* :class:`DistributedTrainer` computes the task loss on the *global* batch: user / item embeddings are all-gathered
  with autograd (``torch.distributed.nn.functional.all_gather``, whose backward sums the gradients of all ranks),
  every rank evaluates the full in-batch softmax (logQ on the global item ids), DDP averages the dense gradients
  and torchrec divides the embedding gradients by the world size in the all-to-all backward
  (``torchrec.distributed.comm_ops.GRADIENT_DIVISION``). The gradient of every parameter is then exactly the
  single-process gradient of the same global batch; see ``docs/scaling_distributed.md`` for the derivation.

Checkpoints hold *unsharded* tensors under the single-process parameter names (model) and parameter FQNs
(optimizer): every rank gathers them, rank 0 writes, every rank reads the whole file and keeps its own shards.
A run can therefore resume on another number of ranks (``torchrun --nproc_per_node M``), and the saved model
loads into the plain :class:`~recsys.models.two_tower.TwoTower`.

What does not work under sharding, and why (errors name it):

* row-wise / table-row-wise / grid sharding on CPU: torchrec's ``EmbeddingBagCollectionSharder.sharding_types``
  offers them only for CUDA (gloo has no reduce-scatter; torchrec#1252).
* ``train.optimizer='adam'`` on CPU: fbgemm's CPU TBE kernels implement EXACT_SGD / EXACT_ADAGRAD /
  EXACT_ROWWISE_ADAGRAD, not Adam (torchrec#1275); use ``sgd`` or ``adagrad`` (Adam still works on CUDA).
* DSL (or any mask scheduler) on the embedding tables: the fused TBE tables are not ``nn.EmbeddingBag`` modules
  and keep no ``.grad`` (the update happens inside backward), so they cannot be parametrized nor grown by gradient.
  DSL on the dense layers (``targets: ['*mlp*']``) works and stays identical on every rank.
* ``train.grad_clip``: the norm would be rank-local (each rank holds other tables, fused tables have no ``.grad``).
* SSL (and BPR negatives) with Adagrad / Adam: the item tables are looked up three times per step (batch + two SSL
  views), and the fused optimizer updates a table inside the backward of each lookup, so Adagrad's state gets three
  partial gradients instead of their sum; it trains, but not exactly like single-process (a warning says so).
  With SGD (linear in the gradient) SSL under sharding equals single-process training (tested). So does
  ``sharding_type='data_parallel'`` (tables replicated, plain torch optimizer, Adam included on CPU), which is not
  model parallelism; torchrec's planner refuses the non-fused DENSE kernel for any other sharding type.

Layout: :mod:`~recsys.distributed.process_group` (join and leave), :mod:`~recsys.distributed.batches` (each rank's
slice), :mod:`~recsys.distributed.sharding` (plan, fused optimizer, the sharded model),
:mod:`~recsys.distributed.trainer` (the global-batch loss) and :mod:`~recsys.distributed._state` (unsharded state
and the differentiable row gather). Their public names are importable from here.
"""

from __future__ import annotations

from recsys.distributed._state import gather_full_state
from recsys.distributed.batches import RankSlicedBatches, rank_slice
from recsys.distributed.process_group import DistributedEnv, init_distributed, shutdown_distributed
from recsys.distributed.sharding import (
    SHARDING_TYPES,
    ShardedTwoTower,
    fused_optimizer_params,
    shard_two_tower,
    supported_sharding_types,
)
from recsys.distributed.trainer import DistributedTrainer

__all__ = [
    "SHARDING_TYPES",
    "DistributedEnv",
    "DistributedTrainer",
    "RankSlicedBatches",
    "ShardedTwoTower",
    "fused_optimizer_params",
    "gather_full_state",
    "init_distributed",
    "rank_slice",
    "shard_two_tower",
    "shutdown_distributed",
    "supported_sharding_types",
]
