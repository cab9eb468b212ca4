"""``regkit retrieval train`` and ``adapt``: a sparse-retriever training run from a BEIR folder to a saved model.

The orchestration around :class:`retrieval.trainer.SparseTrainer` (the domain's step, hooks and checkpoints):
take the training queries and positives from a :class:`TrainingSource` — the judged queries of a split
(``train``) or pseudo-queries generated from the corpus alone (``adapt``, :mod:`retrieval.pseudo_queries`) —,
build the encoder (IDF from the corpus or an ``idf.json``), the cached backbone states
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
from retrieval.beir import Document, load_beir, read_corpus
from retrieval.document_mixture import DocumentMixture
from retrieval.encoder import (
    build_sparse_encoder,
    default_backbone,
    idf_weights,
    mlm_parts,
    read_idf_json,
    write_idf_json,
)
from retrieval.hidden_cache import HiddenStates, StackedStates, build_hidden_cache, cache_fingerprint
from retrieval.mining import Candidates, cached_bm25_index, mine_candidates
from retrieval.mixture_fit import fit_document_mixture
from retrieval.pseudo_queries import KINDS, PseudoQueries, generate_pseudo_queries
from retrieval.sparse_config import SparseAdaptConfig, SparseTrainConfig
from retrieval.trainer import SparseTrainer, TrainingData

logger = logging.getLogger(__name__)

__all__ = [
    "TrainResult",
    "TrainingSource",
    "adapt_sparse",
    "dense_query_embeddings",
    "judged_source",
    "pseudo_source",
    "run_training",
    "train_sparse",
    "training_pairs",
]

_VIEW_PREFIX = "pseudo-view:"
"""Document ids of training views are ``pseudo-view:<qid>``; a corpus id of that form is refused, not shadowed."""


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
    """Train on the judged queries of ``config.split`` and save the model to ``<out_dir>/model`` (module docstring).

    An unfinished run's checkpoints (``checkpoint_every``) in ``<out_dir>/checkpoints`` are resumed.
    """
    return run_training(config, judged_source(config), show_progress=show_progress)


def adapt_sparse(config: SparseAdaptConfig, *, show_progress: bool | None = None) -> TrainResult:
    """Label-free adaptation: train on pseudo-queries of ``config.data``'s corpus (:func:`pseudo_source`).

    Writes ``<out_dir>/pseudo_queries.jsonl`` (id, kind, text, source document) besides what
    :func:`train_sparse` writes; resumes the same way.
    """
    source, generated = pseudo_source(config)
    Path(config.out_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(config.out_dir) / "pseudo_queries.jsonl",
                      "".join(json.dumps(r) + "\n" for r in generated.records()))
    counts = {kind: list(generated.kinds.values()).count(kind) for kind in KINDS}
    logger.info("pseudo-queries: %d (%s), %d with a training view", len(source.queries), counts, len(source.views))
    return run_training(config, source, show_progress=show_progress)


@dataclass
class TrainingSource:
    """What a run trains on: queries with positives among the corpus' documents (judged, or generated).

    Attributes:
        corpus: the collection: indexed by BM25, mined, and the student's documents.
        queries: ``{qid: text}``.
        positives: ``{qid: [doc id]}``.
        views: ``{qid: Document}``: the student's text of the query's positive where it is not the corpus' text
            (a pseudo-query's source without the cut sentence); the teachers score the corpus' text.
        label: names the candidate cache (``<data>-<label>-candidates-k<k>.json``): the split, or ``adapt``.
        inputs: identifies the queries and positives in the candidate cache's fingerprint.
    """

    corpus: dict[str, Document]
    queries: dict[str, str]
    positives: dict[str, list[str]]
    views: dict[str, Document]
    label: str
    inputs: dict[str, Any]


def judged_source(config: SparseTrainConfig) -> TrainingSource:
    """The judged queries of ``config.split`` (``queries.jsonl`` + ``qrels/<split>.tsv``) with their positives."""
    dataset = load_beir(config.data, split=config.split)
    queries, positives = training_pairs(dataset.queries, dataset.qrels)
    if not queries:
        raise ValueError(f"{config.data}: no training query with a positive judgment in split {config.split!r}.")
    data = Path(config.data)
    judged = content_fingerprints({"queries.jsonl": data / "queries.jsonl",
                                   f"qrels/{config.split}.tsv": data / "qrels" / f"{config.split}.tsv"})
    return TrainingSource(dataset.corpus, queries, positives, {}, config.split, judged)


def pseudo_source(config: SparseAdaptConfig) -> tuple[TrainingSource, PseudoQueries]:
    """Pseudo-queries of ``config.data``'s ``corpus.jsonl`` (the only file of the folder that is read)."""
    corpus_file = Path(config.data) / "corpus.jsonl"
    corpus = read_corpus(corpus_file)
    generated = generate_pseudo_queries(corpus, config.pseudo_query_config, seed=config.seed, where=str(corpus_file))
    source = TrainingSource(corpus, generated.queries, generated.positives, generated.views, "adapt",
                            {"pseudo_queries": generated.digest()})
    return source, generated


def run_training(config: SparseTrainConfig, source: TrainingSource, *,
                 show_progress: bool | None = None) -> TrainResult:
    """Build the encoder, caches and candidates of ``source``, train, save ``<out_dir>/model`` (module docstring)."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(config.cache_dir) if config.cache_dir else out_dir.parent / "cache"
    corpus_texts = {d: doc.contents for d, doc in source.corpus.items()}
    model = _build_model(config, corpus_texts)
    enc_cfg = config.encoder_config
    backbone = enc_cfg.backbone or default_backbone()
    cache = build_hidden_cache(
        model, corpus_texts, cache_dir / f"{Path(config.data).name}-{Path(backbone).name}-L{enc_cfg.max_seq_length}",
        fingerprint=cache_fingerprint(config.data, backbone, enc_cfg.max_seq_length), show_progress=show_progress,
    )
    candidates = _mine(config, source, cache, cache_dir, show_progress)
    data = _with_views(config, model, source, candidates, cache, cache_dir, show_progress)
    setup_seconds = time.perf_counter() - started
    log: list[dict[str, float]] = []
    if config.steps:
        trainer = SparseTrainer(config, model, data, checkpoint_dir=out_dir / "checkpoints",
                                show_progress=show_progress)
        log = trainer.fit()
    mixture = _fit_mixture(config, model, source, data) if config.document_mixture else None
    seconds = time.perf_counter() - started - setup_seconds
    model_dir = _save(config, model, out_dir, TrainResult(out_dir / "model", seconds, setup_seconds, log), mixture)
    return TrainResult(model_dir=model_dir, seconds=seconds, setup_seconds=setup_seconds, log=log)


def _fit_mixture(config: SparseTrainConfig, model: Any, source: TrainingSource, data: TrainingData) -> DocumentMixture:
    """The model's document mixture, fitted on the training queries' candidates (:mod:`retrieval.mixture_fit`)."""
    corpus_states, view_states = data.cache.parts if isinstance(data.cache, StackedStates) else (data.cache, None)
    if not isinstance(corpus_states, HiddenStates):
        raise ValueError("the document mixture is fitted from cached backbone states; use train_encoder: false.")
    view_sources = {f"{_VIEW_PREFIX}{q}": source.positives[q][0] for q in source.views}
    started = time.perf_counter()
    mixture = fit_document_mixture(
        model, data.queries, data.candidates, {d: doc.contents for d, doc in data.corpus.items()}, corpus_states,
        view_states=view_states, view_sources=view_sources, teacher_weights=config.teacher_weights,
        score_scale=config.score_scale, neighbour_count=config.neighbour_count, seed=config.seed)
    logger.info("document mixture fitted in %.0f s: %s", time.perf_counter() - started, mixture)
    return mixture


def _with_views(config: SparseTrainConfig, model: Any, source: TrainingSource, candidates: Candidates,
                cache: HiddenStates, cache_dir: Path, show_progress: bool | None) -> TrainingData:
    """The trainer's inputs; a query with a view gets the view as its positive, scored as its source document."""
    if not source.views:
        return TrainingData(source.queries, source.positives, candidates, source.corpus, cache)
    view_ids = {q: f"{_VIEW_PREFIX}{q}" for q in source.views}
    clash = sorted(set(view_ids.values()) & set(source.corpus))
    if clash:
        raise ValueError(f"{config.data}: document id {clash[0]!r} is reserved for training views; rename it.")
    positives, docs = dict(source.positives), dict(candidates.docs)
    for qid, view in view_ids.items():
        origin = source.positives[qid][0]
        docs[qid] = [view if d == origin else d for d in candidates.docs[qid]]
        positives[qid] = [view]
    views = {view: source.views[qid] for qid, view in view_ids.items()}
    states: HiddenStates | StackedStates = cache
    if not config.train_encoder:
        extra = build_hidden_cache(
            model, {v: doc.contents for v, doc in views.items()},
            cache.folder.with_name(f"{cache.folder.name}-{source.label}-views"),
            fingerprint={**cache.meta["fingerprint"], "views": source.inputs}, show_progress=show_progress)
        states = StackedStates(cache, extra)
    return TrainingData(source.queries, positives, Candidates(docs, candidates.scores, candidates.meta),
                        {**source.corpus, **views}, states)


def _build_model(config: SparseTrainConfig, corpus_texts: Mapping[str, str]) -> Any:
    enc_cfg = config.encoder_config
    if not config.idf_json:
        return build_sparse_encoder(enc_cfg, corpus_texts=corpus_texts.values())
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(enc_cfg.backbone or default_backbone())
    return build_sparse_encoder(enc_cfg, idf=read_idf_json(config.idf_json, tokenizer))


def _mine(config: SparseTrainConfig, source: TrainingSource, cache: HiddenStates, cache_dir: Path,
          show_progress: bool | None) -> Candidates:
    if config.encoder_config.backbone is not None or config.encoder_config.max_seq_length != 256:
        raise ValueError(
            "the dense teacher embeddings come from the cached all-MiniLM-L6-v2 backbone at max_seq_length 256; "
            "other backbones need their own dense teacher (not configurable yet): use the default backbone."
        )
    name, built_from = Path(config.data).name, cache.meta["fingerprint"]
    index_dir = cached_bm25_index(source.corpus, cache_dir / f"{name}-bm25", threads=config.threads,
                                  inputs={"corpus.jsonl": built_from["inputs"]["corpus.jsonl"]})
    queries, cache_path = source.queries, cache_dir / f"{name}-{source.label}-candidates-k{config.candidates_k}.json"
    fingerprint = {**built_from, "inputs": {**built_from["inputs"], **source.inputs}, "split": source.label,
                   "dense": "all-MiniLM-L6-v2"}
    return mine_candidates(
        queries, bm25_index=index_dir, doc_ids=cache.doc_ids, doc_embeddings=cache.dense,
        query_embeddings=dense_query_embeddings(list(queries.values())), k=config.candidates_k,
        include=source.positives, cache_path=cache_path,
        fingerprint=fingerprint, show_progress=show_progress,
    )


def _save(config: SparseTrainConfig, model: Any, out_dir: Path, result: TrainResult,
          mixture: DocumentMixture | None = None) -> Path:
    model_dir = out_dir / "model"
    with atomic_dir(model_dir, overwrite=True, markers=("idf.json",)) as tmp:
        model.save_pretrained(str(tmp))
        write_idf_json(tmp / "idf.json", idf_weights(model), mlm_parts(model)[0].tokenizer)
        if mixture is not None:
            mixture.save(tmp)
    resolved = asdict(config)
    atomic_write_text(out_dir / "resolved_config.yaml", yaml.safe_dump(resolved, sort_keys=False))
    atomic_write_text(out_dir / "train_log.jsonl", "".join(json.dumps(e) + "\n" for e in result.log))
    summary = {"document_mixture": asdict(mixture) if mixture is not None else None,
               "train_seconds": result.seconds, "setup_seconds": result.setup_seconds, "steps": len(result.log),
               "final": result.log[-1] if result.log else {}, "config": resolved}
    atomic_write_text(out_dir / "train_summary.json", json.dumps(summary, indent=2) + "\n")
    logger.info("model saved to %s (%.0f s training, %.0f s setup)", model_dir, result.seconds, result.setup_seconds)
    return model_dir
