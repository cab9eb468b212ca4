"""Paired A/B comparison: exact randomization p-values, bootstrap coverage, Holm, verdicts, mismatched runs."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import t as student_t

from pipelines.evaluation.ab import compare_runs, holm_adjust, paired_bootstrap_ci, paired_randomization_pvalue
from pipelines.evaluation.metrics import evaluate


def test_randomization_pvalue_equals_exact_enumeration():
    a = np.array([0.20, 0.50, 0.10, 0.70, 0.40, 0.30])
    b = np.array([0.35, 0.45, 0.30, 0.90, 0.40, 0.60])
    d = b - a
    observed = abs(d.mean())
    flips = [np.array(signs) for signs in itertools.product([1, -1], repeat=len(d))]
    extreme = sum(abs((s * d).mean()) >= observed - 1e-12 for s in flips)
    assert paired_randomization_pvalue(a, b) == pytest.approx(extreme / len(flips))
    assert paired_randomization_pvalue(a, a) == 1.0


def test_bootstrap_interval_covers_the_true_mean_at_about_the_nominal_rate():
    rng = np.random.default_rng(1)
    true_mean, covered, repetitions = 0.1, 0, 300
    for repetition in range(repetitions):
        sample = rng.normal(true_mean, 1.0, size=60)
        low, high = paired_bootstrap_ci(sample, confidence=0.9, n_resamples=2000, seed=repetition)
        covered += low <= true_mean <= high
    # nominal 0.90; the percentile bootstrap under-covers slightly at n=60; ±3 binomial s.d. ≈ ±0.05
    assert 0.83 <= covered / repetitions <= 0.96


def test_holm_adjustment_by_hand():
    # sorted: 0.01·3 = 0.03; 0.03·2 = 0.06; 0.04·1 = 0.04 → running max 0.06
    assert holm_adjust([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def _runs(n_queries: int, better: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    qrels, run_a, run_b = {}, {}, {}
    for q in range(n_queries):
        qid = f"q{q}"
        qrels[qid] = {"rel": 1}
        docs = [f"d{i}" for i in range(20)]
        rank_a = int(rng.integers(0, 10))
        rank_b = max(0, rank_a - int(rng.integers(1, 4))) if better else rank_a
        run_a[qid] = {d: 20.0 - i for i, d in enumerate(docs[:rank_a] + ["rel"] + docs[rank_a:])}
        run_b[qid] = {d: 20.0 - i for i, d in enumerate(docs[:rank_b] + ["rel"] + docs[rank_b:])}
    return qrels, run_a, run_b


def test_better_run_is_detected_with_holm_over_metrics():
    qrels, run_a, run_b = _runs(40, better=True)
    results = compare_runs(qrels, run_a, run_b, ["nDCG@10", "RR@10"], n_resamples=2000)
    for result in results:
        assert result.queries == 40 and result.mean_difference > 0
        assert result.losses == 0 and result.wins + result.ties == 40
        assert result.ci_low > 0 and result.p_adjusted is not None and result.p_adjusted < 0.01
        assert result.verdict("A", "B").startswith(f"B better than A on {result.metric}: +")
    # the paired t-test p-value, by hand: t = mean(d) / (sd(d) / sqrt(n)), two-sided, n - 1 degrees of freedom
    per_a = evaluate(qrels, run_a, ["nDCG@10"]).per_query
    per_b = evaluate(qrels, run_b, ["nDCG@10"]).per_query
    d = np.array([per_b[q]["nDCG@10"] - per_a[q]["nDCG@10"] for q in qrels])
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    assert results[0].p_ttest == pytest.approx(2 * student_t.sf(abs(t), len(d) - 1))


def test_identical_runs_are_not_different():
    qrels, run_a, _ = _runs(10, better=False)
    (result,) = compare_runs(qrels, run_a, run_a, ["nDCG@10"])
    assert result.mean_difference == 0 and result.p_randomization == 1.0 and result.ties == 10
    assert result.verdict().startswith("no significant difference between B and A on nDCG@10: +0.000")


def test_runs_with_different_query_sets_are_compared_on_the_intersection():
    qrels, run_a, run_b = _runs(10, better=True)
    del run_a["q0"], run_b["q1"], run_b["q2"]
    with pytest.warns(UserWarning, match=r"comparing on the 7 in both; dropped 3 \(2 only in A, 1 only in B"):
        (result,) = compare_runs(qrels, run_a, run_b, ["nDCG@10"], n_resamples=500)
    assert result.queries == 7
    with pytest.raises(ValueError, match="share no judged query"):
        compare_runs(qrels, {"x": {}}, {"y": {}})
