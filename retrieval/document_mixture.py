r"""Corpus-adapted document vectors: wordpiece BM25 + the model's expansion + dense-neighbour smoothing.

The inference-free query side scores :math:`s(q, d) = \sum_{t \in q} \mathrm{idf}(t)\, w_d(t)` (unique query
wordpieces, :func:`retrieval.encoder.query_weights`). A :class:`DocumentMixture` makes the document side

.. math::

    w_d(t) = \mathrm{bm25}_d(t) + \alpha_{in}\, e_d(t)\, [t \in d] + \alpha_{out}\, e_d(t)\, [t \notin d]
             + \beta \sum_{n \in N_k(d)} \bar s_{dn}\, \mathrm{bm25}_n(t)

* :math:`\mathrm{bm25}_d(t) = \frac{f (k_1 + 1)}{f + k_1 (1 - b + b\, |d| / \overline{|d|})}` with :math:`f` the
  count of wordpiece :math:`t` in the whole document and :math:`|d|` its length in wordpieces (Robertson & Zaragoza,
  "The Probabilistic Relevance Framework: BM25 and Beyond", 2009), so with all other weights 0 the model *is* BM25 on
  wordpieces (times the query side's BM25 IDF);
* :math:`e_d` the model's own SPLADE document vector (MLM head, max pooling: :mod:`retrieval.encoder`), split into
  the weights of the document's own wordpieces and of expansion wordpieces;
* :math:`N_k(d)` the :math:`k` documents nearest to :math:`d` by the backbone's mean-pooled embedding (cosine,
  ``faiss.IndexFlatIP``; the document itself excluded), :math:`\bar s_{dn}` their similarities normalised to sum to
  1: document expansion from nearest neighbours (Tao, Wang, Mei & Zhai, "Language Model Information Retrieval with
  Document Expansion", NAACL 2006; Kurland & Lee, "Corpus structure, language models, and ad hoc information
  retrieval", SIGIR 2004), with the dense model that teaches the student choosing the neighbours.

The weights :math:`\alpha_{in}, \alpha_{out}, \beta` (and :math:`k_1, b` from a small grid) are fitted by
:mod:`retrieval.mixture_fit` — ensemble distillation on pseudo-queries of the corpus, no labels. Everything is
computed offline at indexing time; the statistics :math:`\overline{|d|}` and the neighbours come from the corpus
being indexed (as BM25's own do), so a saved mixture carries only the fitted numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common_regs.io import atomic_write_text

__all__ = [
    "MIXTURE_FILE",
    "DocumentMixture",
    "corpus_vectors",
    "lexical_vectors",
    "mixed_vectors",
    "nearest_neighbours",
    "neighbour_vectors",
]

MIXTURE_FILE = "document_mixture.json"
"""File of a model folder holding its :class:`DocumentMixture` (absent: plain SPLADE document vectors)."""

SparseVector = dict[str, float]


@dataclass(frozen=True)
class DocumentMixture:
    r"""The fitted numbers of the document side (module docstring).

    Args:
        k1: BM25 term-frequency saturation. Default 0.9 (Pyserini's BEIR setting, as regkit's BM25).
        b: BM25 length normalisation. Default 0.4.
        in_document: :math:`\alpha_{in}`, weight of the model's own weights of the document's wordpieces. Default 0.
        expansion: :math:`\alpha_{out}`, weight of the model's expansion wordpieces. Default 0.
        neighbours: :math:`\beta`, weight of the nearest neighbours' BM25 vectors. Default 0.
        neighbour_count: :math:`k`. Default 3 (regkit choice).
        fit: how the numbers were chosen (written by :func:`retrieval.mixture_fit.fit_document_mixture`).
    """

    k1: float = 0.9
    b: float = 0.4
    in_document: float = 0.0
    expansion: float = 0.0
    neighbours: float = 0.0
    neighbour_count: int = 3
    fit: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for name in ("k1", "in_document", "expansion", "neighbours"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise ValueError(f"DocumentMixture: `{name}` must be a finite number >= 0, got {value!r}.")
        if isinstance(self.b, bool) or not isinstance(self.b, (int, float)) or not 0 <= self.b <= 1:
            raise ValueError(f"DocumentMixture: `b` must be in [0, 1], got {self.b!r}.")
        if isinstance(self.neighbour_count, bool) or not isinstance(self.neighbour_count, int) or (
                self.neighbour_count < 1):
            raise ValueError(f"DocumentMixture: `neighbour_count` must be an integer >= 1, got "
                             f"{self.neighbour_count!r}.")

    @property
    def uses_model(self) -> bool:
        """Whether the model's document vectors enter (else only BM25 statistics and neighbours)."""
        return self.in_document > 0 or self.expansion > 0

    def save(self, model_dir: str | os.PathLike[str]) -> Path:
        """Write ``<model_dir>/document_mixture.json`` (atomically)."""
        return atomic_write_text(Path(model_dir) / MIXTURE_FILE, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, model_dir: str | os.PathLike[str]) -> DocumentMixture | None:
        """The mixture of a model folder, or None when it has none."""
        path = Path(model_dir) / MIXTURE_FILE
        if not path.is_file():
            return None
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
            return cls(**payload)
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as err:
            raise ValueError(f"{path}: not a document mixture written by regkit ({err}).") from None


