"""Smoke test of ``regkit demo`` at tiny sizes (pipelines/configs/demo_tiny.yaml): every step runs, and the numbers
in the report are the ones an independent recomputation from the written run files gives."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest
import torch

from pipelines.cli import main
from pipelines.demo import load_demo_config
from pipelines.evaluation.metrics import evaluate
from pipelines.evaluation.qrels import load_qrels
from recsys.serving import Recommender
from retrieval.runs import read_trec_run

TINY = Path(__file__).resolve().parents[2] / "pipelines" / "configs" / "demo_tiny.yaml"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = main(["--log-level", "WARNING", "demo", "--config", str(TINY), "--out", str(out)])
    assert status == 0, printed.getvalue()[-3000:]
    return out, printed.getvalue()


def test_demo_writes_one_report_and_prints_its_path(demo_run):
    out, printed = demo_run
    html = out / "report.html"
    assert f"report: {html.resolve()}" in printed.replace("\n", "")
    for step in ("1. data", "2. recommendation", "3. retrieval", "4. offline A/B", "5. report"):
        assert step in printed
    page = html.read_text()
    figures = re.findall(r"<img alt='([^']*)' src='data:image/png;base64,", page)
    captions = " ".join(figures)
    for expected in ("validation R@20", "head / tail", "mutual information", "sparse retriever training",
                     "per-query differences"):
        assert expected in captions, expected
    assert (out / "report.md").read_text().count("](figures/figure") == len(figures)
    assert all((out / "figures" / f"figure{i + 1}.png").stat().st_size > 1000 for i in range(len(figures)))


def test_recsys_metrics_match_an_independent_evaluation_of_the_written_runs(demo_run):
    out, _ = demo_run
    metrics = json.loads((out / "metrics.json").read_text())
    qrels = load_qrels(out / "recsys" / "test_qrels.tsv")
    assert set(metrics["recsys"]) == {"two_tower", "two_tower_cfm", "mf_dsl"}
    for name, entry in metrics["recsys"].items():
        run = read_trec_run(out / "recsys" / name / "test.run")
        assert all(len(items) == 20 for items in run.values())
        again = evaluate(qrels, run, ["R@20", "nDCG@20"]).aggregate
        assert again["R@20"] == pytest.approx(entry["test"]["R@20"], abs=1e-9)
        assert again["nDCG@20"] == pytest.approx(entry["test"]["nDCG@20"], abs=1e-9)
        assert {"head/R@20", "tail/R@20"} <= set(entry["test"])
    assert metrics["recsys"]["two_tower_cfm"]["ssl_mi"]["genres"]["studio"] > 0  # CFM's MI matrix was computed


def test_dsl_model_is_served_within_its_parameter_budget(demo_run):
    out, _ = demo_run
    model = Recommender.load(out / "recsys" / "mf_dsl" / "model").model
    for table in (model.user_table.weight, model.item_table.weight):
        assert int(torch.count_nonzero(table)) <= round(0.25 * table.numel())


def test_retrieval_and_ab_numbers_are_consistent_with_the_runs(demo_run):
    out, _ = demo_run
    metrics = json.loads((out / "metrics.json").read_text())
    qrels = load_qrels(out / "data" / "beir" / "qrels" / "test.tsv")
    runs = {name: read_trec_run(out / "retrieval" / name / "run.trec") for name in ("bm25", "sparse")}
    for name, run in runs.items():
        again = evaluate(qrels, run, ["nDCG@10"]).aggregate["nDCG@10"]
        assert again == pytest.approx(metrics["retrieval"][name]["nDCG@10"], abs=1e-9)
    assert 0 < metrics["retrieval"]["sparse_index"]["avg_active_terms_indexed"] < 30522  # sparse, not dense
    assert (out / "retrieval" / "sparse" / "impact-index" / "regkit-index.json").is_file()
    domains = {result["domain"]: result for result in metrics["ab"]}
    retrieval = domains["retrieval"]["comparisons"][0]
    assert retrieval["metric"] == "nDCG@10"
    assert retrieval["mean_a"] == pytest.approx(metrics["retrieval"]["bm25"]["nDCG@10"], abs=1e-9)
    assert retrieval["mean_b"] == pytest.approx(metrics["retrieval"]["sparse"]["nDCG@10"], abs=1e-9)
    recsys = domains["recommendation"]["comparisons"][0]
    assert recsys["mean_a"] == pytest.approx(metrics["recsys"]["two_tower"]["test"]["R@20"], abs=1e-9)
    assert recsys["wins"] + recsys["ties"] + recsys["losses"] == recsys["queries"]
    assert "regkit ab compare" in domains["recommendation"]["command"]


def test_demo_config_overrides_and_errors(tmp_path, capsys):
    config = load_demo_config(TINY, ["recsys.models.mf_dsl=null", "retrieval.sparse.steps=7"])
    assert config.recsys.models["mf_dsl"] is None and config.retrieval.sparse.steps == 7
    assert config.recsys.models["two_tower"].train.epochs == 2  # tiny file merged over the defaults
    assert config.recsys.models["two_tower"].model.name == "two_tower"
    for args, message in (
        (["--set", "recsys.ab=[[two_tower, nope]]"], "`recsys.ab` names ['nope']"),
        (["--set", "colour=blue"], "--set colour=blue: unknown key `colour`"),
        (["--set", "data.generate.userz=3"], "unknown key `data.generate.userz` (did you mean `users`?)"),
        (["--config", str(tmp_path / "missing.yaml")], "missing.yaml not found"),
    ):
        assert main(["demo", "--out", str(tmp_path / "never"), *args]) == 2
        error = capsys.readouterr().err.strip()
        assert error.startswith("regkit: error:") and message in error and "\n" not in error
    assert not (tmp_path / "never").exists()
