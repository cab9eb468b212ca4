"""Each rank's contiguous slice of the single-process global batch (same order on every rank)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from recsys.data import IndexBatch, InMemoryBatches, StreamingBatches

logger = logging.getLogger(__name__)

__all__ = ["RankSlicedBatches", "rank_slice"]


def rank_slice(size: int, rank: int, world_size: int) -> slice:
    """Rows of a global batch of ``size`` rows that ``rank`` handles: contiguous, sizes differ by at most one.

    Rank r gets ``[r·q + min(r, s), (r+1)·q + min(r+1, s))`` with ``q, s = divmod(size, world_size)``, so the
    slices of ranks 0..N-1 concatenate to the whole batch in order (a rank may get no row of a tiny last batch).
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"`rank` must be in [0, {world_size}), got {rank}.")
    quotient, rest = divmod(size, world_size)
    start = rank * quotient + min(rank, rest)
    return slice(start, start + quotient + (1 if rank < rest else 0))


class RankSlicedBatches:
    """The single-process batch sequence, each global batch cut to this rank's :func:`rank_slice`.

    Every rank walks the same ``(seed, epoch)`` order (:class:`~recsys.data.InMemoryBatches` or the streaming
    reader over the parquet log), so the union of the ranks' slices is exactly the single-process global batch and
    ``len`` (steps per epoch) is the same on every rank. Each rank featurizes, embeds and back-propagates only its
    slice; reading the id columns is repeated on every rank (two integer columns, cheap next to training).
    """

    def __init__(self, batches: InMemoryBatches | StreamingBatches, rank: int, world_size: int) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"`rank` must be in [0, `world_size`={world_size}), got {rank}.")
        self.inner, self.rank, self.world_size = batches, rank, world_size
        self.batch_size = batches.batch_size

    def __len__(self) -> int:
        return len(self.inner)

    def batches(self, epoch: int, start: int = 0) -> Iterator[IndexBatch]:
        for batch in self.inner.batches(epoch, start=start):
            rows = rank_slice(len(batch), self.rank, self.world_size)
            yield IndexBatch(users=batch.users[rows], items=batch.items[rows], rows=batch.rows[rows])
