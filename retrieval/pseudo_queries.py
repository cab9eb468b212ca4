r"""Pseudo-queries generated from a corpus alone, for label-free adaptation of the sparse retriever.

Three kinds, each a query with one source document (its pseudo-positive):

* ``ict`` — the inverse cloze task (Lee, Chang, Toutanova 2019, "Latent Retrieval for Weakly Supervised Open Domain
  Question Answering", arXiv:1906.00300, §5): one sentence of the document's text is the query, and the training
  *view* of the document is the document without that sentence, so the query's own words do not make its document
  a trivial positive for the student;
* ``title`` — the document's title is the query, the view is the document's text without its title;
* ``keywords`` — the ``keywords`` highest-IDF words of the document (BM25 IDF over the corpus' words, words in at
  least ``keyword_min_df`` documents so that a typo or an id that only this document holds is not picked), shuffled.
  The document itself is the positive (removing scattered words would leave a broken text).

Each document is the source of at most one pseudo-query, so a view is one document's one variant. Documents are
visited in a shuffled order and each gets one kind, drawn with the ``mix`` weights among the kinds it can give
(a title only if it has one, a sentence only if its text has another sentence to keep); generation is deterministic
given the seed and the corpus.

What a corpus needs: at least :data:`MIN_DOCUMENTS` non-blank documents (fewer leave too few negatives per
pseudo-query and no meaningful IDF), and text in a language that the bundled all-MiniLM-L6-v2 (English BERT uncased
wordpieces) reads: English, or text whose terms are mostly English wordpieces. Sentences are split at ``.``, ``!``
and ``?`` followed by white space; words are runs of three or more letters (any script), lower-cased.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

from retrieval.beir import Document
from retrieval.encoder.idf import bm25_idf

__all__ = [
    "KINDS",
    "MIN_DOCUMENTS",
    "PseudoQueries",
    "PseudoQueryConfig",
    "PseudoQueryKind",
    "document_words",
    "generate_pseudo_queries",
    "split_sentences",
    "word_idf",
]

PseudoQueryKind = Literal["ict", "title", "keywords"]
KINDS: tuple[PseudoQueryKind, ...] = ("ict", "title", "keywords")

MIN_DOCUMENTS = 20
"""Fewest non-blank documents a corpus needs for pseudo-queries (regkit choice: a query needs a few mined negatives
besides its source document, and an IDF over fewer documents hardly separates rare terms from common ones)."""

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[^\W\d_]{3,}")


@dataclass
class PseudoQueryConfig:
    """How many pseudo-queries of which kinds (``pseudo_queries:`` of a ``retrieval adapt`` config).

    Args:
        count: pseudo-queries to generate, at most one per document. Default 2000 (regkit choice: 300 steps of 8
            queries see each about once; mining 2,000 queries takes about a minute on 2 cores).
        mix: relative weight of each kind (``ict``, ``title``, ``keywords``); a kind with weight 0 is not generated.
            Default ict 0.5, title 0.25, keywords 0.25 (regkit choice, not tuned).
        span_min_words: shortest sentence used as an ``ict`` query, in words. Default 6.
        span_max_words: longest one. Default 40 (a SciFact claim has about 12 words, a sentence of an abstract ~25).
        keywords: words in a ``keywords`` query. Default 5.
        keyword_min_df: documents a keyword must occur in. Default 2.
        remove_from_document: train on the source document without the query's sentence (``ict``) or title
            (``title``), its *view*, so that the positive is not trivial for head training (``steps`` > 0). False =
            the student sees the whole document, as the teachers do. Default False (measured for the default
            recipe, the document mixture: SciFact training queries nDCG@10 0.7071 without views vs 0.7019 with,
            BM25 0.6974; ``docs/sparse_retrieval.md``).
    """

    count: int = 2000
    mix: dict[str, float] = field(default_factory=lambda: {"ict": 0.5, "title": 0.25, "keywords": 0.25})
    span_min_words: int = 6
    span_max_words: int = 40
    keywords: int = 5
    keyword_min_df: int = 2
    remove_from_document: bool = False

    def __post_init__(self) -> None:
        for name in ("count", "span_min_words", "span_max_words", "keywords", "keyword_min_df"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`pseudo_queries.{name}` must be an integer >= 1, got {value!r}.")
        if not isinstance(self.remove_from_document, bool):
            raise ValueError(f"`pseudo_queries.remove_from_document` must be true or false, got "
                             f"{self.remove_from_document!r}.")
        if self.span_max_words < self.span_min_words:
            raise ValueError(f"`pseudo_queries.span_max_words` ({self.span_max_words}) must be >= `span_min_words` "
                             f"({self.span_min_words}).")
        unknown = sorted(set(self.mix) - set(KINDS))
        if unknown:
            raise ValueError(f"`pseudo_queries.mix` has unknown kinds {unknown}; known: {list(KINDS)}.")
        bad = {k: v for k, v in self.mix.items() if isinstance(v, bool) or not isinstance(v, int | float) or v < 0}
        if bad or not any(self.mix.values()):
            raise ValueError(f"`pseudo_queries.mix` needs weights >= 0, at least one > 0; got {self.mix!r}.")


@dataclass
class PseudoQueries:
    """Generated pseudo-queries.

    Attributes:
        queries: ``{qid: text}``.
        positives: ``{qid: [source doc id]}``.
        kinds: ``{qid: kind}``.
        views: ``{qid: Document}``, the student's training text of the source document where it differs from the
            corpus' (``ict``: without the sentence; ``title``: without the title).
    """

    queries: dict[str, str]
    positives: dict[str, list[str]]
    kinds: dict[str, PseudoQueryKind]
    views: dict[str, Document]

    def digest(self) -> str:
        """SHA-256 of everything generated (identifies the candidates and view caches built from them)."""
        payload = {"queries": self.queries, "positives": self.positives,
                   "views": {q: asdict(d) for q, d in self.views.items()}}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()

    def records(self) -> list[dict[str, Any]]:
        """One JSON-ready record per pseudo-query (id, kind, text, source document)."""
        return [{"_id": q, "kind": self.kinds[q], "text": t, "doc": self.positives[q][0]}
                for q, t in self.queries.items()]


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: split after ``.``, ``!`` or ``?`` followed by white space; blanks dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def document_words(text: str) -> list[str]:
    """Lower-cased words of three or more letters (digits and underscores excluded), in order."""
    return _WORD.findall(text.lower())


def word_idf(corpus: Mapping[str, Document]) -> tuple[dict[str, float], Counter[str]]:
    """``(idf, df)`` of every word of the corpus: BM25 IDF ``ln(1 + (N − df + 0.5)/(df + 0.5))``, document counts."""
    df: Counter[str] = Counter()
    for doc in corpus.values():
        df.update(set(document_words(doc.contents)))
    words = list(df)
    idf = bm25_idf(torch.tensor([df[w] for w in words], dtype=torch.float64), len(corpus)).tolist()
    return dict(zip(words, idf, strict=True)), df


def _ict(doc: Document, config: PseudoQueryConfig, rng: random.Random) -> tuple[str, Document] | None:
    sentences = split_sentences(doc.text)
    eligible = [i for i, s in enumerate(sentences)
                if config.span_min_words <= len(s.split()) <= config.span_max_words]
    if len(sentences) < 2 or not eligible:
        return None
    cut = rng.choice(eligible)
    return sentences[cut], Document(doc.title, " ".join(s for i, s in enumerate(sentences) if i != cut))


def _title(doc: Document) -> tuple[str, Document] | None:
    if not doc.title.strip() or not doc.text.strip():
        return None
    return doc.title.strip(), Document("", doc.text)


def _keywords(doc: Document, config: PseudoQueryConfig, idf: Mapping[str, float], df: Counter[str],
              rng: random.Random) -> str | None:
    terms = sorted({w for w in document_words(doc.contents) if df[w] >= config.keyword_min_df},
                   key=lambda w: (-idf[w], w))[: config.keywords]
    if len(terms) < 2:
        return None
    rng.shuffle(terms)
    return " ".join(terms)


def generate_pseudo_queries(corpus: Mapping[str, Document], config: PseudoQueryConfig | None = None, *,
                            seed: int = 0, where: str = "corpus") -> PseudoQueries:
    """Pseudo-queries of ``corpus`` (module docstring), deterministic given ``seed``.

    Args:
        corpus: ``{doc_id: Document}`` (e.g. :func:`retrieval.beir.read_corpus`).
        config: counts and mix. Default: :class:`PseudoQueryConfig` defaults.
        seed: random seed of the document order, the kinds, the cut sentences and the keyword order.
        where: what the corpus is, for error messages (e.g. the path of ``corpus.jsonl``).

    Raises:
        ValueError: fewer than :data:`MIN_DOCUMENTS` non-blank documents, or no document can give a pseudo-query
            of the kinds that ``mix`` asks for.
    """
    config = config or PseudoQueryConfig()
    docs = {d: doc for d, doc in corpus.items() if doc.contents.strip()}
    if len(docs) < MIN_DOCUMENTS:
        raise ValueError(f"{where}: {len(docs)} non-blank documents; label-free adaptation needs at least "
                         f"{MIN_DOCUMENTS} (MIN_DOCUMENTS) to mine negatives and compute an IDF. Add documents, or "
                         "use BM25 on a corpus this small.")
    rng = random.Random(seed)
    order = list(docs)
    rng.shuffle(order)
    idf, df = word_idf(docs)
    out = PseudoQueries({}, {}, {}, {})
    for doc_id in order:
        if len(out.queries) >= config.count:
            break
        doc, made = docs[doc_id], {}
        for kind in KINDS:
            if config.mix.get(kind, 0) > 0:
                made[kind] = (_ict(doc, config, rng) if kind == "ict" else _title(doc) if kind == "title"
                              else _keywords(doc, config, idf, df, rng))
        kinds = [k for k, v in made.items() if v is not None]
        if not kinds:
            continue
        kind = rng.choices(kinds, weights=[config.mix[k] for k in kinds])[0]
        qid = f"pq{len(out.queries)}-{kind}"
        value = made[kind]
        text, view = value if isinstance(value, tuple) else (value, None)
        out.queries[qid], out.positives[qid], out.kinds[qid] = text, [doc_id], kind
        if view is not None and config.remove_from_document:
            out.views[qid] = view
    if not out.queries:
        raise ValueError(f"{where}: no document gives a pseudo-query of the kinds in `pseudo_queries.mix` "
                         f"{config.mix} (no titles, no text of two or more sentences of {config.span_min_words}-"
                         f"{config.span_max_words} words, no words shared by {config.keyword_min_df} documents).")
    return out
