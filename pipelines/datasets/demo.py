"""The bundled demo data: a small interaction log and a small BEIR corpus with planted structure.

Both are generated from a seed, so ``make demo`` and the tests run on data whose ground truth is known:

* recommendations: users belong to taste clusters, each cluster prefers a few genres; items have
  1–3 genres, a decade and a Zipf popularity; interactions are drawn from the user's preferred genres
  (80%) or the popular items (20%), with increasing timestamps.
* retrieval: documents are written about one of several topics, each topic owning its own words over
  a shared background vocabulary; a query uses a few words of one topic, and every document on that
  topic is relevant (grade 2 when it contains all query words, else 1).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from common_regs.io import atomic_dir

logger = logging.getLogger(__name__)

__all__ = ["DemoSpec", "write_demo_data"]

GENRES = ("action", "comedy", "drama", "horror", "romance", "scifi", "documentary", "animation")
_SYLLABLES = ("ka", "lo", "mi", "ru", "te", "va", "zo", "ne", "pi", "sa", "do", "fe", "gu", "ha", "ji", "bo")


@dataclass(frozen=True)
class DemoSpec:
    seed: int = 7
    users: int = 600
    items: int = 400
    clusters: int = 6
    interactions_per_user: tuple[int, int] = (20, 80)
    topics: int = 30
    docs_per_topic: int = 10
    queries_per_topic: int = 2


def _words(rng: np.random.Generator, count: int, taken: set[str]) -> list[str]:
    words: list[str] = []
    while len(words) < count:
        word = "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4))))
        if word not in taken:
            taken.add(word)
            words.append(word)
    return words


def _recsys_tables(spec: DemoSpec, rng: np.random.Generator) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    item_genres = [sorted(rng.choice(len(GENRES), size=int(rng.integers(1, 4)), replace=False)) for _ in range(spec.items)]
    popularity = 1.0 / np.arange(1, spec.items + 1) ** 0.8
    popularity = rng.permutation(popularity / popularity.sum())
    cluster_genres = [rng.choice(len(GENRES), size=2, replace=False) for _ in range(spec.clusters)]
    user_cluster = rng.integers(0, spec.clusters, size=spec.users)
    rows = []
    clock = 1_600_000_000
    for user in range(spec.users):
        liked = set(cluster_genres[user_cluster[user]].tolist())
        affinity = np.array([len(liked.intersection(g)) for g in item_genres], dtype=float)
        preferred = popularity * affinity
        preferred /= preferred.sum()
        count = int(rng.integers(*spec.interactions_per_user))
        from_taste = rng.random(count) < 0.8
        draws = np.where(from_taste, rng.choice(spec.items, size=count, p=preferred),
                         rng.choice(spec.items, size=count, p=popularity))
        seen: set[int] = set()
        for item in draws.tolist():
            if item in seen:
                continue
            seen.add(item)
            clock += int(rng.integers(1, 600))
            rating = float(rng.integers(3, 6) if affinity[item] else rng.integers(1, 4))
            rows.append((user + 1, item + 1, clock, rating))
    interactions = pl.DataFrame(
        rows, schema={"user_id": pl.Int64, "item_id": pl.Int64, "timestamp": pl.Int64, "rating": pl.Float64},
        orient="row",
    ).sort("user_id", "timestamp")
    items = pl.DataFrame({
        "item_id": np.arange(1, spec.items + 1),
        "title": [f"demo item {i}" for i in range(1, spec.items + 1)],
        "year": rng.integers(1950, 2025, size=spec.items).astype(np.int32),
        "genres": [[GENRES[g] for g in genres] for genres in item_genres],
    })
    users = pl.DataFrame({
        "user_id": np.arange(1, spec.users + 1),
        "age_bucket": rng.choice(["18-24", "25-34", "35-44", "45-49", "50-55"], size=spec.users),
        "gender": rng.choice(["F", "M"], size=spec.users),
        "taste_cluster": [f"c{c}" for c in user_cluster],
    })
    return interactions, items, users


def _beir_files(spec: DemoSpec, rng: np.random.Generator) -> tuple[list[dict], list[dict], list[tuple[str, str, int]]]:
    taken: set[str] = set()
    background = _words(rng, 120, taken)
    topic_words = [_words(rng, 12, taken) for _ in range(spec.topics)]
    corpus, queries, qrels = [], [], []
    for topic, words in enumerate(topic_words):
        doc_ids = []
        for index in range(spec.docs_per_topic):
            own = rng.choice(words, size=int(rng.integers(6, 14)))
            noise = rng.choice(background, size=int(rng.integers(15, 35)))
            tokens = rng.permutation(np.concatenate([own, noise])).tolist()
            doc_id = f"d{topic:02d}{index:02d}"
            doc_ids.append((doc_id, set(tokens)))
            corpus.append({"_id": doc_id, "title": f"{words[0]} {words[1]}", "text": " ".join(tokens)})
        for index in range(spec.queries_per_topic):
            query_terms = rng.choice(words, size=int(rng.integers(2, 4)), replace=False).tolist()
            query_id = f"q{topic:02d}{index}"
            queries.append({"_id": query_id, "text": " ".join(query_terms)})
            for doc_id, tokens in doc_ids:
                qrels.append((query_id, doc_id, 2 if set(query_terms) <= tokens else 1))
    return corpus, queries, qrels


def write_demo_data(out: str | Path, spec: DemoSpec = DemoSpec(), *, overwrite: bool = False) -> Path:
    """Write ``out/recsys/{interactions,items,users}.parquet`` and ``out/beir/`` (BEIR layout)."""
    out = Path(out)
    rng = np.random.default_rng(spec.seed)
    interactions, items, users = _recsys_tables(spec, rng)
    corpus, queries, qrels = _beir_files(spec, rng)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        (tmp / "recsys").mkdir()
        interactions.write_parquet(tmp / "recsys" / "interactions.parquet", statistics=False)
        items.write_parquet(tmp / "recsys" / "items.parquet", statistics=False)
        users.write_parquet(tmp / "recsys" / "users.parquet", statistics=False)
        beir = tmp / "beir"
        (beir / "qrels").mkdir(parents=True)
        (beir / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
        (beir / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
        (beir / "qrels" / "test.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels)
        )
        (tmp / "spec.json").write_text(json.dumps(spec.__dict__, indent=2) + "\n")
    logger.info("wrote demo data to %s", out)
    return out
