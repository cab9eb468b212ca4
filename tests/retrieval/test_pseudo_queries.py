"""Pseudo-queries from a corpus alone (:mod:`retrieval.pseudo_queries`): the inverse-cloze sentence is cut from its
document's training view, titles and top-IDF keywords, determinism, the minimum corpus size."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from retrieval.beir import Document
from retrieval.pseudo_queries import (
    MIN_DOCUMENTS,
    PseudoQueryConfig,
    document_words,
    generate_pseudo_queries,
    split_sentences,
)

TOPICS = ["aspirin", "statins", "insulin", "malaria", "vitamin", "kinase", "smoking", "asthma", "influenza", "obesity"]
WORDS = ["reduces", "increases", "patients", "clinical", "therapy", "risk", "trial", "cells", "dose", "outcome",
         "chronic", "disease", "receptor", "protein", "cohort", "mortality", "treatment", "response"]


def corpus(n: int = 30, seed: int = 1) -> dict[str, Document]:
    rng = random.Random(seed)
    docs = {}
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        sentences = [" ".join([topic.capitalize(), *rng.sample(WORDS, rng.randint(6, 10))]) + "."
                     for _ in range(rng.randint(2, 4))]
        docs[f"d{i}"] = Document(title=f"{topic} study {i}" if i % 3 else "", text=" ".join(sentences))
    return docs


def test_ict_sentence_is_cut_from_its_document_view() -> None:
    docs = corpus()
    config = PseudoQueryConfig(count=30, mix={"ict": 1.0}, remove_from_document=True)
    generated = generate_pseudo_queries(docs, config, seed=0)
    assert generated.queries and set(generated.kinds.values()) == {"ict"}
    for qid, text in generated.queries.items():
        source = docs[generated.positives[qid][0]]
        view = generated.views[qid]
        sentences = split_sentences(source.text)
        assert text in sentences
        assert text not in view.text and view.title == source.title
        assert split_sentences(view.text) == [s for s in sentences if s != text]  # only that sentence is gone


def test_title_queries_and_views_without_the_title() -> None:
    docs = corpus()
    config = PseudoQueryConfig(count=30, mix={"title": 1.0}, remove_from_document=True)
    generated = generate_pseudo_queries(docs, config, seed=0)
    assert len(generated.queries) == sum(1 for d in docs.values() if d.title)  # untitled documents give none
    for qid, text in generated.queries.items():
        source = docs[generated.positives[qid][0]]
        assert text == source.title and generated.views[qid] == Document("", source.text)


def test_without_removal_the_same_queries_train_on_whole_documents() -> None:
    docs = corpus()
    cut = generate_pseudo_queries(docs, PseudoQueryConfig(count=30, remove_from_document=True), seed=0)
    whole = generate_pseudo_queries(docs, PseudoQueryConfig(count=30), seed=0)
    assert cut.views and not whole.views
    assert (whole.queries, whole.positives, whole.kinds) == (cut.queries, cut.positives, cut.kinds)
    with pytest.raises(ValueError, match="remove_from_document"):
        PseudoQueryConfig(remove_from_document="yes")


def test_keyword_queries_are_the_top_idf_words_shuffled() -> None:
    docs = corpus()
    config = PseudoQueryConfig(count=30, mix={"keywords": 1.0}, keywords=4, keyword_min_df=2)
    generated = generate_pseudo_queries(docs, config, seed=0)
    df = Counter(w for doc in docs.values() for w in set(document_words(doc.contents)))
    idf = {w: math.log(1 + (len(docs) - f + 0.5) / (f + 0.5)) for w, f in df.items()}
    orders = set()
    for qid, text in generated.queries.items():
        source = docs[generated.positives[qid][0]]
        eligible = sorted({w for w in document_words(source.contents) if df[w] >= 2}, key=lambda w: (-idf[w], w))
        assert sorted(text.split()) == sorted(eligible[:4])
        orders.add(text.split() == eligible[:4])
        assert qid not in generated.views  # the document itself is the positive
    assert orders == {True, False}  # shuffled, not in IDF order every time


def test_generation_is_deterministic_given_the_seed_and_mixes_kinds() -> None:
    docs, config = corpus(), PseudoQueryConfig(count=12)
    first, again = generate_pseudo_queries(docs, config, seed=3), generate_pseudo_queries(docs, config, seed=3)
    assert first == again and first.digest() == again.digest()
    assert generate_pseudo_queries(docs, config, seed=4).digest() != first.digest()
    assert len(first.queries) == 12 and len({d for p in first.positives.values() for d in p}) == 12
    assert set(first.kinds.values()) == {"ict", "title", "keywords"}


@pytest.mark.parametrize("n", [0, 3, MIN_DOCUMENTS - 1])
def test_a_too_small_corpus_is_refused_naming_the_minimum(n: int) -> None:
    docs = {**corpus(n), "blank": Document("", "  ")}  # a blank document does not count
    with pytest.raises(ValueError, match=rf"data/corpus.jsonl: {n} non-blank documents.*at least {MIN_DOCUMENTS}"):
        generate_pseudo_queries(docs, where="data/corpus.jsonl")


def test_no_eligible_document_and_bad_options_are_clear() -> None:
    untitled = {d: Document("", doc.text) for d, doc in corpus().items()}
    with pytest.raises(ValueError, match="no document gives a pseudo-query"):
        generate_pseudo_queries(untitled, PseudoQueryConfig(mix={"title": 1.0}))
    with pytest.raises(ValueError, match=r"`pseudo_queries.mix` has unknown kinds \['cloze'\]"):
        PseudoQueryConfig(mix={"cloze": 1.0})
    with pytest.raises(ValueError, match="`pseudo_queries.span_max_words`"):
        PseudoQueryConfig(span_min_words=10, span_max_words=5)
