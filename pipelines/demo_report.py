"""Step 5 of the demo: one report (``report.md`` + self-contained ``report.html`` + ``metrics.json``) of the run.

Built with :class:`pipelines.report.Report`: the data counts, the recommender table with training curves,
head/tail bars and the item-feature MI heatmap that CFM uses, the retrieval table with the sparse model's training
curves and example queries, the A/B tables with per-query difference histograms, and where every output is.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.demo_outcome import DemoOutcome
from pipelines.demo_recsys import metric_rows
from pipelines.report import Report, ReportPaths, bar_plot, histogram_plot, line_plot
from pipelines.run_config import DemoConfig

logger = logging.getLogger(__name__)

__all__ = ["write_demo_report"]


def _recsys_section(report: Report, recsys: Mapping[str, Any], examples: Sequence[Mapping[str, Any]],
                    config: DemoConfig) -> None:
    monitor = "R@20"
    report.heading("Recommendation")
    report.text("Per-user random hold-out (20% of each user's interactions are test items); every model early-stops "
                "on a validation split of the training side and serves its best epoch from a flat FAISS index. "
                "Metrics rank the whole catalogue with each user's training items excluded (trec_eval's recall and "
                "nDCG through ir-measures). Head = the 20% most popular items in training; a slice keeps each "
                "user's test items in the slice. non-zero = share of non-zero parameters.")
    report.table(metric_rows(recsys), caption="test metrics per model")
    curves = {name: entry["history"] for name, entry in recsys.items() if entry["history"]}
    if curves:
        report.figure(line_plot({name: ([h["epoch"] for h in hist if monitor in h], [h[monitor] for h in hist
                                                                                      if monitor in h])
                                 for name, hist in curves.items()},
                                xlabel="epoch", ylabel=f"validation {monitor}", title="validation recall by epoch"),
                      caption=f"training curves: validation {monitor} after each epoch")
        report.figure(line_plot({name: ([h["epoch"] for h in hist], [h["loss/total"] for h in hist])
                                 for name, hist in curves.items()},
                                xlabel="epoch", ylabel="mean training loss", title="training loss by epoch"),
                      caption="training curves: mean loss per epoch (softmax + α·SSL for the two-towers, BPR for MF)")
    slices = {label: {name: entry["test"].get(f"{prefix}R@20", 0.0) for name, entry in recsys.items()}
              for label, prefix in (("all items", ""), ("head", "head/"), ("tail", "tail/"))}
    report.figure(bar_plot(slices, ylabel="test R@20", title="head / tail slices"),
                  caption="test Recall@20 overall and on the head / tail item slices")
    for name, entry in recsys.items():
        if entry.get("ssl_mi"):
            from pipelines.recsys_ssl import mi_heatmap
            from recsys.feature_mi import MIMatrix

            features = tuple(entry["ssl_mi"])
            values = np.array([[entry["ssl_mi"][a][b] for b in features] for a in features])
            report.figure(mi_heatmap(MIMatrix(features, values, entry.get("ssl_mi_weighting") or "catalogue", "")),
                          caption=f"item-feature mutual information used by CFM ({name}): the latent taste links "
                                  "genres, studio and year")
            break
    if examples:
        report.table(examples, caption=f"top-{config.recsys.top_k} recommendations for the shown users "
                                       "(✓ = a held-out test item)")


def _retrieval_section(report: Report, retrieval: Mapping[str, Any], log: Sequence[Mapping[str, float]],
                       examples: Sequence[Mapping[str, Any]], measures: Sequence[str]) -> None:
    report.heading("Retrieval")
    training = retrieval["sparse_training"]
    index = retrieval["sparse_index"]
    report.text("BM25: Lucene flat index (k1=0.9, b=0.4) through Pyserini. Sparse: an inference-free learned sparse "
                f"retriever (IDF query weights, SPLADE-max document side) trained for {training['steps']} steps on "
                "the corpus's train queries by distillation from a BM25 + all-MiniLM-L6-v2 ensemble with the "
                "IDF-aware FLOPS penalty, encoded into a Lucene impact index. Test split, BEIR conventions.")
    rows = [{"retriever": name, **{m: retrieval[name][m] for m in measures}} for name in ("bm25", "sparse")]
    rows[1]["active terms / doc"] = index.get("avg_active_terms_indexed", float("nan"))
    report.table(rows, caption="BEIR-style metrics on the demo corpus (test split)")
    if log:
        steps = [entry["step"] for entry in log]
        series = {key: (steps, [entry.get(key, float("nan")) for entry in log])
                  for key in ("distill_loss", "infonce", "margin_mse") if key in log[0]}
        series["loss (total)"] = (steps, [entry["loss"] for entry in log])
        report.figure(line_plot(series, xlabel="step", ylabel="loss", title="sparse model training loss"),
                      caption="sparse retriever training: ranking loss and total loss (with λ·FLOPS) per step")
        key = "reg/idf_aware_flops/nnz"
        if key in log[0]:
            report.figure(line_plot({"active terms": (steps, [entry[key] for entry in log])}, xlabel="step",
                                    ylabel="active terms per document", title="document sparsity during training"),
                          caption="mean active vocabulary terms per training document (FLOPS drives it down)")
    if examples:
        report.table(examples, caption="top-5 documents of the shown test queries (grade 2 = contains every query "
                                       "word, 1 = same topic, 0 = not relevant)")


def _ab_section(report: Report, ab: Sequence[Mapping[str, Any]], deltas: Mapping[str, Sequence[float]]) -> None:
    report.heading("Offline A/B")
    report.text("Paired comparisons of B against A on the same queries (users for recommendation): differences are "
                "B − A, percentile-bootstrap intervals, randomization-test p-values Holm-adjusted across metrics.")
    for result in ab:
        rows = [{k: v for k, v in c.items() if k not in ("confidence",)} for c in result["comparisons"]]
        report.table(rows, caption=f"{result['domain']}: {result['b']} (B) vs {result['a']} (A)")
        report.text(" · ".join(result["verdicts"]) + f" — reproduce: `{result['command']}`")
    for title, values in deltas.items():
        report.figure(histogram_plot(values, xlabel="B − A per query", title=title),
                      caption=f"per-query differences, {title}")


def write_demo_report(out: str | os.PathLike[str], config: DemoConfig, outcome: DemoOutcome, *,
                      inputs: Sequence[str | os.PathLike[str]] = ()) -> ReportPaths:
    """Write the demo report into ``out``; returns the paths (``report.html`` is what the CLI prints)."""
    metrics = outcome.metrics
    report = Report("regkit demo: recommendation and retrieval on the bundled data")
    report.text("Generated by `regkit demo` (`make demo`). Every number below was measured in this run; the "
                "configuration, versions and input fingerprints are at the end.")
    report.table([{"step": step, "seconds": f"{seconds:.1f}"} for step, seconds in metrics["timings_s"].items()],
                 caption="wall-clock time per step")
    report.heading("Data")
    report.text("Generated by `pipelines/datasets/demo.py` (docs/demo.md describes the generative process): latent "
                "item tastes, Zipf popularity, item features (genres, studio, year) correlated with the latent "
                "taste, and a themed corpus with planted graded relevance.")
    report.table([{"field": k, "value": v} for k, v in metrics["data"].items()], caption="validated inputs")
    _recsys_section(report, metrics["recsys"], outcome.examples.get("recommendations", []), config)
    _retrieval_section(report, metrics["retrieval"], outcome.figures.get("sparse_log", []),
                       outcome.examples.get("queries", []), config.retrieval.measures)
    _ab_section(report, metrics.get("ab", []), outcome.figures.get("deltas", {}))
    report.heading("Outputs")
    out = Path(out)
    report.table([
        {"what": "recommenders (model/, metrics.json, resolved_config.yaml, test.run)", "where": str(out / "recsys")},
        {"what": "retrieval runs, indexes, sparse model", "where": str(out / "retrieval")},
        {"what": "A/B comparisons", "where": str(out / "ab" / "comparisons.json")},
        {"what": "resolved demo config", "where": str(out / "resolved_config.yaml")},
    ])
    return report.write(out, metrics=metrics, config=config.to_dict(), inputs=inputs, seed=config.seed)
