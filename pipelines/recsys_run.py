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
import json
import logging
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import yaml

from common_regs.hook_specs import build_hooks
from common_regs.io import atomic_write_text
from pipelines.evaluation.recsys import evaluate_recommendations, make_evaluator
from pipelines.evaluation.recsys_streaming import evaluate_recommendations_streaming
from pipelines.provenance import run_metadata
from pipelines.recsys_data import RunData
from pipelines.recsys_split import TEST_RUN, SplitLogs, write_test_trec
from pipelines.recsys_ssl import add_ssl_section, resolve_ssl_config, ssl_hooks
from pipelines.report import Report, bar_plot, line_plot
from pipelines.run_config import RecsysRunConfig, recsys_config
from recsys.data import (
    InMemoryBatches,
    Interactions,
    NegativeSampler,
    StreamingBatches,
)
from recsys.models import ClosedFormRecommender, build_model
from recsys.models.base import Recommender as RecModel
from recsys.regularizers import TrainSetup
from recsys.serving import Recommender
from recsys.trainer import TrainConfig, Trainer, TrainResult, fit_closed_form

logger = logging.getLogger(__name__)

__all__ = ["fit_on_validation", "load_split", "train_run"]


# -- training --------------------------------------------------------------------------------------------------


def _hooks(config: RecsysRunConfig, model: RecModel, item_counts: np.ndarray, train: TrainConfig) -> list[Any]:
    """The ``hooks`` section built for one fit (:func:`common_regs.hook_specs.build_hooks`)."""
    epochs = config.train.epochs  # the configured budget, not a refit's shortened one
    setup = TrainSetup(model=model, train=train, item_counts=item_counts, epochs=epochs)
    return build_hooks(config.hooks, domain="recsys", setup=setup)


def _negative_sampler(data: RunData, interactions: Interactions | None, train: TrainConfig) -> NegativeSampler:
    """Uniform negatives re-drawn when they hit a training pair.

    A streamed log's pairs come from its seen table (built once and served with the model anyway), which a streamed
    softmax run, drawing no negatives, skips.
    """
    if interactions is None and train.loss != "bpr":
        return NegativeSampler(data.items.size, seed=train.seed)
    pairs = data.seen_table if interactions is None else interactions
    return NegativeSampler.from_interactions(pairs, seed=train.seed)


def _reporting(
    evaluate: Callable[[RecModel], dict[str, float]], on_evaluation: Callable[[dict[str, float]], None]
) -> Callable[[RecModel], dict[str, float]]:
    def evaluate_and_report(model: RecModel) -> dict[str, float]:
        metrics = evaluate(model)
        on_evaluation(metrics)
        return metrics

    return evaluate_and_report


def _fit(
    config: RecsysRunConfig,
    data: RunData,
    interactions: Interactions | None,
    train_config: TrainConfig,
    *,
    evaluate_on: pl.DataFrame | None,
    checkpoint_dir: Path | None,
    stream_path: Path | None = None,
    distributed: str | None = None,
    on_evaluation: Callable[[dict[str, float]], None] | None = None,
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
    evaluator = None
    if evaluate_on is not None:
        # a streamed fit's service has no seen table yet: evaluate through a view that excludes the training pairs
        evaluated = service if interactions is not None else service.with_seen(data.seen_table, popularity=item_counts)
        evaluator = make_evaluator(evaluated, evaluate_on, ks=config.eval.ks, head_fraction=config.eval.head_fraction)
        if on_evaluation is not None:
            evaluator = _reporting(evaluator, on_evaluation)
    if isinstance(model, ClosedFormRecommender):  # the config refuses streaming, hooks and SSL for these
        result = fit_closed_form(model, interactions, evaluate=evaluator)
        service.refresh()
        return model, service, result
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


def fit_on_validation(
    config: RecsysRunConfig,
    data: RunData,
    *,
    checkpoint_dir: Path | None = None,
    distributed: str | None = None,
    on_evaluation: Callable[[dict[str, float]], None] | None = None,
) -> tuple[RecModel, Recommender, TrainResult]:
    """The early-stopping fit: evaluated on the validation log, never on the test split.

    It trains on the training side of the validation carve (or on the whole training split beside a given validation
    file). ``on_evaluation`` sees every validation evaluation's metrics as they come (``regkit recsys tune`` reports
    them to Optuna's pruner, which may stop the fit by raising).
    """
    if data.valid_log is None:
        raise ValueError("a validation fit needs `data.validation` (e.g. {method: random_holdout, fraction: 0.1}).")
    return _fit(
        config,
        data,
        data.train if data.given_validation else data.encode(data.fit_log),
        config.train,
        evaluate_on=data.valid_log,
        checkpoint_dir=checkpoint_dir,
        stream_path=data.train_path if data.streaming else None,
        distributed=distributed,
        on_evaluation=on_evaluation,
    )


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
    return RunData(config.data).split_logs()


def _prepare_output(
    config: RecsysRunConfig | Mapping[str, Any], output_dir: str | Path | None, overwrite: bool
) -> tuple[RecsysRunConfig, Path]:
    """The config as it will run (its output folder filled in) and that folder, ready to write into."""
    config = recsys_config(config)
    out = Path(output_dir or config.output_dir)
    config = config.model_copy(update={"output_dir": str(out), "ssl": resolve_ssl_config(config.ssl, out)})
    if (out / "model").exists() and not overwrite:
        raise FileExistsError(f"{out / 'model'} exists; pass overwrite=True (--overwrite) or another output folder.")
    if overwrite:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)  # otherwise an unfinished run resumes from them
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    out.mkdir(parents=True, exist_ok=True)
    return config, out


