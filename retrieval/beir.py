r"""BEIR-format datasets: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/{split}.tsv``.

Loading validates everything up front and names the file, line and field of the first problem found:
malformed JSON (including nesting too deep to parse and integers too long to convert), missing ``_id``, ids
that are not strings or integers, text that is not valid Unicode (lone surrogates from ``\ud800``-style
escapes), duplicate ids, empty ids, ids holding whitespace (a non-breaking space included) or longer than
:data:`MAX_ID_LENGTH` characters, non-integer relevance in qrels, qrels naming unknown queries or documents.
Every such problem is a :class:`BeirFormatError`. Files may carry a UTF-8 BOM and CRLF line endings (the
official SciFact qrels do).
Downloading uses the official BEIR archive URL into a cache folder, atomically.
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from common_regs.io import atomic_dir, atomic_path

logger = logging.getLogger(__name__)

__all__ = [
    "BEIR_URL",
    "MAX_ID_LENGTH",
    "BeirDataset",
    "BeirFormatError",
    "Document",
    "default_cache_dir",
    "download_beir",
    "load_beir",
    "read_corpus",
    "read_qrels",
    "read_queries",
]

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"


MAX_ID_LENGTH = 1024
"""Longest document or query id accepted, in characters (regkit convention). Lucene indexes the id as one term and
drops a document whose term exceeds 32,766 UTF-8 bytes (the build then reports one document missing); 1,024
characters are at most 4,096 bytes, and real BEIR ids (numbers, hashes, Wikipedia titles) are far shorter."""


class BeirFormatError(ValueError):
    """A BEIR file is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class Document:
    """A BEIR corpus entry (``title`` may be empty)."""

    title: str
    text: str

    @property
    def contents(self) -> str:
        """Title and text in one field, as Pyserini's ``BeirFlatCollection``."""
        return f"{self.title} {self.text}".strip() if self.title else self.text


Qrels = dict[str, dict[str, int]]


@dataclass
class BeirDataset:
    """A loaded BEIR dataset. ``queries`` holds every query; ``qrels`` only the chosen split's judgments."""

    name: str
    corpus: dict[str, Document]
    queries: dict[str, str]
    qrels: Qrels
    split: str
    path: Path | None = None
    query_metadata: dict[str, dict] = field(default_factory=dict, repr=False)

    @property
    def split_queries(self) -> dict[str, str]:
        """The queries judged in this split, in qrels order."""
        return {qid: self.queries[qid] for qid in self.qrels}

    def summary(self) -> dict[str, int]:
        return {
            "documents": len(self.corpus),
            "queries": len(self.queries),
            f"{self.split}_queries": len(self.qrels),
            f"{self.split}_judgments": sum(len(d) for d in self.qrels.values()),
        }


