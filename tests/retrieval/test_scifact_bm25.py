"""Acceptance: BM25 flat on BEIR SciFact (test) reproduces Pyserini's regression numbers (trec_eval -c).

Published (Pyserini ``beir-v1.0.0-scifact.flat``, k1=0.9, b=0.4): nDCG@10 = 0.6789, R@100 = 0.9253.
The search keeps the top 100 (enough for both measures) to keep this test fast; ``make bench`` runs k=1000.
"""

from __future__ import annotations

import json

import pytest

from pipelines.evaluation.beir_eval import BeirEvalConfig, run_beir_eval
from pipelines.evaluation.metrics import evaluate
from retrieval.beir import load_beir
from retrieval.runs import read_trec_run

pytestmark = [pytest.mark.java, pytest.mark.shared_data]


def test_scifact_bm25_flat_matches_pyserini(scifact_dir, tmp_path):
    config = BeirEvalConfig(
        data=str(scifact_dir), out_dir=str(tmp_path / "out"), retriever="bm25", k=100, measures=["nDCG@10", "R@100"]
    )
    result = run_beir_eval(config)
    aggregate = result.evaluation.aggregate
    assert aggregate["nDCG@10"] == pytest.approx(0.6789, abs=0.001)
    assert aggregate["R@100"] == pytest.approx(0.9253, abs=0.001)

    saved = json.loads(result.metrics_path.read_text())
    assert saved["aggregate"] == aggregate and len(saved["per_query"]) == 300
    assert saved["dataset"]["documents"] == 5183 and saved["config"]["k1"] == 0.9
    assert (tmp_path / "out" / "resolved_config.yaml").is_file() and (tmp_path / "out" / "run.json").is_file()

    # the run file on disk evaluates to the same numbers (6-decimal scores, trec_eval order)
    from_file = evaluate(load_beir(scifact_dir).qrels, read_trec_run(result.run_path), ["nDCG@10", "R@100"])
    assert from_file.aggregate == pytest.approx(aggregate, abs=1e-4)
