"""The bundled demo data is exactly what its generator writes, is valid input, and has its documented structure."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from pipelines.datasets.demo import GENRES, DemoSpec, generate_demo, write_demo_data
from recsys.data import validate_log
from retrieval.beir import load_beir


def test_committed_demo_data_matches_generator(demo_data, tmp_path):
    fresh = write_demo_data(tmp_path / "demo", DemoSpec())
    for name in ("interactions", "items", "users"):
        committed = pl.read_parquet(demo_data / "recsys" / f"{name}.parquet")
        assert committed.equals(pl.read_parquet(fresh / "recsys" / f"{name}.parquet")), name
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv", "qrels/train.tsv"):
        assert (demo_data / "beir" / name).read_text() == (fresh / "beir" / name).read_text(), name
    assert json.loads((demo_data / "spec.json").read_text()) == json.loads((fresh / "spec.json").read_text())


def test_demo_log_is_valid_long_tailed_and_taste_driven():
    spec = DemoSpec()
    tables, _, truth = generate_demo(spec)
    log = tables["interactions"]
    assert log.columns == ["user_id", "item_id", "timestamp", "rating"]
    assert not log.select("user_id", "item_id").is_duplicated().any()
    assert log["user_id"].n_unique() == spec.users
    # power-law popularity: the top 20% of items take most interactions, and counts follow pop_i
    counts = np.bincount(log["item_id"].to_numpy() - 1, minlength=spec.items)
    ordered = np.sort(counts)[::-1]
    assert ordered[: spec.items // 5].sum() / ordered.sum() > 0.5
    assert np.corrcoef(np.log(truth.item_popularity), np.log1p(counts))[0, 1] > 0.6
    # users concentrate on their own tastes: the share of a user's items with their dominant taste is far above
    # the 1/K a taste-blind user would get
    taste_of = truth.item_taste[log["item_id"].to_numpy() - 1]
    dominant = truth.user_tastes.argmax(1)[log["user_id"].to_numpy() - 1]
    assert float(np.mean(taste_of == dominant)) > 2.5 / spec.tastes


def test_demo_item_features_carry_the_latent_taste():
    spec = DemoSpec()
    tables, _, truth = generate_demo(spec)
    items = tables["items"]
    studio_taste = np.array([int(s.removeprefix("studio")) // 2 for s in items["studio"].to_list()])
    primary_in_genres = np.array([GENRES[t] in g for t, g in zip(truth.item_taste, items["genres"].to_list(),
                                                                   strict=True)])
    # faithful draws (prob 0.85) plus chance hits: well above what independent features would give
    assert np.mean(studio_taste == truth.item_taste) > spec.feature_fidelity - 0.07
    assert np.mean(primary_in_genres) > spec.feature_fidelity - 0.07
    decade_offset = ((items["year"].to_numpy() // 10 * 10 - 1960) // 10 - truth.item_taste) % 6
    assert set(decade_offset.tolist()) <= {0, 1} and 0.6 < np.mean(decade_offset == 0) < 0.8
    # so studio and the primary genre share information: a studio's most common taste explains most of its items
    agreement = pl.DataFrame({"studio": items["studio"], "taste": truth.item_taste}).group_by("studio").agg(
        pl.col("taste").mode().first().alias("mode"), pl.len().alias("n"),
        (pl.col("taste") == pl.col("taste").mode().first()).sum().alias("hits"))
    assert agreement["hits"].sum() / agreement["n"].sum() > 0.8


def test_demo_corpus_has_planted_relevance(demo_data):
    spec = DemoSpec()
    _, _, truth = generate_demo(spec)
    test = load_beir(demo_data / "beir", split="test")
    train = load_beir(demo_data / "beir", split="train")
    assert len(test.corpus) == spec.topics * spec.docs_per_topic
    assert len(test.qrels) == spec.topics * spec.queries_per_topic
    assert len(train.qrels) == spec.topics * spec.train_queries_per_topic
    assert not set(test.qrels) & set(train.qrels)
    for dataset in (test, train):
        for qid, judged in dataset.qrels.items():
            topic = truth.query_topic[qid]
            assert set(judged) == {d for d, t in truth.doc_topic.items() if t == topic}
            words = set(dataset.queries[qid].split())
            for doc_id, grade in judged.items():
                doc = dataset.corpus[doc_id]
                assert grade == (2 if words <= set(f"{doc.title} {doc.text}".split()) else 1)
    assert validate_log(demo_data / "recsys" / "interactions.parquet").duplicate_rows == 0


@pytest.mark.parametrize(("field", "value", "message"), [
    ("topics", 99, "`topics` must be <= 24"),
    ("interactions_per_user", (5, 5), "`interactions_per_user`"),
    ("feature_fidelity", 1.5, "`feature_fidelity` must be in"),
])
def test_demo_spec_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        DemoSpec(**{field: value})
