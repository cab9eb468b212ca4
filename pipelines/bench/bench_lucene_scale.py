"""Large-corpus Lucene benchmark: BM25 and impact indexing throughput (docs/s) at 1 and 2 threads on 1M documents.

The corpus is generated under ``/tmp`` (and deleted afterwards): ``documents`` short documents of
``min_tokens``–``max_tokens`` tokens drawn from a Zipf(``zipf``) vocabulary of ``vocabulary`` pseudo-words
(consonant–vowel syllables, so Lucene's English analyzer keeps them as words). Token ids are held as one numpy
array; documents are rebuilt from it on demand by a lazy mapping, so the 1M-document corpus is never a dict of
Python strings. The impact corpus gives each document ``{token: w}`` with ``w = tf · idf(token) / ln N`` (the
generator's own idf ``ln(N / df)``, normalised to (0, 1]), a stand-in for learned sparse weights with the same
shape (short vectors, float weights of order 1; quantized at regkit's default ``doc_scale`` 100). Anserini stores
an impact of ``n`` as ``n`` repeated tokens, so impact indexing cost follows the summed quantized weights, which
are reported (``impact_tokens_per_document``) next to the BM25 token count.

Each build goes through regkit's code: :func:`retrieval.index.build_bm25_index` (positions, doc vectors and raw
text stored, as Pyserini's BEIR flat regressions) and :func:`retrieval.impact.build_impact_index` (``-impact
-pretokenized``), once per thread count (Anserini runs one worker per collection shard). docs/s covers the whole
call: writing the JSONL shards from Python, Anserini's indexing, and the final document-count check;
``collection_write_seconds`` times the JSONL writing alone (single-threaded Python, the same at every thread
count) so the Java part can be read off. Absolute numbers depend on the shared machine; the 2-vs-1-thread ratios
come from the same process.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from common_regs.io import atomic_write_text

logger = logging.getLogger(__name__)

CONFIG: dict[str, Any] = {
    "documents": 1_000_000,
    "vocabulary": 50_000,
    "zipf": 1.07,
    "min_tokens": 10,
    "max_tokens": 30,
    "threads": [1, 2],
    "seed": 0,
    "tmp_root": "/tmp",
}

_CONSONANTS = "bcdfghjklmnprstvwz"
_VOWELS = "aeiou"


def pseudo_words(count: int) -> list[str]:
    """``count`` distinct words of 3 consonant–vowel syllables (90³ = 729,000 possible)."""
    syllables = [c + v for c in _CONSONANTS for v in _VOWELS]
    n = len(syllables)
    if count > n**3:
        raise ValueError(f"`count` must be <= {n**3}, got {count}.")
    return [syllables[i // (n * n)] + syllables[(i // n) % n] + syllables[i % n] for i in range(count)]


class GeneratedCorpus:
    """Token ids of every document (one flat array + offsets), generated once from a seed."""

    def __init__(self, documents: int, vocabulary: int, *, zipf: float, min_tokens: int, max_tokens: int,
                 seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.words = pseudo_words(vocabulary)
        lengths = rng.integers(min_tokens, max_tokens + 1, documents)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])
        ranks = np.arange(1, vocabulary + 1, dtype=np.float64)
        cdf = np.cumsum(ranks**-zipf)
        cdf /= cdf[-1]
        tokens = np.empty(int(self.offsets[-1]), dtype=np.int32)
        chunk = 10_000_000
        for start in range(0, tokens.size, chunk):
            stop = min(start + chunk, tokens.size)
            tokens[start:stop] = np.minimum(np.searchsorted(cdf, rng.random(stop - start)), vocabulary - 1)
        self.tokens = tokens
        document_of = np.repeat(np.arange(documents), lengths)
        pairs = np.unique(document_of.astype(np.int64) * vocabulary + tokens)  # distinct (document, token)
        df = np.bincount((pairs % vocabulary).astype(np.int64), minlength=vocabulary)
        self.idf = np.log(documents / np.maximum(df, 1)) / math.log(documents)
        self.documents = documents

    def tokens_of(self, number: int) -> np.ndarray:
        return self.tokens[self.offsets[number] : self.offsets[number + 1]]

    def text(self, number: int) -> str:
        return " ".join(self.words[t] for t in self.tokens_of(number).tolist())

    def vector(self, number: int) -> dict[str, float]:
        ids, tf = np.unique(self.tokens_of(number), return_counts=True)
        weights = tf * self.idf[ids]
        return {self.words[t]: float(w) for t, w in zip(ids.tolist(), weights.tolist(), strict=True) if w > 0}


class _LazyMapping(Mapping[str, Any]):
    """``{"d<n>": value(n)}`` computed on access (documents for BM25, vectors for the impact index)."""

    def __init__(self, corpus: GeneratedCorpus, make: Any) -> None:
        self.corpus, self.make = corpus, make

    def __len__(self) -> int:
        return self.corpus.documents

    def __iter__(self) -> Iterator[str]:
        return (f"d{n}" for n in range(self.corpus.documents))

    def __getitem__(self, key: str) -> Any:
        if not key.startswith("d") or not key[1:].isdigit() or int(key[1:]) >= self.corpus.documents:
            raise KeyError(key)
        return self.make(int(key[1:]))


def run(out_dir: Path, config: dict[str, Any] | None = None) -> dict[str, Any]:
    from retrieval.beir import Document
    from retrieval.impact import ImpactQuantization, build_impact_index, quantize_weights
    from retrieval.index import build_bm25_index, read_index_metadata, write_collection_shards

    config = {**CONFIG, **(config or {})}
    started = time.perf_counter()
    corpus = GeneratedCorpus(config["documents"], config["vocabulary"], zipf=config["zipf"],
                             min_tokens=config["min_tokens"], max_tokens=config["max_tokens"], seed=config["seed"])
    generate_seconds = time.perf_counter() - started
    documents = _LazyMapping(corpus, lambda n: Document(title="", text=corpus.text(n)))
    vectors = _LazyMapping(corpus, corpus.vector)
    logger.info("corpus: %d documents, %d tokens (%.1fs)", corpus.documents, corpus.tokens.size, generate_seconds)
    rows: list[dict[str, Any]] = []
    folder = Path(tempfile.mkdtemp(prefix="regkit-lucene-bench-", dir=config["tmp_root"]))
    try:
        t0 = time.perf_counter()
        write_collection_shards(({"id": k, "contents": d.contents} for k, d in documents.items()),
                                folder / "collection-probe", shards=1, total=len(documents), show_progress=False)
        write_seconds = {"bm25": time.perf_counter() - t0}
        shutil.rmtree(folder / "collection-probe")
        for kind in ("bm25", "impact"):
            for threads in config["threads"]:
                index_dir = folder / f"{kind}-{threads}t"
                t0 = time.perf_counter()
                if kind == "bm25":
                    build_bm25_index(documents, index_dir, threads=threads, show_progress=False)
                else:
                    build_impact_index(vectors, index_dir, quantization=ImpactQuantization(), threads=threads,
                                       show_progress=False)
                seconds = time.perf_counter() - t0
                meta = read_index_metadata(index_dir) or {}
                size_mb = sum(p.stat().st_size for p in index_dir.rglob("*") if p.is_file()) / 2**20
                rows.append({"index": kind, "threads": threads, "documents": meta.get("documents"),
                             "seconds": round(seconds, 1), "docs_per_second": round(corpus.documents / seconds),
                             "index_mb": round(size_mb, 1)})
                logger.info("%s", rows[-1])
                shutil.rmtree(index_dir)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for kind in ("bm25", "impact"):
        base = next(r for r in rows if r["index"] == kind and r["threads"] == min(config["threads"]))
        for row in rows:
            if row["index"] == kind:
                row["speedup_vs_1_thread"] = round(base["seconds"] / row["seconds"], 2)
    sample = range(0, corpus.documents, max(1, corpus.documents // 10_000))
    impact_tokens = float(np.mean([sum(quantize_weights(corpus.vector(n), 100.0, where="", limit=10**9).values())
                                   for n in sample]))
    table = _markdown(rows, write_seconds["bm25"], corpus.documents)
    table += (f"\nMean tokens per document: {corpus.tokens.size / corpus.documents:.1f} (BM25); summed quantized "
              f"impacts per document (what Anserini writes for the impact index): {impact_tokens:.0f}.")
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "lucene_scale.md", table + "\n")
    return {"config": config, "tokens": int(corpus.tokens.size), "mean_tokens": corpus.tokens.size / corpus.documents,
            "impact_tokens_per_document": impact_tokens,
            "generate_seconds": generate_seconds, "collection_write_seconds": write_seconds, "rows": rows,
            "table": table, "seconds": time.perf_counter() - started}


def _markdown(rows: list[dict[str, Any]], write_seconds: float, documents: int) -> str:
    lines = ["| index | threads | documents | seconds | docs/s | × 1 thread | index MB |", "|" + "---|" * 7]
    lines += [
        f"| {r['index']} | {r['threads']} | {r['documents']:,} | {r['seconds']:.0f} | {r['docs_per_second']:,} | "
        f"{r['speedup_vs_1_thread']:.2f} | {r['index_mb']:.0f} |"
        for r in rows
    ]
    lines.append(f"\nWriting the BM25 JSONL collection alone (Python, 1 shard): {write_seconds:.0f} s "
                 f"({math.floor(documents / write_seconds):,} docs/s).")
    return "\n".join(lines)
