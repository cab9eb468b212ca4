"""The two-tower's embedding tables sharded by torchrec ``DistributedModelParallel``: plan, fused optimizer, model.

What can and cannot be sharded, and why, is listed in :mod:`recsys.distributed`.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from recsys.distributed._state import fill_shards, gather_full_state
from recsys.distributed.process_group import DistributedEnv
from recsys.models.base import RecBatch, Recommender, RecOutput
from recsys.models.two_tower import TwoTower
from recsys.trainer import TrainConfig

logger = logging.getLogger(__name__)

__all__ = [
    "SHARDING_TYPES", "ShardedTwoTower", "fused_optimizer_params", "shard_two_tower", "supported_sharding_types",
]

SHARDING_TYPES: tuple[str, ...] = (
    "table_wise", "column_wise", "table_column_wise", "data_parallel", "row_wise", "table_row_wise",
)


def supported_sharding_types(device_type: str) -> list[str]:
    """Sharding types torchrec's ``EmbeddingBagCollectionSharder`` offers on ``device_type`` ("cpu" / "cuda")."""
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder

    return list(EmbeddingBagCollectionSharder().sharding_types(device_type))


def fused_optimizer_params(config: TrainConfig, device: torch.device) -> dict[str, Any]:
    """The fbgemm TBE optimizer settings equal to the single-process torch optimizer of the embedding tables.

    ``sgd`` → EXACT_SGD (``w -= lr·g``); ``adagrad`` → EXACT_ADAGRAD (``s += g²; w -= lr·g/(√s + eps)``,
    eps 1e-10 = ``torch.optim.Adagrad``'s default); ``adam`` → ADAM (CUDA only; betas/eps = torch defaults).
    """
    from fbgemm_gpu.split_embedding_configs import EmbOptimType

    if config.sparse_weight_decay:
        raise ValueError(
            "`train.sparse_weight_decay` is not supported with --distributed (the fused TBE optimizers' weight "
            f"decay is not the torch one); got {config.sparse_weight_decay}. Use 0."
        )
    lr = config.sparse_lr or config.lr
    if config.optimizer == "sgd":
        return {"optimizer": EmbOptimType.EXACT_SGD, "learning_rate": lr}
    if config.optimizer == "adagrad":
        return {"optimizer": EmbOptimType.EXACT_ADAGRAD, "learning_rate": lr, "eps": 1e-10}
    if device.type != "cuda":
        raise ValueError(
            "`train.optimizer`='adam' cannot train sharded embedding tables on CPU: fbgemm's CPU TBE kernels "
            "implement EXACT_SGD / EXACT_ADAGRAD / EXACT_ROWWISE_ADAGRAD only (torchrec#1275). Use "
            "`--set train.optimizer=adagrad` (or sgd), or run on CUDA."
        )
    return {"optimizer": EmbOptimType.ADAM, "learning_rate": lr, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}


def _check_sharding_type(sharding_type: str, device: torch.device) -> None:
    if sharding_type not in SHARDING_TYPES:
        raise ValueError(f"`sharding_type` must be one of {list(SHARDING_TYPES)}, got {sharding_type!r}.")
    supported = supported_sharding_types(device.type)
    if sharding_type not in supported:
        raise ValueError(
            f"`sharding_type`={sharding_type!r} is not available on {device.type}: torchrec's "
            f"EmbeddingBagCollectionSharder offers {supported} there (row-wise needs reduce-scatter, which gloo "
            "lacks; torchrec#1252). Use 'table_wise' or 'column_wise' on CPU."
        )


