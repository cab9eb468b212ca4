"""Step 4 of the demo: offline A/B comparisons, one or more model pairs per domain.

Each pair ``[A, B]`` is a paired comparison of B against A on the same judged queries (recommendation: test users
with their held-out items as qrels; retrieval: the corpus's test queries) through
:func:`pipelines.evaluation.ab.compare_runs`: mean difference with a paired bootstrap interval, randomization and
t-test p-values (Holm-adjusted across the metrics) and win/tie/loss counts. The per-query differences of the first
metric feed the report's histograms. The same numbers come out of
``regkit ab compare <A>/test.run <B>/test.run --qrels <qrels>`` on the files the demo wrote.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from common_regs.io import atomic_write_text
from pipelines.demo_outcome import DemoOutcome, DomainRuns
from pipelines.run_config.demo import DemoAB, DemoConfig

logger = logging.getLogger(__name__)

__all__ = ["run_ab"]


def _compare(domain: str, pairs: list, outcome_runs: DomainRuns, metrics: list[str], settings: DemoAB,
             seed: int, console: Console) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    from pipelines.evaluation.ab import compare_runs, per_query_differences

    results, deltas = [], {}
    for a, b in pairs:
        comparisons = compare_runs(outcome_runs.qrels, outcome_runs.runs[a], outcome_runs.runs[b], metrics,
                                   confidence=settings.confidence, n_resamples=settings.resamples, seed=seed)
        table = Table(title=f"{domain}: {b} (B) vs {a} (A), {comparisons[0].queries:,} paired queries")
        for column in ("metric", "A", "B", "B − A", f"{settings.confidence:.0%} CI", "p (rand.)", "p (Holm)",
                       "W/T/L"):
            table.add_column(column, justify="right")
        for c in comparisons:
            table.add_row(c.metric, f"{c.mean_a:.4f}", f"{c.mean_b:.4f}", f"{c.mean_difference:+.4f}",
                          f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}]", f"{c.p_randomization:.3g}",
                          "" if c.p_adjusted is None else f"{c.p_adjusted:.3g}", f"{c.wins}/{c.ties}/{c.losses}")
        console.print(table)
        verdicts = [c.verdict(a, b) for c in comparisons]
        for line in verdicts:
            console.print(f"  {line}", soft_wrap=True)
        command = (f"regkit ab compare {outcome_runs.run_paths[a]} {outcome_runs.run_paths[b]} "
                   f"--qrels {outcome_runs.qrels_path} " + " ".join(f"--metric {m}" for m in metrics))
        results.append({"domain": domain, "a": a, "b": b, "comparisons": [c.as_dict() for c in comparisons],
                        "verdicts": verdicts, "command": command})
        deltas[f"{domain}: {b} − {a} ({metrics[0]})"] = list(
            per_query_differences(outcome_runs.qrels, outcome_runs.runs[a], outcome_runs.runs[b], metrics[0]).values())
    return results, deltas


def run_ab(
    config: DemoConfig, recsys: DomainRuns, retrieval: DomainRuns, out: Path, console: Console, outcome: DemoOutcome
) -> None:
    """Compare the configured pairs of both domains; fills ``outcome`` and writes ``<out>/comparisons.json``."""
    import json

    settings = config.ab
    results, deltas = [], {}
    for domain, runs, pairs, metrics in (
        ("recommendation", recsys, config.recsys.ab, settings.recsys_metrics),
        ("retrieval", retrieval, config.retrieval.ab, settings.retrieval_metrics),
    ):
        found, found_deltas = _compare(domain, pairs, runs, list(metrics), settings, config.seed, console)
        results += found
        deltas.update(found_deltas)
    atomic_write_text(out / "comparisons.json", json.dumps(results, indent=2) + "\n")
    outcome.metrics["ab"] = results
    outcome.figures["deltas"] = deltas
