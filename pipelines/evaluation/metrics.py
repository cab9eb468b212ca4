"""Ranking metrics through ``ir-measures``' pytrec_eval provider (trec_eval's own C code, as ``trec_eval -c``).

BEIR conventions (Thakur et al., BEIR, NeurIPS 2021 Datasets and Benchmarks, arXiv:2104.08663):
    * a retrieved document whose id equals the query id is removed (BEIR's ``ignore_identical_ids``);
    * every judged query counts: a query with no retrieved documents scores 0 (trec_eval ``-c``);
    * queries that appear in the run but not in the qrels are ignored, as trec_eval does.

trec_eval semantics, which the tests check by hand: documents are ranked by score descending, ties broken by
document id descending (byte order); nDCG@k uses linear gains ``rel`` and ``log2(rank + 1)`` discounts, with the
ideal ranking built from all judged documents; binary measures (R@k, P@k, AP, RR) count ``rel >= 1`` as relevant;
P@k divides by k even when fewer than k documents were retrieved.

``RR@k`` (MRR@k) is not in trec_eval under that name (ir-measures would route it to the MS MARCO script, which
breaks ties by ascending document id); regkit computes it as trec_eval's ``recip_rank`` on the run cut to its
top k in trec_eval order, i.e. ``trec_eval -M k -m recip_rank``.

One code path for both domains: recommendation test items are qrels (``{user: {item: 1}}``), a
recommender's top-k lists are runs (``{user: {item: score}}``).
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import ir_measures

from retrieval.runs import rank_documents

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MEASURES", "Evaluation", "Qrels", "Run", "evaluate", "parse_measures"]

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]

DEFAULT_MEASURES: tuple[str, ...] = ("nDCG@10", "R@100", "RR@10", "AP", "P@10")
_ALIASES = {"MRR": "RR", "MAP": "AP", "Recall": "R", "NDCG": "nDCG", "ndcg": "nDCG"}


@dataclass(frozen=True)
class Evaluation:
    """Per-query values and their means over all judged queries (missing queries count as 0)."""

    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]

    def as_dict(self) -> dict:
        return {"aggregate": self.aggregate, "per_query": self.per_query}


def parse_measures(names: Iterable[str]) -> list:
    """``["nDCG@10", "R@100", "MRR@10", "MAP", "Recall@100", "P@10"]`` → ir_measures measure objects.

    Aliases: ``MRR`` → ``RR``, ``MAP`` → ``AP``, ``Recall`` → ``R``, ``NDCG`` → ``nDCG``.
    """
    parsed = []
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"measure names must be non-empty strings, got {name!r}.")
        head, sep, tail = name.strip().partition("@")
        canonical = _ALIASES.get(head, head) + sep + tail
        try:
            measure = ir_measures.parse_measure(canonical)
        except (ValueError, NameError, SyntaxError, TypeError) as err:
            examples = "nDCG@10, R@100, MRR@10, MAP, P@10"
            raise ValueError(f"unknown measure {name!r} ({err}); examples: {examples}.") from None
        if not ir_measures.pytrec_eval.supports(measure) and not _is_cut_rr(measure):
            raise ValueError(f"measure {name!r} is not computed by trec_eval; use nDCG@k, R@k, P@k, RR@k, AP.")
        parsed.append(measure)
    return parsed


def _is_cut_rr(measure) -> bool:
    return measure.NAME == "RR" and measure.params.get("cutoff") is not None and len(measure.params) == 1


def _clean_run(run: Run, *, ignore_identical_ids: bool) -> dict[str, dict[str, float]]:
    cleaned: dict[str, dict[str, float]] = {}
    for qid, docs in run.items():
        if not isinstance(docs, Mapping):
            raise TypeError(f"run: query {qid!r} must map document ids to scores, got {type(docs).__name__}.")
        kept: dict[str, float] = {}
        for did, score in docs.items():
            try:
                value = float(score)
            except (TypeError, ValueError):
                where = f"run: score of query {qid!r}, document {did!r}"
                raise TypeError(f"{where} must be a number, got {score!r}.") from None
            if math.isnan(value):
                raise ValueError(f"run: score of query {qid!r}, document {did!r} is NaN.")
            if not (ignore_identical_ids and str(did) == str(qid)):
                kept[str(did)] = value
        if kept:
            cleaned[str(qid)] = kept
    return cleaned


def _clean_qrels(qrels: Qrels) -> dict[str, dict[str, int]]:
    cleaned: dict[str, dict[str, int]] = {}
    for qid, docs in qrels.items():
        row: dict[str, int] = {}
        for did, rel in docs.items():
            if isinstance(rel, bool) or not isinstance(rel, numbers.Real) or int(rel) != rel:
                where = f"qrels: relevance of query {qid!r}, document {did!r}"
                raise ValueError(f"{where} must be an integer, got {rel!r}.")
            row[str(did)] = int(rel)
        cleaned[str(qid)] = row
    return cleaned


def _top_k(run: dict[str, dict[str, float]], k: int) -> dict[str, dict[str, float]]:
    return {qid: dict(rank_documents(docs, k)) for qid, docs in run.items()}


def evaluate(
    qrels: Qrels, run: Run, measures: Iterable[str] = DEFAULT_MEASURES, *, ignore_identical_ids: bool = True
) -> Evaluation:
    """Evaluate ``run`` against ``qrels``; the mean is over every query in ``qrels`` (missing queries count 0).

    Args:
        qrels: ``{qid: {docid: relevance}}`` with integer relevance (graded allowed; ``<= 0`` is non-relevant).
        run: ``{qid: {docid: score}}``; higher scores rank first, ties by document id descending (trec_eval).
        measures: ir-measures names, e.g. ``("nDCG@10", "R@100", "MRR@10", "MAP", "P@10")``.
        ignore_identical_ids: drop retrieved documents whose id equals the query id. Default True (source: BEIR).

    Returns:
        :class:`Evaluation` keyed by the names as given.
    """
    names = list(measures)
    if not names:
        raise ValueError("`measures` is empty; give at least one, e.g. nDCG@10.")
    parsed = parse_measures(names)
    if not qrels:
        raise ValueError("`qrels` is empty: nothing to evaluate against.")
    qrels_dict = _clean_qrels(qrels)
    cleaned_run = {qid: docs for qid, docs in _clean_run(run, ignore_identical_ids=ignore_identical_ids).items()
                   if qid in qrels_dict}
    per_query: dict[str, dict[str, float]] = {qid: dict.fromkeys(names, 0.0) for qid in qrels_dict}
    if cleaned_run:
        direct = [(m, n) for m, n in zip(parsed, names, strict=True) if not _is_cut_rr(m)]
        _collect(per_query, qrels_dict, cleaned_run, direct)
        for measure, name in zip(parsed, names, strict=True):
            if _is_cut_rr(measure):
                truncated = _top_k(cleaned_run, int(measure.params["cutoff"]))
                _collect(per_query, qrels_dict, truncated, [(ir_measures.parse_measure("RR"), name)])
    aggregate = {name: sum(values[name] for values in per_query.values()) / len(per_query) for name in names}
    return Evaluation(aggregate=aggregate, per_query=per_query)


def _collect(per_query: dict[str, dict[str, float]], qrels: dict, run: dict, pairs: list[tuple[object, str]]) -> None:
    if not pairs:
        return
    by_measure: dict[object, list[str]] = {}
    for measure, name in pairs:
        by_measure.setdefault(measure, []).append(name)
    for metric in ir_measures.pytrec_eval.iter_calc(list(by_measure), qrels, run):
        if metric.query_id in per_query:
            for name in by_measure[metric.measure]:
                per_query[metric.query_id][name] = float(metric.value)
