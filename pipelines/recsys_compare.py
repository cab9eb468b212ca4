"""``regkit recsys compare``: tune and train a list of configs on one split, and test each against the best baseline.

For each config (named by its file's stem): optionally ``regkit recsys tune`` with the model's default space
(``<out>/tune/<name>``, the same number of trials for every model), then ``regkit recsys train`` of the best config
(``<out>/runs/<name>``: validation, refit, test lists). Every run must have the same split (same split fingerprint).

The *best baseline* is the closed-form model (most popular, EASE, ItemKNN, ALS) with the best **validation** value of
the monitored metric, so the test split chooses nothing. Each other run is compared with it on the test users,
paired per user (:func:`pipelines.evaluation.ab.compare_runs`, what ``regkit ab compare`` runs: bootstrap interval of
the mean difference, paired randomization test, Holm over the metrics of one comparison).

Each step is its own run folder with completion markers: rerunning the command after a crash reuses every finished
step of the same config and resumes the unfinished one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from common_regs.run_dir import config_sha256, read_success_marker
from pipelines.evaluation.ab import compare_runs
from pipelines.evaluation.qrels import load_qrels
from pipelines.recsys_data import input_files
from pipelines.recsys_run import train_run
from pipelines.recsys_split import TEST_QRELS, TEST_RUN
from pipelines.recsys_tune import default_space, load_search_space, search_identity, tune
from pipelines.report import Report, bar_plot
from pipelines.run_config import RecsysRunConfig, recsys_config
from pipelines.run_guard import guarded_run_dir
from recsys.models import MODELS
from retrieval.runs import read_trec_run

logger = logging.getLogger(__name__)

__all__ = ["compare_configs"]


def _step(folder: Path, identity: Mapping[str, Any], inputs: Sequence[Path], work: Callable[[], None], *,
          overwrite: bool, job: str) -> None:
    """Run ``work`` in the guarded ``folder`` unless the folder already finished the same work."""
    done = read_success_marker(folder)
    if done is not None and done.get("config_sha256") == config_sha256(identity):
        logger.info("%s: finished earlier with the same config, reused", folder)
        return
    with guarded_run_dir(folder, config=identity, inputs=inputs, overwrite=overwrite, extra={"job": job}):
        work()


def _tuned_config(name: str, config: RecsysRunConfig, out: Path, trials: int, seed: int,
                  overwrite: bool) -> tuple[RecsysRunConfig, float]:
    """The best config of ``trials`` trials of the model's default space, and the seconds the trials took."""
    space_path = default_space(config.model.name)
    space = load_search_space(space_path)
    folder = out / "tune" / name
    identity = {**search_identity(config, space, metric=None, seed=seed), "trials": trials}
    _step(folder, identity, [*input_files(config), space_path],
          lambda: tune(config, space, folder, trials=trials, seed=seed, space_file=str(space_path)),
          overwrite=overwrite, job="recsys tune")
    best = recsys_config(yaml.safe_load((folder / "best_config.yaml").read_text(encoding="utf-8")))
    records = json.loads((folder / "trials.json").read_text(encoding="utf-8"))
    return best, sum(record["seconds"] or 0.0 for record in records)


