"""The trainer of the inference-free sparse retriever (Geng et al. 2024, arXiv:2411.04403): step, hooks, checkpoints.

One step, for a batch of B training queries with C documents each (column 0 = a judged positive, the others
sampled from the query's mined candidates, :mod:`retrieval.mining`):

1. document vectors w (B·C, V) from the document route (SPLADE-max over the MLM head; fused projection,
   :mod:`retrieval.max_projection`); query vectors = IDF on the query's wordpieces (no network);
2. scores s = q · w; ranking loss — ``infonce`` (cross-entropy over all B·C documents of the batch, in-batch
   negatives), ``kd_kl`` (KL(teacher ‖ student) over the query's C candidates, teacher = common_regs
   ``MinMaxEnsembleTeacher`` of BM25 and dense scores, ×``score_scale``, temperature τ) or ``kd_margin_mse``;
3. + the config's ``hooks`` (default: λ(step) · IDF-aware FLOPS, :class:`retrieval.losses.IdfAwareFlops`), each
   with its own weight and warm-up, built by :func:`common_regs.hook_specs.build_hooks`; the whole step is
   :meth:`common_regs.training.RegHooks.step`, the one step order of every regkit trainer.

The forward pass returns ``scores`` (B, B·C), ``logits`` (B, C: each query's own candidates), ``doc_embeddings``
(B·C, V), and the MLM head's transformed ``states`` (B·C, L, d) with their ``mask``, which hooks read.

``train_encoder=False`` (default, for CPUs) trains only the MLM head — its d×d transform and LayerNorm, the
output embeddings (untied from the input embeddings, so the frozen body stays exact) and the output bias — from
cached backbone states (:mod:`retrieval.hidden_cache`). ``train_encoder=True`` fine-tunes everything, as the
authors do (slow on CPU).

Resume: with ``checkpoint_dir`` and ``checkpoint_every``, checkpoints hold the trained tensors, the optimizer,
learning-rate schedule, hook states, the batch sampler's position and random states, and the log; :meth:`fit`
continues from the newest one that verifies and ends with the same parameters as an uninterrupted run (same
machine, same thread count).
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

from common_regs.checkpoint import CheckpointDir, global_rng_state, set_global_rng_state
from common_regs.distill import DistillLoss, MinMaxEnsembleTeacher
from common_regs.hook_specs import build_hooks
from common_regs.safe_load import load_tensors
from common_regs.training import RegHooks
from retrieval.encoder import document_parts, idf_weights, mlm_parts
from retrieval.hidden_cache import HiddenStates, StackedStates
from retrieval.index import progress_enabled
from retrieval.losses import MarginMSE, idf_scores, inbatch_infonce
from retrieval.max_projection import splade_max_pool
from retrieval.mining import TEACHERS, Candidates
from retrieval.sparse_config import SparseTrainConfig
from retrieval.training_batches import QueryTable, TokenCache, head_parameters, sample_batch, untie_output_embeddings

logger = logging.getLogger(__name__)

__all__ = ["RankingSetup", "SparseTrainer", "TrainingData"]

_FORMAT_VERSION = 1


@dataclass
class TrainingData:
    """Prepared inputs of a run.

    ``queries`` {qid: text}, ``positives`` {qid: [docid]}, ``candidates`` (mined, with both teachers' scores),
    ``corpus`` {docid: object with ``.contents``}, and the backbone states ``cache`` of every document of
    ``corpus``, needed only for head-only training (``train_encoder=False``).
    """

    queries: Mapping[str, str]
    positives: Mapping[str, list[str]]
    candidates: Candidates
    corpus: Mapping[str, Any]
    cache: HiddenStates | StackedStates | None = None


@dataclass(frozen=True)
class RankingSetup:
    """What the retrieval adapters of registered methods read (``from_setup(setup, **options)``).

    Args:
        model: the ``SparseEncoder`` being trained.
        outputs: the step's forward pass on a given encoder (the model, or a frozen copy of it): ``(model, batch)
            -> outputs`` as described in the module docstring.
        pool: MLM-head states (N, L, d) and their mask → the live model's document vectors (N, V).
        epochs: passes over the training queries that the run makes (``ceil(steps · B / queries)``).
    """

    model: Any
    outputs: Any
    pool: Any
    epochs: int


class SparseTrainer:
    """Train a sparse encoder in place on prepared inputs (:class:`TrainingData`), per ``config``.

    Args:
        config: the run's options (``hooks`` among them).
        model: a ``SparseEncoder`` from :func:`retrieval.encoder.build_sparse_encoder`; moved to ``config.device``.
        data: the prepared inputs.
        checkpoint_dir: where ``ckpt-<step>.pt`` (+ ``.sha256``) go every ``config.checkpoint_every`` steps.
        keep_checkpoints: newest checkpoints kept. Default 2 (regkit convention).
        show_progress: tqdm bar (None = when the logger is at INFO or below).
    """

    def __init__(self, config: SparseTrainConfig, model: Any, data: TrainingData, *,
                 checkpoint_dir: str | os.PathLike[str] | None = None, keep_checkpoints: int = 2,
                 show_progress: bool | None = None) -> None:
        _check_data(config, data)
        self.config, self.model, self.data, self.show_progress = config, model, data, show_progress
        self.device = torch.device(config.device or "cpu")
        model.to(self.device)
        self.transformer, self.pooling = mlm_parts(model)
        params = self._trainable()
        self.compute_dtype = torch.bfloat16 if config.compute_dtype == "bfloat16" else None
        self.projection = config.projection or ("dense" if self.device.type == "cuda" else "loop")
        self.table = QueryTable(model, data.queries)
        self.tokens = TokenCache(self.transformer.tokenizer, data.corpus, config.train_max_length)
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        epochs = math.ceil(config.steps * config.batch_queries / len(data.queries))
        setup = RankingSetup(model=model, outputs=self.outputs, pool=self.pool, epochs=epochs)
        hooks = [*self._ranking_hooks(),
                 *build_hooks(config.hooks, domain="retrieval", setup=setup, runtime={"idf": idf_weights(model)})]
        self.reg_hooks = RegHooks(hooks, self.transformer, self.optimizer)
        self.hooks = self.reg_hooks.hooks
        warm, steps = max(1, config.warmup_steps), config.steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm))))
        self.checkpoints = (CheckpointDir(checkpoint_dir, keep=keep_checkpoints)
                            if checkpoint_dir is not None and config.checkpoint_every else None)
        self.step, self.epoch = 0, -1
        self.rng = random.Random(config.seed)
        self.order: list[str] = []
        self.log: list[dict[str, float]] = []
        self._seen: dict[str, float] = {}

    # -- setup -----------------------------------------------------------------------------------------------

    def _trainable(self) -> list[nn.Parameter]:
        if self.config.train_encoder:
            return list(self.transformer.parameters())
        untie_output_embeddings(self.model)
        for p in self.transformer.parameters():
            p.requires_grad_(False)
        params = head_parameters(self.model)
        for p in params:
            p.requires_grad_(True)
        return params

    def _ranking_hooks(self) -> list[Any]:
        """The distillation terms of ``ranking_loss`` (InfoNCE is the task loss itself)."""
        config = self.config
        if config.ranking_loss == "infonce":
            return []
        teacher = MinMaxEnsembleTeacher(teachers=[_teacher_reader(t) for t in range(len(TEACHERS))],
                                        weights=config.teacher_weights, scale=config.score_scale)
        if config.ranking_loss == "kd_kl":
            return [teacher, DistillLoss("kl", temperature=config.temperature, weight=config.temperature**2)]
        return [teacher, MarginMSE()]

    # -- the forward pass ------------------------------------------------------------------------------------

    def _project(self, states: Tensor, mask: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return splade_max_pool(states, mask, weight, bias, activation=self.pooling.activation_function,
                               compute_dtype=self.compute_dtype, method=self.projection)

    def pool(self, states: Tensor, mask: Tensor) -> Tensor:
        """Document vectors (N, V) of MLM-head states (N, L, d) through the live model's vocabulary projection."""
        with document_parts(self.model) as (_, _, weight, bias):
            return self._project(states, mask, weight, bias)

    def outputs(self, model: Any, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """The forward pass of ``batch`` through ``model`` (the trained one or a copy of it)."""
        config, width = self.config, self.config.docs_per_query
        docs = [d for row in batch["docs"] for d in row]
        with document_parts(model) as (hf, head, weight, bias):
            if config.train_encoder:
                features = {k: v.to(self.device) for k, v in self.tokens.batch(docs).items()}
                states, mask = hf(**features).logits, features["attention_mask"]
            else:
                cache = self.data.cache
                hidden, mask = cache.batch([cache.row(d) for d in docs], config.train_max_length)
                hidden, mask = hidden.to(self.device), mask.to(self.device)
                states = head(hidden)
            doc = self._project(states, mask, weight, bias)
        scores = idf_scores(batch["query"], doc)  # (B, B·C)
        own = torch.stack([scores[i, i * width : (i + 1) * width] for i in range(scores.shape[0])])
        return {"scores": scores, "logits": own, "doc_embeddings": doc, "states": states, "mask": mask}

    def _forward(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        outputs = self.outputs(self.model, batch)
        self._seen["reg/idf_aware_flops/nnz"] = float((outputs["doc_embeddings"] > 0).sum(1).float().mean())
        return outputs

    def _task_loss(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Any]) -> Tensor:
        if self.config.ranking_loss == "infonce":
            return inbatch_infonce(outputs["scores"], batch["positive_columns"])
        return outputs["scores"].new_zeros(())

    # -- one step --------------------------------------------------------------------------------------------

    def _next_queries(self) -> list[str]:
        """The next B training queries of the shuffled order; a new pass (epoch) reshuffles them all."""
        size = self.config.batch_queries
        if len(self.order) < size:
            fresh = list(self.data.queries)
            self.rng.shuffle(fresh)
            self.order += fresh
            self.epoch += 1
        chosen, self.order = self.order[:size], self.order[size:]
        return chosen

    def train_step(self) -> dict[str, float]:
        """One optimizer step; returns its log entry (loss, lr, each loss term and its weight, hook statistics)."""
        config, width = self.config, self.config.docs_per_query
        chosen = self._next_queries()
        doc_lists, teacher = sample_batch(chosen, self.data.positives, self.data.candidates, width, self.rng)
        batch = {"query": self.table.matrix(chosen).to(self.device), "docs": doc_lists,
                 "teacher": teacher.to(self.device),
                 "positive_columns": (torch.arange(len(chosen)) * width).to(self.device)}
        loss = self.reg_hooks.step(batch, self._forward, self._task_loss, step=self.step, epoch=self.epoch,
                                   extras={"total_steps": config.steps})
        self.scheduler.step()
        entry = {"step": self.step, "loss": float(loss), "lr": self.scheduler.get_last_lr()[0],
                 **{f"weight/{name}": value for name, value in self.reg_hooks.last_weights.items()},
                 **self.reg_hooks.last_terms, **self._seen}
        for scheduler in self.reg_hooks.by_kind["mask_scheduler"]:  # DSL: reg/dsl/density, ...
            entry.update(scheduler.stats() if callable(getattr(scheduler, "stats", None)) else {})
        self.step += 1
        return entry

    # -- the loop --------------------------------------------------------------------------------------------

    def fit(self, *, resume: bool = True) -> list[dict[str, float]]:
        """Train to ``config.steps`` (resuming from the newest verified checkpoint when ``resume``).

        The model is left on ``config.device`` in eval mode, its parametrizations (mask schedulers') baked into plain
        weights.

        Returns:
            the per-step log.
        """
        if not (resume and self.checkpoints is not None and self.checkpoints.load_latest(self.load_checkpoint)):
            torch.manual_seed(self.config.seed)
        self.transformer.train()
        bar = tqdm(total=self.config.steps, initial=self.step, desc="training", unit="step",
                   disable=not progress_enabled(self.show_progress))
        started = time.perf_counter()
        while self.step < self.config.steps:
            entry = self.train_step()
            self.log.append({**entry, "elapsed_s": time.perf_counter() - started})
            bar.update(1)
            bar.set_postfix(loss=f"{entry['loss']:.3f}", flops=f"{entry.get('idf_aware_flops', 0.0):.2f}")
            if entry["step"] % 25 == 0 or self.step == self.config.steps:
                logger.info("step %d: %s", entry["step"], {k: round(v, 4) for k, v in entry.items() if k != "step"})
            if self.checkpoints is not None and self.step % self.config.checkpoint_every == 0:
                self.checkpoints.save(self.step, lambda tmp: torch.save(self._state(), tmp))
        bar.close()
        self._finish()
        return self.log

    def _finish(self) -> None:
        for module in list(self.transformer.modules()):
            for name in list(getattr(module, "parametrizations", {}) or {}):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
        for p in self.transformer.parameters():
            p.requires_grad_(True)
        self.transformer.eval()

    # -- checkpoints -----------------------------------------------------------------------------------------

    def _trained_names(self) -> list[str]:
        return [name for name, p in self.transformer.named_parameters() if p.requires_grad]

    def _state(self) -> dict[str, Any]:
        trained = set(self._trained_names())
        return {
            "format_version": _FORMAT_VERSION,
            "parameters": {k: v for k, v in self.transformer.state_dict().items() if k in trained},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "hooks": self.reg_hooks.state_dicts(),
            "position": {"step": self.step, "epoch": self.epoch, "order": list(self.order)},
            "sampler_rng": _rng_state(self.rng),
            "rng": global_rng_state(),
            "log": self.log,
        }

    def load_checkpoint(self, path: str | os.PathLike[str]) -> Path:
        """Restore everything a checkpoint holds; training then continues where it stopped.

        Raises:
            common_regs.safe_load.UnsafeFileError: the file holds more than tensors and plain containers.
            ValueError: the checkpoint is not one of this trainer's (other trained tensors or hooks).
        """
        state = load_tensors(path, what="checkpoint")
        if state.get("format_version") != _FORMAT_VERSION or "parameters" not in state:
            version = state.get("format_version")
            raise ValueError(f"{path}: not a regkit sparse-training checkpoint (format {version}).")
        names = sorted(self._trained_names())
        if sorted(state["parameters"]) != names or len(state["hooks"]) != len(self.hooks):
            raise ValueError(f"{path}: the checkpoint trained other tensors or hooks than this config "
                             f"(train_encoder / hooks changed); pass --overwrite to start over.")
        self.transformer.load_state_dict(state["parameters"], strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.reg_hooks.load_state_dicts(state["hooks"])
        position = state["position"]
        self.step, self.epoch, self.order = position["step"], position["epoch"], list(position["order"])
        self.rng.setstate(_rng_from_state(state["sampler_rng"]))
        set_global_rng_state(state["rng"])
        self.log = [dict(entry) for entry in state["log"]]
        logger.info("resumed from %s at step %d", path, self.step)
        return Path(path)


def _check_data(config: SparseTrainConfig, data: TrainingData) -> None:
    if not config.train_encoder and data.cache is None:
        raise ValueError("head-only training (`train_encoder=False`) needs `cache` (retrieval.hidden_cache).")
    missing = [q for q in data.queries if q not in data.candidates.docs or not data.positives.get(q)]
    if missing:
        raise ValueError(f"{len(missing)} training queries lack candidates or positives (first: {missing[0]!r}).")
    if not data.queries:
        raise ValueError("no training query: `queries` is empty.")


def _rng_state(rng: random.Random) -> dict[str, Any]:
    """A ``random.Random`` state as a tensor and numbers (checkpoints are read with the weights-only loader)."""
    version, internal, gauss = rng.getstate()
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss}


def _rng_from_state(state: Mapping[str, Any]) -> tuple[Any, ...]:
    return state["version"], tuple(int(v) for v in state["internal"].tolist()), state["gauss"]


def _teacher_reader(position: int) -> Any:
    def read(ctx: Any) -> Tensor:
        return ctx.batch["teacher"][position]

    return read
