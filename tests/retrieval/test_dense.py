"""Dense baseline: all-MiniLM-L6-v2 + FAISS flat inner product.

Fast tests use a six-document corpus and check FAISS against numpy dot products of embeddings computed directly
with sentence-transformers. The SciFact acceptance number (published 0.645) is a slow test (encoding 5,183
abstracts takes minutes on 2 cores); `make bench` reports it too.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.evaluation.metrics import evaluate
from retrieval.beir import Document, load_beir
from retrieval.dense import DenseIndex, DenseRetriever, default_model_path

CORPUS = {
    "cats": Document(title="Cats", text="Domestic cats purr and sleep most of the day."),
    "stocks": Document(title="Markets", text="Stock prices fell sharply as investors sold shares."),
    "rain": Document(title="", text="Heavy rain and thunderstorms are expected this weekend."),
    "python": Document(title="Programming", text="Python is a popular programming language."),
    "soccer": Document(title="Sports", text="The football team won the championship final."),
    "bread": Document(title="Baking", text="Knead the dough and let the bread rise before baking."),
}
QUERIES = {
    "q_cat": "why do kittens purr",
    "q_fin": "share market crash",
    "q_code": "learning to code in python",
    "q_empty": "  ",
}


@pytest.fixture(scope="module")
def retriever():
    return DenseRetriever(batch_size=4)


def test_faiss_matches_direct_dot_products(retriever):
    from sentence_transformers import SentenceTransformer

    index = retriever.build_index(CORPUS, show_progress=False)
    run = retriever.search(QUERIES, index, k=3, show_progress=False)
    assert run["q_empty"] == {}
    assert {q: max(docs, key=docs.get) for q, docs in run.items() if docs} == {
        "q_cat": "cats", "q_fin": "stocks", "q_code": "python",
    }
    model = SentenceTransformer(str(default_model_path()))
    docs = model.encode([f"{d.title} {d.text}".strip() for d in CORPUS.values()])
    docs = docs / np.linalg.norm(docs, axis=1, keepdims=True)
    for qid in ("q_cat", "q_fin", "q_code"):
        query = model.encode([QUERIES[qid]])[0]
        cosine = docs @ (query / np.linalg.norm(query))
        expected = dict(sorted(zip(CORPUS, cosine.tolist(), strict=True), key=lambda kv: -kv[1])[:3])
        assert run[qid].keys() == expected.keys()
        for doc, score in expected.items():
            assert run[qid][doc] == pytest.approx(score, abs=1e-5)


def test_save_load_and_errors(retriever, tmp_path):
    index = retriever.build_index(dict(list(CORPUS.items())[:3]), show_progress=False)
    saved = index.save(tmp_path / "dense", metadata={"model": retriever.model_name})
    loaded = DenseIndex.load(saved)
    assert loaded.doc_ids == index.doc_ids and len(loaded) == 3
    queries = retriever.encode(["purring cat"], show_progress=False)
    assert loaded.search(["q"], queries, 10)["q"] == pytest.approx(index.search(["q"], queries, 10)["q"])
    assert len(loaded.search(["q"], queries, 10)["q"]) == 3  # k larger than the corpus

    (saved / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(FileNotFoundError, match="corrupt dense index"):
        DenseIndex.load(saved)
    with pytest.raises(FileNotFoundError, match="not a dense index"):
        DenseIndex.load(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="`embeddings` must have shape"):
        DenseIndex(np.zeros((2, 4), dtype=np.float32), ["a"])
    with pytest.raises(ValueError, match="`k` must be an integer >= 1"):
        index.search(["q"], queries, 0)
    with pytest.raises(ValueError, match="`corpus` is empty"):
        retriever.build_index({})


@pytest.mark.slow
def test_scifact_minilm_ndcg(scifact_dir):
    dataset = load_beir(scifact_dir, split="test")
    retriever = DenseRetriever()
    run = retriever.search(dataset.split_queries, retriever.build_index(dataset.corpus), k=1000)
    metrics = evaluate(dataset.qrels, run, ["nDCG@10", "R@100"]).aggregate
    assert metrics["nDCG@10"] == pytest.approx(0.645, abs=0.003)
