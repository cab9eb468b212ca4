r"""Corpus-adapted document vectors: BM25 terms + the model's expansion + dense-neighbour smoothing, one index.

A model with a :class:`DocumentMixture` scores a query :math:`q` against a document :math:`d` by one sparse dot
product over two kinds of tokens, both computed without a neural network at query time:

.. math::

    s(q, d) = \sum_{a \in A(q)} c_q(a)\, \mathrm{idf}(a)\, \Big[\mathrm{bm25}_d(a)
              + \beta \sum_{n \in N_k(d)} \bar s_{dn}\, \mathrm{bm25}_n(a)\Big]
            + \sum_{t \in W(q)} \mathrm{idf}(t)\, \big(\alpha_{in} [t \in d] + \alpha_{out} [t \notin d]\big)\, e_d(t)

* :math:`A(q)` the query's terms after Anserini's default English analyzer (Porter stemming, stop words: the terms
  of regkit's BM25 index), :math:`c_q(a)` their counts, :math:`\mathrm{idf}(a) = \ln(1 + (N - df + 0.5)/(df +
  0.5))` over the indexed corpus and :math:`\mathrm{bm25}_d(a) = \frac{f (k_1 + 1)}{f + k_1 (1 - b + b\, |d| /
  \overline{|d|})}` (Robertson & Zaragoza, "The Probabilistic Relevance Framework: BM25 and Beyond", 2009): with
  every other weight 0 the model ranks exactly as Lucene's BM25 (Lucene leaves out the constant :math:`k_1 + 1` and
  stores lengths lossily; ``tests/retrieval/test_document_mixture.py``);
* :math:`W(q)` the query's unique wordpieces with the model's IDF (:func:`retrieval.encoder.query_weights`) and
  :math:`e_d` the model's own SPLADE document vector (MLM head, max pooling: :mod:`retrieval.encoder`), split into
  the weights of the document's own wordpieces and of expansion wordpieces;
* :math:`N_k(d)` the :math:`k` documents nearest to :math:`d` by the backbone's mean-pooled embedding (cosine,
  ``faiss.IndexFlatIP``; the document itself excluded), :math:`\bar s_{dn}` their similarities normalised to sum to
  1: document expansion from nearest neighbours (Tao, Wang, Mei & Zhai, "Language Model Information Retrieval with
  Document Expansion", NAACL 2006; Kurland & Lee, "Corpus structure, language models, and ad hoc information
  retrieval", SIGIR 2004), with the dense model that teaches the student choosing the neighbours.

Analyzed terms are stored with the prefix :data:`LEXICAL_PREFIX`, so both kinds live in one Lucene impact index and
a query is one search. The weights :math:`\alpha_{in}, \alpha_{out}, \beta` (and :math:`k_1, b` from a small grid)
are fitted by :mod:`retrieval.mixture_fit` — ensemble distillation on pseudo-queries of the corpus, no labels.
Everything is computed offline at indexing time; :math:`\overline{|d|}`, the IDF of analyzed terms (written into
the index, :data:`LEXICAL_IDF_FILE`) and the neighbours come from the corpus being indexed, as BM25's own do, so a
saved mixture carries only the fitted numbers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common_regs.io import atomic_write_text

__all__ = [
    "LEXICAL_IDF_FILE",
    "LEXICAL_PREFIX",
    "MIXTURE_FILE",
    "DocumentMixture",
    "analyzed_counts",
    "corpus_vectors",
    "document_wordpieces",
    "lexical_idf",
    "lexical_query_weights",
    "lexical_vectors",
    "lucene_analyzer",
    "mixed_vectors",
    "nearest_neighbours",
    "neighbour_vectors",
]

MIXTURE_FILE = "document_mixture.json"
"""File of a model folder holding its :class:`DocumentMixture` (absent: plain SPLADE document vectors)."""
LEXICAL_IDF_FILE = "lexical_idf.json"
"""File of an impact index built with a mixture: the BM25 IDF of its analyzed terms, for the query side."""
LEXICAL_PREFIX = "bm25:"
"""Prefix of analyzed terms in the vectors (wordpieces never contain ``:`` after letters, so the two never meet)."""

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


def lucene_analyzer() -> Callable[[str], list[str]]:
    """Anserini's default English analyzer (Porter stemming, stop words): the terms of regkit's BM25 index."""
    from retrieval.jvm import ensure_jvm

    ensure_jvm()
    from pyserini.analysis import Analyzer, get_lucene_analyzer

    return Analyzer(get_lucene_analyzer()).analyze


def analyzed_counts(texts: Mapping[str, str], analyze: Callable[[str], list[str]]) -> dict[str, Counter[str]]:
    """``{doc_id: Counter(term)}`` of the analyzed terms of each text (whole texts, no truncation)."""
    return {doc_id: Counter(analyze(text)) for doc_id, text in texts.items()}


def lexical_vectors(
    counts: Mapping[str, Counter[str]], *, k1: float, b: float, average_length: float | None = None
) -> tuple[dict[str, SparseVector], float]:
    """``({doc_id: {LEXICAL_PREFIX + term: bm25_d(term)}}, average length)`` from :func:`analyzed_counts`.

    ``average_length`` defaults to the mean length of ``counts`` (pass the corpus' when they are other variants of
    its documents, e.g. training views).
    """
    lengths = {doc_id: sum(c.values()) for doc_id, c in counts.items()}
    if average_length is None:
        average_length = float(np.mean(list(lengths.values()))) if lengths else 0.0
    out: dict[str, SparseVector] = {}
    for doc_id, terms in counts.items():
        norm = k1 * (1 - b + b * lengths[doc_id] / max(average_length, 1e-9))
        out[doc_id] = {LEXICAL_PREFIX + t: f * (k1 + 1) / (f + norm) for t, f in terms.items()}
    return out, average_length


def lexical_idf(counts: Mapping[str, Counter[str]]) -> dict[str, float]:
    """``{LEXICAL_PREFIX + term: ln(1 + (N - df + 0.5) / (df + 0.5))}``: BM25's IDF (Lucene's) over ``counts``."""
    df: Counter[str] = Counter()
    for terms in counts.values():
        df.update(terms.keys())
    n = len(counts)
    return {LEXICAL_PREFIX + t: math.log1p((n - f + 0.5) / (f + 0.5)) for t, f in df.items()}


def lexical_query_weights(
    queries: Mapping[str, str], analyze: Callable[[str], list[str]], idf: Mapping[str, float]
) -> dict[str, SparseVector]:
    """``{qid: {LEXICAL_PREFIX + term: count · idf}}``: a bag-of-words BM25 query.

    A repeated term counts again, as in Anserini's query generator; terms the corpus lacks are left out.
    """
    out: dict[str, SparseVector] = {}
    for qid, text in queries.items():
        weights = {LEXICAL_PREFIX + t: f * idf.get(LEXICAL_PREFIX + t, 0.0) for t, f in Counter(analyze(text)).items()}
        out[qid] = {t: w for t, w in weights.items() if w > 0}
    return out


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


def document_wordpieces(texts: Mapping[str, str], tokenizer: Any) -> dict[str, set[str]]:
    """``{doc_id: set of wordpieces}`` of whole texts (which expansion weights are the document's own)."""
    ids = list(texts)
    encoded = tokenizer([texts[d] for d in ids], add_special_tokens=False, verbose=False)["input_ids"]
    return {d: set(tokenizer.convert_ids_to_tokens(row)) for d, row in zip(ids, encoded, strict=True)}


def mixed_vectors(
    mixture: DocumentMixture,
    lexical: Mapping[str, SparseVector],
    expansion: Mapping[str, SparseVector] | None = None,
    neighbours: Mapping[str, SparseVector] | None = None,
    wordpieces: Mapping[str, set[str]] | None = None,
) -> dict[str, SparseVector]:
    """The document vector of every document of ``lexical`` (module docstring); zero weights are left out.

    ``expansion`` (the model's document vectors) and ``wordpieces`` (:func:`document_wordpieces`) are needed when
    ``mixture.uses_model``, ``neighbours`` (:func:`neighbour_vectors` of the lexical vectors) when
    ``mixture.neighbours`` > 0.
    """
    if mixture.uses_model and (expansion is None or wordpieces is None):
        raise ValueError("this mixture weights the model's document vectors: pass `expansion` and `wordpieces`.")
    if mixture.neighbours > 0 and neighbours is None:
        raise ValueError("this mixture weights nearest neighbours: pass `neighbours`.")
    out: dict[str, SparseVector] = {}
    for doc_id, own in lexical.items():
        vector: Counter[str] = Counter(own)
        if mixture.uses_model:
            present = wordpieces[doc_id]  # type: ignore[index]
            for token, value in expansion[doc_id].items():  # type: ignore[index]
                vector[token] += (mixture.in_document if token in present else mixture.expansion) * value
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
) -> tuple[dict[str, SparseVector], Any, dict[str, float]]:
    """``(vectors, DocumentEncodingStats, lexical IDF)`` of ``documents`` (module docstring).

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
    counts = analyzed_counts(documents, lucene_analyzer())
    lexical, _ = lexical_vectors(counts, k1=mixture.k1, b=mixture.b)
    near = None
    if mixture.neighbours > 0:
        indices, weights = nearest_neighbours(states.dense, mixture.neighbour_count)
        ordered = [lexical[d] for d in states.doc_ids]
        near = dict(zip(states.doc_ids, neighbour_vectors(ordered, indices, weights), strict=True))
    pieces = document_wordpieces(documents, transformer.tokenizer) if mixture.uses_model else None
    vectors = mixed_vectors(mixture, lexical, expansion, near, pieces)
    stats.active_terms = sum(len(v) for v in vectors.values()) / max(1, len(vectors))
    return vectors, stats, lexical_idf(counts)
