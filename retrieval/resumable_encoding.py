"""Resumable corpus encoding: checksummed shards on disk, so a killed ``regkit retrieval index --model`` continues.

The corpus (in its own order) is cut into shards of ``shard_size`` documents; shard ``i`` holds documents
``[i·shard_size, (i+1)·shard_size)``, is encoded with :func:`retrieval.encoder.encode_documents` and written
atomically as ``shard-<i:06d>.json`` (document ids, ``count``, vectors, encoding statistics) with a SHA-256 sidecar
(:func:`common_regs.checkpoint.save_with_checksum`). On a rerun, a shard is reused only when its checksum verifies
and its ids and count equal the ones expected; any other shard is encoded again. Because an uninterrupted run
encodes exactly the same shards (same documents, same batches), the vectors of a resumed run are bit-identical
to those of an uninterrupted one on the same machine and thread count, and every document is encoded exactly
once in the result.

``manifest.json`` in the work folder records a fingerprint (SHA-256 of the model's tensors, of the corpus ids and
texts, of ``shard_size`` and ``batch_size``); shards of another model, corpus or batching are never mixed in. It
also records the size and SHA-256 of the input files (``inputs``: the corpus file, the model folder;
:mod:`common_regs.fingerprints`): when one of them changed since the shards were written, the rerun is refused with
a message naming the file, unless ``overwrite`` (then, as for a change of batching, the shards are discarded with a
warning and the encoding starts over). One writer per work folder is assumed (``regkit retrieval index`` holds the
index's lock, :class:`common_regs.run_dir.OutputLock`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from common_regs.checkpoint import ChecksumError, save_with_checksum, verify_checksum
from common_regs.fingerprints import fingerprint_inputs, input_change
from common_regs.io import atomic_write_text
from retrieval.encoder import DocumentEncodingStats, encode_documents
from retrieval.index import progress_enabled

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_SHARD_SIZE", "encode_documents_resumable", "encoding_fingerprint", "encoding_work_dir"]

DEFAULT_SHARD_SIZE = 1024
"""Documents per shard (regkit choice: at most ~1k documents of work lost to a kill, few files per corpus)."""
_FORMAT_VERSION = 1


def encoding_work_dir(index_dir: str | os.PathLike[str]) -> Path:
    """The work folder of an index: ``<parent>/.<name>.encoding`` (beside it: the index is published by rename)."""
    index_dir = Path(index_dir)
    return index_dir.with_name(f".{index_dir.name}.encoding")


def encoding_fingerprint(model: Any, documents: Mapping[str, str | bytes], *, shard_size: int, batch_size: int) -> str:
    """SHA-256 over the model's tensors (sorted by name), the corpus ids and texts in order, and the batching."""
    digest = hashlib.sha256(f"regkit-encoding-v{_FORMAT_VERSION}|{shard_size}|{batch_size}|".encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    for doc_id, text in documents.items():
        digest.update(str(doc_id).encode("utf-8", "surrogatepass") + b"\0")
        digest.update(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    return digest.hexdigest()


def _load_shard(path: Path, expected_ids: list[str]) -> tuple[list[dict[str, float]], dict[str, Any]] | None:
    """The shard's vectors and stats when it verifies and holds exactly ``expected_ids``; None otherwise."""
    if not path.is_file():
        return None
    try:
        verify_checksum(path)
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (ChecksumError, json.JSONDecodeError, UnicodeDecodeError) as err:
        logger.warning("encoded shard %s is unusable (%s); encoding it again", path, err)
        return None
    vectors = payload.get("vectors")
    if (
        payload.get("count") != len(expected_ids)
        or payload.get("doc_ids") != expected_ids
        or not isinstance(vectors, list)
        or len(vectors) != len(expected_ids)
    ):
        logger.warning("encoded shard %s holds other documents than expected (count %s, expected %d); encoding it "
                       "again", path, payload.get("count"), len(expected_ids))
        return None
    return vectors, payload.get("stats", {})


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _prepare(work_dir: Path, fingerprint: str, inputs: Sequence[str | os.PathLike[str]], overwrite: bool) -> int:
    """Create/validate the work folder; return how many shard files it already holds.

    Raises:
        FileExistsError: an input file changed since the shards on disk were written, and not ``overwrite``.
    """
    manifest = work_dir / "manifest.json"
    recorded = _read_manifest(manifest)
    files = fingerprint_inputs(inputs, known=recorded.get("inputs"))
    if manifest.is_file() and recorded.get("fingerprint") != fingerprint:
        change = input_change(recorded.get("inputs"), files) if "inputs" in recorded else None
        if change is not None and not overwrite and any(work_dir.glob("shard-*.json")):
            raise FileExistsError(
                f"{work_dir} holds encoded shards of an interrupted run whose input {change}: pass --overwrite to "
                "discard them and encode again."
            )
        logger.warning("%s holds shards of another model, corpus or batching (%s); starting the encoding over",
                       work_dir, change or "same input files")
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    for stale in work_dir.glob(".shard-*.tmp"):  # a shard write killed before its rename
        stale.unlink(missing_ok=True)
    record = {"format_version": _FORMAT_VERSION, "fingerprint": fingerprint, "inputs": files}
    atomic_write_text(manifest, json.dumps(record) + "\n")
    return len(list(work_dir.glob("shard-*.json")))


def _merge_stats(total: DocumentEncodingStats, part: Mapping[str, Any]) -> None:
    known = {f.name for f in fields(DocumentEncodingStats)}
    part = {k: v for k, v in part.items() if k in known}
    total.documents += int(part.get("documents", 0))
    total.empty += int(part.get("empty", 0))
    total.truncated += int(part.get("truncated", 0))
    total.max_length = max(total.max_length, int(part.get("max_length", 0)))
    total.first_empty = total.first_empty or part.get("first_empty")
    total.first_truncated = total.first_truncated or part.get("first_truncated")


def encode_documents_resumable(
    model: Any,
    documents: Mapping[str, str | bytes],
    work_dir: str | os.PathLike[str],
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    batch_size: int = 16,
    show_progress: bool | None = None,
    inputs: Sequence[str | os.PathLike[str]] = (),
    overwrite: bool = False,
) -> tuple[dict[str, dict[str, float]], DocumentEncodingStats, str]:
    """Encode ``documents`` shard by shard under ``work_dir``, reusing verified shards of an interrupted run.

    Returns ``(vectors in corpus order, merged stats, fingerprint)``. The caller removes ``work_dir`` once the
    vectors are safely stored elsewhere (the index is published). ``inputs`` are the files (or folders) that
    ``model`` and ``documents`` were read from, ``overwrite`` discards shards written from other input files
    (module docstring).

    Raises:
        ValueError: ``shard_size`` or ``batch_size`` < 1.
        FileExistsError: shards of other input files are on disk and ``overwrite`` is false.
    """
    for name, value in (("shard_size", shard_size), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"`{name}` must be an integer >= 1, got {value!r}.")
    work_dir = Path(work_dir)
    keys = list(documents)
    ids = [str(d) for d in keys]
    fingerprint = encoding_fingerprint(model, documents, shard_size=shard_size, batch_size=batch_size)
    present = _prepare(work_dir, fingerprint, inputs, overwrite)
    shards = math.ceil(len(keys) / shard_size)
    if present:
        logger.info("resuming the encoding in %s: %d of %d shards on disk", work_dir, present, shards)
    vectors: dict[str, dict[str, float]] = {}
    stats = DocumentEncodingStats()
    reused = 0
    bar = tqdm(total=len(keys), desc="encoding shards", unit="doc", disable=not progress_enabled(show_progress))
    for shard in range(shards):
        chunk_keys = keys[shard * shard_size : (shard + 1) * shard_size]
        chunk_ids = ids[shard * shard_size : (shard + 1) * shard_size]
        path = work_dir / f"shard-{shard:06d}.json"
        loaded = _load_shard(path, chunk_ids)
        if loaded is None:
            encoded, part = encode_documents(
                model, {k: documents[k] for k in chunk_keys}, batch_size=batch_size, show_progress=False
            )
            shard_vectors, shard_stats = [encoded[d] for d in chunk_ids], part.as_dict()
            payload = {"format_version": _FORMAT_VERSION, "shard": shard, "count": len(chunk_ids),
                       "doc_ids": chunk_ids, "vectors": shard_vectors, "stats": shard_stats}
            text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
            save_with_checksum(path, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
        else:
            shard_vectors, shard_stats = loaded
            reused += 1
        for doc_id, vector in zip(chunk_ids, shard_vectors, strict=True):
            if doc_id in vectors:
                raise ValueError(f"document id {doc_id!r} occurs twice in the corpus.")
            vectors[doc_id] = vector
        _merge_stats(stats, shard_stats)
        bar.update(len(chunk_ids))
    bar.close()
    stats.active_terms = sum(len(v) for v in vectors.values()) / max(1, len(vectors))
    logger.info("encoded %d documents in %d shards (%d reused from %s)", len(vectors), shards, reused, work_dir)
    return vectors, stats, fingerprint
