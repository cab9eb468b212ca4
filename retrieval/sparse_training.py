"""Training of the inference-free sparse retriever (Geng et al. 2024, arXiv:2411.04403) on a BEIR training split.

One step, for a batch of B training queries with C documents each (column 0 = a judged positive, the others
sampled from the query's mined candidates, :mod:`retrieval.mining`):

1. document vectors w (B·C, V) from the document route (SPLADE-max over the MLM head; fused projection,
   :mod:`retrieval.max_projection`); query vectors = IDF on the query's wordpieces (no network);
2. scores s = q · w; ranking loss — ``infonce`` (cross-entropy over all B·C documents of the batch, in-batch
   negatives), ``kd_kl`` (KL(teacher ‖ student) over the query's C candidates, teacher = common_regs
   ``MinMaxEnsembleTeacher`` of BM25 and dense scores, ×``score_scale``, temperature τ) or ``kd_margin_mse``;
3. + λ(step) · FLOPS (:class:`retrieval.losses.IdfAwareFlops`, ``idf_aware`` or ``plain``), λ with quadratic
   warm-up; all applied through ``common_regs.training.RegHooks``.

``train_encoder=False`` (default here, for CPUs) trains only the MLM head — its d×d transform and LayerNorm, the
output embeddings (untied from the input embeddings, so the frozen body stays exact) and the output bias — from
cached backbone states (:mod:`retrieval.hidden_cache`). ``train_encoder=True`` fine-tunes everything, as the
authors do (slow on CPU).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from torch import Tensor, nn
from tqdm.auto import tqdm

from common_regs.distill import DistillLoss, MinMaxEnsembleTeacher
from common_regs.fingerprints import content_fingerprints
from common_regs.io import atomic_dir, atomic_write_text
from common_regs.schedules import QuadraticWarmup
from common_regs.training import RegHooks
from retrieval.beir import load_beir
from retrieval.encoder import (
    SparseEncoderConfig,
    build_sparse_encoder,
    default_backbone,
    document_parts,
    idf_weights,
    mlm_parts,
    query_weights,
    read_idf_json,
    write_idf_json,
)
from retrieval.hidden_cache import HiddenStates, build_hidden_cache, cache_fingerprint
from retrieval.index import progress_enabled
from retrieval.losses import IdfAwareFlops, MarginMSE, idf_scores, inbatch_infonce
from retrieval.max_projection import splade_max_pool
from retrieval.mining import TEACHERS, Candidates, cached_bm25_index, mine_candidates

logger = logging.getLogger(__name__)

__all__ = ["SparseTrainConfig", "TrainResult", "train_model", "train_sparse", "training_pairs"]

RankingLoss = Literal["infonce", "kd_kl", "kd_margin_mse"]


@dataclass
class SparseTrainConfig:
    """Everything ``regkit retrieval train --config FILE`` reads (YAML keys = field names; the file is read and
    checked by :func:`pipelines.run_config.load_sparse_train_config`).

    Args:
        data: BEIR folder; training queries/positives from ``qrels/{split}.tsv``, candidates from its corpus.
        out_dir: output folder (``model/`` in sentence-transformers format, logs, the resolved config).
        split: training split. Default "train".
        model: :class:`retrieval.encoder.SparseEncoderConfig` fields (backbone, activation, max_seq_length,
            head_init, head_bias, idf_trainable).
        idf_json: query weights from this ``idf.json``; None = BM25 IDF of ``data``'s corpus. Default None.
        ranking_loss: ``infonce``, ``kd_kl`` or ``kd_margin_mse``. Default "kd_kl" (source: paper, ensemble KD).
        flops: ``idf_aware`` or ``plain``. Default "idf_aware" (source: paper).
        flops_weight: λ_d. Default 0.002 (source: authors' ``config_kd.yaml``).
        flops_warmup_steps: T of the quadratic λ warm-up. Default 100 (authors: 200 of 2000 steps; scaled to the
            shorter CPU runs).
        l0_threshold: ℓ0 mask τ (only documents with more than τ active terms are penalised); None = off.
        temperature: KL temperature τ. Default 1.0 (source: authors' code). The KL term is weighted by τ²
            (Hinton et al. 2015, arXiv:1503.02531, §2) so that its gradient scale does not shrink as 1/τ² against
            the FLOPS term; at τ = 1 the weight is 1.
        teacher_weights: weights of (bm25, dense) in the ensemble. Default equal (source: authors' code).
        score_scale: ensemble score scale. Default 30.0 (source: authors' ``score_scale``).
        candidates_k: depth of each retriever when mining. Default 50 (authors' l0 data: top-50).
        docs_per_query: C (1 positive + C−1 mined). Default 4.
        batch_queries: B. Default 8.
        steps: optimizer steps. Default 300.
        lr: AdamW learning rate (linear warm-up over ``warmup_steps``, then linear decay). Default 2e-5 for
            ``train_encoder=True`` (authors); the configs in ``pipelines/configs`` use a larger head-only rate.
        warmup_steps: learning-rate warm-up. Default 30.
        weight_decay: AdamW weight decay. Default 0.01 (source: authors' configs).
        train_encoder: fine-tune the transformer body too. Default False (CPU recipe).
        train_max_length: document truncation during training. Default 128 (CPU budget; indexing uses
            ``model.max_seq_length``).
        compute_dtype: dtype of the vocabulary projection, ``float32`` or ``bfloat16``. Default "float32".
        cache_dir: where backbone states, the BM25 index and mined candidates are cached. Default
            ``<out_dir>/../cache``.
        threads: torch and Lucene threads. Default 2.
        seed: random seed. Default 0.
        device: torch device of the training loop (``"cuda"``, ``"cuda:1"``, ``"cpu"``); None = CPU. Default None.
            The model and every batch tensor are moved there; candidate mining and caches stay on the CPU.
        projection: how the training loop computes the max-pooled vocabulary projection
            (:func:`retrieval.max_projection.splade_max_pool` ``method``): ``"loop"``, ``"dense"``, or None =
            ``"dense"`` on CUDA devices and ``"loop"`` elsewhere. Default None (regkit: the loop avoids the
            (B, L, V) tensor on CPUs; a GPU holds it easily and loses most of its time to the loop).
    """

    data: str
    out_dir: str
    split: str = "train"
    model: dict[str, Any] = field(default_factory=dict)
    idf_json: str | None = None
    ranking_loss: RankingLoss = "kd_kl"
    flops: Literal["idf_aware", "plain"] = "idf_aware"
    flops_weight: float = 0.002
    flops_warmup_steps: int = 100
    l0_threshold: int | None = None
    temperature: float = 1.0
    teacher_weights: list[float] = field(default_factory=lambda: [1.0, 1.0])
    score_scale: float = 30.0
    candidates_k: int = 50
    docs_per_query: int = 4
    batch_queries: int = 8
    steps: int = 300
    lr: float = 2e-5
    warmup_steps: int = 30
    weight_decay: float = 0.01
    train_encoder: bool = False
    train_max_length: int = 128
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    cache_dir: str | None = None
    threads: int = 2
    seed: int = 0
    device: str | None = None
    projection: Literal["loop", "dense"] | None = None

    def __post_init__(self) -> None:
        if self.ranking_loss not in ("infonce", "kd_kl", "kd_margin_mse"):
            raise ValueError(f"`ranking_loss` must be infonce, kd_kl or kd_margin_mse, got {self.ranking_loss!r}.")
        if self.flops not in ("idf_aware", "plain"):
            raise ValueError(f"`flops` must be idf_aware or plain, got {self.flops!r}.")
        if self.compute_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"`compute_dtype` must be float32 or bfloat16, got {self.compute_dtype!r}.")
        if self.projection not in (None, "loop", "dense"):
            raise ValueError(f"`projection` must be None, 'loop' or 'dense', got {self.projection!r}.")
        for name in ("docs_per_query", "batch_queries", "steps", "candidates_k", "train_max_length", "threads"):
            value = getattr(self, name)
            minimum = 2 if name == "docs_per_query" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
        for name in ("flops_weight", "lr", "weight_decay", "temperature", "score_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"`{name}` must be a number >= 0, got {value!r}.")
        if len(self.teacher_weights) != len(TEACHERS):
            raise ValueError(f"`teacher_weights` needs {len(TEACHERS)} values {TEACHERS}, got {self.teacher_weights}.")
        if not isinstance(self.model, dict):
            raise ValueError(f"`model` must be a mapping of SparseEncoderConfig fields, got {self.model!r}.")
        known = sorted(SparseEncoderConfig.__dataclass_fields__)
        unknown = sorted(set(self.model) - set(known))
        if unknown:
            raise ValueError(f"`model` has unknown keys {unknown}; known: {known}.")
        SparseEncoderConfig(**self.model)  # validate early
        if self.device is not None:
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError):
                raise ValueError(f"`device` must be None or a torch device string such as 'cuda', got "
                                 f"{self.device!r}.") from None

    @property
    def encoder_config(self) -> SparseEncoderConfig:
        return SparseEncoderConfig(**self.model)


@dataclass
class TrainResult:
    model_dir: Path
    seconds: float
    setup_seconds: float
    log: list[dict[str, float]]


class _QueryTable:
    """Per training query, its vocabulary ids and IDF weights (the inference-free query vector)."""

    def __init__(self, model: Any, queries: Mapping[str, str]) -> None:
        tokenizer = mlm_parts(model)[0].tokenizer
        vocab = tokenizer.get_vocab()
        self.size = len(tokenizer)
        self.rows = {}
        for qid, weights in query_weights(model, queries).items():
            ids = torch.tensor([vocab[t] for t in weights], dtype=torch.long)
            self.rows[qid] = (ids, torch.tensor(list(weights.values()), dtype=torch.float32))

    def matrix(self, qids: list[str]) -> Tensor:
        out = torch.zeros((len(qids), self.size))
        for i, qid in enumerate(qids):
            ids, values = self.rows[qid]
            out[i, ids] = values
        return out


class _TokenCache:
    """Wordpiece ids of each training document, tokenized once (truncated to ``max_length``), padded per batch.

    Gives the same ``input_ids`` / ``attention_mask`` as calling the tokenizer on the batch with ``padding=True,
    truncation=True`` (tested); tokenizing 64 full SciFact abstracts every step costs ~45 ms of one CPU core.
    """

    def __init__(self, tokenizer: Any, corpus: Mapping[str, Any], max_length: int) -> None:
        self.tokenizer, self.corpus, self.max_length = tokenizer, corpus, max_length
        self.ids: dict[str, list[int]] = {}

    def batch(self, docs: list[str]) -> dict[str, Tensor]:
        missing = list(dict.fromkeys(d for d in docs if d not in self.ids))
        if missing:
            encoded = self.tokenizer([self.corpus[d].contents for d in missing], truncation=True,
                                     max_length=self.max_length)["input_ids"]
            self.ids.update(zip(missing, encoded, strict=True))
        rows = [self.ids[d] for d in docs]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": mask}


def _untie_output_embeddings(model: Any) -> None:
    """Give the MLM decoder its own weight so head-only training leaves the frozen input embeddings exact."""
    hf = mlm_parts(model)[0].model
    decoder = hf.get_output_embeddings()
    if decoder.weight is hf.get_input_embeddings().weight:
        decoder.weight = nn.Parameter(decoder.weight.detach().clone())
    hf.config.tie_word_embeddings = False
    if hasattr(hf, "_tied_weights_keys") and isinstance(hf._tied_weights_keys, dict):
        hf._tied_weights_keys = {k: v for k, v in hf._tied_weights_keys.items() if not k.endswith("decoder.weight")}


def _head_parameters(model: Any) -> list[nn.Parameter]:
    with document_parts(model) as (_, head, weight, bias):
        params = list(head.parameters()) + [weight] + ([bias] if bias is not None else [])
    unique: dict[int, nn.Parameter] = {}
    for p in params:
        unique[id(p)] = p
    return list(unique.values())


def _sample_batch(
    qids: list[str], positives: dict[str, list[str]], candidates: Candidates, docs_per_query: int, rng: random.Random
) -> tuple[list[str], list[list[str]], Tensor]:
    """Per query: one positive + (C−1) candidates that are not positives; teacher scores (T, B, C)."""
    doc_lists, teacher = [], torch.zeros((len(TEACHERS), len(qids), docs_per_query))
    for row, qid in enumerate(qids):
        pool = [d for d in candidates.docs[qid] if d not in positives[qid]]
        negatives = rng.sample(pool, docs_per_query - 1) if len(pool) >= docs_per_query - 1 else (
            pool + rng.choices(pool or candidates.docs[qid], k=docs_per_query - 1 - len(pool)))
        chosen = [rng.choice(positives[qid])] + negatives
        doc_lists.append(chosen)
        where = {d: j for j, d in enumerate(candidates.docs[qid])}
        for t, name in enumerate(TEACHERS):
            scores = candidates.scores[name][qid]
            teacher[t, row] = torch.tensor([scores[where[d]] for d in chosen])
    return qids, doc_lists, teacher


def train_sparse(config: SparseTrainConfig, *, show_progress: bool | None = None) -> TrainResult:
    """Train per ``config`` and save the model to ``<out_dir>/model``; see the module docstring."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    torch.set_num_threads(config.threads)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(config.cache_dir) if config.cache_dir else out_dir.parent / "cache"
    dataset = load_beir(config.data, split=config.split)
    queries, positives = training_pairs(dataset.queries, dataset.qrels)
    if not queries:
        raise ValueError(f"{config.data}: no training query with a positive judgment in split {config.split!r}.")
    corpus_texts = {d: doc.contents for d, doc in dataset.corpus.items()}
    enc_cfg = config.encoder_config
    if config.idf_json:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(enc_cfg.backbone or default_backbone())
        model = build_sparse_encoder(enc_cfg, idf=read_idf_json(config.idf_json, tokenizer))
    else:
        model = build_sparse_encoder(enc_cfg, corpus_texts=corpus_texts.values())
    name = Path(config.data).name
    backbone = enc_cfg.backbone or default_backbone()
    cache = build_hidden_cache(
        model, corpus_texts, cache_dir / f"{name}-{Path(backbone).name}-L{enc_cfg.max_seq_length}",
        fingerprint=cache_fingerprint(config.data, backbone, enc_cfg.max_seq_length), show_progress=show_progress,
    )
    candidates = _mine(config, dataset, queries, positives, cache, cache_dir, show_progress)
    setup_seconds = time.perf_counter() - started
    log = _train_loop(config, model, queries, positives, candidates, cache, dataset.corpus, rng, show_progress)
    seconds = time.perf_counter() - started - setup_seconds
    model_dir = _save(config, model, out_dir, log, seconds, setup_seconds)
    return TrainResult(model_dir=model_dir, seconds=seconds, setup_seconds=setup_seconds, log=log)


def training_pairs(
    queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]]
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """``(queries, positives)`` for training: judged queries with non-blank text and at least one relevance > 0."""
    positives = {q: [d for d, r in docs.items() if r > 0] for q, docs in qrels.items()}
    positives = {q: d for q, d in positives.items() if d}
    return {q: queries[q] for q in positives if q in queries and queries[q].strip()}, positives


def train_model(
    config: SparseTrainConfig,
    model: Any,
    queries: Mapping[str, str],
    positives: Mapping[str, list[str]],
    candidates: Candidates,
    corpus: Mapping[str, Any],
    *,
    cache: HiddenStates | None = None,
    show_progress: bool | None = None,
) -> list[dict[str, float]]:
    """The optimisation loop of :func:`train_sparse` on prepared inputs; returns the per-step log.

    For callers that bring their own data (e.g. a GPU machine without Lucene, with candidates and teacher scores
    mined elsewhere): ``queries`` {qid: text}, ``positives`` {qid: [docid]}, ``candidates`` (mined, with both
    teachers' scores), ``corpus`` {docid: object with ``.contents``}. ``cache`` (backbone states) is needed only
    for head-only training (``train_encoder=False``). The model is trained in place on ``config.device`` and left
    there in eval mode.
    """
    if not config.train_encoder and cache is None:
        raise ValueError("head-only training (`train_encoder=False`) needs `cache` (retrieval.hidden_cache).")
    missing = [q for q in queries if q not in candidates.docs or not positives.get(q)]
    if missing:
        raise ValueError(f"{len(missing)} training queries lack candidates or positives (first: {missing[0]!r}).")
    torch.manual_seed(config.seed)
    return _train_loop(config, model, queries, positives, candidates, cache, corpus, random.Random(config.seed),
                       show_progress)


def dense_query_embeddings(texts: list[str], model_name: str | None = None) -> np.ndarray:
    """Dense teacher query embeddings (the bundled all-MiniLM-L6-v2 by default), L2-normalised."""
    from retrieval.dense import DenseRetriever

    return DenseRetriever(model_name).encode(texts, show_progress=False)


def _mine(config, dataset, queries, positives, cache: HiddenStates, cache_dir: Path, show_progress) -> Candidates:
    if config.encoder_config.backbone is not None or config.encoder_config.max_seq_length != 256:
        raise ValueError(
            "the dense teacher embeddings come from the cached all-MiniLM-L6-v2 backbone at max_seq_length 256; "
            "other backbones need their own dense teacher (not configurable yet): use the default backbone."
        )
    data, name, built_from = Path(config.data), Path(config.data).name, cache.meta["fingerprint"]
    index_dir = cached_bm25_index(dataset.corpus, cache_dir / f"{name}-bm25", threads=config.threads,
                                  inputs={"corpus.jsonl": built_from["inputs"]["corpus.jsonl"]})
    qids = list(queries)
    judged = content_fingerprints({"queries.jsonl": data / "queries.jsonl",
                                   f"qrels/{config.split}.tsv": data / "qrels" / f"{config.split}.tsv"})
    fingerprint = {**built_from, "inputs": {**built_from["inputs"], **judged}, "split": config.split,
                   "dense": "all-MiniLM-L6-v2"}
    return mine_candidates(
        queries, bm25_index=index_dir, doc_ids=cache.doc_ids, doc_embeddings=cache.dense,
        query_embeddings=dense_query_embeddings([queries[q] for q in qids]), k=config.candidates_k,
        include=positives, cache_path=cache_dir / f"{name}-{config.split}-candidates-k{config.candidates_k}.json",
        fingerprint=fingerprint, threads=config.threads, show_progress=show_progress,
    )


def _train_loop(config, model, queries, positives, candidates, cache, corpus, rng, show_progress) -> list[dict]:
    transformer, pooling = mlm_parts(model)
    device = torch.device(config.device or "cpu")
    model.to(device)
    if not config.train_encoder:
        _untie_output_embeddings(model)
        for p in transformer.parameters():
            p.requires_grad_(False)
        params = _head_parameters(model)
        for p in params:
            p.requires_grad_(True)
    else:
        params = [p for p in transformer.parameters()]
    idf = idf_weights(model)
    table = _QueryTable(model, queries)
    compute_dtype = torch.bfloat16 if config.compute_dtype == "bfloat16" else None
    projection = config.projection or ("dense" if device.type == "cuda" else "loop")
    flops = IdfAwareFlops(idf=idf, mode=config.flops, threshold=config.l0_threshold)
    hooks: list[Any] = []
    weights: dict[int, Any] = {}
    if config.ranking_loss != "infonce":
        hooks.append(MinMaxEnsembleTeacher(
            teachers=[_teacher_reader(t) for t in range(len(TEACHERS))], weights=config.teacher_weights,
            scale=config.score_scale))
        hooks.append(DistillLoss("kl", temperature=config.temperature, weight=config.temperature**2)
                     if config.ranking_loss == "kd_kl"
                     else MarginMSE())
    weights[len(hooks)] = QuadraticWarmup(config.flops_weight, max(1, config.flops_warmup_steps))
    hooks.append(flops)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    warm = max(1, config.warmup_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warm, max(0.0, (config.steps - s) / max(1, config.steps - warm))))
    reg = RegHooks(hooks, transformer, optimizer, weights=weights)
    qids = list(queries)
    width = config.docs_per_query
    tokens = _TokenCache(transformer.tokenizer, corpus, config.train_max_length)
    seen: dict[str, float] = {}

    def forward(batch: dict[str, Any]) -> dict[str, Tensor]:
        docs = [d for row in batch["docs"] for d in row]
        with document_parts(model) as (hf, head, weight, bias):
            if config.train_encoder:
                features = {k: v.to(device) for k, v in tokens.batch(docs).items()}
                states, mask = hf(**features).logits, features["attention_mask"]
            else:
                hidden, mask = cache.batch([cache.row(d) for d in docs], config.train_max_length)
                hidden, mask = hidden.to(device), mask.to(device)
                states = head(hidden)
            doc = splade_max_pool(states, mask, weight, bias, activation=pooling.activation_function,
                                  compute_dtype=compute_dtype, method=projection)
        seen["reg/idf_aware_flops/nnz"] = float((doc > 0).sum(1).float().mean())
        scores = idf_scores(batch["query"], doc)  # (B, B·C)
        own = torch.stack([scores[i, i * width : (i + 1) * width] for i in range(scores.shape[0])])
        return {"scores": scores, "logits": own, "doc_embeddings": doc}

    def task_loss(outputs: dict[str, Tensor], batch: dict[str, Any]) -> Tensor:
        if config.ranking_loss == "infonce":
            return inbatch_infonce(outputs["scores"], batch["positive_columns"])
        return outputs["scores"].new_zeros(())

    transformer.train()
    log: list[dict[str, float]] = []
    order: list[str] = []
    bar = tqdm(range(config.steps), desc="training", unit="step", disable=not progress_enabled(show_progress))
    loop_start = time.perf_counter()
    for step in bar:
        if len(order) < config.batch_queries:
            fresh = qids[:]
            rng.shuffle(fresh)
            order += fresh
        chosen, order = order[: config.batch_queries], order[config.batch_queries :]
        _, doc_lists, teacher = _sample_batch(chosen, positives, candidates, width, rng)
        batch = {"query": table.matrix(chosen).to(device), "docs": doc_lists, "teacher": teacher.to(device),
                 "positive_columns": (torch.arange(len(chosen)) * width).to(device)}
        loss = reg.step(batch, forward, task_loss, step=step)
        scheduler.step()
        entry = {"step": step, "loss": float(loss), "lr": scheduler.get_last_lr()[0],
                 "flops_lambda": weights[len(hooks) - 1](step), **reg.last_terms, **seen,
                 "elapsed_s": time.perf_counter() - loop_start}
        log.append(entry)
        bar.set_postfix(loss=f"{entry['loss']:.3f}", flops=f"{entry.get('idf_aware_flops', 0.0):.2f}")
        if step % 25 == 0 or step == config.steps - 1:
            logger.info("step %d: %s", step, {k: round(v, 4) for k, v in entry.items() if k != "step"})
    for p in transformer.parameters():
        p.requires_grad_(True)
    transformer.eval()
    return log


def _teacher_reader(position: int):
    def read(ctx) -> Tensor:
        return ctx.batch["teacher"][position]

    return read


def _save(config, model, out_dir: Path, log, seconds: float, setup_seconds: float) -> Path:
    model_dir = out_dir / "model"
    with atomic_dir(model_dir, overwrite=True, markers=("idf.json",)) as tmp:
        model.save_pretrained(str(tmp))
        write_idf_json(tmp / "idf.json", idf_weights(model), mlm_parts(model)[0].tokenizer)
    resolved = asdict(config)
    atomic_write_text(out_dir / "resolved_config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    atomic_write_text(out_dir / "train_log.jsonl", "".join(json.dumps(e) + "\n" for e in log))
    summary = {"train_seconds": seconds, "setup_seconds": setup_seconds, "steps": len(log),
               "final": log[-1] if log else {}, "config": resolved}
    atomic_write_text(out_dir / "train_summary.json", json.dumps(summary, indent=2) + "\n")
    logger.info("model saved to %s (%.0f s training, %.0f s setup)", model_dir, seconds, setup_seconds)
    return model_dir
