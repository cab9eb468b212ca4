"""Ranking metrics through ``ir-measures`` (pytrec_eval backend, identical to ``trec_eval -c``).

BEIR conventions:
    * a retrieved document whose id equals the query id is removed (BEIR's ``ignore_identical_ids``);
    * every judged query counts: a query with no retrieved documents scores 0 (trec_eval ``-c``).

One code path for both domains: recommendation test items are qrels (``{user: {item: 1}}``), a
recommender's top-k lists are runs (``{user: {item: score}}``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import ir_measures

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_MEASURES", "Evaluation", "Qrels", "Run", "evaluate", "parse_measures"]

Qrels = Mapping[str, Mapping[str, int]]
Run = Mapping[str, Mapping[str, float]]

DEFAULT_MEASURES: tuple[str, ...] = ("nDCG@10", "R@100", "RR@10", "AP", "P@10")


@dataclass(frozen=True)
class Evaluation:
    """Per-query values and their means over all judged queries (missing queries count as 0)."""

    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]

    def as_dict(self) -> dict:
        return {"aggregate": self.aggregate, "per_query": self.per_query}


def parse_measures(names: Iterable[str]) -> list:
    """``["nDCG@10", "R@100", "MRR@10"]`` → ir_measures measure objects (``MRR@k`` is an alias of ``RR@k``)."""
    parsed = []
    for name in names:
        canonical = name.replace("MRR", "RR") if name.startswith("MRR") else name
        try:
            parsed.append(ir_measures.parse_measure(canonical))
        except (ValueError, NameError, SyntaxError) as err:
            raise ValueError(f"unknown measure {name!r} ({err}); examples: nDCG@10, R@100, MRR@10, AP, P@10.") from None
    return parsed


def _drop_identical_ids(run: Run) -> dict[str, dict[str, float]]:
    return {qid: {did: float(score) for did, score in docs.items() if did != qid} for qid, docs in run.items()}


def evaluate(qrels: Qrels, run: Run, measures: Iterable[str] = DEFAULT_MEASURES) -> Evaluation:
    """Evaluate ``run`` against ``qrels``; the mean is over every query in ``qrels``.

    Queries that appear in the run but not in the qrels are ignored, as trec_eval does.
    """
    names = list(measures)
    parsed = parse_measures(names)
    if not qrels:
        raise ValueError("`qrels` is empty: nothing to evaluate against.")
    cleaned_run = _drop_identical_ids(run)
    qrels_dict = {qid: {did: int(rel) for did, rel in docs.items()} for qid, docs in qrels.items()}
    per_query: dict[str, dict[str, float]] = {qid: {name: 0.0 for name in names} for qid in qrels_dict}
    by_measure = dict(zip(parsed, names, strict=True))
    for metric in ir_measures.iter_calc(parsed, qrels_dict, cleaned_run):
        if metric.query_id in per_query:
            per_query[metric.query_id][by_measure[metric.measure]] = float(metric.value)
    aggregate = {name: sum(values[name] for values in per_query.values()) / len(per_query) for name in names}
    return Evaluation(aggregate=aggregate, per_query=per_query)
