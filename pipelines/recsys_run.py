"""End-to-end recommendation runs: config → data/splits → model → trainer (+ validation) → FAISS → test metrics.

One YAML file configures a run (see ``pipelines/configs/ml100k_*.yaml``), read once into a typed
:class:`pipelines.run_config.RecsysRunConfig` (:func:`pipelines.run_config.load_recsys_config`: unknown keys, wrong
types and duplicate keys are errors naming the file and line); ``regkit recsys train`` calls :func:`train_run`.
Sections:

``data``
    ``dir`` (base folder for relative paths), ``train`` / ``test`` (given split files) or ``log`` + ``split``
    (``random_holdout`` / ``leave_last_out`` / ``temporal`` with ``test_fraction`` / ``leave_last`` /
    ``split_seed``), ``users`` / ``items`` (side tables; ``items`` also defines the catalogue),
    ``user_features`` / ``item_features`` (lists of :class:`recsys.features.FeatureSpec` dicts),
    ``rating_threshold``, ``duplicates``, ``validation`` (``method``: ``random_holdout`` with ``fraction``,
    ``seed``, ``user_fraction``, ``leave_last_out`` with ``n``, ``temporal`` with ``fraction``: carved from the
    training log, which the final model is refit on (``eval.refit``); ``given`` with ``file``: a held-out log
    beside the train / test files, the model early-stopped on it is served, streaming included; ``none`` to skip),
    ``streaming`` and ``streaming_part_rows``.

    ``streaming: true`` never collects the training log (a given ``data.train`` file): vocabularies come from
    the side tables or a streaming group-by (:meth:`recsys.data.Vocabulary.from_log`), item counts (logQ,
    popularity) from :func:`recsys.data.item_frequencies`, batches from :class:`recsys.data.StreamingBatches`
    (shuffled within its buffer), and the test metrics from the partitioned evaluator
    (:func:`pipelines.evaluation.recsys_streaming.evaluate_recommendations_streaming`, at most
    ``streaming_part_rows`` rows per user partition). BPR negatives avoid a user's training items through the
    seen table (below), built before training in that case. Refused in streaming mode, with the reason: a validation
    carve (a ``given`` validation file works: it is held in memory, ranked against the seen table below),
    ``rating_threshold``, ``duplicates`` other than ``keep``, ``lightgcn`` and SSL. The served model's
    seen-item table is built one user partition at a time but holds every distinct training pair (16 bytes
    each): serving must know them to exclude them.
``model``
    ``name`` (``mf`` / ``lightgcn`` / ``two_tower``) and constructor options.
``train``
    :class:`recsys.trainer.TrainConfig` options.
``hooks``
    ``common_regs`` methods by registry name + constructor options (``{"name": "dsl", ...}``), loss terms with
    their ``weight`` / ``warmup_steps`` (``embedding_l2``), and the in-batch-softmax adapters
    ``multi_sample_dropout`` / ``ps_kd`` (:mod:`common_regs.hook_specs`, :mod:`recsys.regularizers`).
``ssl``
    ``none`` / ``rfm`` / ``cfm`` or :class:`recsys.ssl.SSLConfig` options: SSL item-tower regularization
    (Yao et al. 2021; :mod:`pipelines.recsys_ssl`); a run with SSL also writes ``report.md`` with the
    item-feature MI heatmap.
``eval``
    ``ks``, ``head_fraction``, ``refit`` (after early stopping on validation, retrain on the whole training
    split for the best number of epochs before testing).
``index``
    :class:`recsys.serving.IndexConfig` options.

Every run writes ``resolved_config.yaml``, ``metrics.json``, ``run.json`` (git SHA, versions, seed) and the
served model (``model/``) under ``output_dir``. A run that holds its logs in memory (not ``streaming``) also records
the split's ``split_fingerprint`` in ``metrics.json`` and writes its test lists as ``test_run.trec`` beside
``test_qrels.trec`` (:mod:`pipelines.recsys_split`; ``regkit data split`` writes the same split as files).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import torch
import yaml

from common_regs.hook_specs import build_hooks
from common_regs.io import atomic_write_text
from common_regs.run_dir import scratch_folder
from pipelines.evaluation.recsys import evaluate_recommendations, make_evaluator
from pipelines.evaluation.recsys_streaming import evaluate_recommendations_streaming
from pipelines.provenance import run_metadata
from pipelines.recsys_split import TEST_RUN, SplitLogs, write_test_trec
from pipelines.recsys_ssl import add_ssl_section, resolve_ssl_config, ssl_hooks
from pipelines.report import Report, bar_plot, line_plot
from pipelines.run_config import DataConfig, RecsysRunConfig, ValidationConfig, recsys_config
from recsys.data import (
    InMemoryBatches,
    Interactions,
    NegativeSampler,
    StreamingBatches,
    Vocabulary,
    clean_log,
    encode_interactions,
    item_frequencies,
    partition_by_user,
    scan_log,
)
from recsys.features import FeatureTable
from recsys.models import build_model
from recsys.models.base import Recommender as RecModel
from recsys.regularizers import TrainSetup
from recsys.serving import Recommender
from recsys.splits import (
    Split,
    check_same_id_types,
    given_split,
    leave_last_out_split,
    random_holdout_split,
    temporal_split,
)
from recsys.trainer import TrainConfig, Trainer, TrainResult

logger = logging.getLogger(__name__)

__all__ = ["input_files", "load_split", "train_run"]


# -- data ------------------------------------------------------------------------------------------------------


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
    if method == "temporal":
        return temporal_split(log_path, test_fraction=data.test_fraction)
    raise ValueError(f"`data.split` must be given / random_holdout / leave_last_out / temporal, got {method!r}.")


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


class _Data:
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


# -- training --------------------------------------------------------------------------------------------------


def _hooks(config: RecsysRunConfig, model: RecModel, item_counts: np.ndarray, train: TrainConfig) -> list[Any]:
    """The ``hooks`` section built for one fit (:func:`common_regs.hook_specs.build_hooks`)."""
    epochs = config.train.epochs  # the configured budget, not a refit's shortened one
    setup = TrainSetup(model=model, train=train, item_counts=item_counts, epochs=epochs)
    return build_hooks(config.hooks, domain="recsys", setup=setup)


def _negative_sampler(data: _Data, interactions: Interactions | None, train: TrainConfig) -> NegativeSampler:
    """Uniform negatives re-drawn when they hit a training pair.

    A streamed log's pairs come from its seen table (built once and served with the model anyway), which a streamed
    softmax run, drawing no negatives, skips.
    """
    if interactions is None and train.loss != "bpr":
        return NegativeSampler(data.items.size, seed=train.seed)
    pairs = data.seen_table if interactions is None else interactions
    return NegativeSampler.from_interactions(pairs, seed=train.seed)


def _fit(
    config: RecsysRunConfig,
    data: _Data,
    interactions: Interactions | None,
    train_config: TrainConfig,
    *,
    evaluate_on: pl.DataFrame | None,
    checkpoint_dir: Path | None,
    stream_path: Path | None = None,
    distributed: str | None = None,
) -> tuple[RecModel, Recommender, TrainResult]:
    """One fit; ``interactions`` is None when the training log is streamed from ``stream_path``."""
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    item_counts = data.item_counts if interactions is None else interactions.item_counts()
    model = build_model(
        config.model.name,
        config.model.options(),
        users=data.user_features,
        items=data.item_features,
        interactions=interactions,
    )
    service = Recommender(
        model,
        data.users,
        data.items,
        data.user_features,
        data.item_features,
        data.no_interactions() if interactions is None else interactions,  # streamed: seen table set after fit
        config.index,
    )
    if stream_path is not None:
        batches: InMemoryBatches | StreamingBatches = StreamingBatches(
            stream_path, data.users, data.items, train_config.batch_size, seed=train_config.seed
        )
    elif interactions is not None:
        batches = InMemoryBatches(interactions, train_config.batch_size, seed=train_config.seed)
    else:
        raise ValueError("`_fit` needs `interactions` or `stream_path`.")
    hooks = [
        *_hooks(config, model, item_counts, train_config),
        *(ssl_hooks(config.ssl, data.item_features, interactions, train_config.seed)
          if interactions is not None else []),
    ]  # the config refuses SSL with a streamed log
    trainer_class = Trainer
    if distributed is not None:  # torchrun: tables sharded by torchrec DMP, each rank a slice of every batch
        from recsys.distributed import DistributedTrainer, RankSlicedBatches, init_distributed, shard_two_tower

        env = init_distributed()
        model = service.model = shard_two_tower(model, env, train_config, sharding_type=distributed, hooks=hooks)
        batches, trainer_class = RankSlicedBatches(batches, env.rank, env.world_size), DistributedTrainer
    evaluator = None
    if evaluate_on is not None:
        # a streamed fit's service has no seen table yet: evaluate through a view that excludes the training pairs
        evaluated = service if interactions is not None else service.with_seen(data.seen_table, popularity=item_counts)
        evaluator = make_evaluator(evaluated, evaluate_on, ks=config.eval.ks, head_fraction=config.eval.head_fraction)
    trainer = trainer_class(
        model,
        batches,
        train_config,
        hooks=hooks,
        evaluate=evaluator,
        item_counts=item_counts,
        negative_sampler=_negative_sampler(data, interactions, train_config),
        checkpoint_dir=checkpoint_dir,
    )
    result = trainer.fit()
    if distributed is not None:  # gathered into one unsharded model on every rank: serving and tests are local
        model = service.model = model.unsharded(data.user_features, data.item_features)
    service.refresh()
    return model, service, result


def _run_report(report: dict[str, Any], result: TrainResult) -> Report:
    """Test metrics per popularity slice, head/tail bars, training curves (final fit and validation run)."""
    page = Report(f"{report['model']} on {report['split']}")
    test = report.get("test", {})
    metrics = ("R@10", "R@20", "nDCG@10", "nDCG@20")
    slices = {name: {m: test[prefix + m] for m in metrics if prefix + m in test}
              for name, prefix in (("overall", ""), ("head", "head/"), ("tail", "tail/"))}
    page.heading("Test metrics").table([{"slice": name, **values} for name, values in slices.items() if values],
                                       caption="head = top 20% of items by training popularity, tail = the rest")
    page.figure(bar_plot({name: values for name, values in slices.items() if values}, ylabel="value",
                         title="metrics by popularity slice"), caption="test metrics by item-popularity slice")
    page.heading("Training")
    losses = [(entry["epoch"], entry["loss/total"]) for entry in result.history if "loss/total" in entry]
    if losses:
        page.figure(line_plot({"final fit": tuple(zip(*losses, strict=True))}, xlabel="epoch", ylabel="mean loss",
                              title="training loss"), caption="mean training loss per epoch")
    validation = [(entry["epoch"], entry["R@20"]) for entry in report.get("validation", {}).get("history", [])
                  if "R@20" in entry]
    if validation:
        page.figure(line_plot({"validation R@20": tuple(zip(*validation, strict=True))}, xlabel="epoch",
                              ylabel="R@20", title="validation R@20"), caption="validation R@20 per epoch")
    page.table([report.get("train", {})], caption="final fit")
    return page


def load_split(config: RecsysRunConfig) -> SplitLogs:
    """The logs a run of ``config`` trains, validates and tests on, prepared by the code :func:`train_run` uses."""
    return _Data(config.data).split_logs()


def train_run(
    config: RecsysRunConfig | Mapping[str, Any],
    *,
    output_dir: str | Path | None = None,
    overwrite: bool = False,
    distributed: str | None = None,
) -> dict[str, Any]:
    """Run one configured experiment end to end; returns (and writes) the metrics.

    ``config`` is a :class:`pipelines.run_config.RecsysRunConfig` (a mapping is validated into one first). The run
    writes into ``output_dir`` (default: the config's), and ``resolved_config.yaml`` is the config as it ran: that
    folder, every default filled in. ``distributed`` (a torchrun sharding type, e.g. ``"table_wise"``) trains under
    torchrun with :mod:`recsys.distributed`; rank 0 then evaluates and writes the run folder, other ranks return
    after training.
    """
    config = recsys_config(config)
    out = Path(output_dir or config.output_dir)
    config = config.model_copy(update={"output_dir": str(out), "ssl": resolve_ssl_config(config.ssl, out)})
    if (out / "model").exists() and not overwrite:
        raise FileExistsError(f"{out / 'model'} exists; pass overwrite=True (--overwrite) or another --output-dir.")
    if overwrite:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)  # otherwise an unfinished run resumes from them
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    data = _Data(config.data, work_dir=out)
    train_config = config.train
    stream_path = data.train_path if data.streaming else None
    report: dict[str, Any] = {"split": data.split_name, "model": config.model.name}
    if not data.streaming:  # `regkit data split` writes files with the same fingerprint
        report["split_fingerprint"] = data.split_logs().fingerprint()
    tuning: TrainResult | None = None
    if data.valid_log is not None:
        tuned = _fit(
            config,
            data,
            data.train if data.given_validation else data.encode(data.fit_log),
            train_config,
            evaluate_on=data.valid_log,
            checkpoint_dir=out / "checkpoints" / "validation",
            stream_path=stream_path,
            distributed=distributed,
        )
        tuning = tuned[2]
        report["validation"] = {
            "split": data.validation_name,
            "best_epoch": tuning.best_epoch,
            "metrics": tuning.best_metrics,
            "history": tuning.history,
            "train_seconds": tuning.train_seconds,
        }
    # a given validation file is held-out data, not training data: the early-stopped model is the final one
    if data.given_validation and config.eval.refit:
        logger.info("`eval.refit` does not apply to a given validation file: serving the best validation epoch")
    if tuning is None or (config.eval.refit and not data.given_validation):
        final_config = train_config
        if tuning is not None and tuning.best_epoch is not None:
            final_config = dataclasses.replace(
                train_config, epochs=tuning.best_epoch + 1, patience=None, max_steps=None
            )
        model, service, result = _fit(
            config,
            data,
            data.train,
            final_config,
            evaluate_on=None,
            checkpoint_dir=out / "checkpoints" / "final",
            stream_path=stream_path,
            distributed=distributed,
        )
    else:
        model, service, result = tuned
    if distributed is not None:  # training (and the gather of the full model) was the last collective work
        from recsys.distributed import shutdown_distributed

        writer = torch.distributed.get_rank() == 0
        shutdown_distributed()
        if not writer:
            return report  # the trained model is on every rank; rank 0 tests it and writes the run folder
    if data.streaming:
        service = service.with_seen(data.seen_table, popularity=data.item_counts)
        test_metrics = evaluate_recommendations_streaming(
            service,
            data.train_path,
            data.test_path,
            popularity=data.item_counts,
            ks=config.eval.ks,
            head_fraction=config.eval.head_fraction,
            max_rows_per_part=config.data.streaming_part_rows,
            work_dir=out,
        )
    else:
        test_metrics = evaluate_recommendations(
            service, data.test_log, ks=config.eval.ks, head_fraction=config.eval.head_fraction
        )
        written = write_test_trec(service, data.test_log, out, k=max(config.eval.ks), tag=report["model"])
        report["test_run"] = TEST_RUN if written else None
    report.update(
        {
            "test": test_metrics,
            "train": {
                "epochs": result.epochs,
                "steps": result.steps,
                "train_seconds": result.train_seconds,
                "examples_per_second": result.examples_per_second,
            },
            "total_seconds": time.perf_counter() - started,
            "parameters": sum(p.numel() for p in model.parameters()),
        }
    )
    service.save(
        out / "model",
        overwrite=True,
        extra={"test_metrics": {k: v for k, v in test_metrics.items() if isinstance(v, int | float)}},
    )
    page = _run_report(report, result)
    if config.ssl.mode != "none":
        add_ssl_section(page, report, config.ssl, data.item_features, data.train)
    resolved = config.to_dict()
    page.write(out, metrics=report, config=resolved, seed=config.seed)  # report.{md,html} + metrics.json
    atomic_write_text(out / "resolved_config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    atomic_write_text(out / "run.json", json.dumps(run_metadata(resolved, config.seed), indent=2) + "\n")
    logger.info(
        "test: %s", ", ".join(f"{k}={test_metrics[k]:.4f}" for k in test_metrics if k.startswith(("R@", "nDCG@")))
    )
    return report