class ShardedTwoTower(Recommender):
    """A :class:`~recsys.models.two_tower.TwoTower` whose tables are sharded by torchrec DMP.

    Forward goes through DMP (sharded EBCs + DDP around the MLPs); ``featurize``, ``encode_items``,
    ``item_tower`` (SSL) and the embedding calls of the evaluator reach the same sharded modules. Every call
    that touches a table is a collective: all ranks must make the same calls in the same order (the trainer and
    evaluator do). ``state_dict`` / ``load_state_dict`` speak unsharded tensors with the single-process names.

    Args:
        model: the single-process two-tower (its current weights are loaded into the shards).
        dmp: the ``DistributedModelParallel`` wrapping ``model``. plan: the torchrec ``ShardingPlan``.
        env: the :class:`DistributedEnv`. initial: full single-process weights to start from.
        sharding: the sharding type of every table.
    """

    name = "two_tower"

    def __init__(
        self, model: TwoTower, dmp: Any, plan: Any, env: DistributedEnv, initial: Mapping[str, Tensor], sharding: str
    ) -> None:
        super().__init__(model.num_users, model.num_items, model.similarity)
        self.dmp = dmp
        self.sharding_type = sharding
        self.plan = plan
        self.env = env
        self.has_user_features = model.has_user_features
        self._config = model.get_config()
        self.load_state_dict(initial)  # DMP re-initialises the shards; start from the single-process weights

    @property
    def inner(self) -> TwoTower:
        return self.dmp.module  # the TwoTower whose EBCs were replaced by ShardedEmbeddingBagCollections

    @property
    def user_tower(self) -> Any:
        return self.inner.user_tower

    @property
    def item_tower(self) -> Any:
        return self.inner.item_tower

    def featurize(self, batch: RecBatch) -> RecBatch:
        return self.inner.featurize(batch)

    def forward(self, batch: RecBatch) -> RecOutput:
        return self.dmp(batch)

    def item_inputs(self, items: Tensor) -> Any:
        return self.inner.item_inputs(items)

    def encode_items(self, inputs: Any) -> Tensor:
        return self.inner.encode_items(inputs)

    def encode_users(self, inputs: Any) -> Tensor:
        return self.inner.encode_users(inputs)

    def user_embeddings(self, users: Tensor, *, cold: Tensor | None = None) -> Tensor:
        return self.inner.user_embeddings(users, cold=cold)

    def item_embeddings(self) -> Tensor:
        return self.inner.item_embeddings()

    def get_config(self) -> dict[str, Any]:
        return dict(self._config)

    def named_parameters(  # type: ignore[override]
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, torch.nn.Parameter]]:
        """DMP's parameters under the single-process names (fused table slices included, DDP prefix stripped)."""
        yield from self.dmp.named_parameters(prefix, recurse, remove_duplicate)

    def sparse_parameters(self) -> Iterator[tuple[str, torch.nn.Parameter]]:
        """The table slices this rank holds (updated by the fused TBE optimizer inside backward)."""
        from torchrec.optim.optimizers import in_backward_optimizer_filter

        dense = dict(in_backward_optimizer_filter(self.dmp.named_parameters(), include=False))
        yield from ((n, p) for n, p in self.dmp.named_parameters() if n not in dense)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:  # type: ignore[override]
        """Full (unsharded) weights under the single-process keys, on every rank. Collective."""
        if args or kwargs:
            raise TypeError("`ShardedTwoTower.state_dict` takes no arguments (it returns the gathered full state).")
        return gather_full_state(self.dmp.state_dict())

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """Load full single-process weights: each rank keeps its shards. Not collective."""
        if assign:
            raise TypeError("`assign=True` is not supported for sharded models.")
        current = self.dmp.state_dict()
        extra = set(state_dict) - set(current)
        if strict and extra:
            raise KeyError(f"unexpected keys for the sharded two-tower: {sorted(extra)}.")
        return self.dmp.load_state_dict(fill_shards(current, state_dict, what="model state"), strict=strict)

    def unsharded(self, users: Any, items: Any) -> TwoTower:
        """A single-process :class:`TwoTower` with the trained weights (collective: gathers on every rank)."""
        model = TwoTower(users, items, **{k: v for k, v in self._config.items()})
        model.load_state_dict(self.state_dict())
        return model