def compare_configs(
    configs: Mapping[str, RecsysRunConfig],
    out: str | Path,
    *,
    trials: int = 0,
    metrics: Sequence[str] = ("R@20", "nDCG@20"),
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Tune (when ``trials`` > 0), train and test every config on one split; write the table into ``out``.

    Returns (and writes into ``metrics.json`` beside ``report.md``) one row per config, best first by the test value
    of the first metric, with the paired comparison against the best baseline.
    """
    out = Path(out)
    rows: dict[str, dict[str, Any]] = {}
    for name, config in configs.items():
        tuning_seconds = 0.0
        if trials:
            config, tuning_seconds = _tuned_config(name, config, out, trials, seed, overwrite)
        run_dir = out / "runs" / name
        config = config.model_copy(update={"output_dir": str(run_dir)})
        _step(run_dir, config.identity(), input_files(config),
              lambda config=config, run_dir=run_dir: train_run(config, output_dir=run_dir, overwrite=overwrite),
              overwrite=overwrite, job="recsys train")
        report = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
        monitor = config.train.monitor
        rows[name] = {
            "name": name,
            "model": config.model.name,
            "baseline": MODELS[config.model.name].closed_form,
            "split_fingerprint": report.get("split_fingerprint"),
            f"validation {monitor}": report.get("validation", {}).get("metrics", {}).get(monitor),
            **{metric: report["test"].get(metric) for metric in metrics},
            "tuning_seconds": tuning_seconds,
            "run_seconds": report.get("total_seconds"),
            "time_to_result_seconds": tuning_seconds + (report.get("total_seconds") or 0.0),
            "run_dir": str(run_dir),
        }
    fingerprints = {json.dumps(row["split_fingerprint"], sort_keys=True) for row in rows.values()}
    if len(fingerprints) != 1 or "null" in fingerprints:
        raise ValueError("the configs do not share one split (split fingerprints "
                         f"{ {name: row['split_fingerprint'] for name, row in rows.items()} }); compare runs on the "
                         "same data and split.")
    baseline = _best_baseline(rows, configs)
    if baseline is not None:
        _add_comparisons(rows, baseline, out, metrics, seed)
    ordered = sorted(rows.values(), key=lambda row: -(row[metrics[0]] or 0.0))
    summary = {"metrics": list(metrics), "trials_per_model": trials, "best_baseline": baseline, "rows": ordered}
    _write_report(summary, out, seed)
    return summary


def _best_baseline(rows: Mapping[str, dict[str, Any]], configs: Mapping[str, RecsysRunConfig]) -> str | None:
    """The baseline with the best validation value of its monitored metric (None when no config is a baseline)."""
    baselines = {name: row for name, row in rows.items() if row["baseline"]}
    if not baselines:
        logger.warning("no baseline among the configs (most_popular / ease / item_knn / als): no comparison")
        return None

    def validation(name: str) -> float:
        value = baselines[name][f"validation {configs[name].train.monitor}"]
        if value is None:
            raise ValueError(f"baseline {name!r} has no validation metrics: the best baseline is chosen on "
                             "validation (set data.validation).")
        return value

    return max(baselines, key=validation)


def _add_comparisons(rows: dict[str, dict[str, Any]], baseline: str, out: Path, metrics: Sequence[str],
                     seed: int) -> None:
    base_dir = Path(rows[baseline]["run_dir"])
    qrels = load_qrels(base_dir / TEST_QRELS)
    reference = read_trec_run(base_dir / TEST_RUN)
    for name, row in rows.items():
        if name == baseline:
            continue
        comparisons = compare_runs(qrels, reference, read_trec_run(Path(row["run_dir"]) / TEST_RUN), metrics,
                                   seed=seed)
        for comparison in comparisons:
            row[f"Δ {comparison.metric} vs {baseline}"] = comparison.mean_difference
            row[f"CI {comparison.metric}"] = [comparison.ci_low, comparison.ci_high]
            row[f"p {comparison.metric}"] = comparison.p_value
        row["verdict"] = "; ".join(c.verdict(baseline, name) for c in comparisons)


def _write_report(summary: Mapping[str, Any], out: Path, seed: int) -> None:
    metrics = summary["metrics"]
    page = Report("Recommender comparison on one split")
    baseline = summary["best_baseline"]
    page.text(f"Best baseline (chosen on validation): {baseline}. Differences are model − baseline on the test users, "
              "95 % paired bootstrap intervals, paired randomization p-values Holm-adjusted over the metrics.")
    shown = [{k: v for k, v in row.items() if k not in ("run_dir", "split_fingerprint", "verdict")}
             for row in summary["rows"]]
    page.table(shown, caption="test metrics, tuning and run time per config")
    page.figure(bar_plot({row["name"]: {m: row[m] for m in metrics} for row in summary["rows"]},
                         ylabel="test value", title="test metrics"), caption="test metrics per config")
    for row in summary["rows"]:
        if row.get("verdict"):
            page.text(row["verdict"])
    page.write(out, metrics=dict(summary), config={"trials_per_model": summary["trials_per_model"]}, seed=seed)
