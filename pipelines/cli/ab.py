"""``regkit ab``: offline A/B comparisons of rankings and off-policy estimates from logged interactions.

``--out`` is a run folder (:func:`pipelines.run_guard.guarded_run_dir`): a finished one is refused unless
``--overwrite``, a non-empty folder regkit did not write is refused always.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from pipelines.cli._config import config_option

app = typer.Typer(help="Offline A/B: paired run comparisons and off-policy estimates.", no_args_is_help=True)
console = Console()
_OVERWRITE_HELP = "Rewrite a finished --out (only a folder regkit wrote is ever rewritten)."


def _job_config(ctx: typer.Context) -> dict:
    """The options that define the job's result (what ``_STARTED.json`` / ``_SUCCESS.json`` hash)."""
    return {name: value for name, value in ctx.params.items() if name not in ("config", "overwrite")}


@app.command()
def compare(
    ctx: typer.Context,
    config: Path = config_option(),
    run_a: Path = typer.Argument(..., help="Baseline run (TREC run file)."),
    run_b: Path = typer.Argument(..., help="Candidate run (TREC run file)."),
    qrels: Path = typer.Option(..., "--qrels", help="Judgments: BEIR qrels TSV or TREC qrels."),
    metric: list[str] = typer.Option(["nDCG@10", "R@100"], "--metric", help="Metric (repeat for several)."),
    out: Path = typer.Option(Path("runs/ab"), "--out", help="Output folder for the report and comparison.json."),
    confidence: float = typer.Option(0.95, help="Confidence level of the bootstrap intervals."),
    resamples: int = typer.Option(10_000, help="Bootstrap / permutation resamples."),
    seed: int = typer.Option(0, help="Random seed of the resampling."),
    overwrite: bool = typer.Option(False, "--overwrite", help=_OVERWRITE_HELP),
) -> None:
    """Paired comparison of RUN_B against RUN_A: mean difference, bootstrap CI, randomization and t-test p-values."""
    from pipelines.ab_report import compare_and_report
    from pipelines.run_guard import guarded_run_dir

    with guarded_run_dir(out, config=_job_config(ctx), overwrite=overwrite, extra={"job": "ab compare"}):
        comparisons, paths = compare_and_report(run_a, run_b, qrels, metric, out, confidence=confidence,
                                                resamples=resamples, seed=seed)
    table = Table(title=f"{run_b.name} (B) vs {run_a.name} (A), {comparisons[0].queries} queries")
    for column in ("metric", "A", "B", "B − A", f"{confidence:.0%} CI", "p (rand.)", "p (t)", "p (Holm)", "W/T/L"):
        table.add_column(column, justify="right")
    for c in comparisons:
        table.add_row(c.metric, f"{c.mean_a:.4f}", f"{c.mean_b:.4f}", f"{c.mean_difference:+.4f}",
                      f"[{c.ci_low:+.4f}, {c.ci_high:+.4f}]", f"{c.p_randomization:.3g}", f"{c.p_ttest:.3g}",
                      "" if c.p_adjusted is None else f"{c.p_adjusted:.3g}", f"{c.wins}/{c.ties}/{c.losses}")
    console.print(table)
    for c in comparisons:
        console.print(c.verdict("A", "B"), soft_wrap=True)
    console.print(f"report: {paths.html}", soft_wrap=True)


@app.command()
def offpolicy(
    ctx: typer.Context,
    config: Path = config_option(),
    log: Path = typer.Option(..., "--log", help="Logged interactions (parquet: user_id, item_id, reward, propensity, "
                                                "optional position and round_id)."),
    policy: list[Path] = typer.Option(..., "--policy", help="Target policy as a TREC run (repeat to rank several)."),
    estimator: list[str] = typer.Option(["ips", "snips", "dm", "dr"], "--estimator",
                                        help="ips, snips, dm, dr, replay (repeat for several)."),
    clip: float = typer.Option(float("inf"), help="Clip importance weights at this value (IPS)."),
    out: Path = typer.Option(Path("runs/offpolicy"), "--out", help="Output folder for the report."),
    confidence: float = typer.Option(0.95, help="Confidence level of the bootstrap intervals."),
    bootstrap: int = typer.Option(1000, help="Bootstrap resamples for the intervals."),
    seed: int = typer.Option(0, help="Random seed of the bootstrap."),
    overwrite: bool = typer.Option(False, "--overwrite", help=_OVERWRITE_HELP),
) -> None:
    """Estimate each target policy's expected reward per round from the logs, with bootstrap intervals."""
    from pipelines.ab_report import offpolicy_and_report
    from pipelines.run_guard import guarded_run_dir

    with guarded_run_dir(out, config=_job_config(ctx), overwrite=overwrite, extra={"job": "ab offpolicy"}):
        estimates, paths = offpolicy_and_report(log, policy, tuple(estimator), out, clip=clip, confidence=confidence,
                                                bootstrap=bootstrap, seed=seed)
    table = Table(title=f"off-policy estimates from {log.name}")
    for column in ("policy", "estimator", "value", "CI", "ESS", "rounds"):
        table.add_column(column, justify="right")
    for name, results in estimates.items():
        for e in results:
            table.add_row(name, e.estimator, f"{e.value:.4f}", f"[{e.ci_low:.4f}, {e.ci_high:.4f}]",
                          f"{e.effective_sample_size:,.0f}", f"{e.rounds:,}")
    console.print(table)
    main_estimator = "dr" if "dr" in estimator else estimator[0]
    ranking = sorted(estimates, key=lambda n: -next(e.value for e in estimates[n] if e.estimator == main_estimator))
    console.print(f"ranking by {main_estimator}: " + " > ".join(ranking), soft_wrap=True)
    console.print(f"report: {paths.html}", soft_wrap=True)
