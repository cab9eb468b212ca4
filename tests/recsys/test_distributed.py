"""recsys.distributed: 2 gloo processes (torchrun) train the sharded two-tower like one process; resume on 1 rank.

The reference is the single-process :class:`recsys.trainer.Trainer` on the same seed and global batches. The
distributed run uses CFM SSL and DSL on the MLPs, plain SGD (fbgemm EXACT_SGD on the tables). Its checkpoint is
resumed on ONE rank (another world size) and compared with a single-process run resumed from its own checkpoint.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from distributed_worker import main as worker_main
from distributed_worker import setup
from planted_log import make_planted_log

from recsys.data import InMemoryBatches, Interactions
from recsys.distributed import (
    DistributedEnv,
    RankSlicedBatches,
    fused_optimizer_params,
    rank_slice,
    shard_two_tower,
)
from recsys.trainer import TrainConfig, Trainer

pytestmark = pytest.mark.torchrec

WORKER = Path(__file__).with_name("distributed_worker.py")
TOLERANCE = 1e-5  # float32 sums in another order (all-gather, all-reduce, fused TBE); observed max 1e-7


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _reference(folder: Path, steps: int, checkpoints: Path | None = None) -> dict[str, torch.Tensor]:
    model, batches, config, hooks, interactions = setup(folder, steps)
    Trainer(model, batches, config, hooks=hooks, item_counts=interactions.item_counts(),
            checkpoint_dir=checkpoints).fit()
    return model.state_dict()


def _assert_close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=TOLERANCE, msg=lambda m, k=key: f"{k}: {m}")


@pytest.fixture(scope="module")
def log_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("distributed") / "log"
    make_planted_log(folder)
    return folder


def test_two_gloo_ranks_match_single_process_and_resume_on_one_rank(tmp_path: Path, log_folder: Path) -> None:
    folder = log_folder
    out, checkpoints = tmp_path / "two_ranks.pt", tmp_path / "checkpoints"
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), str(WORKER), str(folder), str(out), "3", str(checkpoints)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    # the planner's plan, logged by rank 0: every table placed on a rank, table-wise
    assert "torchrec sharding plan (2 ranks, table_wise, cpu)" in done.stderr
    for table in ("user__user_id", "item__item_id", "item__genres", "item__year"):
        assert any(table in line and "table_wise" in line and "fused" in line for line in done.stderr.splitlines())
    result = torch.load(out, weights_only=False)
    assert result["steps"] == 3
    _assert_close(result["state"], _reference(folder, 3))

    # resume the 2-rank checkpoint on 1 rank (in this process), continue to 5 steps
    single_checkpoints = tmp_path / "single_checkpoints"
    _reference(folder, 3, single_checkpoints)
    want = _reference(folder, 5, single_checkpoints)  # single-process resume from its own step-3 checkpoint
    os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(_free_port())})
    resumed = tmp_path / "one_rank.pt"
    try:
        worker_main(str(folder), str(resumed), "5", str(checkpoints))
    finally:
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            os.environ.pop(name, None)
        if dist.is_initialized():
            dist.destroy_process_group()
    _assert_close(torch.load(resumed, weights_only=False)["state"], want)


# -- pieces that need no process group --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 5, 64, 65])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_rank_slices_partition_the_batch_in_order(size: int, world: int) -> None:
    rows = [list(range(size))[rank_slice(size, rank, world)] for rank in range(world)]
    assert sum(rows, []) == list(range(size))
    assert max(map(len, rows)) - min(map(len, rows)) <= 1


def test_rank_sliced_batches_cover_each_global_batch() -> None:
    users = torch.arange(10).numpy()
    interactions = Interactions(users=users, items=users % 4, timestamps=None, num_users=10, num_items=4)
    inner = InMemoryBatches(interactions, 4, seed=1)
    ranks = [RankSlicedBatches(inner, rank, 2) for rank in range(2)]
    assert all(len(r) == len(inner) == 3 for r in ranks)
    for whole, *parts in zip(inner.batches(0), *(r.batches(0) for r in ranks), strict=True):
        assert torch.equal(torch.cat([part.rows for part in parts]), whole.rows)
        assert torch.equal(torch.cat([part.users for part in parts]), whole.users)


def _cpu_env() -> DistributedEnv:
    return DistributedEnv(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"), backend="gloo")


def test_row_wise_on_cpu_is_refused_with_the_reason(log_folder: Path) -> None:
    model, _, config, _, _ = setup(log_folder, 1)
    with pytest.raises(ValueError, match=r"`sharding_type`='row_wise' is not available on cpu.*reduce-scatter"):
        shard_two_tower(model, _cpu_env(), config, sharding_type="row_wise")


def test_adam_on_cpu_and_grad_clip_are_refused(log_folder: Path) -> None:
    with pytest.raises(ValueError, match=r"'adam' cannot train sharded embedding tables on CPU"):
        fused_optimizer_params(TrainConfig(optimizer="adam"), torch.device("cpu"))
    model, _, _, _, _ = setup(log_folder, 1)
    with pytest.raises(ValueError, match=r"`train.grad_clip`=1.0 is not supported with --distributed"):
        shard_two_tower(model, _cpu_env(), TrainConfig(optimizer="sgd", grad_clip=1.0))


def test_dsl_on_the_sharded_tables_is_refused(log_folder: Path) -> None:
    from common_regs.sparsity.dsl import DSL

    model, _, config, _, _ = setup(log_folder, 1)
    with pytest.raises(ValueError, match=r"DSL would mask the sharded embedding tables .*user__user_id"):
        shard_two_tower(model, _cpu_env(), config, hooks=[DSL(density=0.5, update_interval=2)])
