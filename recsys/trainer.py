"""One trainer for every regkit recommender (two-tower, MF-BPR, LightGCN).

A step: indices → ``model.featurize`` (tower inputs) → ``common_regs`` batch transforms → forward → task loss
(in-batch softmax with logQ, or BPR) + weighted ``LossTerm`` hooks → backward → grad transforms → optimizer step
→ mask schedulers. Regularisers (SSL, DSL, embedding L2, ...) plug in as hooks; the trainer knows none of them.

Determinism and resume: the batch order of epoch ``e`` depends only on ``(seed, e)``, negatives on
``(seed, step)``, and checkpoints hold model, optimizer, hook and estimator states plus the global torch/numpy
RNG states, so a run resumed from any checkpoint ends with bit-identical parameters to an uninterrupted one
(same machine, same thread count). Checkpoints ``ckpt-<step:09d>.pt`` are written atomically with a SHA-256
sidecar and the newest ``keep_checkpoints`` are kept (:class:`common_regs.checkpoint.CheckpointDir`); resuming
verifies them and falls back to the previous one when the newest is truncated or corrupted.

Evaluation is a callable injected by the caller (``pipelines`` builds it from ``pipelines.evaluation``), so this
package never imports the metric code.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from common_regs.checkpoint import CheckpointDir, global_rng_state, save_with_checksum, set_global_rng_state
from common_regs.safe_load import load_tensors
from common_regs.training import RegHooks
from recsys.data import IndexBatch, InMemoryBatches, Interactions, NegativeSampler, StreamingBatches
from recsys.losses import StreamingFrequencyEstimator, bpr_loss, in_batch_softmax_loss, log_q_from_counts
from recsys.models.base import RecBatch, Recommender, RecOutput
from recsys.models.closed_form import ClosedFormRecommender

logger = logging.getLogger(__name__)

__all__ = ["CHECKPOINT_PREFIX", "TrainConfig", "TrainResult", "Trainer", "fit_closed_form"]

CHECKPOINT_PREFIX = "ckpt"  # files ckpt-<step:09d>.pt + ckpt-<step:09d>.pt.sha256
_FORMAT_VERSION = 2  # 2: RNG states as tensors and numbers, read with weights_only=True (1 pickled numpy's)

EvaluateFn = Callable[[Recommender], Mapping[str, float]]


@dataclass
class TrainConfig:
    """Training options (``train:`` section of a recsys YAML config).

    Args:
        epochs: passes over the training log. max_steps: stop after this many optimizer steps (None = no cap).
        batch_size: rows per step. Default 1024.
        loss: ``"softmax"`` (in-batch sampled softmax) or ``"bpr"`` (sampled negatives).
        num_negatives: negatives per positive for BPR. Default 1 (Rendle et al. 2009).
        logq: logQ correction for softmax: ``"counts"`` (item frequency of the training log), ``"streaming"``
            (Yi et al. 2019 Alg. 2 estimate) or ``"none"``. Default "counts".
        logq_weight: strength of the correction (1 = Yi et al.). streaming_alpha: α of the streaming estimator.
        optimizer: ``"adam"``, ``"adagrad"`` or ``"sgd"``. lr: learning rate of the dense group (MLPs,
            temperature). sparse_lr: of the embedding tables (None = ``lr``). weight_decay / sparse_weight_decay:
            per group.
        grad_clip: max global gradient norm (None = off). seed: data order, negatives and init.
        eval_every: evaluate every this many epochs (0 = only at the end). monitor: metric for early stopping
            and best-model selection. patience: evaluations without improvement before stopping (None = never).
        checkpoint_every: also checkpoint every this many steps (0 = only at epoch ends).
        restore_best: load the best evaluated weights at the end. show_progress: tqdm bars (None = when the
            logger is at INFO or below).
    """

    epochs: int = 20
    max_steps: int | None = None
    batch_size: int = 1024
    loss: Literal["softmax", "bpr"] = "softmax"
    num_negatives: int = 1
    logq: Literal["counts", "streaming", "none"] = "counts"
    logq_weight: float = 1.0
    streaming_alpha: float = 0.01
    optimizer: Literal["adam", "adagrad", "sgd"] = "adam"
    lr: float = 1e-3
    sparse_lr: float | None = None
    weight_decay: float = 0.0
    sparse_weight_decay: float = 0.0
    grad_clip: float | None = None
    seed: int = 0
    eval_every: int = 1
    monitor: str = "R@20"
    patience: int | None = None
    checkpoint_every: int = 0
    restore_best: bool = True
    show_progress: bool | None = None

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("epochs", self.epochs >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("loss", self.loss in ("softmax", "bpr"), "'softmax' or 'bpr'"),
            ("num_negatives", self.num_negatives >= 1, ">= 1"),
            ("logq", self.logq in ("counts", "streaming", "none"), "'counts', 'streaming' or 'none'"),
            ("optimizer", self.optimizer in ("adam", "adagrad", "sgd"), "'adam', 'adagrad' or 'sgd'"),
            ("lr", self.lr > 0, "> 0"),
            ("eval_every", self.eval_every >= 0, ">= 0"),
            ("checkpoint_every", self.checkpoint_every >= 0, ">= 0"),
        ]
        if self.max_steps is not None:
            checks.append(("max_steps", self.max_steps >= 1, ">= 1 or null"))
        if self.patience is not None:
            checks.append(("patience", self.patience >= 1, ">= 1 or null"))
        if self.sparse_lr is not None:
            checks.append(("sparse_lr", self.sparse_lr > 0, "> 0 or null"))
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"`train.{name}` must be {expected}, got {getattr(self, name)!r}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    """What a run did: steps, per-evaluation history, best metrics, time and throughput."""

    steps: int
    epochs: int
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    stopped_early: bool = False
    train_seconds: float = 0.0
    examples: int = 0

    @property
    def examples_per_second(self) -> float:
        return self.examples / self.train_seconds if self.train_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "examples_per_second": self.examples_per_second}


def fit_closed_form(
    model: ClosedFormRecommender, interactions: Interactions, *, evaluate: EvaluateFn | None = None
) -> TrainResult:
    """Fit a baseline in one pass; evaluated once when asked, it reads as a one-epoch run (epoch 0 the best)."""
    started = time.perf_counter()
    model.fit(interactions)
    seconds = time.perf_counter() - started
    result = TrainResult(steps=0, epochs=1, train_seconds=seconds, examples=len(interactions))
    if evaluate is not None:
        model.eval()
        with torch.no_grad():
            metrics = {key: float(value) for key, value in evaluate(model).items()}
        result.history.append({"epoch": 0, "step": 0, "seconds": seconds, **metrics})
        result.best_epoch, result.best_metrics = 0, metrics
    return result


class Trainer:
    """Train a :class:`~recsys.models.base.Recommender` with hooks, evaluation, early stopping and checkpoints.

    Args:
        model: the recommender.
        batches: :class:`~recsys.data.InMemoryBatches` or :class:`~recsys.data.StreamingBatches`.
        config: :class:`TrainConfig`.
        hooks: ``common_regs`` hook objects (``hook_kind`` in batch_transform / loss / grad_transform /
            mask_scheduler / target_provider / reparam; a loss term may come as a ``Weighted`` with its weight),
            applied by :class:`common_regs.training.RegHooks`.
        evaluate: ``model -> {metric: value}``, called every ``eval_every`` epochs in eval mode.
        item_counts: training interactions per item (for ``logq="counts"``).
        negative_sampler: for ``loss="bpr"``.
        checkpoint_dir: where ``ckpt-<step>.pt`` (and ``best.pt``) go, each with a ``.sha256``; None = none.
        keep_checkpoints: newest checkpoints kept. Default 2 (regkit convention: the latest plus one fallback).
    """

    #: False on the ranks of a distributed run that compute checkpoint states but leave writing to rank 0.
    is_checkpoint_writer: bool = True

    def __init__(
        self,
        model: Recommender,
        batches: InMemoryBatches | StreamingBatches,
        config: TrainConfig,
        *,
        hooks: Sequence[Any] = (),
        evaluate: EvaluateFn | None = None,
        item_counts: np.ndarray | None = None,
        negative_sampler: NegativeSampler | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        keep_checkpoints: int = 2,
    ) -> None:
        self.model, self.batches, self.config = model, batches, config
        self.evaluate_fn = evaluate
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.checkpoints = (
            CheckpointDir(self.checkpoint_dir, keep=keep_checkpoints, prefix=CHECKPOINT_PREFIX)
            if self.checkpoint_dir is not None
            else None
        )
        if config.loss == "bpr" and negative_sampler is None:
            raise ValueError("`negative_sampler` is required for `train.loss`='bpr'.")
        self.negative_sampler = negative_sampler
        self.log_q_table: Tensor | None = None
        self.estimator: StreamingFrequencyEstimator | None = None
        if config.loss == "softmax" and config.logq == "counts":
            if item_counts is None:
                raise ValueError("`item_counts` is required for `train.logq`='counts' (or use 'streaming' / 'none').")
            if len(item_counts) != model.num_items:
                raise ValueError(
                    f"`item_counts` has {len(item_counts)} entries, the model has {model.num_items} items."
                )
            self.log_q_table = log_q_from_counts(item_counts)
        elif config.loss == "softmax" and config.logq == "streaming":
            self.estimator = StreamingFrequencyEstimator(model.num_items + 1, alpha=config.streaming_alpha)
        self.optimizer = self._make_optimizer()
        self.reg_hooks = RegHooks(hooks, model, self.optimizer)
        self.hooks = self.reg_hooks.hooks  # a loss term given with its weight (Weighted) is checkpointed unwrapped
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.result = TrainResult(steps=0, epochs=0)
        self._best_state: dict[str, Tensor] | None = None
        self._best_hook_states: list[dict[str, Any] | None] | None = None
        self._bad_evaluations = 0

    # -- setup -----------------------------------------------------------------------------------------------

    def _make_optimizer(self) -> torch.optim.Optimizer:
        config = self.config
        sparse = dict(self.model.sparse_parameters())
        sparse_ids = {id(p) for p in sparse.values()}
        dense = [p for p in self.model.parameters() if p.requires_grad and id(p) not in sparse_ids]
        groups = []
        if sparse:
            groups.append({"name": "sparse", "params": [p for p in sparse.values() if p.requires_grad],
                           "lr": config.sparse_lr or config.lr, "weight_decay": config.sparse_weight_decay})
        if dense:
            groups.append({"name": "dense", "params": dense, "lr": config.lr, "weight_decay": config.weight_decay})
        if not groups:
            raise ValueError("the model has no trainable parameters.")
        optimizers = {"adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad, "sgd": torch.optim.SGD}
        # one fused kernel per parameter instead of ~10 elementwise ops: a fifth of a small model's step on CPU
        fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
        return optimizers[config.optimizer](groups, fused=fused or None)

    def _show_progress(self) -> bool:
        if self.config.show_progress is not None:
            return self.config.show_progress
        return logger.getEffectiveLevel() <= logging.INFO

    # -- one step --------------------------------------------------------------------------------------------

    def _make_batch(self, index_batch: IndexBatch) -> RecBatch:
        negatives = None
        if self.config.loss == "bpr" and self.negative_sampler is not None:
            negatives = self.negative_sampler.sample(index_batch.users, self.config.num_negatives, self.step)
        batch = RecBatch(users=index_batch.users, items=index_batch.items, rows=index_batch.rows, negatives=negatives)
        return self.model.featurize(batch)

    def _log_q(self, items: Tensor) -> Tensor | None:
        if self.log_q_table is not None:
            return self.log_q_table[items]
        if self.estimator is not None:
            self.estimator.update(items, self.step + 1)
            return self.estimator.log_probability(items)
        return None

    def task_loss(self, outputs: RecOutput, batch: RecBatch) -> Tensor:
        if self.config.loss == "bpr":
            if outputs.negatives is None:
                raise ValueError(f"{type(self.model).__name__} returned no negative embeddings for the BPR loss.")
            return bpr_loss(outputs.user, outputs.item, outputs.negatives, scale=outputs.scale)
        return in_batch_softmax_loss(
            outputs.user,
            outputs.item,
            scale=outputs.scale,
            log_q=self._log_q(batch.items),
            candidate_ids=batch.items,
            log_q_weight=self.config.logq_weight,
        )

    @property
    def total_steps(self) -> int:
        """Steps this run will take at most: ``max_steps``, else ``epochs`` × batches per epoch."""
        per_run = self.config.epochs * len(self.batches)
        return per_run if self.config.max_steps is None else min(self.config.max_steps, per_run)

    def train_step(self, index_batch: IndexBatch) -> dict[str, float]:
        """One optimizer step (:meth:`common_regs.training.RegHooks.step`).

        Returns the loss components (``loss/task``, ``loss/<hook>``, ``loss/total``).
        """
        batch = self._make_batch(index_batch)
        self.reg_hooks.step(
            batch, self.model, self.task_loss, step=self.step, epoch=self.epoch, sample_indices=batch.rows,
            extras={"total_steps": self.total_steps},  # schedules over the whole run (DSL's cosine decay) read it
            max_grad_norm=self.config.grad_clip,
        )
        self.step += 1
        components = {"loss/task": self.reg_hooks.last_task_loss, "loss/total": self.reg_hooks.last_loss}
        components.update({f"loss/{name}": value for name, value in self.reg_hooks.last_terms.items()})
        return components

    # -- evaluation and early stopping ------------------------------------------------------------------------

    def _evaluate(self) -> dict[str, float]:
        if self.evaluate_fn is None:
            return {}
        self.model.eval()
        with torch.no_grad():
            metrics = {key: float(value) for key, value in self.evaluate_fn(self.model).items()}
        self.model.train()
        return metrics

    def _record_evaluation(self, metrics: dict[str, float], entry: dict[str, Any]) -> bool:
        """Update best / patience; returns True when training should stop."""
        entry.update(metrics)
        monitor = self.config.monitor
        if monitor not in metrics:
            raise ValueError(f"`train.monitor` {monitor!r} is not among the evaluated metrics {sorted(metrics)}.")
        value = metrics[monitor]
        best = self.result.best_metrics.get(monitor, -math.inf)
        if value > best:
            self.result.best_metrics = dict(metrics)
            self.result.best_epoch = self.epoch
            self._best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            # masks and other hook state belong to the best weights too (DSL keeps its masks in the hook)
            self._best_hook_states = copy.deepcopy(self.reg_hooks.state_dicts())
            self._bad_evaluations = 0
            if self.checkpoint_dir is not None:
                self._save(self.checkpoint_dir / "best.pt", best_only=True)
        else:
            self._bad_evaluations += 1
        shown = {k: v for k, v in metrics.items() if k == monitor or k.startswith(("R@", "nDCG@"))}
        logger.info(
            "epoch %d: %s (best %s=%.4f at epoch %s)",
            self.epoch,
            ", ".join(f"{k}={v:.4f}" for k, v in shown.items()),
            monitor,
            self.result.best_metrics.get(monitor, float("nan")),
            self.result.best_epoch,
        )
        return self.config.patience is not None and self._bad_evaluations >= self.config.patience

    # -- checkpoints -----------------------------------------------------------------------------------------

    def _state(self) -> dict[str, Any]:
        return {
            "format_version": _FORMAT_VERSION,
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "hooks": self.reg_hooks.state_dicts(),
            "estimator": self.estimator.state_dict() if self.estimator is not None else None,
            "position": {"step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch},
            "result": asdict(self.result),
            "best_state": self._best_state,
            "best_hook_states": self._best_hook_states,
            "bad_evaluations": self._bad_evaluations,
            "rng": global_rng_state(),
        }

    def _save(self, path: Path, *, best_only: bool = False) -> None:
        state = {"format_version": _FORMAT_VERSION, "model": self.model.state_dict()} if best_only else self._state()
        if not self.is_checkpoint_writer:  # distributed: every rank gathers the state (collective), rank 0 writes
            return
        save_with_checksum(path, lambda tmp: torch.save(state, tmp))

    def save_checkpoint(self) -> Path | None:
        """Write ``ckpt-<step>.pt`` (+ ``.sha256``) and prune to the newest ``keep_checkpoints``."""
        if self.checkpoints is None:
            return None
        state = self._state()
        if not self.is_checkpoint_writer:
            return self.checkpoints.path(self.step)
        return self.checkpoints.save(self.step, lambda tmp: torch.save(state, tmp))

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Restore everything :meth:`save_checkpoint` wrote; training then continues where it stopped.

        Raises:
            common_regs.safe_load.UnsafeFileError: the file holds more than tensors and plain containers (it is
                never unpickled with the code-running unpickler).
        """
        state = load_tensors(path, what="checkpoint")
        if state.get("format_version") != _FORMAT_VERSION or "optimizer" not in state:
            raise ValueError(f"{path}: not a full regkit recsys checkpoint (format {state.get('format_version')}).")
        if state["config"] != self.config.to_dict():
            changed = {k for k in state["config"] if state["config"][k] != self.config.to_dict().get(k)}
            logger.warning("resuming %s with changed train options %s", path, sorted(changed))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if len(state["hooks"]) != len(self.hooks):
            raise ValueError(f"{path}: checkpoint has {len(state['hooks'])} hooks, this trainer {len(self.hooks)}.")
        self.reg_hooks.load_state_dicts(state["hooks"])
        if self.estimator is not None and state["estimator"] is not None:
            self.estimator.load_state_dict(state["estimator"])
        position = state["position"]
        self.step, self.epoch, self.batch_in_epoch = position["step"], position["epoch"], position["batch_in_epoch"]
        self.result = TrainResult(**state["result"])
        self._best_state = state["best_state"]
        self._best_hook_states = state.get("best_hook_states")
        self._bad_evaluations = state["bad_evaluations"]
        set_global_rng_state(state["rng"])
        logger.info(
            "resumed from %s at step %d (epoch %d, batch %d)", path, self.step, self.epoch, self.batch_in_epoch
        )

    # -- the loop --------------------------------------------------------------------------------------------

    def fit(self, *, resume: bool = True) -> TrainResult:
        """Train until ``epochs`` / ``max_steps`` / early stopping.

        With ``resume``, continues from the newest checkpoint in ``checkpoint_dir`` whose SHA-256 verifies (a
        damaged newer one is skipped with a warning); raises :class:`common_regs.checkpoint.CheckpointError` when
        checkpoints exist but none verifies.
        """
        config = self.config
        resumed = None
        if resume and self.checkpoints is not None:
            resumed = self.checkpoints.load_latest(self.load_checkpoint)
        if resumed is None:
            torch.manual_seed(config.seed)
        self.model.train()
        stop = self.result.stopped_early or (config.max_steps is not None and self.step >= config.max_steps)
        while not stop and self.epoch < config.epochs:
            stop = self._run_epoch()
        self.result.steps = self.step
        if config.restore_best and self._best_state is not None:
            self.model.load_state_dict(self._best_state)
            if self._best_hook_states is not None:
                self.reg_hooks.load_state_dicts(self._best_hook_states)
        return self.result

    def _run_epoch(self) -> bool:
        config = self.config
        sums: dict[str, float] = {}
        steps_here = 0
        started = time.perf_counter()
        bar = tqdm(
            total=len(self.batches),
            initial=self.batch_in_epoch,
            desc=f"epoch {self.epoch}",
            disable=not self._show_progress(),
            leave=False,
            dynamic_ncols=True,
            mininterval=0.5 if sys.stderr.isatty() else 30.0,
        )
        capped = False
        for index_batch in self.batches.batches(self.epoch, start=self.batch_in_epoch):
            components = self.train_step(index_batch)
            self.batch_in_epoch += 1
            self.result.examples += len(index_batch)
            steps_here += 1
            for key, value in components.items():
                sums[key] = sums.get(key, 0.0) + value
            bar.update(1)
            if not bar.disable:
                elapsed = time.perf_counter() - started
                throughput = self.result.examples / max(self.result.train_seconds + elapsed, 1e-9)
                bar.set_postfix(loss=f"{components['loss/total']:.4f}", ex_s=f"{throughput:.0f}", refresh=False)
            if config.max_steps is not None and self.step >= config.max_steps:
                capped = True
                break
            if config.checkpoint_every and self.step % config.checkpoint_every == 0:
                self.result.train_seconds += time.perf_counter() - started
                started = time.perf_counter()
                self.save_checkpoint()
        bar.close()
        self.result.train_seconds += time.perf_counter() - started
        entry: dict[str, Any] = {"epoch": self.epoch, "step": self.step, "seconds": self.result.train_seconds}
        entry.update({key: value / max(steps_here, 1) for key, value in sums.items()})
        logger.info(
            "epoch %d: %s", self.epoch, ", ".join(f"{k}={v:.4f}" for k, v in entry.items() if k.startswith("loss/"))
        )
        finished_epoch = not capped or self.batch_in_epoch >= len(self.batches)
        last = capped or self.epoch + 1 >= config.epochs
        stop = capped
        if finished_epoch:
            evaluate_now = config.eval_every and (self.epoch + 1) % config.eval_every == 0
            if self.evaluate_fn is not None and (evaluate_now or last):
                stop = self._record_evaluation(self._evaluate(), entry) or stop
                self.result.stopped_early = stop and not capped
            self.result.history.append(entry)
            self.epoch += 1
            self.batch_in_epoch = 0
            self.result.epochs = self.epoch
        elif self.evaluate_fn is not None and capped:
            self._record_evaluation(self._evaluate(), entry)
            self.result.history.append(entry)
        self.save_checkpoint()
        return stop
