"""Lucene indexes built through Anserini (Pyserini's bundled fat jar).

``build_bm25_index`` writes a "flat" BEIR index: title and text in one ``contents`` field, as Pyserini's
``BeirFlatCollection``, with positions, document vectors and raw text stored (Pyserini's regression settings).
The index folder appears complete or not at all (built in a temporary sibling, then renamed).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from tqdm.auto import tqdm

from common_regs.io import atomic_dir
from retrieval.beir import Document
from retrieval.jvm import autoclass

logger = logging.getLogger(__name__)

__all__ = ["IndexBuildError", "build_bm25_index"]


class IndexBuildError(RuntimeError):
    """Anserini failed to build an index; the message carries the collection and folder."""


def _write_jsonl(corpus: Mapping[str, Document], folder: Path, show_progress: bool) -> None:
    with open(folder / "docs.jsonl", "w", encoding="utf-8") as out:
        for doc_id, doc in tqdm(corpus.items(), desc="writing collection", unit="doc", disable=not show_progress):
            out.write(json.dumps({"id": doc_id, "contents": doc.contents}) + "\n")


def _run_index_collection(args: list[str]) -> None:
    index_collection = autoclass("io.anserini.index.IndexCollection")
    try:
        index_collection.main(args)
    except Exception as err:  # jnius.JavaException carries the Java stack trace; keep its message only
        raise IndexBuildError(f"Anserini IndexCollection failed ({' '.join(args)}): {err}") from err


def build_bm25_index(
    corpus: Mapping[str, Document],
    index_dir: str | os.PathLike[str],
    *,
    threads: int = 2,
    overwrite: bool = False,
    show_progress: bool = True,
) -> Path:
    """Index ``corpus`` for BM25 (Lucene default analyzer: Porter stemming, English stopwords)."""
    if not corpus:
        raise ValueError("`corpus` is empty: nothing to index.")
    if threads < 1:
        raise ValueError(f"`threads` must be >= 1, got {threads}.")
    index_dir = Path(index_dir)
    with tempfile.TemporaryDirectory(prefix="regkit-collection-") as collection, atomic_dir(
        index_dir, overwrite=overwrite
    ) as tmp_index:
        _write_jsonl(corpus, Path(collection), show_progress)
        _run_index_collection([
            "-collection", "JsonCollection",
            "-input", collection,
            "-index", str(tmp_index),
            "-generator", "DefaultLuceneDocumentGenerator",
            "-threads", str(threads),
            "-storePositions", "-storeDocvectors", "-storeRaw",
            "-quiet",
        ])
        indexed = _count_documents(tmp_index)
        if indexed != len(corpus):
            raise IndexBuildError(f"Anserini indexed {indexed} of {len(corpus)} documents into {index_dir}.")
    logger.info("BM25 index of %d documents at %s", len(corpus), index_dir)
    return index_dir


def _count_documents(index_dir: Path) -> int:
    reader_utils = autoclass("io.anserini.index.IndexReaderUtils")
    reader = reader_utils.getReader(str(index_dir))
    try:
        return int(reader.numDocs())
    finally:
        reader.close()
