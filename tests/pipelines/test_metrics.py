"""The metric code agrees with trec_eval -c on hand-computed cases: graded nDCG, ties, missing queries, BEIR rules.

Every expectation here is written out from the definitions (trec_eval 9: rank by score desc, ties by docid desc;
nDCG gains = rel, discount log2(rank + 1), ideal from all judgments; P@k divides by k; AP over all relevant),
never taken from the code under test.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.evaluation.metrics import evaluate, parse_measures

QRELS = {
    "q1": {"d1": 2, "d2": 1, "d3": 0, "d4": 1},
    "q2": {"d5": 1},
    "q3": {"d6": 1},  # never retrieved: counts as 0 everywhere
    "q4": {"d7": 1},
}
RUN = {
    # trec_eval order: d3 (5.0), dZ (3.0, "dZ" > "d1"), d1 (3.0), d2, d4
    "q1": {"d3": 5.0, "d1": 3.0, "dZ": 3.0, "d2": 2.0, "d4": 0.5},
    "q2": {"d9": 2.0, "d5": 1.0},
    "q4": {"q4": 9.0, "d7": 1.0},  # the query's own id is dropped (BEIR), d7 moves to rank 1
    "qX": {"d1": 1.0},  # not judged: ignored
}
MEASURES = ["nDCG@10", "nDCG@3", "RR@10", "RR@2", "P@3", "P@10", "R@3", "R@100", "AP"]


def _log2(x: float) -> float:
    return math.log2(x)


# q1 by hand: relevant ranks are 3 (rel 2), 4 (rel 1), 5 (rel 1); 3 relevant documents in the qrels.
Q1_IDCG = 2 / _log2(2) + 1 / _log2(3) + 1 / _log2(4)
EXPECTED = {
    "q1": {
        "nDCG@10": (2 / _log2(4) + 1 / _log2(5) + 1 / _log2(6)) / Q1_IDCG,
        "nDCG@3": (2 / _log2(4)) / Q1_IDCG,
        "RR@10": 1 / 3,
        "RR@2": 0.0,  # an ascending tie break would put d1 at rank 2 and give 1/2
        "P@3": 1 / 3,
        "P@10": 3 / 10,
        "R@3": 1 / 3,
        "R@100": 1.0,
        "AP": (1 / 3 + 2 / 4 + 3 / 5) / 3,
    },
    "q2": {
        "nDCG@10": 1 / _log2(3), "nDCG@3": 1 / _log2(3), "RR@10": 0.5, "RR@2": 0.5,
        "P@3": 1 / 3, "P@10": 0.1, "R@3": 1.0, "R@100": 1.0, "AP": 0.5,
    },
    "q3": dict.fromkeys(MEASURES, 0.0),
    "q4": {
        "nDCG@10": 1.0, "nDCG@3": 1.0, "RR@10": 1.0, "RR@2": 1.0,
        "P@3": 1 / 3, "P@10": 0.1, "R@3": 1.0, "R@100": 1.0, "AP": 1.0,
    },
}


def test_matches_hand_computed_trec_eval():
    result = evaluate(QRELS, RUN, MEASURES)
    assert set(result.per_query) == {"q1", "q2", "q3", "q4"}
    for qid, expected in EXPECTED.items():
        for name, value in expected.items():
            assert result.per_query[qid][name] == pytest.approx(value, abs=1e-9), (qid, name)
    for name in MEASURES:
        mean = sum(EXPECTED[q][name] for q in EXPECTED) / 4  # -c: the query without results counts as 0
        assert result.aggregate[name] == pytest.approx(mean, abs=1e-9), name


def test_identical_ids_kept_when_asked():
    result = evaluate(QRELS, RUN, ["RR@10", "nDCG@10"], ignore_identical_ids=False)
    assert result.per_query["q4"]["RR@10"] == pytest.approx(0.5)
    assert result.per_query["q4"]["nDCG@10"] == pytest.approx(1 / _log2(3))


def test_aliases_and_all_empty_run():
    result = evaluate(QRELS, {"q1": {}, "q3": {}}, ["MRR@10", "MAP", "Recall@100", "NDCG@10"])
    assert result.aggregate == {"MRR@10": 0.0, "MAP": 0.0, "Recall@100": 0.0, "NDCG@10": 0.0}
    aliased = evaluate(QRELS, RUN, ["MRR@10", "MAP", "Recall@3"]).aggregate
    plain = evaluate(QRELS, RUN, ["RR@10", "AP", "R@3"]).aggregate
    assert list(aliased.values()) == pytest.approx(list(plain.values()))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="unknown measure 'nope@3'"):
        parse_measures(["nope@3"])
    with pytest.raises(ValueError, match="`qrels` is empty"):
        evaluate({}, RUN)
    with pytest.raises(ValueError, match="`measures` is empty"):
        evaluate(QRELS, RUN, [])
    with pytest.raises(ValueError, match="query 'q1', document 'd1' is NaN"):
        evaluate(QRELS, {"q1": {"d1": float("nan")}})
    with pytest.raises(TypeError, match="must be a number"):
        evaluate(QRELS, {"q1": {"d1": "high"}})
    with pytest.raises(ValueError, match="must be an integer"):
        evaluate({"q1": {"d1": 0.5}}, RUN)


# --- randomized cross-check against a from-the-definition reference (ties, graded labels, short lists) ---


def _ranking(docs: dict[str, float]) -> list[str]:
    # trec_eval: score descending, then docid descending
    return [d for d, _ in sorted(docs.items(), key=lambda kv: (-kv[1], tuple(-ord(c) for c in kv[0])))]


def _reference(qrels: dict[str, int], docs: dict[str, float], k: int) -> dict[str, float]:
    ranked = _ranking(docs)
    gains = [max(qrels.get(d, 0), 0) for d in ranked]
    dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains[:k]))
    ideal = sorted((r for r in qrels.values() if r > 0), reverse=True)
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal[:k]))
    relevant = {d for d, r in qrels.items() if r > 0}
    hits = [d in relevant for d in ranked]
    first = next((i for i, h in enumerate(hits[:k]) if h), None)
    return {
        f"nDCG@{k}": dcg / idcg if idcg else 0.0,
        f"P@{k}": sum(hits[:k]) / k,
        f"R@{k}": sum(hits[:k]) / len(relevant) if relevant else 0.0,
        f"RR@{k}": 1 / (first + 1) if first is not None else 0.0,
    }


doc_ids = st.sampled_from([f"d{i}" for i in range(8)])


@settings(max_examples=60, deadline=None)
@given(
    labels=st.dictionaries(doc_ids, st.integers(0, 3), min_size=1, max_size=8),
    scores=st.dictionaries(doc_ids, st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0]), max_size=8),
    k=st.integers(1, 6),
)
def test_random_cases_match_reference(labels, scores, k):
    expected = _reference(labels, scores, k)
    got = evaluate({"q": labels}, {"q": scores}, list(expected)).per_query["q"]
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-9), name