def _train(
    config: RecsysRunConfig, data: RunData, out: Path, report: dict[str, Any], distributed: str | None
) -> tuple[RecModel, Recommender, TrainResult]:
    """Early stopping on the validation data (when there is some), then the served fit; fills ``report``."""
    train_config = config.train
    stream_path = data.train_path if data.streaming else None
    tuning: TrainResult | None = None
    if data.valid_log is not None:
        tuned = fit_on_validation(config, data, checkpoint_dir=out / "checkpoints" / "validation",
                                  distributed=distributed)
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
    if tuning is not None and not (config.eval.refit and not data.given_validation):
        return tuned
    final_config = train_config
    if tuning is not None and tuning.best_epoch is not None:
        final_config = dataclasses.replace(train_config, epochs=tuning.best_epoch + 1, patience=None, max_steps=None)
    return _fit(
        config,
        data,
        data.train,
        final_config,
        evaluate_on=None,
        checkpoint_dir=out / "checkpoints" / "final",
        stream_path=stream_path,
        distributed=distributed,
    )


def _test(
    config: RecsysRunConfig, data: RunData, service: Recommender, out: Path, report: dict[str, Any]
) -> tuple[Recommender, dict[str, Any]]:
    """Test metrics of the served model (and, in memory, the test lists as a TREC run); the service as served."""
    if data.streaming:
        service = service.with_seen(data.seen_table, popularity=data.item_counts)
        metrics = evaluate_recommendations_streaming(
            service,
            data.train_path,
            data.test_path,
            popularity=data.item_counts,
            ks=config.eval.ks,
            head_fraction=config.eval.head_fraction,
            max_rows_per_part=config.data.streaming_part_rows,
            work_dir=out,
        )
        return service, metrics
    metrics = evaluate_recommendations(
        service, data.test_log, ks=config.eval.ks, head_fraction=config.eval.head_fraction
    )
    written = write_test_trec(service, data.test_log, out, k=max(config.eval.ks), tag=report["model"])
    report["test_run"] = TEST_RUN if written else None
    return service, metrics


def _write_outputs(
    config: RecsysRunConfig, data: RunData, out: Path, report: dict[str, Any], service: Recommender,
    result: TrainResult,
) -> None:
    """The served model, the report, ``metrics.json``, ``resolved_config.yaml`` and ``run.json``."""
    test_metrics = report["test"]
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
    config, out = _prepare_output(config, output_dir, overwrite)
    started = time.perf_counter()
    data = RunData(config.data, work_dir=out)
    report: dict[str, Any] = {"split": data.split_name, "model": config.model.name}
    if not data.streaming:  # `regkit data split` writes files with the same fingerprint
        report["split_fingerprint"] = data.split_logs().fingerprint()
    model, service, result = _train(config, data, out, report, distributed)
    if distributed is not None:  # training (and the gather of the full model) was the last collective work
        from recsys.distributed import shutdown_distributed

        writer = torch.distributed.get_rank() == 0
        shutdown_distributed()
        if not writer:
            return report  # the trained model is on every rank; rank 0 tests it and writes the run folder
    service, report["test"] = _test(config, data, service, out, report)
    report.update(
        {
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
    _write_outputs(config, data, out, report, service, result)
    return report