def lexical_vectors(
    texts: Mapping[str, str], tokenizer: Any, *, k1: float, b: float, average_length: float | None = None
) -> tuple[dict[str, SparseVector], float]:
    """``({doc_id: {wordpiece: bm25_d(t)}}, average length)`` over whole documents (no truncation).

    ``average_length`` defaults to the mean wordpiece length of ``texts`` (pass the corpus' when ``texts`` are other
    variants of its documents, e.g. training views).
    """
    ids = list(texts)
    special = set(tokenizer.all_special_ids)
    encoded = tokenizer([texts[d] for d in ids], add_special_tokens=False, verbose=False)["input_ids"]
    encoded = [[t for t in row if t not in special] for row in encoded]
    lengths = np.array([len(row) for row in encoded], dtype=np.float64)
    if average_length is None:
        average_length = float(lengths.mean()) if len(lengths) else 0.0
    norm = k1 * (1 - b + b * lengths / max(average_length, 1e-9))
    vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    out: dict[str, SparseVector] = {}
    for doc_id, row, n in zip(ids, encoded, norm, strict=True):
        out[doc_id] = {vocab[t]: f * (k1 + 1) / (f + n) for t, f in Counter(row).items()}
    return out, average_length


def nearest_neighbours(
    embeddings: np.ndarray, count: int, *, queries: np.ndarray | None = None,
    exclude: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(indices (Q, count), weights (Q, count))``: each row's nearest documents by cosine, weights summing to 1.

    Args:
        embeddings: (N, d) L2-normalised document embeddings.
        count: neighbours per row (at most N − 1).
        queries: (Q, d) rows to find neighbours for. Default: the documents themselves (each excludes itself).
        exclude: per query row, a document index it must not get (e.g. a training view's source document).
            Default: the row's own index when ``queries`` is None, nothing otherwise.

    Negative similarities are clipped to 0 before normalising (an unrelated neighbour adds nothing); a row whose
    neighbours all have similarity <= 0 gets all-zero weights.
    """
    import faiss

    docs = np.ascontiguousarray(embeddings, dtype=np.float32)
    if docs.ndim != 2 or len(docs) < 2:
        raise ValueError(f"nearest neighbours need an (N >= 2, d) embedding matrix, got shape {docs.shape}.")
    count = min(int(count), len(docs) - 1)
    rows = docs if queries is None else np.ascontiguousarray(queries, dtype=np.float32)
    banned = np.arange(len(rows)) if queries is None and exclude is None else (
        np.full(len(rows), -1) if exclude is None else np.asarray(exclude))
    index = faiss.IndexFlatIP(docs.shape[1])
    index.add(docs)
    scores, found = index.search(rows, count + 1)
    keep = found != banned[:, None]
    # drop the banned hit where it was found, else the last (weakest) of the count + 1
    keep[~(~keep).any(axis=1), -1] = False
    indices = found[keep].reshape(len(rows), count)
    sims = np.clip(scores[keep].reshape(len(rows), count), 0.0, None)
    totals = sims.sum(axis=1, keepdims=True)
    weights = np.divide(sims, totals, out=np.zeros_like(sims), where=totals > 0)
    return indices, weights


def neighbour_vectors(
    lexical: Sequence[SparseVector], indices: np.ndarray, weights: np.ndarray
) -> list[SparseVector]:
    r"""Per row, :math:`\sum_n \bar s_n\, \mathrm{bm25}_n` over its neighbours (indices into ``lexical``)."""
    out: list[SparseVector] = []
    for row_indices, row_weights in zip(indices, weights, strict=True):
        merged: Counter[str] = Counter()
        for n, s in zip(row_indices.tolist(), row_weights.tolist(), strict=True):
            if s > 0:
                for token, value in lexical[n].items():
                    merged[token] += s * value
        out.append(dict(merged))
    return out


def mixed_vectors(
    mixture: DocumentMixture,
    lexical: Mapping[str, SparseVector],
    expansion: Mapping[str, SparseVector] | None,
    neighbours: Mapping[str, SparseVector] | None,
) -> dict[str, SparseVector]:
    """:math:`w_d` of every document of ``lexical`` (module docstring); zero weights are left out.

    ``expansion`` (the model's document vectors) may be None when ``mixture.uses_model`` is false, ``neighbours``
    (from :func:`neighbour_vectors`) when ``mixture.neighbours`` is 0.
    """
    if mixture.uses_model and expansion is None:
        raise ValueError("this mixture weights the model's document vectors: pass `expansion`.")
    if mixture.neighbours > 0 and neighbours is None:
        raise ValueError("this mixture weights nearest neighbours: pass `neighbours`.")
    out: dict[str, SparseVector] = {}
    for doc_id, own in lexical.items():
        vector: Counter[str] = Counter(own)
        if mixture.uses_model:
            for token, value in expansion[doc_id].items():  # type: ignore[index]
                vector[token] += (mixture.in_document if token in own else mixture.expansion) * value
        if mixture.neighbours > 0:
            for token, value in neighbours[doc_id].items():  # type: ignore[index]
                vector[token] += mixture.neighbours * value
        out[doc_id] = {token: value for token, value in vector.items() if value > 0}
    return out


def corpus_vectors(
    model: Any,
    documents: Mapping[str, str],
    mixture: DocumentMixture,
    states_dir: str | os.PathLike[str],
    *,
    show_progress: bool | None = None,
) -> tuple[dict[str, SparseVector], Any]:
    """``(vectors, DocumentEncodingStats)``: :math:`w_d` of every document, the statistics from ``documents``.

    One backbone pass (:func:`retrieval.hidden_cache.build_hidden_cache`, cached in ``states_dir`` and reused for
    the same texts and backbone) gives both the model's document vectors and the embeddings that pick neighbours.
    """
    from retrieval.encoder import DocumentEncodingStats, mlm_parts
    from retrieval.hidden_cache import build_hidden_cache, encode_from_cache

    transformer, _ = mlm_parts(model)
    digest = hashlib.sha256()
    for doc_id, text in documents.items():
        digest.update(f"{len(doc_id)}:{doc_id}{len(text)}:{text}".encode())
    body = hashlib.sha256()
    for name, tensor in transformer.model.base_model.state_dict().items():
        body.update(name.encode())
        body.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    fingerprint = {"documents": digest.hexdigest(), "backbone": body.hexdigest(),
                   "max_length": int(transformer.max_seq_length)}
    states = build_hidden_cache(model, documents, states_dir, fingerprint=fingerprint, show_progress=show_progress)
    if mixture.uses_model:
        expansion, stats = encode_from_cache(model, states, show_progress=show_progress)
    else:  # the backbone pass still picks the neighbours
        expansion = None
        stats = DocumentEncodingStats(documents=len(documents), max_length=int(transformer.max_seq_length),
                                      empty=sum(1 for text in documents.values() if not text.strip()))
    lexical, _ = lexical_vectors(documents, transformer.tokenizer, k1=mixture.k1, b=mixture.b)
    near = None
    if mixture.neighbours > 0:
        indices, weights = nearest_neighbours(states.dense, mixture.neighbour_count)
        ordered = [lexical[d] for d in states.doc_ids]
        near = dict(zip(states.doc_ids, neighbour_vectors(ordered, indices, weights), strict=True))
    vectors = mixed_vectors(mixture, lexical, expansion, near)
    stats.active_terms = sum(len(v) for v in vectors.values()) / max(1, len(vectors))
    return vectors, stats
