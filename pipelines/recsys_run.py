"""End-to-end recommendation runs: config → data/splits → model → trainer (+ validation) → FAISS → test metrics.

One YAML file configures a run (see ``pipelines/configs/ml100k_*.yaml``); ``regkit recsys train`` calls
:func:`train_run`. Sections:

``data``
    ``dir`` (base folder for relative paths), ``train`` / ``test`` (given split files) or ``log`` + ``split``
    (``random_holdout`` / ``leave_last_out`` / ``temporal`` with ``test_fraction`` / ``leave_last`` /
    ``split_seed``), ``users`` / ``items`` (side tables; ``items`` also defines the catalogue),
    ``user_features`` / ``item_features`` (lists of :class:`recsys.features.FeatureSpec` dicts),
    ``rating_threshold``, ``duplicates``, ``validation`` (``method``, ``fraction``, ``seed``; ``method: none``
    to skip) and ``streaming`` (read the training log in record batches).
``model``
    ``name`` (``mf`` / ``lightgcn`` / ``two_tower``) and constructor options.
``train``
    :class:`recsys.trainer.TrainConfig` options.
``hooks``
    ``common_regs`` methods by registry name + constructor options (``{"name": "dsl", ...}``), ``embedding_l2``
    (``weight``), and the in-batch-softmax adapters ``multi_sample_dropout`` / ``ps_kd``
    (:mod:`pipelines.recsys_hooks`, :mod:`recsys.regularizers`).
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
served model (``model/``) under ``output_dir``.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import yaml

from common_regs.io import atomic_write_text
from pipelines.evaluation.recsys import evaluate_recommendations, make_evaluator
from pipelines.provenance import run_metadata
from pipelines.recsys_hooks import build_hooks, check_hook_specs
from pipelines.recsys_ssl import add_ssl_section, resolve_ssl_config, ssl_hooks
from pipelines.report import Report, bar_plot, line_plot
from recsys.data import (
    InMemoryBatches,
    Interactions,
    NegativeSampler,
    StreamingBatches,
    Vocabulary,
    clean_log,
    encode_interactions,
    scan_log,
)
from recsys.features import FeatureSpec, FeatureTable
from recsys.models import build_model
from recsys.models.base import Recommender as RecModel
from recsys.regularizers import TrainSetup
from recsys.serving import IndexConfig, Recommender
from recsys.splits import Split, given_split, leave_last_out_split, random_holdout_split, temporal_split
from recsys.ssl import SSLConfig
from recsys.trainer import TrainConfig, Trainer, TrainResult

logger = logging.getLogger(__name__)

__all__ = ["DEFAULTS", "apply_overrides", "load_config", "train_run"]

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "num_threads": None,
    "output_dir": "runs/recsys",
    "data": {
        "dir": None,
        "train": None,
        "test": None,
        "log": None,
        "split": "given",
        "test_fraction": 0.2,
        "leave_last": 1,
        "split_seed": 0,
        "users": None,
        "items": None,
        "user_features": [{"name": "user_id", "kind": "id"}],
        "item_features": [{"name": "item_id", "kind": "id"}],
        "rating_threshold": None,
        "duplicates": "drop",
        "validation": {"method": "random_holdout", "fraction": 0.1, "seed": 0},
        "streaming": False,
    },
    "model": {"name": "mf"},
    "train": {},
    "hooks": [],
    "ssl": SSLConfig().to_dict(),
    "eval": {"ks": [10, 20], "head_fraction": 0.2, "refit": True},
    "index": {},
}


def _merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping) and key != "model":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def apply_overrides(config: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML: ``0.1``, ``true``, ``[64, 64]``, ``null``)."""
    config = copy.deepcopy(config)
    for override in overrides:
        if "=" not in override:
            raise ValueError(f"override {override!r} must look like `section.key=value` (e.g. train.lr=0.01).")
        dotted, raw = override.split("=", 1)
        keys = dotted.strip().split(".")
        node = config
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[keys[-1]] = yaml.safe_load(raw)
    return config


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Defaults ← YAML file ← ``overrides``; unknown top-level sections are rejected."""
    loaded: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} not found.")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not valid YAML ({err}).") from None
        except RecursionError:  # PyYAML's composer recurses once per nesting level
            raise ValueError(f"{path}: not valid YAML (nested too deeply).") from None
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: a recsys config must be a mapping, got {type(loaded).__name__}.")
        odd_keys = sorted(repr(key) for key in loaded if not isinstance(key, str))
        if odd_keys:
            raise ValueError(f"{path}: section names must be strings, got {odd_keys}.")
    if isinstance(loaded.get("ssl"), str):  # `ssl: cfm` shorthand; `--set ssl.alpha=...` keeps the mode
        loaded["ssl"] = {"mode": loaded["ssl"]}
    config = apply_overrides(_merge(DEFAULTS, loaded), overrides)
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown config sections {sorted(unknown)}; allowed: {sorted(DEFAULTS)}.")
    return config


# -- data ------------------------------------------------------------------------------------------------------


def _path(data: Mapping[str, Any], key: str) -> Path | None:
    value = data.get(key)
    if value is None:
        return None
    path = Path(value)
    return Path(data["dir"]) / path if data.get("dir") and not path.is_absolute() else path


def _split(data: Mapping[str, Any]) -> Split:
    method = data["split"]
    if method == "given":
        train, test = _path(data, "train"), _path(data, "test")
        if train is None or test is None:
            raise ValueError("`data.split`='given' needs `data.train` and `data.test` files.")
        return given_split(train, test)
    log_path = _path(data, "log")
    if log_path is None:
        raise ValueError(f"`data.split`={method!r} needs `data.log` (the full interaction log).")
    log = scan_log(log_path)
    if method == "random_holdout":
        return random_holdout_split(log, test_fraction=data["test_fraction"], seed=data["split_seed"])
    if method == "leave_last_out":
        return leave_last_out_split(log, n=data["leave_last"])
    if method == "temporal":
        return temporal_split(log, test_fraction=data["test_fraction"])
    raise ValueError(f"`data.split` must be given / random_holdout / leave_last_out / temporal, got {method!r}.")


def _carve_validation(train: pl.LazyFrame, validation: Mapping[str, Any]) -> Split | None:
    method = validation.get("method", "none")
    if method in (None, "none"):
        return None
    if method == "random_holdout":
        return random_holdout_split(train, test_fraction=validation["fraction"], seed=validation.get("seed", 0))
    if method == "leave_last_out":
        return leave_last_out_split(train, n=validation.get("n", 1))
    if method == "temporal":
        return temporal_split(train, test_fraction=validation["fraction"])
    raise ValueError(
        f"`data.validation.method` must be none / random_holdout / leave_last_out / temporal, got {method!r}."
    )


class _Data:
    """Everything a run needs from the data section, prepared once."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.config = data
        split = _split(data)
        self.split_name = split.name
        self.train_log = clean_log(
            split.train, where="train", rating_threshold=data["rating_threshold"], duplicates=data["duplicates"]
        ).collect()
        self.test_log = clean_log(
            split.test, where="test", rating_threshold=data["rating_threshold"], duplicates=data["duplicates"]
        ).collect()
        users_path, items_path = _path(data, "users"), _path(data, "items")
        self.users = (
            Vocabulary.from_values("user_id", pl.read_parquet(users_path, columns=["user_id"])["user_id"])
            if users_path
            else Vocabulary.from_values("user_id", self.train_log["user_id"])
        )
        self.items = (
            Vocabulary.from_values("item_id", pl.read_parquet(items_path, columns=["item_id"])["item_id"])
            if items_path
            else Vocabulary.from_values("item_id", self.train_log["item_id"])
        )
        user_specs = [FeatureSpec.from_dict(spec) for spec in data["user_features"]]
        item_specs = [FeatureSpec.from_dict(spec) for spec in data["item_features"]]
        self.user_features = FeatureTable.build(self.users, user_specs, users_path)
        self.item_features = FeatureTable.build(self.items, item_specs, items_path)
        self.train = encode_interactions(self.train_log, self.users, self.items, where="train", unknown="error")
        validation = _carve_validation(self.train_log.lazy(), data["validation"])
        self.fit_log, self.valid_log = (None, None)
        if validation is not None:
            validation.check()
            self.fit_log, self.valid_log = validation.train.collect(), validation.test.collect()
            self.validation_name = validation.name
        logger.info(
            "data: %s; train %d rows, test %d rows, %d users, %d items%s",
            split.name,
            self.train_log.height,
            self.test_log.height,
            self.users.size,
            self.items.size,
            f", validation {self.valid_log.height} rows" if self.valid_log is not None else "",
        )

    def encode(self, log: pl.DataFrame) -> Interactions:
        return encode_interactions(log, self.users, self.items, where="train", unknown="error")


