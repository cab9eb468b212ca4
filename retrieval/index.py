"""Lucene indexes built through Anserini (Pyserini's bundled fat jar).

``build_bm25_index`` writes a "flat" BEIR index: title and text in one ``contents`` field, as Pyserini's
``BeirFlatCollection`` (``f"{title} {text}"``), with positions, document vectors and raw text stored (Pyserini's
``beir-v1.0.0-*.flat`` regression settings). Lucene's default English analyzer applies (Porter stemming, English
stopwords); BM25 parameters are chosen at search time (:class:`retrieval.search.Bm25Searcher`).

Indexing is multi-threaded the way Anserini parallelises: one worker per input file, so the collection is written
as ``threads`` shard files. Every index folder carries ``regkit-index.json`` (kind, document count, settings) and,
written last, the completion marker ``_SUCCESS.json`` (:mod:`common_regs.run_dir`), and appears complete or not
at all (built in a temporary sibling, then renamed).

Impact indexes (learned sparse vectors) live in :mod:`retrieval.impact` and share the helpers here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from common_regs.io import atomic_dir, atomic_write_text
from common_regs.run_dir import SUCCESS_NAME, write_success_marker
from retrieval.beir import Document
from retrieval.jvm import autoclass, translate_java_errors

logger = logging.getLogger(__name__)

__all__ = [
    "INDEX_MARKERS",
    "INDEX_METADATA_FILE",
    "IndexBuildError",
    "build_bm25_index",
    "collection_folder",
    "progress_enabled",
    "read_index_metadata",
    "run_index_collection",
    "write_collection_shards",
]

INDEX_METADATA_FILE = "regkit-index.json"
INDEX_MARKERS = (INDEX_METADATA_FILE, SUCCESS_NAME)  # an index folder regkit may replace holds one of them
FORMAT_VERSION = 1


class IndexBuildError(RuntimeError):
    """Anserini failed to build an index; the message carries the collection and folder."""


def write_collection_shards(
    records: Iterable[dict[str, Any]],
    folder: Path,
    *,
    shards: int,
    total: int | None = None,
    show_progress: bool | None = None,
) -> int:
    """Write JSON ``records`` round-robin into ``shards`` files ``part-NNN.jsonl`` under ``folder``; return the count.

    Anserini's ``IndexCollection`` runs one worker thread per input file, so the shard count is the parallelism.
    """
    if shards < 1:
        raise ValueError(f"`shards` must be >= 1, got {shards}.")
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        with ExitStack() as stack:
            files = [
                stack.enter_context(open(folder / f"part-{i:03d}.jsonl", "w", encoding="utf-8"))
                for i in range(shards)
            ]
            if progress_enabled(show_progress):
                records = tqdm(records, desc="writing collection", unit="doc", total=total)
            for record in records:
                # ASCII escapes: half the time of UTF-8 output, and the same text once Anserini parses it
                files[written % shards].write(json.dumps(record) + "\n")
                written += 1
    except OSError as err:  # e.g. a full disk (raised by a write or by the final flush): name the folder
        raise OSError(err.errno, f"{err.strerror} while writing the collection files part-*.jsonl in {folder} "
                                 f"({written} records written)") from err
    return written


@contextlib.contextmanager
def collection_folder(index_dir: Path) -> Iterator[Path]:
    """The folder for the JSON collection Anserini reads while it builds ``index_dir``.

    It is ``.<index>.collection.tmp`` beside the index, removed when the build ends.

    Not the system temp folder: a killed build's collection (as large as the corpus) would stay there forever. Here
    the next build of the same index removes it first (and ``regkit retrieval index`` removes it with the other
    ``.<index>.*.tmp`` leftovers, :func:`common_regs.run_dir.remove_stale_temporaries`).
    """
    folder = index_dir.parent / f".{index_dir.name}.collection.tmp"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def progress_enabled(show_progress: bool | None) -> bool:
    """Whether to show progress bars; None means "when this package logs at INFO or below" (regkit's convention)."""
    return logging.getLogger("retrieval").isEnabledFor(logging.INFO) if show_progress is None else show_progress


def run_index_collection(args: list[str], *, context: str) -> None:
    """Run Anserini's ``IndexCollection`` with ``args``; Java failures become :class:`IndexBuildError`."""
    index_collection = autoclass("io.anserini.index.IndexCollection")
    logger.debug("IndexCollection %s", " ".join(args))
    with translate_java_errors(IndexBuildError, f"Anserini IndexCollection failed for {context}"):
        index_collection.main(args)


def count_indexed_documents(index_dir: Path) -> int:
    """Number of live documents in a Lucene index (through Anserini's ``IndexReaderUtils``)."""
    reader_utils = autoclass("io.anserini.index.IndexReaderUtils")
    with translate_java_errors(IndexBuildError, f"cannot read the index just built at {index_dir}"):
        reader = reader_utils.getReader(str(index_dir))
        try:
            return int(reader.numDocs())
        finally:
            reader.close()


def finish_index(tmp_index: Path, index_dir: Path, *, expected: int, metadata: dict[str, Any]) -> None:
    """Check the document count of a freshly built index; write its ``regkit-index.json``, then ``_SUCCESS.json``."""
    indexed = count_indexed_documents(tmp_index)
    if indexed != expected:
        raise IndexBuildError(f"Anserini indexed {indexed} of {expected} documents into {index_dir}.")
    payload = {"format_version": FORMAT_VERSION, "documents": indexed, **metadata}
    atomic_write_text(tmp_index / INDEX_METADATA_FILE, json.dumps(payload, indent=2, sort_keys=True) + "\n")
    write_success_marker(tmp_index, config=payload, extra=payload)


def read_index_metadata(index_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``regkit-index.json`` of an index folder, or None for an index not built by regkit."""
    path = Path(index_dir) / INDEX_METADATA_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise IndexBuildError(f"{path}: corrupt index metadata ({err.msg}, line {err.lineno}); rebuild it.") from None


def build_bm25_index(
    corpus: Mapping[str, Document],
    index_dir: str | os.PathLike[str],
    *,
    threads: int = 2,
    overwrite: bool = False,
    show_progress: bool | None = None,
) -> Path:
    """Index ``corpus`` for BM25 (flat: ``title text`` in one field; Lucene English analyzer).

    Args:
        corpus: ``{docid: Document}``, e.g. ``load_beir(folder).corpus``.
        index_dir: output folder; written atomically.
        threads: indexing threads (the collection is split into this many shard files).
        overwrite: replace an existing ``index_dir`` that is a regkit index (holds ``regkit-index.json``).
        show_progress: progress bar while writing the collection; None = on when logging is at INFO or below.

    Documents whose contents are blank are skipped by Anserini (they can never match); they are counted and
    logged as a warning instead of failing the build.

    Raises:
        ValueError: empty corpus or ``threads`` < 1.
        FileExistsError: ``index_dir`` exists and ``overwrite`` is false, or it is not a regkit index
            (:class:`common_regs.output_folders.ForeignFolderError`, also with ``overwrite``).
        IndexBuildError: Anserini failed, or indexed a different number of documents than expected.
    """
    if not corpus:
        raise ValueError("`corpus` is empty: nothing to index.")
    if threads < 1:
        raise ValueError(f"`threads` must be >= 1, got {threads}.")
    index_dir = Path(index_dir)
    records = [{"id": doc_id, "contents": doc.contents} for doc_id, doc in corpus.items()]
    blank = [record["id"] for record in records if not record["contents"].strip()]
    if blank:
        logger.warning(
            "%d of %d documents are blank and are not indexed (first: %r)", len(blank), len(corpus), blank[0]
        )
    shards = max(1, min(threads, len(corpus)))
    with collection_folder(index_dir) as collection, atomic_dir(
        index_dir, overwrite=overwrite, markers=INDEX_MARKERS
    ) as tmp_index:
        write_collection_shards(records, collection, shards=shards, total=len(corpus), show_progress=show_progress)
        run_index_collection(
            [
                "-collection", "JsonCollection",
                "-input", str(collection),
                "-index", str(tmp_index),
                "-generator", "DefaultLuceneDocumentGenerator",
                "-threads", str(threads),
                "-storePositions", "-storeDocvectors", "-storeRaw",
                "-quiet",
            ],
            context=f"BM25 index {index_dir}",
        )
        finish_index(
            tmp_index,
            index_dir,
            expected=len(corpus) - len(blank),
            metadata={"kind": "bm25", "fields": "flat (title + ' ' + text)", "skipped_blank": len(blank)},
        )
    logger.info("BM25 index of %d documents at %s", len(corpus) - len(blank), index_dir)
    return index_dir
