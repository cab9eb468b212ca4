"""Unsharded state of torchrec-sharded models and their optimizers, and the differentiable row gather.

Used by the sharded model and the distributed trainer (:mod:`recsys.distributed`): every function here that
touches the process group is a collective, called by every rank in the same order.

* :func:`gather_rows`: ``all_gather`` of rows with autograd (``torch.distributed.nn.functional.all_gather``, whose
  backward sums the gradients of all ranks) for tensors whose first dimension differs between ranks.
* :func:`gather_full_state` / :func:`fill_shards`: torchrec ``ShardedTensor`` state (model and fused optimizer)
  to full tensors on every rank, and back into this rank's local shards (by shard offsets), so checkpoints are
  independent of the number of ranks.
* :func:`unsharded_state_optimizer`: torchrec ``CombinedOptimizer`` whose ``state_dict`` is that unsharded form.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

logger = logging.getLogger(__name__)

__all__ = ["fill_shards", "gather_full_state", "gather_rows", "unsharded_state_optimizer"]


# -- collectives -----------------------------------------------------------------------------------------------


def gather_rows(tensor: Tensor, *, differentiable: bool) -> Tensor:
    """Concatenate every rank's ``tensor`` (first dimensions may differ) in rank order; gradients flow back.

    The backward of ``torch.distributed.nn.functional.all_gather`` sums the gradients that all ranks computed for
    a rank's rows (reduce-scatter; gloo emulates it with all-to-all).
    """
    world = dist.get_world_size()
    local = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=tensor.device)
    sizes = [torch.zeros_like(local) for _ in range(world)]
    dist.all_gather(sizes, local)
    counts = [int(size) for size in sizes]
    longest = max(counts)
    padded = tensor
    if tensor.shape[0] < longest:
        pad = tensor.new_zeros((longest - tensor.shape[0], *tensor.shape[1:]))
        padded = torch.cat([tensor, pad])
    if differentiable:
        from torch.distributed.nn.functional import all_gather

        parts = list(all_gather(padded.contiguous()))
    else:
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:count] for part, count in zip(parts, counts, strict=True)])


def _is_sharded(value: Any) -> bool:
    from torch.distributed._shard.sharded_tensor import ShardedTensor

    return isinstance(value, ShardedTensor)


def _walk(tree: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Leaves of a nested mapping with their key paths; an empty mapping (a parameter without state) is a leaf."""
    if isinstance(tree, Mapping) and (tree or not path):
        for key, value in tree.items():
            yield from _walk(value, (*path, key))
    else:
        yield path, tree


def _set(tree: dict[Any, Any], path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _region(offsets: Sequence[int], sizes: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(int(o), int(o) + int(s)) for o, s in zip(offsets, sizes, strict=True))


def gather_full_state(tree: Mapping[str, Any]) -> dict[str, Any]:
    """A (nested) state dict with every torchrec ``ShardedTensor`` replaced by the full tensor, on every rank.

    Collective: every rank must call it. Keys present on only some ranks (the fused optimizer lists a table's
    state on its owner only) appear in everyone's result. Plain tensors (replicated MLP weights, DDP-synchronised)
    are kept as they are. Memory: the full tables on every rank, fine while they fit one host; the gather is an
    ``all_gather_object`` of the local shards.
    """
    pieces: dict[tuple[Any, ...], tuple[list[int], list[tuple[list[int], Tensor]]]] = {}
    empty: list[tuple[Any, ...]] = []  # parameters without optimizer state (SGD), listed on their owner only
    result: dict[str, Any] = {}
    for path, value in _walk(tree):
        if _is_sharded(value):
            shards = [
                (list(shard.metadata.shard_offsets), shard.tensor.detach().cpu()) for shard in value.local_shards()
            ]
            pieces[path] = (list(value.size()), shards)
        else:
            _set(result, path, value)
            if isinstance(value, Mapping):
                empty.append(path)
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, (pieces, empty))
    full: dict[tuple[Any, ...], Tensor] = {}
    for rank_pieces, rank_empty in everyone:
        for path in rank_empty:
            _set(result, path, {})
        for path, (size, shards) in rank_pieces.items():
            for offsets, tensor in shards:
                target = full.setdefault(path, torch.zeros(size, dtype=tensor.dtype))
                target[_region(offsets, tensor.shape)] = tensor
    for path, tensor in full.items():
        _set(result, path, tensor)
    return result


def fill_shards(current: Mapping[str, Any], full: Mapping[str, Any], *, what: str) -> dict[str, Any]:
    """``current`` (this rank's sharded state dict) with local shards and plain tensors copied from ``full``."""
    flat_full = dict(_walk(full))
    result: dict[str, Any] = {}
    for path, value in _walk(current):
        if path not in flat_full:
            raise KeyError(f"{what}: the checkpoint has no entry {'.'.join(map(str, path))!r}.")
        source = flat_full[path]
        if _is_sharded(value):
            if tuple(source.shape) != tuple(value.size()):
                raise ValueError(
                    f"{what}: {'.'.join(map(str, path))!r} has shape {tuple(source.shape)} in the checkpoint, "
                    f"{tuple(value.size())} in this model."
                )
            for shard in value.local_shards():
                region = _region(shard.metadata.shard_offsets, shard.tensor.shape)
                shard.tensor.detach().copy_(source[region].to(shard.tensor.dtype))
            _set(result, path, value)
        else:
            _set(result, path, source.clone() if isinstance(source, Tensor) else source)
    return result


def _initialize_dense_state(optimizer: Any) -> None:
    """Create lazily built torch optimizer state (Adam moments) with a zero-gradient step; parameters are kept.

    torchrec's ``KeyedOptimizer.load_state_dict`` copies into existing state tensors, so a run resumed before its
    first step needs them; the step's effect on the parameters (weight decay) is undone, and the loaded state
    (``step`` included) overwrites what the step wrote.
    """
    params = [param for param in optimizer.params.values() if param.requires_grad]
    kept = [param.detach().clone() for param in params]
    for param in params:
        param.grad = torch.zeros_like(param)
    optimizer.step()
    with torch.no_grad():
        for param, value in zip(params, kept, strict=True):
            param.copy_(value)
            param.grad = None


def unsharded_state_optimizer(fused: Any, dense: Any) -> torch.optim.Optimizer:
    """A torchrec ``CombinedOptimizer`` whose ``state_dict`` is unsharded (keyed by parameter FQN, full tensors).

    ``state_dict()`` is collective (:func:`gather_full_state`); ``load_state_dict`` takes that format from a run
    on any number of ranks and keeps this rank's shards (param groups stay those of this run: the learning rates
    are constant in :class:`~recsys.trainer.Trainer`).
    """
    from torchrec.optim.keyed import CombinedOptimizer

    class UnshardedStateOptimizer(CombinedOptimizer):
        def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
            return {"unsharded": gather_full_state(super().state_dict()["state"])}

        def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:  # type: ignore[override]
            if "unsharded" not in state_dict:
                raise ValueError(
                    "the optimizer state is not a --distributed one (a single-process checkpoint holds torch.optim "
                    "state by index): resume it single-process, or start the distributed run afresh."
                )
            saved = state_dict["unsharded"]
            current = super().state_dict()["state"]
            if any(saved.get(key) and not value for key, value in current.items()):
                _initialize_dense_state(dense)
                current = super().state_dict()["state"]
            state = fill_shards(current, saved, what="optimizer state")
            super().load_state_dict({"state": state})  # torchrec's KeyedOptimizer copies into the state tensors

    return UnshardedStateOptimizer([fused, dense])
