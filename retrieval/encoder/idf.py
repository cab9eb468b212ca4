r"""BM25 IDF of every wordpiece over a corpus (the query side's weights), and the ``idf.json`` file that holds them.

:math:`\mathrm{idf}(t) = \ln\bigl(1 + (N - \mathrm{df}_t + 0.5) / (\mathrm{df}_t + 0.5)\bigr)`
(Lucene's BM25 idf) over the corpus' wordpieces, no truncation; special tokens get 0 (:mod:`retrieval.encoder`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from common_regs.io import atomic_write_text
from retrieval.index import progress_enabled

logger = logging.getLogger(__name__)

__all__ = ["bm25_idf", "corpus_idf", "document_frequencies", "read_idf_json", "special_ids", "write_idf_json"]


def bm25_idf(df: Tensor, num_docs: int) -> Tensor:
    """``ln(1 + (N - df + 0.5) / (df + 0.5))`` elementwise (Lucene's BM25 idf, always > 0)."""
    if num_docs < 1:
        raise ValueError(f"`num_docs` must be >= 1, got {num_docs}.")
    df = df.to(torch.float64)
    if bool((df < 0).any()) or bool((df > num_docs).any()):
        raise ValueError(f"`df` must lie in [0, num_docs={num_docs}].")
    return torch.log1p((num_docs - df + 0.5) / (df + 0.5)).to(torch.float32)


def special_ids(tokenizer: Any) -> list[int]:
    """Sorted ids of the tokenizer's special tokens ([CLS], [SEP], [PAD], ...)."""
    return sorted(set(getattr(tokenizer, "all_special_ids", [])))


def document_frequencies(
    texts: Iterable[str], tokenizer: Any, *, batch_size: int = 512, show_progress: bool | None = None
) -> tuple[Tensor, int]:
    """``(df, N)``: per vocabulary id, the number of texts containing the wordpiece (no truncation)."""
    vocab = len(tokenizer)
    df = torch.zeros(vocab, dtype=torch.int64)
    count = 0
    texts = list(texts)
    disable = not progress_enabled(show_progress)
    for start in tqdm(range(0, len(texts), batch_size), desc="document frequencies", disable=disable):
        chunk = texts[start : start + batch_size]
        ids = tokenizer(chunk, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        for row in ids:
            if row:
                df[torch.unique(torch.tensor(row, dtype=torch.int64))] += 1
        count += len(chunk)
    return df, count


def corpus_idf(texts: Iterable[str], tokenizer: Any, *, show_progress: bool | None = None) -> Tensor:
    """BM25 IDF of every vocabulary entry over ``texts`` (module docstring); special tokens get 0."""
    df, count = document_frequencies(texts, tokenizer, show_progress=show_progress)
    if count == 0:
        raise ValueError("`texts` is empty: IDF needs at least one document.")
    idf = bm25_idf(df, count)
    idf[special_ids(tokenizer)] = 0.0
    logger.info("IDF over %d documents: %d of %d wordpieces occur", count, int((df > 0).sum()), len(df))
    return idf


def write_idf_json(path: str | os.PathLike[str], idf: Tensor, tokenizer: Any) -> Path:
    """Write ``{token: idf}`` for every vocabulary entry (the authors' / OpenSearch ``idf.json`` layout)."""
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(idf))))
    payload = {token: float(value) for token, value in zip(vocab, idf.tolist(), strict=True)}
    return atomic_write_text(path, json.dumps(payload, ensure_ascii=False) + "\n")


def read_idf_json(path: str | os.PathLike[str], tokenizer: Any, *, missing: float = 0.0) -> Tensor:
    """Read an ``idf.json`` (``{token: weight}``) into a vocabulary-sized vector.

    Tokens of the vocabulary absent from the file get ``missing``; tokens of the file absent from the vocabulary
    are an error (they would silently map to ``[UNK]`` in sentence-transformers' ``from_json``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: idf.json not found.")
    try:
        payload = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 (byte offset {err.start}).") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: malformed JSON ({err.msg}, line {err.lineno}).") from None
    if not isinstance(payload, dict) or not payload:
        raise ValueError(f"{path}: expected a non-empty JSON object {{token: weight}}.")
    vocab = tokenizer.get_vocab()
    unknown = [token for token in payload if token not in vocab]
    if unknown:
        raise ValueError(
            f"{path}: {len(unknown)} tokens are not in the tokenizer's vocabulary (first: {unknown[:3]}); "
            "the idf.json belongs to another tokenizer."
        )
    weight = torch.full((len(tokenizer),), float(missing), dtype=torch.float32)
    for token, value in payload.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{path}: weight of token {token!r} must be a finite number >= 0, got {value!r}.")
        weight[vocab[token]] = float(value)
    absent = len(tokenizer) - len(payload)
    if absent:
        logger.warning("%s: %d vocabulary tokens have no weight; they get %s", path, absent, missing)
    return weight
