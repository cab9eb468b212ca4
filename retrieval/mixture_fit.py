r"""Fitting a :class:`retrieval.document_mixture.DocumentMixture` by ensemble distillation on pseudo-queries.

For every training query :math:`q` and candidate :math:`d` the student score is linear in the mixture weights:

.. math::  s(q, d) = F_{lex} + \alpha_{in} F_{in} + \alpha_{out} F_{out} + \beta F_{nb}

(the four sums of :mod:`retrieval.document_mixture`'s score: BM25 over analyzed terms, the model's weights of the
document's own wordpieces and of expansion wordpieces, the neighbours' BM25). The weights minimise the KL divergence
from the min-max ensemble teacher's distribution over the candidates (Geng et al. 2024, arXiv:2411.04403; the
teacher of :mod:`retrieval.mining`) to :math:`\mathrm{softmax}(\gamma\, s)`, with a free student scale
:math:`\gamma` that absorbs the teacher's arbitrary ``score_scale`` (without it the weights would be bent to match
the teacher's sharpness rather than its ranking). Weights are kept >= 0 (:math:`\exp` parametrisation) because
impact indexes store positive weights. 10 % of the queries are held out; the (k1, b) grid point with the lowest
held-out KL wins, and the mixture is kept only if it beats plain BM25 (all weights 0) on the held-out queries.

Why only four numbers: a per-token contextual re-weighting of the lexical part (a 385-parameter linear map of the
backbone state, same loss) lowered the held-out KL on SciFact pseudo-queries from 1.78 to 0.77 but *lowered*
nDCG@10 on the real SciFact training queries from 0.678 to 0.656 (``docs/sparse_retrieval.md``): richer students
learn the pseudo-queries' artefacts, the four weights transfer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from common_regs.distill import minmax_ensemble_scores
from retrieval.document_mixture import (
    DocumentMixture,
    SparseVector,
    analyzed_counts,
    document_wordpieces,
    lexical_idf,
    lexical_query_weights,
    lexical_vectors,
    lucene_analyzer,
    nearest_neighbours,
    neighbour_vectors,
)
from retrieval.encoder import mlm_parts, query_weights
from retrieval.hidden_cache import HiddenStates, encode_from_cache
from retrieval.mining import Candidates

logger = logging.getLogger(__name__)

__all__ = ["BM25_GRID", "PairFeatures", "choose_mixture", "fit_document_mixture", "fit_weights", "held_out_kl",
           "pair_features"]

BM25_GRID: tuple[tuple[float, float], ...] = ((0.9, 0.4), (1.2, 0.75))
"""(k1, b) tried: Pyserini's BEIR setting and Robertson's classic values."""

FEATURES = ("lexical", "in_document", "expansion", "neighbours")

ABSENT = -1e9
"""Score of a missing candidate (finite: −inf would turn the KL's 0 · (−inf) terms and their gradients into NaN)."""


@dataclass
class PairFeatures:
    """The four parts of P (query, candidate) pairs.

    ``values`` (P, 4) in the order of ``FEATURES``; pair p belongs to query row ``rows[p]``, candidate ``cols[p]``.
    """

    values: Tensor
    rows: Tensor
    cols: Tensor

    def scores(self, weights: Tensor, shape: tuple[int, int]) -> Tensor:
        """Student scores as a (Q, C) matrix, ``ABSENT`` where a query has no candidate."""
        flat = self.values[:, 0] + self.values[:, 1:] @ weights
        out = torch.full(shape, ABSENT, dtype=flat.dtype)
        out[self.rows, self.cols] = flat
        return out


def pair_features(
    lexical_queries: Sequence[Mapping[str, float]],
    wordpiece_queries: Sequence[Mapping[str, float]],
    candidates: Sequence[Sequence[str]],
    lexical: Mapping[str, SparseVector],
    expansion: Mapping[str, SparseVector],
    neighbours: Mapping[str, SparseVector],
    wordpieces: Mapping[str, set[str]],
) -> PairFeatures:
    """The four parts of every (query row, candidate) pair (:mod:`retrieval.document_mixture`'s notation).

    ``lexical_queries`` / ``wordpiece_queries``: per query row the analyzed-term and wordpiece weights;
    ``lexical``, ``neighbours``: analyzed-term vectors of every candidate; ``expansion``: the model's wordpiece
    vectors; ``wordpieces``: each candidate's own wordpieces.
    """
    values, rows, cols = [], [], []
    for row, (terms, pieces, docs) in enumerate(zip(lexical_queries, wordpiece_queries, candidates, strict=True)):
        for col, doc in enumerate(docs):
            own, close, expand, present = lexical[doc], neighbours[doc], expansion[doc], wordpieces[doc]
            lex = sum(w * own.get(t, 0.0) for t, w in terms.items())
            near = sum(w * close.get(t, 0.0) for t, w in terms.items())
            inside = sum(w * expand.get(t, 0.0) for t, w in pieces.items() if t in present)
            outside = sum(w * expand.get(t, 0.0) for t, w in pieces.items() if t not in present)
            values.append((lex, inside, outside, near))
            rows.append(row)
            cols.append(col)
    return PairFeatures(torch.tensor(values, dtype=torch.float64), torch.tensor(rows), torch.tensor(cols))


def _kl(student: Tensor, teacher: Tensor, scale: Tensor) -> Tensor:
    """Mean over rows of KL(softmax(teacher) || softmax(scale · student)); ``ABSENT`` entries have probability 0."""
    log_p = F.log_softmax(teacher, dim=-1)
    log_q = F.log_softmax(student * scale, dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def fit_weights(
    features: PairFeatures,
    teacher: Tensor,
    train_rows: Tensor,
    *,
    steps: int = 300,
    lr: float = 0.05,
) -> tuple[Tensor, Tensor]:
    """``(weights (3,), scale)`` minimising the KL on ``train_rows`` (module docstring); Adam, full batch.

    ``teacher`` is the (Q, C) teacher score matrix with ``ABSENT`` where a query has no candidate.
    """
    log_weights = torch.full((3,), float(np.log(0.1)), dtype=torch.float64, requires_grad=True)
    log_scale = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([log_weights, log_scale], lr=lr)
    target = teacher.to(torch.float64)[train_rows]
    for _ in range(steps):
        student = features.scores(log_weights.exp(), tuple(teacher.shape))[train_rows]
        loss = _kl(student, target, log_scale.exp())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return log_weights.exp().detach(), log_scale.exp().detach()


def held_out_kl(features: PairFeatures, teacher: Tensor, rows: Tensor, weights: Tensor, *,
                steps: int = 200, lr: float = 0.05) -> float:
    """KL on ``rows`` with ``weights`` fixed and only the scale fitted.

    The scale is fitted on those same rows: it is not a ranking choice, so fitting it where the KL is read compares
    weights, not sharpness.
    """
    log_scale = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Adam([log_scale], lr=lr)
    student = features.scores(weights.to(torch.float64), tuple(teacher.shape))[rows].detach()
    target = teacher.to(torch.float64)[rows]
    for _ in range(steps):
        loss = _kl(student, target, log_scale.exp())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return float(_kl(student, target, log_scale.exp().detach()))


def choose_mixture(
    features_by_grid: Mapping[tuple[float, float], PairFeatures],
    teacher: Tensor,
    *,
    neighbour_count: int,
    seed: int = 0,
    validation_fraction: float = 0.1,
) -> DocumentMixture:
    """Fit every (k1, b) of ``features_by_grid`` and keep the best on held-out queries (module docstring)."""
    queries = teacher.shape[0]
    if queries < 10:
        raise ValueError(f"fitting a document mixture needs at least 10 training queries, got {queries}.")
    order = torch.randperm(queries, generator=torch.Generator().manual_seed(seed))
    held = max(1, int(round(validation_fraction * queries)))
    val_rows, train_rows = order[:held], order[held:]
    best: tuple[float, DocumentMixture] | None = None
    for (k1, b), features in features_by_grid.items():
        weights, _ = fit_weights(features, teacher, train_rows)
        fitted = held_out_kl(features, teacher, val_rows, weights)
        plain = held_out_kl(features, teacher, val_rows, torch.zeros(3, dtype=torch.float64))
        keep = fitted < plain
        chosen = weights if keep else torch.zeros(3, dtype=torch.float64)
        logger.info("mixture k1=%s b=%s: weights %s, held-out KL %.4f (BM25 only %.4f)", k1, b,
                    [round(float(w), 4) for w in weights], fitted, plain)
        candidate = DocumentMixture(
            k1=k1, b=b, in_document=float(chosen[0]), expansion=float(chosen[1]), neighbours=float(chosen[2]),
            neighbour_count=neighbour_count,
            fit={"held_out_kl": min(fitted, plain), "held_out_kl_bm25_only": plain, "train_queries": len(train_rows),
                 "held_out_queries": len(val_rows), "grid": [list(g) for g in features_by_grid], "seed": seed})
        if best is None or candidate.fit["held_out_kl"] < best[0]:
            best = (candidate.fit["held_out_kl"], candidate)
    assert best is not None
    return best[1]


def fit_document_mixture(
    model: Any,
    queries: Mapping[str, str],
    candidates: Candidates,
    texts: Mapping[str, str],
    corpus_states: HiddenStates,
    *,
    view_states: HiddenStates | None = None,
    view_sources: Mapping[str, str] | None = None,
    teacher_weights: Sequence[float] = (1.0, 1.0),
    score_scale: float = 30.0,
    neighbour_count: int = 3,
    seed: int = 0,
) -> DocumentMixture:
    """Fit the mixture of ``model`` on training queries and their mined, teacher-scored candidates.

    Args:
        model: the sparse encoder whose document vectors are the expansion part.
        queries: ``{qid: text}`` (e.g. pseudo-queries); a query with neither an analyzed term nor a wordpiece of
            positive IDF is left out.
        candidates: per query the candidate ids (corpus documents or training views) and both teachers' scores.
        texts: the text of every id in ``candidates`` (corpus documents and views).
        corpus_states: the corpus' backbone states (its ``doc_ids`` are the corpus).
        view_states: the training views' backbone states (ids as in ``candidates``), if any.
        view_sources: ``{view id: source document id}``; a view never gets its source document as a neighbour
            (that would hand back the words the view left out).
        teacher_weights: weights of (bm25, dense) in the min-max ensemble teacher (:mod:`retrieval.mining`).
        score_scale: the ensemble's score scale.
        neighbour_count: :math:`k` of the neighbour part.
        seed: the held-out split.
    """
    tokenizer = mlm_parts(model)[0].tokenizer
    analyze = lucene_analyzer()
    views = view_states.doc_ids if view_states is not None else []
    corpus_counts = analyzed_counts({d: texts[d] for d in corpus_states.doc_ids}, analyze)
    view_counts = analyzed_counts({v: texts[v] for v in views}, analyze)
    idf = lexical_idf(corpus_counts)
    pieces = query_weights(model, queries)
    terms = lexical_query_weights(queries, analyze, idf)
    qids = [q for q in queries if pieces[q] or terms[q]]
    teacher_scores, mask = candidates.teacher_matrix(qids)
    teacher = minmax_ensemble_scores(teacher_scores, teacher_weights, scale=score_scale, mask=mask)
    teacher = teacher.masked_fill(~mask, ABSENT)
    vocabulary = sorted({t for q in qids for t in pieces[q]})
    expansion, _ = encode_from_cache(model, corpus_states, vocabulary=vocabulary, show_progress=False)
    if view_states is not None:
        expansion.update(encode_from_cache(model, view_states, vocabulary=vocabulary, show_progress=False)[0])
    wordpieces = document_wordpieces({d: texts[d] for d in [*corpus_states.doc_ids, *views]}, tokenizer)
    indices, weights = nearest_neighbours(corpus_states.dense, neighbour_count)
    if views:
        sources = view_sources or {}
        exclude = [corpus_states.row(sources[v]) if v in sources else -1 for v in views]
        view_idx, view_w = nearest_neighbours(corpus_states.dense, neighbour_count, queries=view_states.dense,
                                              exclude=exclude)
        indices, weights = np.concatenate([indices, view_idx]), np.concatenate([weights, view_w])
    features: dict[tuple[float, float], PairFeatures] = {}
    for k1, b in BM25_GRID:
        lexical, average = lexical_vectors(corpus_counts, k1=k1, b=b)
        lexical.update(lexical_vectors(view_counts, k1=k1, b=b, average_length=average)[0])
        ordered = [lexical[d] for d in corpus_states.doc_ids]
        near = dict(zip([*corpus_states.doc_ids, *views], neighbour_vectors(ordered, indices, weights), strict=True))
        features[(k1, b)] = pair_features([terms[q] for q in qids], [pieces[q] for q in qids],
                                          [candidates.docs[q] for q in qids], lexical, expansion, near, wordpieces)
    return choose_mixture(features, teacher, neighbour_count=neighbour_count, seed=seed)