def _decode(path: Path, line_no: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
    except UnicodeDecodeError as err:
        raise BeirFormatError(f"{path}:{line_no}: not UTF-8 (byte {err.start} of the line).") from None


_INTEGER = re.compile(r"[+-]?[0-9]+")


def _shown(value: object, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages about arbitrary input."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_unicode(path: Path, line_no: int, key: str, value: str) -> None:
    r"""JSON ``\uD800``-style escapes decode to lone surrogates, which no UTF-8 writer (Lucene, TREC runs) accepts."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise BeirFormatError(
            f"{path}:{line_no}: field `{key}` is not valid Unicode (lone surrogate escape at character {err.start})."
        ) from None


def _check_id(path: Path, line_no: int, field: str, value: str) -> None:
    """Ids become one Lucene term and a column of whitespace-separated TREC run and qrels lines: refuse what breaks."""
    if len(value) > MAX_ID_LENGTH:
        raise BeirFormatError(
            f"{path}:{line_no}: {field} is {len(value):,} characters long ({_shown(value)}); ids are limited to "
            f"{MAX_ID_LENGTH:,} characters (Lucene stores each id as one term)."
        )
    space = next((position for position, char in enumerate(value) if char.isspace()), None)
    if space is not None:
        raise BeirFormatError(
            f"{path}:{line_no}: {field} {_shown(value)} holds whitespace ({value[space]!r} at character {space}); "
            "TREC run and qrels lines are split on whitespace, so ids cannot hold any (non-breaking spaces "
            "included): replace it, e.g. by '_'."
        )


def _jsonl_records(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    if not path.is_file():
        raise BeirFormatError(f"{path}: file not found (a BEIR folder has corpus.jsonl, queries.jsonl, qrels/).")
    with open(path, "rb") as handle:
        seen_any = False
        for line_no, raw in enumerate(handle, start=1):
            line = _decode(path, line_no, raw)
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise BeirFormatError(f"{path}:{line_no}: malformed JSON ({err.msg} at column {err.colno}).") from None
            except RecursionError:
                raise BeirFormatError(f"{path}:{line_no}: malformed JSON (nested too deeply to parse).") from None
            except ValueError as err:  # e.g. an integer literal longer than sys.get_int_max_str_digits()
                raise BeirFormatError(f"{path}:{line_no}: malformed JSON ({err}).") from None
            if not isinstance(record, dict):
                raise BeirFormatError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}.")
            for key in required:
                if key not in record:
                    raise BeirFormatError(f"{path}:{line_no}: missing field `{key}`.")
            identifier = record["_id"]
            if isinstance(identifier, bool) or not isinstance(identifier, (str, int)) or str(identifier) == "":
                raise BeirFormatError(
                    f"{path}:{line_no}: `_id` must be a non-empty string or an integer, got {_shown(identifier)}."
                )
            _check_id(path, line_no, "`_id`", str(identifier))
            if "\\u" in line:  # only escapes can produce lone surrogates: the bytes were valid UTF-8
                for key, value in record.items():
                    if isinstance(value, str):
                        _check_unicode(path, line_no, key, value)
            seen_any = True
            yield line_no, record
    if not seen_any:
        raise BeirFormatError(f"{path}: file is empty.")


def _text_field(path: Path, line_no: int, record: dict, key: str) -> str:
    value = record.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BeirFormatError(f"{path}:{line_no}: field `{key}` must be a string, got {type(value).__name__}.")
    return value


def read_corpus(path: str | os.PathLike[str]) -> dict[str, Document]:
    """Read a BEIR ``corpus.jsonl`` as ``{doc_id: Document}``; a bad line is a :class:`BeirFormatError` naming it."""
    path = Path(path)
    corpus: dict[str, Document] = {}
    for line_no, record in _jsonl_records(path, ("_id",)):
        doc_id = str(record["_id"])
        if doc_id in corpus:
            raise BeirFormatError(f"{path}:{line_no}: duplicate document id {doc_id!r}.")
        corpus[doc_id] = Document(
            title=_text_field(path, line_no, record, "title"), text=_text_field(path, line_no, record, "text")
        )
    return corpus


def read_queries(path: str | os.PathLike[str]) -> tuple[dict[str, str], dict[str, dict]]:
    """Returns ``(queries, metadata)``; metadata keeps each query's ``metadata`` object when present."""
    path = Path(path)
    queries: dict[str, str] = {}
    metadata: dict[str, dict] = {}
    for line_no, record in _jsonl_records(path, ("_id", "text")):
        query_id = str(record["_id"])
        if query_id in queries:
            raise BeirFormatError(f"{path}:{line_no}: duplicate query id {query_id!r}.")
        queries[query_id] = _text_field(path, line_no, record, "text")
        if isinstance(record.get("metadata"), dict) and record["metadata"]:
            metadata[query_id] = record["metadata"]
    return queries, metadata


def read_qrels(path: str | os.PathLike[str]) -> Qrels:
    """Read ``query-id<TAB>corpus-id<TAB>score`` lines (a header line is optional)."""
    path = Path(path)
    if not path.is_file():
        raise BeirFormatError(f"{path}: qrels file not found.")
    qrels: Qrels = {}
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            line = _decode(path, line_no, raw).rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("\t")
            if line_no == 1 and parts[0] == "query-id":
                continue
            if len(parts) != 3:
                raise BeirFormatError(
                    f"{path}:{line_no}: expected 3 tab-separated columns (query-id, corpus-id, score), "
                    f"got {len(parts)}."
                )
            query_id, doc_id, score = (p.strip() for p in parts)
            for number, (column, value) in enumerate((("query-id", query_id), ("corpus-id", doc_id)), start=1):
                if not value:
                    raise BeirFormatError(f"{path}:{line_no}: empty {column} (column {number}).")
                _check_id(path, line_no, column, value)
            if not _INTEGER.fullmatch(score) or len(score) > 18:
                raise BeirFormatError(
                    f"{path}:{line_no}: score must be an integer (column 3, at most 18 ASCII digits), "
                    f"got {_shown(score)}."
                )
            relevance = int(score)
            if doc_id in qrels.setdefault(query_id, {}):
                raise BeirFormatError(f"{path}:{line_no}: duplicate judgment for query {query_id!r}, doc {doc_id!r}.")
            qrels[query_id][doc_id] = relevance
    if not qrels:
        raise BeirFormatError(f"{path}: no judgments.")
    return qrels


def load_beir(folder: str | os.PathLike[str], split: str = "test") -> BeirDataset:
    """Load and validate a BEIR folder.

    Raises:
        BeirFormatError: a file is missing or malformed, or the qrels name a query or document that the
            folder does not contain.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise BeirFormatError(f"{folder}: not a BEIR dataset folder (directory not found).")
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise BeirFormatError(f"{qrels_path}: no qrels for split {split!r}; available splits: {available or 'none'}.")
    corpus = read_corpus(folder / "corpus.jsonl")
    queries, metadata = read_queries(folder / "queries.jsonl")
    qrels = read_qrels(qrels_path)
    for query_id, judged in qrels.items():
        if query_id not in queries:
            raise BeirFormatError(f"{qrels_path}: query id {query_id!r} is not in {folder / 'queries.jsonl'}.")
        unknown = [doc_id for doc_id in judged if doc_id not in corpus]
        if unknown:
            raise BeirFormatError(
                f"{qrels_path}: query {query_id!r} judges document id {unknown[0]!r}, which is not in "
                f"{folder / 'corpus.jsonl'} ({len(unknown)} unknown for this query)."
            )
    return BeirDataset(
        name=folder.name, corpus=corpus, queries=queries, qrels=qrels, split=split, path=folder,
        query_metadata=metadata,
    )


def default_cache_dir() -> Path:
    """``$REGKIT_CACHE/beir`` or ``~/.cache/regkit/beir``."""
    root = os.environ.get("REGKIT_CACHE") or Path.home() / ".cache" / "regkit"
    return Path(root) / "beir"


def download_beir(name: str, cache_dir: str | os.PathLike[str] | None = None, *, url: str | None = None) -> Path:
    """Download and unpack the official BEIR zip for ``name`` into the cache (once); return the dataset folder."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / name
    if (target / "corpus.jsonl").is_file():
        return target
    url = url or BEIR_URL.format(name=name)
    logger.info("downloading %s", url)
    archive = cache / f"{name}.zip"
    try:
        with atomic_path(archive) as tmp, urllib.request.urlopen(url, timeout=60) as response:
            with open(tmp, "wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
    except OSError as err:
        raise ConnectionError(
            f"could not download BEIR dataset {name!r} from {url} ({err}); without a network, pass a local folder."
        ) from err
    extracted = ("queries.jsonl", "qrels")  # a folder without them is not a BEIR extraction: never replaced
    with atomic_dir(target, overwrite=True, markers=extracted) as tmp_dir, zipfile.ZipFile(archive) as zipped:
        zipped.extractall(tmp_dir)
        inner = tmp_dir / name
        if inner.is_dir():  # the official zips hold one top-level folder named after the dataset
            for child in inner.iterdir():
                child.rename(tmp_dir / child.name)
            inner.rmdir()
    return target
