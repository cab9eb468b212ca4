"""Frozen-encoder cache: the backbone's last hidden states of a corpus, computed once and reused.

When only the MLM head is trained (``train_encoder=False``, the CPU recipe of ``docs/sparse_retrieval.md``), the
transformer body never changes, so its output for every document can be computed once. Training then costs one
head projection per document instead of a full transformer pass, and every head-only model trained from the same
backbone indexes the corpus from the same cache. The same hidden states, mean-pooled over the attention mask and
L2-normalised, are exactly the all-MiniLM-L6-v2 sentence embedding (its modules: Transformer → mean Pooling →
Normalize), so the dense teacher/baseline comes out of the same pass when the backbone is that model.

Layout of a cache folder (written atomically): ``hidden.npy`` (total_tokens, d) float16, ``offsets.npy`` (N + 1,)
int64, ``dense.npy`` (N, d) float32 mean-pooled normalised embeddings, ``meta.json`` (doc ids, lengths before
truncation, backbone, max_length).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from common_regs.fingerprints import cache_change, content_fingerprints
from common_regs.io import atomic_dir
from retrieval.encoder import DocumentEncodingStats, decode_text, document_parts, mlm_parts
from retrieval.index import progress_enabled
from retrieval.max_projection import splade_max_pool

logger = logging.getLogger(__name__)

__all__ = ["HiddenStates", "StackedStates", "build_hidden_cache", "cache_fingerprint", "encode_from_cache"]


def cache_fingerprint(data: str | os.PathLike[str], backbone: str, max_length: int) -> dict[str, Any]:
    """What a backbone cache depends on.

    The corpus file's content (size + SHA-256), the backbone (its name and, for a local folder, every file's content)
    and the truncation.

    Content rather than path and mtime: a corpus copied or re-extracted elsewhere keeps its (long to rebuild) cache,
    and a backbone folder retrained in place does not.
    """
    files: dict[str, str | os.PathLike[str]] = {"corpus.jsonl": Path(data) / "corpus.jsonl"}
    if Path(backbone).is_dir():
        files["backbone"] = backbone
    return {"inputs": content_fingerprints(files), "backbone": str(backbone), "max_length": int(max_length)}


@dataclass
class HiddenStates:
    """A loaded cache (memory-mapped)."""

    folder: Path
    doc_ids: list[str]
    hidden: np.ndarray
    offsets: np.ndarray
    dense: np.ndarray
    lengths: list[int]
    meta: dict[str, Any]

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> HiddenStates:
        folder = Path(folder)
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            return cls(folder=folder, doc_ids=meta["doc_ids"],
                       hidden=np.load(folder / "hidden.npy", mmap_mode="r", allow_pickle=False),
                       offsets=np.load(folder / "offsets.npy", allow_pickle=False),
                       dense=np.load(folder / "dense.npy", allow_pickle=False), lengths=meta["lengths"], meta=meta)
        except (OSError, KeyError, ValueError) as err:
            raise ValueError(f"{folder}: unreadable hidden-state cache ({err}); delete it to rebuild.") from None

    def row(self, doc_id: str) -> int:
        return self._rows[doc_id]

    def __post_init__(self) -> None:
        self._rows = {d: i for i, d in enumerate(self.doc_ids)}

    def states(self, row: int, max_length: int | None = None) -> np.ndarray:
        """The cached states (n, d) of one row, cut at ``max_length`` tokens."""
        a, b = int(self.offsets[row]), int(self.offsets[row + 1])
        return self.hidden[a : min(b, a + (max_length or b - a))]

    def batch(self, rows: list[int], max_length: int | None = None) -> tuple[Tensor, Tensor]:
        """``(hidden (B, L, d) float32, mask (B, L))`` for the given rows, each cut at ``max_length`` tokens."""
        return _padded([self.states(r, max_length) for r in rows], self.hidden.shape[1])


class StackedStates:
    """Two caches read as one: the rows of ``first``, then those of ``second``.

    E.g. a corpus' cache and a small cache of extra training views of some documents; document ids must not repeat.
    """

    def __init__(self, first: HiddenStates, second: HiddenStates) -> None:
        if first.hidden.shape[1] != second.hidden.shape[1]:
            raise ValueError(f"{second.folder}: states of width {second.hidden.shape[1]}, {first.folder}: "
                             f"{first.hidden.shape[1]}; both caches must come from one backbone.")
        repeated = set(first.doc_ids) & set(second.doc_ids)
        if repeated:
            raise ValueError(f"{second.folder}: document ids also in {first.folder} (first: {min(repeated)!r}).")
        self.parts, self.doc_ids = (first, second), [*first.doc_ids, *second.doc_ids]

    def row(self, doc_id: str) -> int:
        first = self.parts[0]
        return first.row(doc_id) if doc_id in first._rows else len(first.doc_ids) + self.parts[1].row(doc_id)

    def batch(self, rows: list[int], max_length: int | None = None) -> tuple[Tensor, Tensor]:
        """As :meth:`HiddenStates.batch`, over the stacked rows."""
        first, second = self.parts
        n = len(first.doc_ids)
        chunks = [first.states(r, max_length) if r < n else second.states(r - n, max_length) for r in rows]
        return _padded(chunks, first.hidden.shape[1])


def _padded(chunks: list[np.ndarray], dim: int) -> tuple[Tensor, Tensor]:
    """``(states (B, L, d) float32, mask (B, L))``: the chunks zero-padded to the longest."""
    width = max(len(c) for c in chunks)
    out = torch.zeros((len(chunks), width, dim))
    mask = torch.zeros((len(chunks), width), dtype=torch.long)
    for i, chunk in enumerate(chunks):
        out[i, : len(chunk)] = torch.from_numpy(np.asarray(chunk, dtype=np.float32))
        mask[i, : len(chunk)] = 1
    return out, mask


def build_hidden_cache(
    model: Any,
    documents: Mapping[str, str | bytes],
    folder: str | os.PathLike[str],
    *,
    batch_size: int = 16,
    fingerprint: Mapping[str, Any] | None = None,
    show_progress: bool | None = None,
) -> HiddenStates:
    """Run the document backbone once over ``documents`` (truncated at the model's ``max_seq_length``) and cache it.

    Reuses ``folder`` when its ``meta.json`` has the same fingerprint and document ids, and rebuilds it otherwise
    with a warning naming what changed (:func:`common_regs.fingerprints.cache_change`). Blank documents are cached
    with zero tokens (they get empty vectors, as in :func:`retrieval.encoder.encode_documents`).
    """
    folder = Path(folder)
    texts = {str(d): decode_text(t, where=f"document {d!r}") for d, t in documents.items()}
    fingerprint = dict(fingerprint or {})
    if (folder / "meta.json").is_file():
        try:
            cached = HiddenStates.load(folder)
        except ValueError as err:
            logger.warning("%s", err)
        else:
            change = cache_change(cached.meta.get("fingerprint"), fingerprint)
            if change is None and cached.doc_ids == list(texts):
                logger.info("hidden-state cache: reusing %s", folder)
                return cached
            logger.warning("hidden-state cache %s was built from other inputs (%s); rebuilding it", folder,
                           change or "other document ids")
    transformer, _ = mlm_parts(model)
    tokenizer, max_length = transformer.tokenizer, int(transformer.max_seq_length)
    doc_ids = list(texts)
    full = tokenizer([texts[d] for d in doc_ids], add_special_tokens=True, verbose=False)["input_ids"]
    lengths = [len(ids) if texts[d].strip() else 0 for d, ids in zip(doc_ids, full, strict=True)]
    kept = [min(n, max_length) for n in lengths]
    offsets = np.zeros(len(doc_ids) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(kept)
    base = transformer.model.base_model
    dim = base.config.hidden_size
    order = sorted((i for i, n in enumerate(kept) if n), key=lambda i: kept[i])
    with atomic_dir(folder, overwrite=True, markers=("meta.json",)) as tmp:
        hidden = np.lib.format.open_memmap(tmp / "hidden.npy", mode="w+", dtype=np.float16,
                                           shape=(int(offsets[-1]), dim))
        dense = np.zeros((len(doc_ids), dim), dtype=np.float32)
        was_training = transformer.training
        transformer.eval()
        try:
            with torch.inference_mode():
                disable = not progress_enabled(show_progress)
                bar = tqdm(total=len(order), desc="backbone pass", unit="doc", disable=disable)
                for start in range(0, len(order), batch_size):
                    chunk = order[start : start + batch_size]
                    features = tokenizer([texts[doc_ids[i]] for i in chunk], padding=True, truncation=True,
                                         max_length=max_length, return_tensors="pt")
                    states = base(**features).last_hidden_state
                    mask = features["attention_mask"].unsqueeze(-1).to(states.dtype)
                    pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1)
                    pooled = torch.nn.functional.normalize(pooled, dim=-1)
                    for j, i in enumerate(chunk):
                        hidden[offsets[i] : offsets[i + 1]] = states[j, : kept[i]].numpy().astype(np.float16)
                        dense[i] = pooled[j].numpy()
                    bar.update(len(chunk))
                bar.close()
        finally:
            transformer.train(was_training)
        hidden.flush()
        del hidden
        np.save(tmp / "offsets.npy", offsets)
        np.save(tmp / "dense.npy", dense)
        meta = {"fingerprint": fingerprint, "doc_ids": doc_ids, "lengths": lengths, "max_length": max_length}
        (tmp / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return HiddenStates.load(folder)


def encode_from_cache(
    model: Any,
    cache: HiddenStates,
    *,
    batch_size: int = 32,
    compute_dtype: torch.dtype | None = None,
    vocabulary: list[str] | None = None,
    rows: list[int] | None = None,
    show_progress: bool | None = None,
) -> tuple[dict[str, dict[str, float]], DocumentEncodingStats]:
    """Document vectors from cached backbone states.

    Same values as :func:`retrieval.encoder.encode_documents` when ``model``'s transformer body is the one the cache
    was built with (a head-only fine-tune of it).

    Args:
        model: the sparse encoder (a sentence-transformers SPLADE model) whose head is applied.
        cache: the backbone states of the corpus (:class:`HiddenStates`).
        batch_size: documents per batch.
        compute_dtype: dtype of the vocabulary projection (None = the states' dtype), as
            :func:`retrieval.max_projection.splade_max_pool`.
        vocabulary: compute only these wordpieces' weights (e.g. every token of an evaluation query set). The
            weight of a token does not depend on the others, so the vectors are exactly the full vectors restricted
            to ``vocabulary``; an impact index of them gives the same scores for queries made of those tokens.
        rows: encode only these cache rows (e.g. a random sample for size statistics). Default: all.
        show_progress: progress bar (None = when the ``retrieval`` logger is at INFO or below).
    """
    transformer, pooling = mlm_parts(model)
    tokenizer = transformer.tokenizer
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    keep = None
    if vocabulary is not None:
        ids = tokenizer.convert_tokens_to_ids(list(vocabulary))
        if tokenizer.unk_token_id in ids and tokenizer.unk_token not in vocabulary:
            raise ValueError("`vocabulary` holds tokens that are not in the tokenizer's vocabulary.")
        keep = torch.tensor(sorted(set(ids)), dtype=torch.long)
        vocab = [vocab[i] for i in keep.tolist()]
    max_length = int(cache.meta["max_length"])
    selected = list(range(len(cache.doc_ids))) if rows is None else list(rows)
    stats = DocumentEncodingStats(documents=len(selected), max_length=max_length)
    vectors: dict[str, dict[str, float]] = {}
    for i in selected:
        n = cache.lengths[i]
        doc_id = cache.doc_ids[i]
        if n == 0:
            vectors[doc_id] = {}
            stats.empty += 1
            stats.first_empty = stats.first_empty or doc_id
        elif n > max_length:
            stats.truncated += 1
            stats.first_truncated = stats.first_truncated or doc_id
    nonempty = [i for i in selected if cache.lengths[i]]
    was_training = transformer.training
    transformer.eval()
    try:
        with torch.inference_mode(), document_parts(model) as (_, head, weight, bias):
            if keep is not None:
                weight, bias = weight[keep], (bias[keep] if bias is not None else None)
            bar = tqdm(total=len(nonempty), desc="encoding documents (cached backbone)", unit="doc",
                       disable=not progress_enabled(show_progress))
            for start in range(0, len(nonempty), batch_size):
                chunk = nonempty[start : start + batch_size]
                states, mask = cache.batch(chunk)
                dense = splade_max_pool(head(states), mask, weight, bias, activation=pooling.activation_function,
                                        compute_dtype=compute_dtype)
                for i, row in zip(chunk, dense, strict=True):
                    ids = row.nonzero(as_tuple=True)[0].tolist()
                    vectors[cache.doc_ids[i]] = {vocab[t]: float(row[t]) for t in ids}
                bar.update(len(chunk))
            bar.close()
    finally:
        transformer.train(was_training)
    stats.active_terms = sum(len(v) for v in vectors.values()) / max(1, len(vectors))
    return {cache.doc_ids[i]: vectors[cache.doc_ids[i]] for i in selected}, stats

