"""Crash safety of ``regkit retrieval index --model``: SIGKILL mid-encoding, rerun the same command; the index
holds the same documents as an uninterrupted run (none lost, none duplicated) with the same stored vectors.

Tiny data: the first 40 documents of the bundled demo corpus, 4 per shard. The reference runs in this process
with one intra-op thread, the killed run as a subprocess with ``OMP_NUM_THREADS=1``, and the rerun of the same
command again in this process (one thread), spying on which shards it encodes.
"""

from __future__ import annotations

import shutil

import pytest
import torch

from common_regs.run_dir import SUCCESS_NAME, read_success_marker
from pipelines.cli import main
from pipelines.faults import (
    DEMO_DIR,
    compare_indexes,
    index_contents,
    read_bulk_vectors,
    run_until,
    tiny_sparse_model,
)
from retrieval import resumable_encoding
from retrieval.beir import read_corpus
from retrieval.encoder import load_sparse_encoder
from retrieval.resumable_encoding import encode_documents_resumable, encoding_work_dir

pytestmark = pytest.mark.java

DOCS, SHARD = 40, 4


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("crash-index")
    data = root / "beir"
    data.mkdir()
    lines = (DEMO_DIR / "beir" / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:DOCS]
    (data / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    model = tiny_sparse_model(root / "model", data / "corpus.jsonl")

    def args(name):
        return ["retrieval", "index", "--data", data, "--index", root / name, "--model", model, "--shard-size",
                str(SHARD), "--threads", "1", "--opensearch-bulk", root / f"{name}.ndjson"]

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([str(a) for a in args("reference")]) == 0
    finally:
        torch.set_num_threads(threads)
    return root, args


def test_killed_encoding_resumes_with_every_document_exactly_once(setup, monkeypatch):
    root, args = setup
    index, work = root / "killed", encoding_work_dir(root / "killed")
    shards_written = lambda: len(list(work.glob("shard-*.json.sha256")))  # noqa: E731
    killed = run_until(args("killed"), root / "killed.log", ready=lambda: shards_written() >= 2, timeout=900)
    assert killed.killed and killed.returncode == -9, killed.log[-2000:]
    done = shards_written()
    assert 2 <= done < DOCS // SHARD, done  # killed mid-way through the encoding
    assert not index.exists() and read_success_marker(index) is None  # nothing that looks like an index

    encoded = []  # spy on the shard encoder (it still runs): which documents does the rerun encode?
    original = resumable_encoding.encode_documents
    monkeypatch.setattr(resumable_encoding, "encode_documents",
                        lambda model, docs, **kw: encoded.append(list(docs)) or original(model, docs, **kw))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([str(a) for a in args("killed")]) == 0  # the same command again
    finally:
        torch.set_num_threads(threads)
    assert len(encoded) == DOCS // SHARD - done  # the shards on disk were reused, only the rest encoded
    assert not work.exists() and (index / SUCCESS_NAME).is_file() and not (root / ".killed.lock").exists()

    reference, got = index_contents(root / "reference"), index_contents(index)
    assert compare_indexes(reference, got) == {"documents": DOCS, "lost": 0, "duplicated": 0, "extra": 0,
                                               "terms_differing": 0}
    assert sorted(got["docids"]) == sorted(reference["docids"]) and got["stats"] == reference["stats"]
    reference_ids, reference_vectors = read_bulk_vectors(root / "reference.ndjson")
    ids, vectors = read_bulk_vectors(root / "killed.ndjson")
    assert ids == reference_ids and len(set(ids)) == DOCS  # same order, each document once
    assert vectors == reference_vectors  # float weights bit-for-bit (JSON floats round-trip exactly)
    fingerprint = read_success_marker(index)["encoding_fingerprint"]
    assert fingerprint == read_success_marker(root / "reference")["encoding_fingerprint"]


def test_run_killed_after_publishing_only_cleans_up_and_a_finished_index_is_refused(setup, capsys):
    root, args = setup
    published = root / "late"
    shutil.copytree(root / "reference", published)  # the index was renamed into place ...
    model = load_sparse_encoder(root / "model")  # ... and the kill came before its work folder was removed
    documents = {d: doc.contents for d, doc in read_corpus(root / "beir" / "corpus.jsonl").items()}
    encode_documents_resumable(model, documents, encoding_work_dir(published), shard_size=SHARD, batch_size=16)
    marker = (published / SUCCESS_NAME).read_text()
    assert main([str(a) for a in args("late")]) == 0
    assert not encoding_work_dir(published).exists() and (published / SUCCESS_NAME).read_text() == marker

    capsys.readouterr()
    assert main([str(a) for a in args("late")]) == 2  # finished, no work folder: refused before any encoding
    assert "already exists; pass overwrite=True" in capsys.readouterr().err