def shard_two_tower(
    model: TwoTower,
    env: DistributedEnv,
    config: TrainConfig,
    *,
    sharding_type: str = "table_wise",
    hooks: Sequence[Any] = (),
) -> ShardedTwoTower:
    """Plan and shard ``model``'s tables over the ranks of ``env`` (collective); logs the plan on rank 0.

    The planner (``EmbeddingShardingPlanner`` with ``Topology(world_size, compute_device)``) is restricted to
    ``sharding_type`` by ``ParameterConstraints`` on every table, and chooses the ranks; the fused TBE optimizer is
    :func:`fused_optimizer_params` of ``config``. Mask schedulers among ``hooks`` (DSL) are prepared here, on the
    unsharded model: a parametrization registered after DDP wrapped the MLPs gets no gradient all-reduce (DDP
    reported the masked weights as "did not receive grad"). Pass the same hooks to :class:`DistributedTrainer`.
    """
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.model_parallel import DefaultDataParallelWrapper, DistributedModelParallel
    from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
    from torchrec.distributed.planner.types import ParameterConstraints

    if not isinstance(model, TwoTower) or model.embedding_backend != "torchrec":
        raise TypeError(
            "--distributed shards torchrec EmbeddingBagCollections: it needs model.name 'two_tower' with "
            f"embedding_backend 'torchrec', got {type(model).__name__}"
            f"{'' if not isinstance(model, TwoTower) else ' with backend ' + repr(model.embedding_backend)}."
        )
    if config.grad_clip is not None:
        raise ValueError(
            f"`train.grad_clip`={config.grad_clip} is not supported with --distributed: the sharded tables are "
            "updated inside backward by the fused optimizer (no .grad to clip) and each rank holds other tables, so "
            "a norm would be rank-local. Set it to null."
        )
    _check_sharding_type(sharding_type, env.device)
    tables = [f"{tower}.embeddings.embedding_bags.{name}.weight" for tower in ("user_tower", "item_tower")
              for name in getattr(model, tower).embeddings.embedding_bags]
    _check_mask_schedulers(hooks, tables)
    for hook in hooks:
        if getattr(hook, "hook_kind", None) == "mask_scheduler":
            hook.prepare(model)  # the optimizer is attached by DistributedTrainer (_PreparedScheduler)
    initial = {key: value.detach().clone() for key, value in model.state_dict().items()}
    fused = fused_optimizer_params(config, env.device) if sharding_type != "data_parallel" else None
    sharder = EmbeddingBagCollectionSharder(fused_params=fused)
    names = [name for tower in (model.user_tower, model.item_tower) for name in tower.embeddings.embedding_bags]
    constraints = {name: ParameterConstraints(sharding_types=[sharding_type]) for name in names}
    planner = EmbeddingShardingPlanner(
        topology=Topology(world_size=env.world_size, compute_device=env.device.type), constraints=constraints
    )
    plan = planner.collective_plan(model, [sharder], dist.GroupMember.WORLD)
    if env.is_writer:
        logger.info("torchrec sharding plan (%d ranks, %s, %s):\n%s", env.world_size, sharding_type,
                    env.device.type, plan)
    # static_graph=False: with torchrec's default (static_graph=True) the dense gradients of this model (forward
    # returns a RecOutput dataclass) were not all-reduced at all in regkit's parity test; each rank kept its own.
    dmp = DistributedModelParallel(
        model, device=env.device, plan=plan, sharders=[sharder],
        data_parallel_wrapper=DefaultDataParallelWrapper(static_graph=False),
    )
    return ShardedTwoTower(model, dmp, plan, env, initial, sharding_type)


def _check_mask_schedulers(hooks: Sequence[Any], tables: Sequence[str]) -> None:
    for hook in hooks:
        if getattr(hook, "hook_kind", None) != "mask_scheduler":
            continue
        targets = getattr(hook, "targets", None)
        hit = [t for t in tables if targets is None or any(fnmatch.fnmatchcase(t, p) for p in targets)]
        if hit:
            raise ValueError(
                f"{type(hook).__name__} would mask the sharded embedding tables {hit} (targets={targets!r}): under "
                "DistributedModelParallel they are fused TBE tables, updated inside backward with no .grad and not "
                "nn.EmbeddingBag modules, so they can be neither parametrized nor grown by gradient. Restrict "
                "`targets` to dense layers (e.g. ['*mlp*']) or train single-process for DSL on the tables."
            )
