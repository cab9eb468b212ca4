"""The recsys trainer for a sharded two-tower: the task loss of the global batch, unsharded optimizer state."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from recsys.data import IndexBatch
from recsys.distributed._state import gather_rows, unsharded_state_optimizer
from recsys.distributed.batches import RankSlicedBatches, rank_slice
from recsys.distributed.sharding import ShardedTwoTower
from recsys.models.base import RecBatch, RecOutput
from recsys.trainer import TrainConfig, Trainer

logger = logging.getLogger(__name__)

__all__ = ["DistributedTrainer"]


def _warn_repeated_lookups(hooks: Sequence[Any], config: TrainConfig) -> None:
    """Fused TBE tables update inside the backward of *each* lookup: several lookups per step = several updates."""
    extra = [type(hook).__name__ for hook in hooks if getattr(hook, "registry_name", "") == "ssl_infonce"
             or type(hook).__name__ == "ItemSSLLoss"]
    if config.loss == "bpr":
        extra.append("BPR negatives")
    if extra and config.optimizer != "sgd":
        logger.warning(
            "%s looks the item tables up again in each step; the fused %s optimizer updates a table once per lookup "
            "(its state accumulates each partial gradient separately), so training differs from single-process "
            "%s on the same batches (SGD is linear in the gradient and matches exactly). See "
            "docs/scaling_distributed.md.", " and ".join(extra), config.optimizer, config.optimizer,
        )


class _PreparedScheduler:
    """A mask scheduler already prepared on the unsharded model: ``prepare`` only attaches the optimizer."""

    def __init__(self, scheduler: Any) -> None:
        self._scheduler = scheduler

    def prepare(self, model: Any, optimizer: torch.optim.Optimizer | None = None) -> None:
        self._scheduler.optimizer = optimizer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._scheduler, name)


class DistributedTrainer(Trainer):
    """:class:`~recsys.trainer.Trainer` for a :class:`ShardedTwoTower` on :class:`RankSlicedBatches`.

    Differences from the single-process trainer: the task loss is computed on the all-gathered global batch (so
    the gradient is the single-process one), the optimizer is torchrec's ``CombinedOptimizer`` of the fused TBE
    optimizer and a keyed torch optimizer for the dense parameters, its state is saved unsharded (resume on any
    number of ranks), and only rank 0 writes checkpoint files. Hooks run on every rank: SSL samples the same items
    on every rank (seeded per call), so its loss and gradient equal the single-process ones (the SSL batch is
    computed redundantly, not split).
    """

    is_checkpoint_writer: bool

    def __init__(self, model: ShardedTwoTower, batches: RankSlicedBatches, config: TrainConfig, **kwargs: Any):
        if not isinstance(model, ShardedTwoTower):
            raise TypeError(f"`model` must be a ShardedTwoTower (shard_two_tower), got {type(model).__name__}.")
        if not isinstance(batches, RankSlicedBatches):
            raise TypeError(f"`batches` must be RankSlicedBatches, got {type(batches).__name__}.")
        hooks = list(kwargs.pop("hooks", ()))
        for position, hook in enumerate(hooks):
            if getattr(hook, "hook_kind", None) != "mask_scheduler":
                continue
            if getattr(hook, "model", None) is None:
                raise ValueError(
                    f"{type(hook).__name__} must be prepared before sharding: pass the hooks to "
                    "`shard_two_tower(..., hooks=hooks)` too (parametrizations must exist before DDP wraps the model)."
                )
            hooks[position] = _PreparedScheduler(hook)
        kwargs["hooks"] = hooks
        if model.sharding_type != "data_parallel":  # replicated tables: plain torch optimizer on summed gradients
            _warn_repeated_lookups(hooks, config)
        self.env = model.env
        self.is_checkpoint_writer = model.env.is_writer
        self._global_rows = 0
        super().__init__(model, batches, config, **kwargs)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        from torchrec.optim.keyed import KeyedOptimizerWrapper
        from torchrec.optim.optimizers import in_backward_optimizer_filter

        config = self.config
        dmp = self.model.dmp  # type: ignore[attr-defined]
        dense = dict(in_backward_optimizer_filter(dmp.named_parameters()))
        optimizers = {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad, "sgd": torch.optim.SGD}
        factory = optimizers[config.optimizer]
        dense_optimizer = KeyedOptimizerWrapper(
            dense, lambda params: factory(params, lr=config.lr, weight_decay=config.weight_decay)
        )
        return unsharded_state_optimizer(dmp.fused_optimizer, dense_optimizer)

    def _make_batch(self, index_batch: IndexBatch) -> RecBatch:
        """BPR negatives are drawn for the global batch (one ``(seed, step)`` draw, as single-process), then sliced."""
        if self.config.loss != "bpr" or self.negative_sampler is None:
            return super()._make_batch(index_batch)
        users = gather_rows(index_batch.users, differentiable=False)
        negatives = self.negative_sampler.sample(users, self.config.num_negatives, self.step)
        negatives = negatives[rank_slice(int(users.numel()), self.env.rank, self.env.world_size)]
        batch = RecBatch(users=index_batch.users, items=index_batch.items, rows=index_batch.rows, negatives=negatives)
        return self.model.featurize(batch)

    def task_loss(self, outputs: RecOutput, batch: RecBatch) -> Tensor:
        """The single-process task loss of the global batch (embeddings and ids all-gathered in rank order)."""
        negatives = outputs.negatives
        if negatives is not None:
            negatives = gather_rows(negatives, differentiable=True)
        gathered = RecOutput(
            user=gather_rows(outputs.user, differentiable=True),
            item=gather_rows(outputs.item, differentiable=True),
            scale=outputs.scale,
            negatives=negatives,
            regularized=outputs.regularized,
        )
        items = gather_rows(batch.items, differentiable=False)
        self._global_rows = int(items.numel())
        return super().task_loss(gathered, batch.replace(items=items))

    def train_step(self, index_batch: IndexBatch) -> dict[str, float]:
        """One step; ``result.examples`` (hence ``examples_per_second``) counts the global batch, all ranks."""
        components = super().train_step(index_batch)
        self.result.examples += self._global_rows - len(index_batch)
        return components

    def _state(self) -> dict[str, Any]:
        state = super()._state()
        state["world_size"] = self.env.world_size  # provenance only: the state itself is unsharded
        return state
