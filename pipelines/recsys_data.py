"""The data section of a recommendation run, prepared once: split, cleaned logs, vocabularies, features.

:class:`RunData` is what :func:`pipelines.recsys_run.train_run` (and ``regkit data split``, and the benchmarks)
read from a run config's ``data:`` section; relative paths resolve against ``data.dir`` when set, else the current
directory. :func:`input_files` lists the files a run reads, for the fingerprints that keep a resume from mixing
data (:mod:`pipelines.run_guard`).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from common_regs.run_dir import scratch_folder
from pipelines.recsys_split import SplitLogs
from pipelines.run_config import DataConfig, RecsysRunConfig, ValidationConfig
from recsys.data import (
    Interactions,
    Vocabulary,
    clean_log,
    encode_interactions,
    item_frequencies,
    partition_by_user,
    scan_log,
)
from recsys.features import FeatureTable
from recsys.splits import (
    Split,
    check_same_id_types,
    given_split,
    leave_last_out_split,
    random_holdout_split,
    temporal_split,
)

logger = logging.getLogger(__name__)

__all__ = ["RunData", "input_files"]


def _path(data: DataConfig, key: str) -> Path | None:
    value = getattr(data, key)
    return None if value is None else _under_data_dir(data, value)


def _under_data_dir(data: DataConfig, value: str | Path) -> Path:
    """A configured path; relative ones are taken under ``data.dir`` when it is set."""
    path = Path(value)
    return Path(data.dir) / path if data.dir and not path.is_absolute() else path


def input_files(config: RecsysRunConfig) -> list[Path]:
    """The data files a run reads: its split's logs, the side tables and a given validation file.

    Their fingerprints are part of the run's identity (``pipelines.run_guard``).
    """
    data = config.data
    keys = ("train", "test") if data.split == "given" else ("log",)
    values = [getattr(data, key) for key in (*keys, "users", "items")]
    if data.validation.method == "given":
        values.append(data.validation.file)
    return [_under_data_dir(data, value) for value in values if value is not None]


def _input(data: DataConfig, key: str, value: str | Path | None) -> Path | None:
    """``data.<key>`` = ``value`` as the path of a file to read.

    A missing file is an error naming the key and, for a relative path, what it was resolved against.
    """
    if value is None:
        return None
    path = _under_data_dir(data, value)
    if path.exists():
        return path
    base = ""
    if not Path(value).is_absolute() and data.dir:
        base = f" (relative paths are resolved against `data.dir` = {data.dir}"
        base += ")" if Path(data.dir).is_absolute() else f", itself under the current directory {Path.cwd()})"
    elif not Path(value).is_absolute():
        base = f" (relative paths are resolved against the current directory {Path.cwd()}, or `data.dir` when set)"
    fix = f", or set `data.{key}: null` to take the ids from the training log" if key in ("users", "items") else ""
    raise FileNotFoundError(f"`data.{key}`: {path} not found{base}. Fix the path{fix}.")


def _split(data: DataConfig) -> Split:
    method = data.split
    if method == "given":
        train, test = _input(data, "train", data.train), _input(data, "test", data.test)
        if train is None or test is None:
            raise ValueError("`data.split`='given' needs `data.train` and `data.test` files.")
        return given_split(train, test)
    log_path = _input(data, "log", data.log)
    if log_path is None:
        raise ValueError(f"`data.split`={method!r} needs `data.log` (the full interaction log).")
    if method == "random_holdout":
        return random_holdout_split(log_path, test_fraction=data.test_fraction, seed=data.split_seed)
    if method == "leave_last_out":
        return leave_last_out_split(log_path, n=data.leave_last)
    return temporal_split(log_path, test_fraction=data.test_fraction)  # the schema allows no other method


def _carve_validation(train: pl.LazyFrame, validation: ValidationConfig) -> Split | None:
    """The validation split carved from the training log (``none`` / ``given``: nothing to carve)."""
    if validation.method == "random_holdout":
        return random_holdout_split(
            train, test_fraction=validation.fraction, seed=validation.seed, user_fraction=validation.user_fraction
        )
    if validation.method == "leave_last_out":
        return leave_last_out_split(train, n=validation.n)
    if validation.method == "temporal":
        return temporal_split(train, test_fraction=validation.fraction)
    return None


def _vocabulary(column: str, side_table: Path | None, log: pl.LazyFrame | pl.DataFrame) -> Vocabulary:
    """From the side table when given, else from the training log (a lazy log is counted by a streaming pass)."""
    if side_table is not None:
        return Vocabulary.from_values(column, pl.read_parquet(side_table, columns=[column])[column])
    if isinstance(log, pl.LazyFrame):
        return Vocabulary.from_log(log, column)
    return Vocabulary.from_values(column, log[column])


class RunData:
    """Everything a run needs from the data section, prepared once.

    With ``streaming`` the training log stays a lazy frame (``train_log`` / ``test_log`` / ``train`` are None):
    ``train_path`` is streamed by the batches, ``item_counts`` come from a streaming group-by.
    """

    def __init__(self, data: DataConfig, work_dir: Path | None = None) -> None:
        self.config = data
        self.work_dir = work_dir  # where a streamed run's partitioned copies go: its run folder, not the system temp
        validation = data.validation
        self.streaming = data.streaming
        split = _split(data)
        self.split_name = split.name
        self.train_path, self.test_path = _path(data, "train"), _path(data, "test")
        cleaning = {"rating_threshold": data.rating_threshold, "duplicates": data.duplicates}
        # checks the ids in one streaming pass; a split carved from a file has checked it, naming the file's rows
        train_lazy = clean_log(split.train, where=split.describe("train"), **cleaning)
        test_lazy = clean_log(split.test, where=split.describe("test"), **cleaning)
        self.train_log = None if self.streaming else train_lazy.collect()
        self.test_log = None if self.streaming else test_lazy.collect()
        log = train_lazy if self.streaming else self.train_log
        users_path, items_path = _input(data, "users", data.users), _input(data, "items", data.items)
        self.users = _vocabulary("user_id", users_path, log)
        self.items = _vocabulary("item_id", items_path, log)
        self.user_features = FeatureTable.build(self.users, data.user_features, users_path)
        self.item_features = FeatureTable.build(self.items, data.item_features, items_path)
        self.fit_log, self.valid_log = (None, None)
        self.validation_name: str | None = None
        self.given_validation = validation.method == "given"
        if self.given_validation:
            self._read_given_validation(validation, cleaning, split)
        if self.streaming:
            for vocabulary, side_table in ((self.users, users_path), (self.items, items_path)):
                if side_table is not None:  # the in-memory path's unknown="error", from the distinct ids only
                    logged = Vocabulary.from_log(train_lazy, vocabulary.name)
                    unknown = logged.ids[~vocabulary.contains(logged.ids)]
                    if unknown.size:
                        raise ValueError(
                            f"train: {unknown.size} `{vocabulary.name}` values are not in {side_table} "
                            f"(first {unknown.tolist()[0]!r})."
                        )
            self.train = None
            self.item_counts = item_frequencies(train_lazy, self.items)
            logger.info("data: %s; train streamed from %s (%d rows), %d users, %d items", split.name,
                        self.train_path, int(self.item_counts.sum()), self.users.size, self.items.size)
            return
        self.train = encode_interactions(
            self.train_log, self.users, self.items, where=split.describe("train"), unknown="error"
        )
        self.item_counts = self.train.item_counts()
        carved = None if self.given_validation else _carve_validation(self.train_log.lazy(), validation)
        if carved is not None:
            carved.check()
            self.fit_log, self.valid_log = carved.train.collect(), carved.test.collect()
            self.validation_name = carved.name
        logger.info(
            "data: %s; train %d rows, test %d rows, %d users, %d items%s",
            split.name,
            self.train_log.height,
            self.test_log.height,
            self.users.size,
            self.items.size,
            f", validation {self.valid_log.height} rows" if self.valid_log is not None else "",
        )

    def _read_given_validation(self, validation: ValidationConfig, cleaning: Mapping[str, Any], split: Split) -> None:
        """``data.validation: {method: given, file: ...}``: a held-out file beside the train / test files."""
        path = _input(self.config, "validation.file", validation.file)
        check_same_id_types(split.files[0], path)  # every split read from data files has one
        self.valid_log = clean_log(scan_log(path), where=str(path), **cleaning).collect()
        self.validation_name = f"given:{path.name}"

    def split_logs(self) -> SplitLogs:
        """The cleaned logs the run trains, validates and tests on (:mod:`pipelines.recsys_split`)."""
        if self.train_log is None or self.test_log is None:
            raise ValueError("`data.streaming`=true leaves the logs on disk: the split is the given `data.train` and "
                             "`data.test` files.")
        return SplitLogs(self.split_name, self.train_log, self.test_log, self.fit_log, self.valid_log,
                         self.validation_name)

    def encode(self, log: pl.DataFrame) -> Interactions:
        return encode_interactions(log, self.users, self.items, where="train", unknown="error")

    def no_interactions(self) -> Interactions:
        """An empty training set over the vocabularies (the streamed run's service before its seen table)."""
        empty = np.empty(0, dtype=np.int64)
        return Interactions(users=empty, items=empty, num_users=self.users.size, num_items=self.items.size)

    @functools.cached_property
    def seen_table(self) -> Interactions:
        """Every distinct training pair of a streamed log, built once (for validation and test).

        Built one user partition at a time (:func:`recsys.data.partition_by_user`).

        Memory: one partition of at most ``streaming_part_rows`` rows while reading, plus the result (16 bytes per
        distinct pair): the served model must hold every user's training items to exclude them, so this table
        grows with the log's distinct pairs; it is the one part of a streamed run that is not bounded.
        """
        rows = pq.ParquetFile(self.train_path).metadata.num_rows
        parts = max(1, math.ceil(rows / self.config.streaming_part_rows))
        keys = [np.empty(0, dtype=np.int64)]
        with scratch_folder("seen-parts", self.work_dir) as folder:
            for part in partition_by_user(self.train_path, self.users, Path(folder) / "train", parts=parts):
                frame = pl.read_parquet(part, columns=["user_id", "item_id"])
                if frame.height:
                    encoded = encode_interactions(frame, self.users, self.items, where="train", unknown="drop")
                    keys.append(encoded.pair_keys())
        users, items = np.divmod(np.concatenate(keys), self.items.size)
        return Interactions(users=users, items=items, num_users=self.users.size, num_items=self.items.size)
