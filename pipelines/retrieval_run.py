"""``regkit retrieval train``: a sparse-retriever training run from a BEIR folder to a saved model.

The orchestration around :class:`retrieval.trainer.SparseTrainer` (the domain's step, hooks and checkpoints):
load the BEIR split, build the encoder (IDF from the corpus or an ``idf.json``), the cached backbone states
(:mod:`retrieval.hidden_cache`), the BM25 index and the mined candidates with both teachers' scores
(:mod:`retrieval.mining`; all content-keyed caches under ``cache_dir``), train, and write ``<out_dir>/model``,
``resolved_config.yaml``, ``train_log.jsonl`` and ``train_summary.json`` (atomically).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from common_regs.fingerprints import content_fingerprints
from common_regs.io import atomic_dir, atomic_write_text
from retrieval.beir import BeirDataset, load_beir
from retrieval.encoder import (
    build_sparse_encoder,
    default_backbone,
    idf_weights,
    mlm_parts,
    read_idf_json,
    write_idf_json,
)
from retrieval.hidden_cache import HiddenStates, build_hidden_cache, cache_fingerprint
from retrieval.mining import Candidates, cached_bm25_index, mine_candidates
from retrieval.sparse_config import SparseTrainConfig
from retrieval.trainer import SparseTrainer, TrainingData

logger = logging.getLogger(__name__)

__all__ = ["TrainResult", "dense_query_embeddings", "train_sparse", "training_pairs"]


@dataclass
class TrainResult:
    """A finished training run: the saved model, training and setup (data, caches, mining) seconds, per-step log."""

    model_dir: Path
    seconds: float
    setup_seconds: float
    log: list[dict[str, float]]


def training_pairs(
    queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]]
) -> tuple[dict[str, str], dict[str, list[str]]]:
    """``(queries, positives)`` for training: judged queries with non-blank text and at least one relevance > 0."""
    positives = {q: [d for d, r in docs.items() if r > 0] for q, docs in qrels.items()}
    positives = {q: d for q, d in positives.items() if d}
    return {q: queries[q] for q in positives if q in queries and queries[q].strip()}, positives


def dense_query_embeddings(texts: list[str], model_name: str | None = None) -> np.ndarray:
    """Dense teacher query embeddings (the bundled all-MiniLM-L6-v2 by default), L2-normalised."""
    from retrieval.dense import DenseRetriever

    return DenseRetriever(model_name).encode(texts, show_progress=False)


def train_sparse(config: SparseTrainConfig, *, show_progress: bool | None = None) -> TrainResult:
    """Train per ``config`` and save the model to ``<out_dir>/model`` (module docstring).

    An unfinished run's checkpoints (``checkpoint_every``) in ``<out_dir>/checkpoints`` are resumed.
    """
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(config.cache_dir) if config.cache_dir else out_dir.parent / "cache"
    dataset = load_beir(config.data, split=config.split)
    queries, positives = training_pairs(dataset.queries, dataset.qrels)
    if not queries:
        raise ValueError(f"{config.data}: no training query with a positive judgment in split {config.split!r}.")
    corpus_texts = {d: doc.contents for d, doc in dataset.corpus.items()}
    model = _build_model(config, corpus_texts)
    enc_cfg = config.encoder_config
    backbone = enc_cfg.backbone or default_backbone()
    cache = build_hidden_cache(
        model, corpus_texts, cache_dir / f"{Path(config.data).name}-{Path(backbone).name}-L{enc_cfg.max_seq_length}",
        fingerprint=cache_fingerprint(config.data, backbone, enc_cfg.max_seq_length), show_progress=show_progress,
    )
    candidates = _mine(config, dataset, queries, positives, cache, cache_dir, show_progress)
    setup_seconds = time.perf_counter() - started
    trainer = SparseTrainer(config, model, TrainingData(queries, positives, candidates, dataset.corpus, cache),
                            checkpoint_dir=out_dir / "checkpoints", show_progress=show_progress)
    log = trainer.fit()
    seconds = time.perf_counter() - started - setup_seconds
    model_dir = _save(config, model, out_dir, TrainResult(out_dir / "model", seconds, setup_seconds, log))
    return TrainResult(model_dir=model_dir, seconds=seconds, setup_seconds=setup_seconds, log=log)


def _build_model(config: SparseTrainConfig, corpus_texts: Mapping[str, str]) -> Any:
    enc_cfg = config.encoder_config
    if not config.idf_json:
        return build_sparse_encoder(enc_cfg, corpus_texts=corpus_texts.values())
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(enc_cfg.backbone or default_backbone())
    return build_sparse_encoder(enc_cfg, idf=read_idf_json(config.idf_json, tokenizer))


def _mine(config: SparseTrainConfig, dataset: BeirDataset, queries: Mapping[str, str],
          positives: Mapping[str, list[str]], cache: HiddenStates, cache_dir: Path,
          show_progress: bool | None) -> Candidates:
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


def _save(config: SparseTrainConfig, model: Any, out_dir: Path, result: TrainResult) -> Path:
    model_dir = out_dir / "model"
    with atomic_dir(model_dir, overwrite=True, markers=("idf.json",)) as tmp:
        model.save_pretrained(str(tmp))
        write_idf_json(tmp / "idf.json", idf_weights(model), mlm_parts(model)[0].tokenizer)
    resolved = asdict(config)
    atomic_write_text(out_dir / "resolved_config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    atomic_write_text(out_dir / "train_log.jsonl", "".join(json.dumps(e) + "\n" for e in result.log))
    summary = {"train_seconds": result.seconds, "setup_seconds": result.setup_seconds, "steps": len(result.log),
               "final": result.log[-1] if result.log else {}, "config": resolved}
    atomic_write_text(out_dir / "train_summary.json", json.dumps(summary, indent=2) + "\n")
    logger.info("model saved to %s (%.0f s training, %.0f s setup)", model_dir, result.seconds, result.setup_seconds)
    return model_dir
