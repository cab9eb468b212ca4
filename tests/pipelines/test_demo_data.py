"""The bundled demo data is exactly what its generator writes, and it is valid input for both domains."""

from __future__ import annotations

import polars as pl

from pipelines.datasets.demo import DemoSpec, write_demo_data
from recsys.data import validate_log
from retrieval.beir import load_beir


def test_committed_demo_data_matches_generator(demo_data, tmp_path):
    fresh = write_demo_data(tmp_path / "demo", DemoSpec())
    for name in ("interactions", "items", "users"):
        committed = pl.read_parquet(demo_data / "recsys" / f"{name}.parquet")
        assert committed.equals(pl.read_parquet(fresh / "recsys" / f"{name}.parquet")), name
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        assert (demo_data / "beir" / name).read_text() == (fresh / "beir" / name).read_text(), name


def test_demo_data_is_valid_and_has_planted_structure(demo_data):
    summary = validate_log(demo_data / "recsys" / "interactions.parquet")
    assert summary.users == DemoSpec().users and summary.duplicate_rows == 0
    dataset = load_beir(demo_data / "beir")
    spec = DemoSpec()
    assert len(dataset.corpus) == spec.topics * spec.docs_per_topic
    assert len(dataset.qrels) == spec.topics * spec.queries_per_topic
    # every relevant document shares the query's topic prefix
    assert all(doc[1:3] == qid[1:3] for qid, docs in dataset.qrels.items() for doc in docs)