# -- training --------------------------------------------------------------------------------------------------


def _hooks(config: Mapping[str, Any], model: RecModel, interactions: Interactions, train: TrainConfig) -> list[Any]:
    """The ``hooks`` section built for one fit (:func:`pipelines.recsys_hooks.build_hooks`)."""
    epochs = TrainConfig.from_dict(config["train"]).epochs  # the configured budget, not a refit's shortened one
    setup = TrainSetup(model=model, train=train, item_counts=interactions.item_counts(), epochs=epochs)
    return build_hooks(config["hooks"], setup)


def _fit(
    config: Mapping[str, Any],
    data: _Data,
    interactions: Interactions,
    train_config: TrainConfig,
    *,
    evaluate_on: pl.DataFrame | None,
    checkpoint_dir: Path | None,
    stream_path: Path | None = None,
    distributed: str | None = None,
) -> tuple[RecModel, Recommender, TrainResult]:
    torch.manual_seed(config["seed"])
    np.random.seed(config["seed"])
    model_options = {k: v for k, v in config["model"].items() if k != "name"}
    model = build_model(
        config["model"]["name"],
        model_options,
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
        interactions,
        IndexConfig(**config["index"]),
    )
    if stream_path is not None:
        batches: InMemoryBatches | StreamingBatches = StreamingBatches(
            stream_path, data.users, data.items, train_config.batch_size, seed=train_config.seed
        )
    else:
        batches = InMemoryBatches(interactions, train_config.batch_size, seed=train_config.seed)
    evaluator = None
    if evaluate_on is not None:
        evaluator = make_evaluator(
            service, evaluate_on, ks=config["eval"]["ks"], head_fraction=config["eval"]["head_fraction"]
        )
    hooks = [
        *_hooks(config, model, interactions, train_config),
        *ssl_hooks(config, data.item_features, interactions, train_config.seed),
    ]
    trainer_class = Trainer
    if distributed is not None:  # torchrun: tables sharded by torchrec DMP, each rank a slice of every batch
        from recsys.distributed import DistributedTrainer, RankSlicedBatches, init_distributed, shard_two_tower

        env = init_distributed()
        model = service.model = shard_two_tower(model, env, train_config, sharding_type=distributed, hooks=hooks)
        batches, trainer_class = RankSlicedBatches(batches, env.rank, env.world_size), DistributedTrainer
    trainer = trainer_class(
        model,
        batches,
        train_config,
        hooks=hooks,
        evaluate=evaluator,
        item_counts=interactions.item_counts(),
        negative_sampler=NegativeSampler.from_interactions(interactions, seed=train_config.seed),
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


def train_run(
    config: Mapping[str, Any],
    *,
    output_dir: str | Path | None = None,
    overwrite: bool = False,
    distributed: str | None = None,
) -> dict[str, Any]:
    """Run one configured experiment end to end; returns (and writes) the metrics.

    ``distributed`` (a torchrec sharding type, e.g. ``"table_wise"``) trains under torchrun with
    :mod:`recsys.distributed`; rank 0 then evaluates and writes the run folder, other ranks return after training.
    """
    config = _merge(DEFAULTS, config)
    out = Path(output_dir or config["output_dir"])
    ssl = resolve_ssl_config(config, out)
    check_hook_specs(config["hooks"])  # a bad hook name fails here, before any data is read
    if (out / "model").exists() and not overwrite:
        raise FileExistsError(f"{out / 'model'} exists; pass overwrite=True (--overwrite) or another --output-dir.")
    if overwrite:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)  # otherwise an unfinished run resumes from them
    if config.get("num_threads"):
        torch.set_num_threads(int(config["num_threads"]))
    started = time.perf_counter()
    data = _Data(config["data"])
    train_config = TrainConfig.from_dict(config["train"])
    stream_path = _path(config["data"], "train") if config["data"]["streaming"] else None
    if stream_path is not None and config["data"]["split"] != "given":
        raise ValueError("`data.streaming` reads the training file directly; it needs `data.split`='given'.")
    report: dict[str, Any] = {"split": data.split_name, "model": config["model"]["name"]}
    tuning: TrainResult | None = None
    if data.valid_log is not None:
        fit_interactions = data.encode(data.fit_log)
        _, _, tuning = _fit(
            config,
            data,
            fit_interactions,
            train_config,
            evaluate_on=data.valid_log,
            checkpoint_dir=out / "checkpoints" / "validation",
            stream_path=None,
            distributed=distributed,
        )
        report["validation"] = {
            "split": data.validation_name,
            "best_epoch": tuning.best_epoch,
            "metrics": tuning.best_metrics,
            "history": tuning.history,
            "train_seconds": tuning.train_seconds,
        }
    refit = data.valid_log is None or config["eval"]["refit"]
    if refit:
        final_config = train_config
        if tuning is not None and tuning.best_epoch is not None:
            final_config = TrainConfig.from_dict(
                {**train_config.to_dict(), "epochs": tuning.best_epoch + 1, "patience": None, "max_steps": None}
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
        model, service, result = _fit(
            config,
            data,
            data.encode(data.fit_log),
            train_config,
            evaluate_on=data.valid_log,
            checkpoint_dir=out / "checkpoints" / "validation",
            distributed=distributed,
        )
    if distributed is not None and torch.distributed.get_rank() != 0:
        return report  # the trained model is on every rank; rank 0 tests it and writes the run folder
    test_metrics = evaluate_recommendations(
        service, data.test_log, ks=config["eval"]["ks"], head_fraction=config["eval"]["head_fraction"]
    )
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
    if ssl.mode != "none":
        add_ssl_section(page, report, config, data.item_features, data.train)
    page.write(out, metrics=report, config=config, seed=config.get("seed"))  # report.{md,html} + metrics.json
    atomic_write_text(out / "resolved_config.yaml", yaml.safe_dump(config, sort_keys=False))
    atomic_write_text(out / "run.json", json.dumps(run_metadata(config, config["seed"]), indent=2) + "\n")
    logger.info(
        "test: %s", ", ".join(f"{k}={test_metrics[k]:.4f}" for k in test_metrics if k.startswith(("R@", "nDCG@")))
    )
    return report
