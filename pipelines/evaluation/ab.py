"""Paired offline comparison of two runs on the same judgments (retrieval queries or recommendation users).

For each metric, the per-query values of run A and run B are paired and the difference d_q = B_q − A_q is
summarised by:

* the mean difference with a paired percentile-bootstrap confidence interval (queries resampled with replacement);
* a paired randomization (sign-flip permutation) test: under H0 the sign of every d_q is exchangeable, so the
  p-value is the share of the 2^n sign assignments whose |mean| is at least the observed one (exact for small n,
  Monte Carlo otherwise; ``scipy.stats.permutation_test``);
* the two-sided paired t-test (``scipy.stats.ttest_rel``);
* win / tie / loss counts;
* Holm–Bonferroni adjusted p-values when several metrics (or model pairs) are tested together
  (``statsmodels.stats.multitest.multipletests``).

References: Smucker, Allan & Carterette, "A comparison of statistical significance tests for information retrieval
evaluation", CIKM 2007 (randomization and t-test on per-topic scores); Holm, "A simple sequentially rejective
multiple test procedure", Scand. J. Statistics 1979.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests

from pipelines.evaluation.metrics import Qrels, Run, evaluate

logger = logging.getLogger(__name__)

__all__ = [
    "PairedComparison",
    "compare_runs",
    "holm_adjust",
    "paired_bootstrap_ci",
    "paired_randomization_pvalue",
    "per_query_differences",
]


@dataclass(frozen=True)
class PairedComparison:
    """The comparison of run B against run A on one metric (differences are B − A)."""

    metric: str
    queries: int
    mean_a: float
    mean_b: float
    mean_difference: float
    ci_low: float
    ci_high: float
    confidence: float
    p_randomization: float
    p_ttest: float
    wins: int
    ties: int
    losses: int
    p_adjusted: float | None = None

    @property
    def p_value(self) -> float:
        """The p-value the verdict uses: Holm-adjusted randomization p when available."""
        return self.p_adjusted if self.p_adjusted is not None else self.p_randomization

    def verdict(self, name_a: str = "A", name_b: str = "B", alpha: float = 0.05) -> str:
        """One line, e.g. ``B better than A on nDCG@10: +0.012 [0.004, 0.020], p=0.003``."""
        if self.p_value < alpha:
            better = self.mean_difference > 0
            relation = f"{name_b} better than {name_a}" if better else f"{name_b} worse than {name_a}"
        else:
            relation = f"no significant difference between {name_b} and {name_a}"
        return (f"{relation} on {self.metric}: {self.mean_difference:+.3f} "
                f"[{self.ci_low:+.3f}, {self.ci_high:+.3f}], p={self.p_value:.3g}")

    def as_dict(self) -> dict:
        return asdict(self)


def paired_bootstrap_ci(
    differences: np.ndarray, *, confidence: float = 0.95, n_resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of paired differences."""
    differences = np.asarray(differences, dtype=float)
    if differences.size < 2 or np.all(differences == differences[0]):
        value = float(differences.mean()) if differences.size else float("nan")
        return value, value
    result = stats.bootstrap(
        (differences,), np.mean, confidence_level=confidence, n_resamples=n_resamples, method="percentile",
        rng=np.random.default_rng(seed), vectorized=True,
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def paired_randomization_pvalue(a: np.ndarray, b: np.ndarray, *, n_resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided paired randomization test of mean(b − a) = 0 (exact when 2^n ≤ ``n_resamples``)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if np.allclose(a, b):
        return 1.0
    result = stats.permutation_test(
        (a, b), lambda x, y, axis: np.mean(y - x, axis=axis), permutation_type="samples",
        n_resamples=n_resamples, alternative="two-sided", rng=np.random.default_rng(seed), vectorized=True,
    )
    return float(result.pvalue)


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (family-wise error control), in input order."""
    if not p_values:
        return []
    return [float(p) for p in multipletests(list(p_values), method="holm")[1]]


def _common_queries(qrels: Qrels, run_a: Run, run_b: Run) -> list[str]:
    judged = list(qrels)
    common = [qid for qid in judged if qid in run_a and qid in run_b]
    dropped = len(judged) - len(common)
    if not common:
        raise ValueError(
            "the two runs share no judged query: nothing to compare (check that both ran the same queries)."
        )
    if dropped:
        only_a = sum(1 for q in judged if q in run_a and q not in run_b)
        only_b = sum(1 for q in judged if q in run_b and q not in run_a)
        message = (f"runs cover different judged queries: comparing on the {len(common)} in both; dropped {dropped} "
                   f"({only_a} only in A, {only_b} only in B, {dropped - only_a - only_b} in neither)")
        warnings.warn(message, stacklevel=3)
        logger.warning(message)
    return common


def compare_runs(
    qrels: Qrels,
    run_a: Run,
    run_b: Run,
    measures: Iterable[str] = ("nDCG@10",),
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> list[PairedComparison]:
    """Compare ``run_b`` against ``run_a`` on every measure; p-values are Holm-adjusted across the measures.

    Queries judged in ``qrels`` but missing from one run are dropped from both (with a warning naming how many):
    a paired test needs both values.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"`confidence` must be in (0, 1), got {confidence}.")
    measures = list(measures)
    queries = _common_queries(qrels, run_a, run_b)
    paired_qrels = {qid: qrels[qid] for qid in queries}
    per_a = evaluate(paired_qrels, run_a, measures).per_query
    per_b = evaluate(paired_qrels, run_b, measures).per_query
    comparisons = []
    for metric in measures:
        a = np.array([per_a[q][metric] for q in queries])
        b = np.array([per_b[q][metric] for q in queries])
        differences = b - a
        low, high = paired_bootstrap_ci(differences, confidence=confidence, n_resamples=n_resamples, seed=seed)
        p_ttest = float(stats.ttest_rel(b, a).pvalue) if np.any(differences != differences[0]) else (
            1.0 if differences[0] == 0 else 0.0)
        comparisons.append(PairedComparison(
            metric=metric, queries=len(queries), mean_a=float(a.mean()), mean_b=float(b.mean()),
            mean_difference=float(differences.mean()), ci_low=low, ci_high=high, confidence=confidence,
            p_randomization=paired_randomization_pvalue(a, b, n_resamples=n_resamples, seed=seed),
            p_ttest=p_ttest, wins=int(np.sum(differences > 0)), ties=int(np.sum(differences == 0)),
            losses=int(np.sum(differences < 0)),
        ))
    if len(comparisons) > 1:
        adjusted = holm_adjust([c.p_randomization for c in comparisons])
        comparisons = [replace(c, p_adjusted=p) for c, p in zip(comparisons, adjusted, strict=True)]
    return comparisons


def per_query_differences(qrels: Qrels, run_a: Run, run_b: Run, metric: str) -> dict[str, float]:
    """``{qid: B − A}`` on the queries both runs cover (for histograms in reports)."""
    queries = _common_queries(qrels, run_a, run_b)
    paired_qrels = {qid: qrels[qid] for qid in queries}
    per_a = evaluate(paired_qrels, run_a, [metric]).per_query
    per_b = evaluate(paired_qrels, run_b, [metric]).per_query
    return {q: per_b[q][metric] - per_a[q][metric] for q in queries}
