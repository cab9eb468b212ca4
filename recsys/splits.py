"""Train / test splits of an interaction log, computed lazily with polars (they stream for large logs).

Four protocols:

* :func:`given_split`: the split files shipped with a dataset (MovieLens ``u1.base`` / ``u1.test``);
* :func:`random_holdout_split`: per user (or per user of a random subset), a seeded random ``test_fraction`` of the
  interactions is held out;
* :func:`leave_last_out_split`: per user, the ``n`` most recent interactions by timestamp are held out;
* :func:`temporal_split`: one global cut-off time; everything after it is test.

Each returns a :class:`Split` of two lazy frames with the log's columns. Nothing is read until collected or
written (:meth:`Split.write` sinks both sides to parquet atomically). :meth:`Split.check` collects row counts and
raises a clear error for an empty side.

Given files, the split checks them first so that errors name a file and a row of it: :func:`given_split` compares
the two files' id types (from their schemas), the other protocols, given a log file instead of a lazy frame, check
its content (:func:`recsys.log_validation.check_log_content`, one streaming pass) before splitting it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa

from common_regs.io import atomic_path
from recsys.log_validation import ID_COLUMNS, LogSchemaError, check_log_content, read_log_schema, scan_log

logger = logging.getLogger(__name__)

__all__ = [
    "Split",
    "check_same_id_types",
    "given_split",
    "leave_last_out_split",
    "random_holdout_split",
    "temporal_split",
]

_HELPER_COLUMNS = ("_key", "_rank", "_count")


@dataclass(frozen=True)
class Split:
    """A train / test pair of lazy logs; ``name`` says how it was made (recorded with run outputs).

    ``files``: the log files read: ``(train, test)`` for a given split, ``(log,)`` for one carved from a file,
    ``()`` for one carved from a frame.
    """

    train: pl.LazyFrame
    test: pl.LazyFrame
    name: str
    files: tuple[Path, ...] = ()

    def describe(self, side: str) -> str:
        """How messages name ``side`` (``"train"`` / ``"test"``): its file, or ``"<side> split of <log file>"``."""
        if len(self.files) == 2:
            return str(self.files[0 if side == "train" else 1])
        return f"{side} split of {self.files[0]}" if self.files else side

    def check(self) -> dict[str, int]:
        """Row counts of both sides; raises :class:`LogSchemaError` if one is empty."""
        counts = {
            side: frame.select(pl.len()).collect(engine="streaming").item()
            for side, frame in (("train", self.train), ("test", self.test))
        }
        for side, rows in counts.items():
            if rows == 0:
                raise LogSchemaError(f"split {self.name!r}: the `{side}` side is empty; check the split parameters.")
        return counts

    def write(self, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
        """Stream both sides to ``out_dir/{train,test}.parquet`` (each written atomically)."""
        paths = {}
        for side, frame in (("train", self.train), ("test", self.test)):
            target = Path(out_dir) / f"{side}.parquet"
            with atomic_path(target) as tmp:
                frame.sink_parquet(tmp)
            paths[side] = target
        return paths


def _check_fraction(test_fraction: float) -> None:
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"`test_fraction` must be in (0, 1), got {test_fraction}.")


def check_same_id_types(reference: str | os.PathLike[str], other: str | os.PathLike[str]) -> None:
    """Raise :class:`LogSchemaError` naming ``other`` when an id column is integer in one file, string in the other.

    Read from the schemas only: an integer id never equals a string one, so every row of ``other`` would be unknown.
    """
    kinds = []
    for path in (reference, other):
        schema = read_log_schema(path)
        kinds.append({c: "integer" if pa.types.is_integer(schema.field(c).type) else "string" for c in ID_COLUMNS})
    for column in ID_COLUMNS:
        if kinds[0][column] != kinds[1][column]:
            raise LogSchemaError(
                f"{other}: column `{column}` holds {kinds[1][column]} ids but {reference} holds {kinds[0][column]} "
                "ids; both files must use the same id type (cast one of them)."
            )


def given_split(train: str | os.PathLike[str], test: str | os.PathLike[str]) -> Split:
    """The split files of a dataset, schema-checked (``scan_log``), with the same id types."""
    check_same_id_types(train, test)
    return Split(
        train=scan_log(train),
        test=scan_log(test),
        name=f"given:{Path(train).name}|{Path(test).name}",
        files=(Path(train), Path(test)),
    )


def _open_log(log: pl.LazyFrame | str | os.PathLike[str]) -> tuple[pl.LazyFrame, tuple[Path, ...]]:
    """A lazy log and the files it comes from; a file's content is checked first, so errors name its rows."""
    if isinstance(log, pl.LazyFrame):
        return log, ()
    check_log_content(log)
    return scan_log(log), (Path(log),)


