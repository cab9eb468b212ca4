"""Interaction logs as training data: cleaning, encoding to vocabulary indices, batches and negatives.

The schema and its checks live in :mod:`recsys.log_validation`, the id vocabularies in :mod:`recsys.vocab`; their
public names are importable from here too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import Tensor

from common_regs.io import atomic_dir
from recsys.log_validation import (
    _READ_ERRORS,
    ID_COLUMNS,
    MAX_ID_LENGTH,
    LogSchemaError,
    LogSummary,
    _collect,
    _reason,
    check_log_content,
    read_log_schema,
    scan_log,
    validate_log,
)
from recsys.vocab import Vocabulary

logger = logging.getLogger(__name__)

__all__ = [
    "ID_COLUMNS",
    "MAX_ID_LENGTH",
    "InMemoryBatches",
    "IndexBatch",
    "Interactions",
    "LogSchemaError",
    "LogSummary",
    "NegativeSampler",
    "StreamingBatches",
    "Vocabulary",
    "check_log_content",
    "clean_log",
    "encode_interactions",
    "item_frequencies",
    "iter_record_batches",
    "partition_by_user",
    "read_log_schema",
    "scan_log",
    "validate_log",
]


DuplicatePolicy = Literal["drop", "keep", "error"]
UnknownPolicy = Literal["error", "drop", "keep"]


@dataclass(frozen=True)
class Interactions:
    """Interactions as vocabulary indices (``users[r]`` interacted with ``items[r]``), in log order.

    ``unknown_items`` / ``unknown_users`` count the rows whose raw id was not in the vocabulary (kept as the
    OOV index when the policy was ``"keep"``).
    """

    users: np.ndarray
    items: np.ndarray
    num_users: int
    num_items: int
    timestamps: np.ndarray | None = None
    unknown_users: int = 0
    unknown_items: int = 0

    def __len__(self) -> int:
        return int(self.users.size)

    def item_counts(self) -> np.ndarray:
        """Interactions per known item (length ``num_items``; OOV rows are not counted)."""
        known = self.items < self.num_items
        return np.bincount(self.items[known], minlength=self.num_items).astype(np.int64)

    def user_counts(self) -> np.ndarray:
        known = self.users < self.num_users
        return np.bincount(self.users[known], minlength=self.num_users).astype(np.int64)

    def pair_keys(self) -> np.ndarray:
        """Sorted unique ``user * num_items + item`` keys of the known pairs (membership tests)."""
        known = (self.users < self.num_users) & (self.items < self.num_items)
        return np.unique(self.users[known] * self.num_items + self.items[known])

    def by_user(self) -> dict[int, np.ndarray]:
        """Known items of each user (index → sorted unique item indices)."""
        order = np.lexsort((self.items, self.users))
        users, items = self.users[order], self.items[order]
        boundaries = np.flatnonzero(np.diff(users)) + 1
        return {
            int(group_users[0]): np.unique(group_items)
            for group_users, group_items in zip(np.split(users, boundaries), np.split(items, boundaries), strict=True)
            if group_users.size
        }


def _frame(source: pl.LazyFrame | pl.DataFrame | str | os.PathLike[str]) -> pl.LazyFrame:
    if isinstance(source, pl.LazyFrame):
        return source
    if isinstance(source, pl.DataFrame):
        return source.lazy()
    return scan_log(source)


def clean_log(
    source: pl.LazyFrame | pl.DataFrame | str | os.PathLike[str],
    *,
    where: str = "log",
    rating_threshold: float | None = None,
    duplicates: DuplicatePolicy = "drop",
) -> pl.LazyFrame:
    """Check a log's content and return it as implicit feedback (a lazy frame; nothing is read until collected).

    * :func:`recsys.log_validation.check_log_content` first: mistyped, null or unusable ids (ids longer than
      :data:`MAX_ID_LENGTH` characters included), a non-numeric or non-finite ``rating``, no rows →
      :class:`LogSchemaError` naming ``where`` (the file when ``source`` is a path), the column, count and first row
      (rows of ``source`` as given: pass the file itself to have rows of the file);
    * ``rating_threshold``: keep rows with ``rating >= threshold`` (``None`` keeps every row as a positive);
    * duplicate ``(user_id, item_id)`` rows: ``"drop"`` keeps the first (logged with the count), ``"keep"``
      leaves them (they then weigh more in training), ``"error"`` raises.
    """
    if duplicates not in ("drop", "keep", "error"):
        raise ValueError(f"`duplicates` must be 'drop', 'keep' or 'error', got {duplicates!r}.")
    if where == "log" and isinstance(source, (str, os.PathLike)):
        where = str(source)
    lazy = _frame(source)
    check_log_content(lazy, where=where)
    names = lazy.collect_schema().names()
    if rating_threshold is not None:
        if "rating" not in names:
            raise LogSchemaError(
                f"{where}: `rating_threshold`={rating_threshold} needs a `rating` column (got {names})."
            )
        lazy = lazy.filter(pl.col("rating") >= rating_threshold)
    if duplicates != "keep":
        pairs = _collect(
            lazy.select(pl.len().alias("rows"), pl.struct(*ID_COLUMNS).n_unique().alias("unique")), where
        ).row(0, named=True)
        extra = pairs["rows"] - pairs["unique"]
        if extra and duplicates == "error":
            raise LogSchemaError(
                f"{where}: {extra} duplicate (user_id, item_id) rows; "
                "pass duplicates='drop' to keep the first of each."
            )
        if extra:
            logger.warning("%s: dropped %d duplicate (user_id, item_id) rows (kept the first of each)", where, extra)
            lazy = lazy.unique(subset=list(ID_COLUMNS), keep="first", maintain_order=True)
    return lazy


def encode_interactions(
    source: pl.LazyFrame | pl.DataFrame | str | os.PathLike[str],
    users: Vocabulary,
    items: Vocabulary,
    *,
    where: str = "log",
    unknown: UnknownPolicy = "error",
) -> Interactions:
    """Map a (cleaned) log's raw ids to vocabulary indices.

    Args:
        source: a log (path, lazy or eager frame) with ``user_id`` and ``item_id``; see :func:`clean_log`.
        users: user vocabulary.
        items: item vocabulary.
        where: name of the split for messages (``"train"``, ``"test"``).
        unknown: rows with an id outside the vocabulary: ``"error"`` raises naming the first such id, ``"drop"``
            removes them (logged), ``"keep"`` keeps them as the OOV index (a test item nobody can recommend still
            counts as a miss; a test user with no training data is a cold-start user).
    """
    if unknown not in ("error", "drop", "keep"):
        raise ValueError(f"`unknown` must be 'error', 'drop' or 'keep', got {unknown!r}.")
    columns = [c for c in (*ID_COLUMNS, "timestamp") if c in _frame(source).collect_schema().names()]
    frame = _collect(_frame(source).select(columns), where)
    if frame.height == 0:
        raise LogSchemaError(f"{where}: no interactions (empty split, or everything filtered out).")
    user_index = users.encode(frame["user_id"])
    item_index = items.encode(frame["item_id"])
    bad_users = user_index == users.oov_index
    bad_items = item_index == items.oov_index
    timestamps = _timestamps(frame, where) if "timestamp" in columns else None
    if bad_users.any() or bad_items.any():
        detail = [
            _unknown_detail(frame[column], bad, kind)
            for column, bad, kind in (("user_id", bad_users, "user"), ("item_id", bad_items, "item"))
            if bad.any()
        ]
        message = f"{where}: " + "; ".join(detail)
        if unknown == "error":
            raise LogSchemaError(
                message + ". Pass unknown='drop' or 'keep', or build the vocabulary from the catalogue."
            )
        if unknown == "drop":
            logger.warning("%s; dropped them", message)
            keep = ~(bad_users | bad_items)
            user_index, item_index = user_index[keep], item_index[keep]
            timestamps = timestamps[keep] if timestamps is not None else None
            if user_index.size == 0:
                raise LogSchemaError(f"{where}: no interactions left after dropping unknown ids.")
        else:
            logger.warning("%s; kept them as out-of-vocabulary", message)
    return Interactions(
        users=user_index,
        items=item_index,
        num_users=users.size,
        num_items=items.size,
        timestamps=timestamps,
        unknown_users=int(bad_users.sum()) if unknown == "keep" else 0,
        unknown_items=int(bad_items.sum()) if unknown == "keep" else 0,
    )


def _unknown_detail(column: pl.Series, bad: np.ndarray, kind: str) -> str:
    unknown = column.filter(pl.Series(bad))
    return (
        f"{int(bad.sum())} rows with {kind} ids not in the {kind} vocabulary "
        f"({unknown.n_unique()} {kind}s, first {unknown[0]!r})"
    )


def _timestamps(frame: pl.DataFrame, where: object) -> np.ndarray:
    column = frame["timestamp"]
    if column.dtype == pl.Datetime or isinstance(column.dtype, pl.Datetime):
        column = column.dt.epoch("s")
    elif not column.dtype.is_integer():
        raise LogSchemaError(f"{where}: column `timestamp` must be integer seconds or a datetime, got {column.dtype}.")
    try:
        return column.cast(pl.Int64).to_numpy()
    except _READ_ERRORS as err:  # uint64 seconds beyond int64
        raise LogSchemaError(f"{where}: column `timestamp` does not fit int64 seconds ({_reason(err)}).") from None


@dataclass
class IndexBatch:
    """A training batch as indices: ``users[b]`` interacted with ``items[b]``; ``rows`` are log positions."""

    users: Tensor
    items: Tensor
    rows: Tensor

    def __len__(self) -> int:
        return int(self.users.numel())


def _epoch_generator(seed: int, epoch: int, salt: int = 0) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, salt]))


class InMemoryBatches:
    """Shuffled mini-batches over encoded interactions; the order of epoch ``e`` depends only on ``(seed, e)``.

    That makes a resumed run see exactly the batches an uninterrupted one would: ``batches(epoch, start=k)``
    skips the first ``k`` batches without touching any global random state.
    """

    def __init__(self, interactions: Interactions, batch_size: int, *, seed: int = 0, drop_last: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
        if len(interactions) == 0:
            raise ValueError("`interactions` is empty: nothing to train on.")
        self.interactions = interactions
        self.batch_size = batch_size
        self.seed = seed
        self.drop_last = drop_last
        self._users = torch.from_numpy(interactions.users)
        self._items = torch.from_numpy(interactions.items)

    def __len__(self) -> int:
        full, rest = divmod(len(self.interactions), self.batch_size)
        return full if self.drop_last or rest == 0 else full + 1

    def batches(self, epoch: int, start: int = 0) -> Iterator[IndexBatch]:
        order = torch.from_numpy(_epoch_generator(self.seed, epoch).permutation(len(self.interactions)))
        # one gather per epoch; the batches are slices (views) of it
        users, items = self._users[order], self._items[order]
        for number in range(start, len(self)):
            window = slice(number * self.batch_size, (number + 1) * self.batch_size)
            yield IndexBatch(users=users[window], items=items[window], rows=order[window])


def iter_record_batches(
    path: str | os.PathLike[str], read_rows: int, *, columns: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """Record batches of at most ``read_rows`` rows of a parquet file, one row group decoded at a time.

    Memory is one row group (pyarrow writes at most 1Mi rows per group by default, polars 512² rows), whatever the
    file's length. ``pyarrow.parquet.ParquetFile.iter_batches`` is not used: with pyarrow 26 its resident memory
    grew by ~4.5 bytes per row read (measured on a 20M-row log: 207 MB peak vs 142 MB at 5M rows, while reading row
    group by row group stayed flat; cf. apache/arrow#39808 for the dataset reader).
    """
    parquet = pq.ParquetFile(path)
    for group in range(parquet.num_row_groups):
        yield from parquet.read_row_group(group, columns=columns).to_batches(max_chunksize=read_rows)


class StreamingBatches:
    """Mini-batches read from a parquet log in record batches, for logs larger than memory.

    Rows are shuffled within a buffer of ``buffer_rows`` (seeded per epoch), so memory stays at one buffer plus
    the vocabularies. Unknown ids are dropped (the vocabularies are built from the same log beforehand with
    :meth:`Vocabulary.from_log`, which streams too). ``rows`` are positions in the file.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        users: Vocabulary,
        items: Vocabulary,
        batch_size: int,
        *,
        seed: int = 0,
        buffer_rows: int = 1 << 20,
        read_rows: int = 1 << 16,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}.")
        if buffer_rows < batch_size:
            raise ValueError(f"`buffer_rows` must be >= `batch_size` ({batch_size}), got {buffer_rows}.")
        read_log_schema(path)
        self.path = Path(path)
        self.users_vocab, self.items_vocab = users, items
        self.batch_size, self.seed, self.buffer_rows, self.read_rows = batch_size, seed, buffer_rows, read_rows
        self._rows = pq.ParquetFile(self.path).metadata.num_rows
        if self._rows == 0:
            raise LogSchemaError(f"{self.path}: the log has no rows.")

    def __len__(self) -> int:
        """Upper bound on batches per epoch (exact unless rows with unknown ids are dropped)."""
        return -(-self._rows // self.batch_size)

    def _buffers(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        held, offset = 0, 0
        for record_batch in iter_record_batches(self.path, self.read_rows, columns=list(ID_COLUMNS)):
            frame = pl.from_arrow(record_batch)
            users = self.users_vocab.encode(frame["user_id"])
            items = self.items_vocab.encode(frame["item_id"])
            rows = np.arange(offset, offset + frame.height, dtype=np.int64)
            offset += frame.height
            keep = (users != self.users_vocab.oov_index) & (items != self.items_vocab.oov_index)
            pending.append((users[keep], items[keep], rows[keep]))
            held += int(keep.sum())
            if held >= self.buffer_rows:
                yield tuple(np.concatenate(parts) for parts in zip(*pending, strict=True))  # type: ignore[misc]
                pending, held = [], 0
        if held:
            yield tuple(np.concatenate(parts) for parts in zip(*pending, strict=True))  # type: ignore[misc]

    def batches(self, epoch: int, start: int = 0) -> Iterator[IndexBatch]:
        number = 0
        carry: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        for buffer_number, buffer in enumerate(self._buffers(epoch)):
            order = _epoch_generator(self.seed, epoch, buffer_number + 1).permutation(buffer[0].size)
            users, items, rows = (part[order] for part in buffer)
            if carry is not None:
                users, items, rows = (np.concatenate([c, p]) for c, p in zip(carry, (users, items, rows), strict=True))
            full = users.size // self.batch_size * self.batch_size
            for begin in range(0, full, self.batch_size):
                if number >= start:
                    end = begin + self.batch_size
                    yield _index_batch(users[begin:end], items[begin:end], rows[begin:end])
                number += 1
            carry = (users[full:], items[full:], rows[full:])
        if carry is not None and carry[0].size and number >= start:
            yield _index_batch(*carry)


def _index_batch(users: np.ndarray, items: np.ndarray, rows: np.ndarray) -> IndexBatch:
    return IndexBatch(
        users=torch.from_numpy(users.copy()), items=torch.from_numpy(items.copy()), rows=torch.from_numpy(rows.copy())
    )


_TABLE_MAX_KEYS = 1 << 26  # largest user x item key space looked up in a dense table (64 MB of bools)


class NegativeSampler:
    """Uniform negative items for each positive pair.

    A draw that is one of the user's training items is re-drawn (up to ``max_tries`` rounds), as the LightGCN reference
    code does (He et al., SIGIR 2020, arXiv:2002.02126).

    Draws come from a generator seeded by ``(seed, step)``, so a resumed run draws the same negatives. Without
    ``pair_keys`` (a streamed log too large to index) negatives are plain uniform draws.

    Args:
        num_items: catalogue size. pair_keys: sorted ``user * num_items + item`` keys of the training pairs
            (:meth:`Interactions.pair_keys`). seed: base seed. max_tries: re-draw rounds for collisions.
    """

    def __init__(
        self, num_items: int, *, pair_keys: np.ndarray | None = None, seed: int = 0, max_tries: int = 5
    ) -> None:
        if num_items < 2:
            raise ValueError(f"negative sampling needs at least 2 items, got `num_items`={num_items}.")
        self.num_items = num_items
        self.keys = pair_keys if pair_keys is not None else np.empty(0, dtype=np.int64)
        self.seed = seed
        self.max_tries = max_tries
        # membership by one indexed read when a bit per (user, item) fits: a binary search per draw was most of
        # a small model's step (same answers, so the same negatives)
        span = int(self.keys[-1]) + 1 if self.keys.size else 0
        self._table: np.ndarray | None = None
        if 0 < span <= _TABLE_MAX_KEYS:
            self._table = np.zeros(span + num_items, dtype=bool)  # room for the last user's every item
            self._table[self.keys] = True

    @classmethod
    def from_interactions(cls, interactions: Interactions, *, seed: int = 0, max_tries: int = 5) -> NegativeSampler:
        return cls(interactions.num_items, pair_keys=interactions.pair_keys(), seed=seed, max_tries=max_tries)

    def sample(self, users: Tensor, num_negatives: int, step: int) -> Tensor:
        """``(B, num_negatives)`` int64 item indices."""
        if num_negatives < 1:
            raise ValueError(f"`num_negatives` must be >= 1, got {num_negatives}.")
        generator = _epoch_generator(self.seed, step, 0x5EED)
        user_array = users.numpy()[:, None]
        negatives = generator.integers(0, self.num_items, size=(user_array.shape[0], num_negatives))
        for _ in range(self.max_tries if self.keys.size else 0):
            collided = self._is_training_pair(user_array * self.num_items + negatives)
            if not collided.any():
                break
            negatives[collided] = generator.integers(0, self.num_items, size=int(collided.sum()))
        return torch.from_numpy(negatives.astype(np.int64, copy=False))

    def _is_training_pair(self, keys: np.ndarray) -> np.ndarray:
        if self._table is not None and int(keys.max(initial=0)) < self._table.size:
            return self._table[keys]
        position = np.minimum(np.searchsorted(self.keys, keys), self.keys.size - 1)
        return self.keys[position] == keys


def item_frequencies(source: pl.LazyFrame | str | os.PathLike[str], items: Vocabulary) -> np.ndarray:
    """Interaction count of every known item, aggregated by a streaming group-by (no full log in memory)."""
    counts = _frame(source).group_by("item_id").agg(pl.len().alias("count")).collect(engine="streaming")
    index = items.encode(counts["item_id"])
    known = index != items.oov_index
    return np.bincount(index[known], weights=counts["count"].to_numpy()[known], minlength=items.size).astype(np.int64)


def partition_by_user(
    path: str | os.PathLike[str],
    users: Vocabulary,
    out_dir: str | os.PathLike[str],
    *,
    parts: int,
    read_rows: int = 1 << 16,
    overwrite: bool = False,
) -> list[Path]:
    """Split a parquet log into ``parts`` files by user in one streaming pass (memory: one record batch).

    Row ``r`` goes to ``part-{p:05d}.parquet`` with ``p = users.encode(user_id_r) mod parts`` (unknown users share
    the OOV index, hence one part), so two logs split with the same vocabulary and ``parts`` are co-partitioned:
    part ``p`` of the training log holds every training row of the users in part ``p`` of the test log. Rows keep
    their columns and their order within a part; every part file exists (possibly with zero rows). ``out_dir`` is
    written atomically.

    Raises:
        ValueError: ``parts`` or ``read_rows`` < 1. LogSchemaError: not a valid log (see :func:`read_log_schema`).
        FileExistsError: ``out_dir`` exists and ``overwrite`` is false.
    """
    if parts < 1:
        raise ValueError(f"`parts` must be >= 1, got {parts}.")
    if read_rows < 1:
        raise ValueError(f"`read_rows` must be >= 1, got {read_rows}.")
    schema = read_log_schema(path)
    names = [f"part-{p:05d}.parquet" for p in range(parts)]
    with atomic_dir(out_dir, overwrite=overwrite, markers=(names[0],)) as tmp:
        writers = [pq.ParquetWriter(tmp / name, schema) for name in names]
        try:
            for record_batch in iter_record_batches(path, read_rows):
                part = users.encode(pl.from_arrow(record_batch.column("user_id")).alias("user_id")) % parts
                order = np.argsort(part, kind="stable")
                bounds = np.searchsorted(part[order], np.arange(parts + 1))
                table = pa.Table.from_batches([record_batch]).take(pa.array(order))
                for number in np.flatnonzero(np.diff(bounds)):
                    writers[number].write_table(table.slice(bounds[number], bounds[number + 1] - bounds[number]))
        finally:
            for writer in writers:
                writer.close()
    out_dir = Path(out_dir)
    logger.info("%s: %d user partitions under %s", path, parts, out_dir)
    return [out_dir / name for name in names]
