"""Queries and documents to sparse vectors ``{wordpiece: weight}`` with an inference-free sparse encoder.

Queries need no neural network: :func:`query_weights` is a tokenizer plus a lookup in the IDF table. Documents go
through the masked-LM document route; :func:`encode_documents` fuses the vocabulary projection with max pooling
(:mod:`retrieval.max_projection`) so that no (batch, length, vocabulary) tensor is materialised.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from retrieval.encoder.idf import special_ids
from retrieval.encoder.model import document_parts, mlm_parts, query_module
from retrieval.index import progress_enabled
from retrieval.max_projection import splade_max_pool

logger = logging.getLogger(__name__)

__all__ = ["DocumentEncodingStats", "decode_text", "encode_documents", "query_weights"]


def decode_text(value: str | bytes, *, where: str) -> str:
    """``value`` as text; bytes must be UTF-8 (the error names ``where`` and the byte offset)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(
                f"{where}: text is not valid UTF-8 (byte 0x{value[err.start]:02x} at offset {err.start}); "
                "re-encode the input as UTF-8."
            ) from None
    raise TypeError(f"{where}: text must be str or UTF-8 bytes, got {type(value).__name__}.")


def query_weights(model: Any, queries: Mapping[str, str | bytes]) -> dict[str, dict[str, float]]:
    """Inference-free query vectors ``{qid: {wordpiece: idf}}``: tokenizer + table lookup, no neural network.

    Equals ``model.encode_query`` (``SparseStaticEmbedding``: unique non-special wordpieces of the query, truncated
    at the tokenizer's ``model_max_length``, times their weight); tokens of weight 0 are left out.
    """
    module = query_module(model)
    tokenizer = module.tokenizer
    weight = module.weight.detach()
    special = set(special_ids(tokenizer))
    out: dict[str, dict[str, float]] = {}
    items = [(str(qid), decode_text(text, where=f"query {qid!r}")) for qid, text in queries.items()]
    encoded = tokenizer([text for _, text in items], add_special_tokens=False, truncation=True)["input_ids"]
    for (qid, _), ids in zip(items, encoded, strict=True):
        unique = sorted(set(ids) - special) if ids else []
        tokens = tokenizer.convert_ids_to_tokens(unique)
        values = weight[unique].tolist()  # one gather: reading a tensor element by element costs µs each
        out[qid] = {tok: value for tok, value in zip(tokens, values, strict=True) if value > 0}
    return out


@dataclass
class DocumentEncodingStats:
    """What happened while encoding: empty documents (zero vectors) and documents cut at ``max_length``."""

    documents: int = 0
    empty: int = 0
    truncated: int = 0
    max_length: int = 0
    active_terms: float = 0.0
    first_empty: str | None = None
    first_truncated: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def encode_documents(
    model: Any,
    documents: Mapping[str, str | bytes],
    *,
    batch_size: int = 16,
    compute_dtype: torch.dtype | None = None,
    show_progress: bool | None = None,
) -> tuple[dict[str, dict[str, float]], DocumentEncodingStats]:
    """SPLADE document vectors ``{docid: {wordpiece: weight}}`` (non-zero weights only) and encoding stats.

    Same values as ``model.encode_document`` (tested), computed with the fused max projection so that no
    (B, L, V) tensor is materialised. Blank documents get an empty vector (the model would otherwise encode the
    bare ``[CLS] [SEP]``); documents longer than ``max_seq_length`` wordpieces are truncated and counted. Documents
    are sorted by length so that batches carry little padding.
    """
    transformer, pooling = mlm_parts(model)
    tokenizer = transformer.tokenizer
    max_length = int(transformer.max_seq_length)
    texts = {str(d): decode_text(t, where=f"document {d!r}") for d, t in documents.items()}
    stats = DocumentEncodingStats(documents=len(texts), max_length=max_length)
    vectors: dict[str, dict[str, float]] = {}
    nonblank = [d for d, t in texts.items() if t.strip()]
    for doc_id in texts:
        if not texts[doc_id].strip():
            vectors[doc_id] = {}
            stats.empty += 1
            stats.first_empty = stats.first_empty or doc_id
    if stats.empty:
        logger.warning("%d of %d documents are blank; they get empty vectors (first: %r)",
                       stats.empty, len(texts), stats.first_empty)
    lengths = {d: len(ids) for d, ids in zip(nonblank, tokenizer([texts[d] for d in nonblank],
                                                                 add_special_tokens=True, verbose=False)["input_ids"],
                                             strict=True)}
    order = sorted(nonblank, key=lambda d: lengths[d])
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    was_training = transformer.training
    transformer.eval()
    try:
        with torch.inference_mode(), document_parts(model) as (hf, _, weight, bias):
            device = weight.device
            bar = tqdm(total=len(order), desc="encoding documents", unit="doc",
                       disable=not progress_enabled(show_progress))
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                features = tokenizer([texts[d] for d in chunk], padding=True, truncation=True,
                                     max_length=max_length, return_tensors="pt")
                features = {k: v.to(device) for k, v in features.items()}
                hidden = hf(**features).logits
                dense = splade_max_pool(hidden, features["attention_mask"], weight, bias,
                                        activation=pooling.activation_function, compute_dtype=compute_dtype)
                for doc_id, row in zip(chunk, dense.float().cpu(), strict=True):
                    ids = row.nonzero(as_tuple=True)[0]
                    vectors[doc_id] = dict(zip([vocab[i] for i in ids.tolist()], row[ids].tolist(), strict=True))
                    if lengths[doc_id] > max_length:
                        stats.truncated += 1
                        stats.first_truncated = stats.first_truncated or doc_id
                bar.update(len(chunk))
            bar.close()
    finally:
        transformer.train(was_training)
    if stats.truncated:
        logger.info("%d of %d documents were longer than %d wordpieces and were truncated (first: %r)",
                    stats.truncated, len(texts), max_length, stats.first_truncated)
    stats.active_terms = sum(len(v) for v in vectors.values()) / max(1, len(vectors))
    return {d: vectors[d] for d in texts}, stats