def random_holdout_split(
    log: pl.LazyFrame | str | os.PathLike[str],
    *,
    test_fraction: float = 0.2,
    seed: int = 0,
    user_fraction: float = 1.0,
) -> Split:
    """Per user, hold out ``floor(test_fraction · n_u)`` interactions chosen by a seeded hash of (user, item, row).

    ``user_fraction`` < 1 holds out interactions of a seeded random subset of the users only (the other users stay
    entirely in train), the shape of MovieLens-100K's ``u1`` split (≈40 % of the ratings of 459 of 943 users) and of
    the held-out-users protocol of Liang et al., "Variational Autoencoders for Collaborative Filtering", WWW 2018.
    A user keeps at least one training interaction; users with a single interaction stay entirely in train.
    The selection is a pure function of ``seed`` and each row's (user, item, position in the log): the same
    log and seed always give the same split.
    """
    _check_fraction(test_fraction)
    if not 0.0 < user_fraction <= 1.0:
        raise ValueError(f"`user_fraction` must be in (0, 1], got {user_fraction}.")
    log, files = _open_log(log)
    keyed = (
        log.with_row_index("_row")
        .with_columns(pl.struct("user_id", "item_id", "_row").hash(seed).alias("_key"))
        .with_columns(
            pl.col("_key").rank("ordinal").over("user_id").alias("_rank"),
            pl.len().over("user_id").alias("_count"),
        )
    )
    n_test = pl.min_horizontal((pl.col("_count") * test_fraction).floor(), pl.col("_count") - 1)
    is_test = pl.col("_rank") <= n_test
    name = f"random_holdout(test_fraction={test_fraction}, seed={seed})"
    if user_fraction < 1.0:
        # hash(user) / 2^64 is uniform in [0, 1): a user is held out with probability `user_fraction`
        chosen = pl.col("user_id").hash(seed + 1).cast(pl.Float64) / 2.0**64 < user_fraction
        is_test = is_test & chosen
        name = f"random_holdout(test_fraction={test_fraction}, user_fraction={user_fraction}, seed={seed})"
    drop = [*_HELPER_COLUMNS, "_row"]
    train, test = keyed.filter(~is_test).drop(drop), keyed.filter(is_test).drop(drop)
    return Split(train=train, test=test, name=name, files=files)


def leave_last_out_split(log: pl.LazyFrame | str | os.PathLike[str], *, n: int = 1) -> Split:
    """Per user, the ``n`` latest interactions (by ``timestamp``, ties broken by ``item_id``) are test.

    Users with ``n`` or fewer interactions stay entirely in train (nothing would be left to learn from).
    """
    if n < 1:
        raise ValueError(f"`n` must be >= 1, got {n}.")
    log, files = _open_log(log)
    if "timestamp" not in log.collect_schema().names():
        raise LogSchemaError("leave-last-out needs a `timestamp` column; the log has none.")
    ranked = log.sort("user_id", "timestamp", "item_id", descending=[False, True, True]).with_columns(
        pl.int_range(pl.len()).over("user_id").alias("_rank"), pl.len().over("user_id").alias("_count")
    )
    is_test = (pl.col("_rank") < n) & (pl.col("_count") > n)
    return Split(
        train=ranked.filter(~is_test).drop("_rank", "_count"),
        test=ranked.filter(is_test).drop("_rank", "_count"),
        name=f"leave_last_out(n={n})",
        files=files,
    )


def temporal_split(
    log: pl.LazyFrame | str | os.PathLike[str], *, test_fraction: float | None = 0.2, cutoff: int | None = None
) -> Split:
    """Global temporal split: rows with ``timestamp > cutoff`` are test.

    Give ``cutoff`` (unix seconds), or ``test_fraction`` to put the cut-off at the ``1 - test_fraction`` quantile
    of the timestamps (computed in one streaming pass).
    """
    log, files = _open_log(log)
    if "timestamp" not in log.collect_schema().names():
        raise LogSchemaError("a temporal split needs a `timestamp` column; the log has none.")
    time = pl.col("timestamp")
    if isinstance(log.collect_schema()["timestamp"], pl.Datetime):
        time = time.dt.epoch("s")
    if cutoff is None:
        if test_fraction is None:
            raise ValueError("give `cutoff` or `test_fraction` for a temporal split, got neither.")
        _check_fraction(test_fraction)
        cutoff = int(
            log.select(time.quantile(1.0 - test_fraction, interpolation="lower")).collect(engine="streaming").item()
        )
    logger.info("temporal split at timestamp %d", cutoff)
    return Split(
        train=log.filter(time <= cutoff),
        test=log.filter(time > cutoff),
        name=f"temporal(cutoff={cutoff})",
        files=files,
    )
