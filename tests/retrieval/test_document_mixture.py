"""The document mixture (retrieval/document_mixture.py) and its fit (retrieval/mixture_fit.py).

References: rank_bm25's Okapi BM25 and Lucene's BM25 index for the lexical part, brute-force cosine neighbours,
planted weights for the fit.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from rank_bm25 import BM25Okapi
from transformers import AutoTokenizer

from retrieval.beir import Document
from retrieval.document_mixture import (
    LEXICAL_PREFIX,
    MIXTURE_FILE,
    DocumentMixture,
    analyzed_counts,
    document_wordpieces,
    lexical_idf,
    lexical_query_weights,
    lexical_vectors,
    lucene_analyzer,
    mixed_vectors,
    nearest_neighbours,
    neighbour_vectors,
)
from retrieval.encoder import default_backbone
from retrieval.index import build_bm25_index
from retrieval.mining import Bm25Scorer
from retrieval.mixture_fit import PairFeatures, choose_mixture, fit_weights, pair_features

TEXTS = {
    "a": "the cat sat on the mat with the cat",
    "b": "a dog chased the cat across the garden",
    "c": "stock markets fell sharply on monday morning",
    "d": "the garden dog slept on the warm mat",
}


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_backbone())


@pytest.fixture(scope="module")
def analyze():
    return lucene_analyzer()


@pytest.mark.parametrize(("k1", "b"), [(0.9, 0.4), (1.2, 0.75)])
def test_lexical_part_with_bm25_idf_is_okapi_bm25(analyze, k1: float, b: float) -> None:
    counts = analyzed_counts(TEXTS, analyze)
    lexical, average = lexical_vectors(counts, k1=k1, b=b)
    reference = BM25Okapi([analyze(TEXTS[d]) for d in TEXTS], k1=k1, b=b)
    assert average == pytest.approx(reference.avgdl)
    for query in (["cat", "mat"], ["dog", "garden"], ["market"]):
        expected = reference.get_scores(query)
        got = [sum(reference.idf[t] * lexical[d].get(LEXICAL_PREFIX + t, 0.0) for t in query) for d in TEXTS]
        np.testing.assert_allclose(got, expected, rtol=1e-9)


@pytest.mark.java
def test_zero_weight_mixture_ranks_as_lucene_bm25(analyze, tmp_path) -> None:
    """With every weight 0 the mixture is BM25: the same scores as Lucene's BM25 index up to Lucene's constant
    factor k1 + 1 and its lossy (one-byte) document lengths."""
    corpus = {d: Document(title="", text=t) for d, t in TEXTS.items()}
    build_bm25_index(corpus, tmp_path / "bm25", threads=1)
    scorer = Bm25Scorer(tmp_path / "bm25")
    counts = analyzed_counts(TEXTS, analyze)
    lexical, _ = lexical_vectors(counts, k1=0.9, b=0.4)
    vectors = mixed_vectors(DocumentMixture(), lexical)
    idf = lexical_idf(counts)
    for query in ("the cats on a mat", "dogs in gardens", "markets falling on monday", "cat cat"):
        weights = lexical_query_weights({"q": query}, analyze, idf)["q"]
        ours = [sum(w * vectors[d].get(t, 0.0) for t, w in weights.items()) / 1.9 for d in TEXTS]
        np.testing.assert_allclose(ours, scorer.score(query, list(TEXTS)), rtol=0.03, atol=1e-6)
    scorer.close()


def test_lexical_part_uses_the_given_average_length(analyze) -> None:
    own, _ = lexical_vectors(analyzed_counts({"x": "cat cat dog"}, analyze), k1=1.2, b=0.75, average_length=6.0)
    f, length = 2, 3  # "cat" twice in a 3-term document against an average of 6
    assert own["x"]["bm25:cat"] == pytest.approx(f * 2.2 / (f + 1.2 * (1 - 0.75 + 0.75 * length / 6.0)))


def test_nearest_neighbours_match_brute_force_and_exclude_self_and_sources() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(30, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    indices, weights = nearest_neighbours(emb, 4)
    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)
    for row in range(30):
        assert set(indices[row]) == set(np.argsort(-sims[row])[:4])
        assert row not in indices[row]
        clipped = np.clip(sims[row, indices[row]], 0, None)
        np.testing.assert_allclose(weights[row], clipped / clipped.sum(), rtol=1e-5)
    views = emb[:5] + 0.01 * rng.normal(size=(5, 8)).astype(np.float32)
    view_idx, _ = nearest_neighbours(emb, 3, queries=views, exclude=[0, 1, 2, 3, 4])
    assert all(source not in view_idx[i] for i, source in enumerate(range(5)))  # a view never meets its source


def test_neighbour_and_mixed_vectors_by_hand() -> None:
    lexical = [{"cat": 1.0, "mat": 2.0}, {"dog": 3.0}, {"cat": 0.5}]
    near = neighbour_vectors(lexical, np.array([[1, 2]]), np.array([[0.25, 0.75]]))
    assert near == [{"dog": 0.75, "cat": 0.375}]
    mixture = DocumentMixture(in_document=0.5, expansion=0.1, neighbours=2.0)
    mixed = mixed_vectors(mixture, {"d": lexical[0]}, {"d": {"cat": 4.0, "fur": 10.0}}, {"d": near[0]},
                          {"d": {"cat", "mat"}})
    assert mixed["d"] == pytest.approx({"cat": 1.0 + 0.5 * 4.0 + 2.0 * 0.375, "mat": 2.0, "fur": 0.1 * 10.0,
                                        "dog": 2.0 * 0.75})
    assert mixed_vectors(DocumentMixture(), {"d": lexical[0]}) == {"d": lexical[0]}  # all weights 0: BM25
    with pytest.raises(ValueError, match="expansion"):
        mixed_vectors(mixture, {"d": lexical[0]}, None, {"d": {}})


def test_document_wordpieces_are_the_tokenizers(tokenizer) -> None:
    assert document_wordpieces({"d": "Aerodynamic heating"}, tokenizer)["d"] == set(
        tokenizer.tokenize("Aerodynamic heating"))


def test_pair_features_split_own_and_expansion_terms() -> None:
    features = pair_features([{"bm25:cat": 2.0, "bm25:fur": 1.0}], [{"cat": 0.5, "fur": 1.0}], [["d"]],
                             {"d": {"bm25:cat": 1.5}}, {"d": {"cat": 4.0, "fur": 3.0}}, {"d": {"bm25:fur": 0.5}},
                             {"d": {"cat"}})
    np.testing.assert_allclose(features.values.numpy(), [[2.0 * 1.5, 0.5 * 4.0, 1.0 * 3.0, 1.0 * 0.5]])


def _planted(weights: list[float], queries: int = 120, candidates: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    values = torch.tensor(rng.gamma(2.0, 1.0, size=(queries * candidates, 4)))
    rows = torch.arange(queries).repeat_interleave(candidates)
    cols = torch.arange(candidates).repeat(queries)
    features = PairFeatures(values, rows, cols)
    teacher = 3.0 * features.scores(torch.tensor(weights, dtype=torch.float64), (queries, candidates))
    return features, teacher


def test_fit_recovers_planted_weights() -> None:
    planted = [0.3, 1.5, 0.05]
    features, teacher = _planted(planted)
    weights, scale = fit_weights(features, teacher, torch.arange(120), steps=1500)
    np.testing.assert_allclose(weights.numpy(), planted, rtol=0.05, atol=0.01)
    assert float(scale) == pytest.approx(3.0, rel=0.05)  # the teacher's sharpness goes to the scale, not the weights


def test_choose_mixture_keeps_bm25_when_the_other_parts_do_not_help() -> None:
    features, teacher = _planted([0.0, 0.0, 0.0], seed=1)
    mixture = choose_mixture({(0.9, 0.4): features}, teacher, neighbour_count=3)
    assert (mixture.in_document, mixture.expansion, mixture.neighbours) == (0.0, 0.0, 0.0)
    helped, teacher = _planted([0.2, 0.8, 0.4], seed=2)
    mixture = choose_mixture({(1.2, 0.75): helped}, teacher, neighbour_count=5)
    assert (mixture.k1, mixture.b, mixture.neighbour_count) == (1.2, 0.75, 5)
    assert mixture.expansion == pytest.approx(0.8, rel=0.1) and mixture.fit["held_out_kl"] < mixture.fit[
        "held_out_kl_bm25_only"]


def test_mixture_round_trips_and_refuses_bad_files(tmp_path) -> None:
    mixture = DocumentMixture(k1=1.2, b=0.75, in_document=0.1, expansion=0.3, neighbours=0.02, neighbour_count=5,
                              fit={"held_out_kl": 1.0})
    mixture.save(tmp_path)
    assert DocumentMixture.load(tmp_path) == mixture and DocumentMixture.load(tmp_path / "none") is None
    (tmp_path / MIXTURE_FILE).write_text(json.dumps({"k1": 1.2, "alpha": 3}))
    with pytest.raises(ValueError, match=MIXTURE_FILE):
        DocumentMixture.load(tmp_path)
    with pytest.raises(ValueError, match="`expansion` must be a finite number >= 0"):
        DocumentMixture(expansion=-0.1)
    with pytest.raises(ValueError, match="`b` must be in"):
        DocumentMixture(b=1.5)
