"""The offline A/B pipelines behind ``regkit ab``: read inputs, run the statistics, write the report."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from pipelines.evaluation.ab import PairedComparison, compare_runs, per_query_differences
from pipelines.evaluation.offpolicy import OffPolicyEstimate, estimate_policy, read_logged_data
from pipelines.evaluation.qrels import load_qrels
from pipelines.report import Report, ReportPaths, bar_plot, histogram_plot
from retrieval.runs import read_trec_run

__all__ = ["compare_and_report", "offpolicy_and_report"]


def compare_and_report(
    run_a: Path,
    run_b: Path,
    qrels_path: Path,
    metrics: Sequence[str],
    out: Path,
    *,
    confidence: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> tuple[list[PairedComparison], ReportPaths]:
    """Compare run B against run A per metric (``regkit ab compare``) and write the report into ``out``.

    Args:
        run_a: baseline TREC run file.
        run_b: candidate TREC run file.
        qrels_path: judgments (BEIR qrels TSV or TREC qrels).
        metrics: ir-measures names, e.g. ``nDCG@10``.
        out: report folder.
        confidence: confidence level of the bootstrap intervals.
        resamples: bootstrap / permutation resamples.
        seed: seed of the resampling.

    Returns:
        The comparison of each metric and the paths of the written report.
    """
    qrels = load_qrels(qrels_path)
    a, b = read_trec_run(run_a), read_trec_run(run_b)
    comparisons = compare_runs(qrels, a, b, metrics, confidence=confidence, n_resamples=resamples, seed=seed)
    report = Report(f"Offline A/B: {run_b.name} (B) vs {run_a.name} (A)")
    report.text(f"{comparisons[0].queries} judged queries in both runs; differences are B − A; "
                f"{confidence:.0%} paired bootstrap intervals; p-values Holm-adjusted across metrics.")
    report.table([c.as_dict() for c in comparisons], caption="paired comparison per metric")
    for c in comparisons:
        report.text(c.verdict("A", "B"))
        deltas = per_query_differences(qrels, a, b, c.metric)
        plot = histogram_plot(list(deltas.values()), xlabel=f"{c.metric}: B − A", title=f"per-query {c.metric}")
        report.figure(plot, caption=f"per-query {c.metric} difference (B − A)")
    paths = report.write(out, metrics={"comparisons": [c.as_dict() for c in comparisons]},
                         config={"run_a": str(run_a), "run_b": str(run_b), "qrels": str(qrels_path),
                                 "metrics": list(metrics), "confidence": confidence, "resamples": resamples},
                         inputs=[run_a, run_b, qrels_path], seed=seed)
    return comparisons, paths


def offpolicy_and_report(
    log: Path,
    policies: Sequence[Path],
    estimators: tuple[str, ...],
    out: Path,
    *,
    clip: float = math.inf,
    confidence: float = 0.95,
    bootstrap: int = 1000,
    seed: int = 0,
) -> tuple[dict[str, list[OffPolicyEstimate]], ReportPaths]:
    """Estimate each policy's value from logged data (``regkit ab offpolicy``) and write the report into ``out``.

    Args:
        log: logged interactions (parquet, :func:`pipelines.evaluation.offpolicy.read_logged_data`).
        policies: target policies as TREC run files; each is named by its file stem.
        estimators: estimator names (:data:`pipelines.evaluation.offpolicy.ESTIMATORS`).
        out: report folder.
        clip: importance-weight clip (IPS).
        confidence: confidence level of the bootstrap intervals.
        bootstrap: bootstrap resamples.
        seed: seed of the bootstrap.

    Returns:
        The estimates of each policy (by name) and the paths of the written report.
    """
    data = read_logged_data(log)
    names = [p.stem for p in policies]
    if len(set(names)) != len(names):
        raise ValueError(f"policy files need distinct names, got {names}.")
    estimates = {
        path.stem: estimate_policy(data, read_trec_run(path), estimators=estimators, clip=clip, confidence=confidence,
                                   n_bootstrap=bootstrap, seed=seed)
        for path in policies
    }
    report = Report(f"Off-policy evaluation on {log.name}")
    report.text(f"{data.n_rounds:,} logged rounds, {len(data.rewards):,} rows; value = expected reward per round; "
                f"{confidence:.0%} bootstrap intervals over rounds.")
    report.table([{"policy": name, **e.as_dict()} for name, results in estimates.items() for e in results],
                 caption="estimates per policy and estimator")
    report.figure(bar_plot({e: {n: next(x.value for x in r if x.estimator == e) for n, r in estimates.items()}
                            for e in estimators}, ylabel="estimated reward per round", title="policy value"),
                  caption="estimated value of each policy by estimator")
    paths = report.write(out, metrics={n: [e.as_dict() for e in r] for n, r in estimates.items()},
                         config={"log": str(log), "policies": [str(p) for p in policies],
                                 "estimators": list(estimators), "clip": clip, "confidence": confidence,
                                 "bootstrap": bootstrap},
                         inputs=[log, *policies], seed=seed)
    return estimates, paths
