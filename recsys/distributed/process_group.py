"""Joining and leaving the process group that ``torchrun`` describes: gloo on CPU, NCCL on CUDA."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

__all__ = ["TORCHRUN_VARIABLES", "DistributedEnv", "init_distributed", "shutdown_distributed"]

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistributedEnv:
    """Where this process sits: ``rank`` of ``world_size``, its ``device`` and the collective ``backend``."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str

    @property
    def is_writer(self) -> bool:
        """Rank 0 writes files (checkpoints, the run folder); every rank computes."""
        return self.rank == 0


def shutdown_distributed() -> None:
    """Leave the default process group once every rank got here (no-op without one).

    The barrier first: a rank that destroys its gloo group while a peer's last collective is still in flight can
    abort at exit ("terminate called without an active exception"), seen ~1 in 10 runs of the 2-rank test.
    """
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def init_distributed(
    backend: Literal["auto", "gloo", "nccl"] = "auto", *, timeout_seconds: float = 600.0
) -> DistributedEnv:
    """Join (or reuse) the default process group from torchrun's environment variables.

    ``backend="auto"`` picks NCCL when CUDA is available (device ``cuda:LOCAL_RANK``), else gloo on CPU.
    Raises ``RuntimeError`` naming the missing variables when not started by ``torchrun``.
    """
    if backend not in ("auto", "gloo", "nccl"):
        raise ValueError(f"`backend` must be 'auto', 'gloo' or 'nccl', got {backend!r}.")
    if not dist.is_initialized():
        missing = [name for name in TORCHRUN_VARIABLES if name not in os.environ]
        if missing:
            raise RuntimeError(
                f"distributed training needs torchrun's environment; missing {missing}. Start it with "
                "`torchrun --nproc_per_node N -m pipelines recsys train ... --distributed`."
            )
        chosen = backend if backend != "auto" else ("nccl" if torch.cuda.is_available() else "gloo")
        if chosen == "nccl" and not torch.cuda.is_available():
            raise ValueError("`backend`='nccl' needs CUDA; this machine has none (use 'gloo' or 'auto').")
        if chosen == "nccl":
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        dist.init_process_group(chosen, timeout=timedelta(seconds=timeout_seconds))
    chosen = dist.get_backend()
    local_rank = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    device = torch.device("cuda", local_rank) if chosen == "nccl" else torch.device("cpu")
    env = DistributedEnv(dist.get_rank(), dist.get_world_size(), local_rank, device, chosen)
    logger.info("rank %d of %d (%s on %s)", env.rank, env.world_size, env.backend, env.device)
    return env
