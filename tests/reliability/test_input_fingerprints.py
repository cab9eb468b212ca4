"""A resumed job never mixes old and new data: the size + SHA-256 of every input file is part of a run's identity.

* ``regkit recsys train`` interrupted, the interaction log changed in place, rerun → refused with one line naming
  the log and ``--overwrite``; ``--overwrite`` starts over; the same bytes back (new mtime) → resumed.
* A run that stopped before its first checkpoint and is rerun with a corrected config → started over, with a
  warning (nothing to lose), instead of "holds an unfinished run of another configuration".
* ``regkit retrieval index --model`` interrupted, the corpus changed → refused naming ``corpus.jsonl``;
  ``--overwrite`` encodes again.
* ``regkit retrieval train``'s caches (backbone states, BM25 index, mined candidates) are rebuilt when a file they
  were made from changed, with a warning naming it, instead of being reused stale.
"""

from __future__ import annotations

import json
import os
import shutil

import polars as pl
import pytest
import yaml
from resume_support import cli_error, crash_training, recsys_setup, regkit

from common_regs.checkpoint import sha256_file
from common_regs.fingerprints import content_fingerprints, fingerprint_inputs, input_change
from common_regs.run_dir import SUCCESS_NAME
from pipelines.faults import DEMO_DIR, recsys_checkpoints, tiny_sparse_model
from pipelines.run_guard import STARTED_NAME
from retrieval import resumable_encoding
from retrieval.resumable_encoding import encoding_work_dir

# -- the fingerprints themselves -----------------------------------------------------------------------------


def test_same_bytes_with_a_new_mtime_are_no_change_and_one_changed_byte_is(tmp_path) -> None:
    path = tmp_path / "log.parquet"
    path.write_bytes(b"a" * 1000)
    before = fingerprint_inputs([path])
    os.utime(path, ns=(1, 1))  # touched: same content
    assert input_change(before, fingerprint_inputs([path], known=before)) is None
    path.write_bytes(b"a" * 999 + b"b")  # same size, one byte differs
    change = input_change(before, fingerprint_inputs([path], known=before))
    assert change is not None and change.startswith(f"{path} changed (1000 bytes, SHA-256")
    path.unlink()
    assert "→ absent" in input_change(before, fingerprint_inputs([path]))


def test_digest_string_inputs_compare_by_value_and_are_described() -> None:
    """Generated inputs (pseudo-queries) are recorded as a digest string; another seed's digest was a crash."""
    assert input_change({"pseudo_queries": "ab12"}, {"pseudo_queries": "ab12"}) is None
    assert input_change({"pseudo_queries": "ab12" * 8}, {"pseudo_queries": "cd34" * 8}) == (
        "pseudo_queries changed (digest ab12ab12ab12 → digest cd34cd34cd34)")
    assert "absent → digest" in input_change({}, {"pseudo_queries": "ab12"})


def test_a_folder_stands_for_every_file_in_it_and_cache_keys_are_names_not_paths(tmp_path) -> None:
    for root in (tmp_path / "a", tmp_path / "b"):
        (root / "sub").mkdir(parents=True)
        (root / "sub" / "w.safetensors").write_bytes(b"weights")
        (root / "config.json").write_text("{}")
    assert list(fingerprint_inputs([tmp_path / "a"])) == [f"{tmp_path / 'a'}/config.json",
                                                         f"{tmp_path / 'a'}/sub/w.safetensors"]
    assert content_fingerprints({"model": tmp_path / "a"}) == content_fingerprints({"model": tmp_path / "b"})
    (tmp_path / "b" / "sub" / "w.safetensors").write_bytes(b"weightz")
    change = input_change(content_fingerprints({"model": tmp_path / "a"}),
                          content_fingerprints({"model": tmp_path / "b"}))
    assert change is not None and change.startswith("model/sub/w.safetensors changed")


# -- regkit recsys train ---------------------------------------------------------------------------------------


@pytest.mark.torchrec
def test_changed_log_refuses_the_resume_and_overwrite_starts_over(tmp_path, monkeypatch, capsys) -> None:
    data, config = recsys_setup(tmp_path)
    run = tmp_path / "run"
    args = ("recsys", "train", "--config", config, "--output-dir", run)
    crash_training(monkeypatch, after_checkpoints=1)
    assert regkit(*args) == 2
    monkeypatch.undo()
    assert recsys_checkpoints(run) and not (run / SUCCESS_NAME).exists()

    log = data / "interactions.parquet"
    original = log.read_bytes()
    frame = pl.read_parquet(log)
    frame.head(len(frame) - 50).write_parquet(log)  # the log is replaced in place: 50 interactions fewer
    capsys.readouterr()
    assert regkit(*args) == 2
    err = cli_error(capsys.readouterr().err)
    assert f"{log} changed" in err and "--overwrite" in err and "mixed data" in err
    assert recsys_checkpoints(run) and not (run / SUCCESS_NAME).exists()  # nothing was touched

    log.write_bytes(original)  # the same bytes again (a new mtime): the run is the same, it resumes
    newest = recsys_checkpoints(run)[0][1].name
    assert regkit(*args) == 0
    assert (run / SUCCESS_NAME).is_file()
    assert f"resumed from {run / 'checkpoints' / 'final' / newest}" in capsys.readouterr().err

    shutil.rmtree(run)
    crash_training(monkeypatch, after_checkpoints=1)
    assert regkit(*args) == 2
    monkeypatch.undo()
    frame.head(len(frame) - 50).write_parquet(log)
    assert regkit(*args, "--overwrite") == 0
    err = capsys.readouterr().err
    assert "resumed from" not in err and (run / SUCCESS_NAME).is_file()
    recorded = json.loads((run / STARTED_NAME).read_text())["inputs"]
    assert recorded[str(log)]["sha256"] == sha256_file(log)


@pytest.mark.torchrec
def test_a_run_that_died_before_its_first_checkpoint_does_not_block_the_corrected_rerun(
    tmp_path, monkeypatch, capsys
) -> None:
    _, config = recsys_setup(tmp_path)
    run = tmp_path / "run"
    crash_training(monkeypatch, after_checkpoints=0)
    assert regkit("recsys", "train", "--config", config, "--output-dir", run) == 2
    monkeypatch.undo()
    assert (run / STARTED_NAME).is_file() and not recsys_checkpoints(run)

    capsys.readouterr()
    assert regkit("recsys", "train", "--config", config, "--output-dir", run, "--set", "train.lr=0.02") == 0
    err = capsys.readouterr().err
    assert "unfinished run of another configuration" in err and "before its first checkpoint" in err
    assert "starting over" in err and (run / SUCCESS_NAME).is_file()


@pytest.mark.torchrec
def test_a_run_of_another_configuration_with_checkpoints_is_still_refused(tmp_path, monkeypatch, capsys) -> None:
    _, config = recsys_setup(tmp_path)
    run = tmp_path / "run"
    crash_training(monkeypatch, after_checkpoints=1)
    assert regkit("recsys", "train", "--config", config, "--output-dir", run) == 2
    monkeypatch.undo()
    capsys.readouterr()
    assert regkit("recsys", "train", "--config", config, "--output-dir", run, "--set", "train.lr=0.02") == 2
    err = cli_error(capsys.readouterr().err)
    assert "unfinished run of another configuration" in err and "--overwrite" in err


# -- regkit retrieval index --model ----------------------------------------------------------------------------


@pytest.mark.java
def test_changed_corpus_refuses_resuming_the_encoded_shards(tmp_path, monkeypatch, capsys) -> None:
    data = tmp_path / "beir"
    data.mkdir()
    lines = (DEMO_DIR / "beir" / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:12]
    corpus = data / "corpus.jsonl"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    model = tiny_sparse_model(tmp_path / "model", corpus)
    index = tmp_path / "index"
    args = ("retrieval", "index", "--data", data, "--index", index, "--model", model, "--shard-size", "4",
            "--threads", "1")
    original, calls = resumable_encoding.encode_documents, []

    def crash_at_third_shard(model, docs, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("simulated crash")
        return original(model, docs, **kwargs)

    monkeypatch.setattr(resumable_encoding, "encode_documents", crash_at_third_shard)
    assert regkit(*args) == 2
    monkeypatch.undo()
    work = encoding_work_dir(index)
    assert len(list(work.glob("shard-*.json"))) == 2 and not index.exists()

    edited = json.loads(lines[0])
    edited["text"] = "a corrected abstract"
    corpus.write_text("\n".join([json.dumps(edited), *lines[1:]]) + "\n", encoding="utf-8")
    capsys.readouterr()
    assert regkit(*args) == 2
    err = cli_error(capsys.readouterr().err)
    assert f"{corpus} changed" in err and "--overwrite" in err
    assert len(list(work.glob("shard-*.json"))) == 2 and not index.exists()

    assert regkit(*args, "--overwrite") == 0
    assert (index / SUCCESS_NAME).is_file() and not work.exists()


# -- regkit retrieval train's caches ---------------------------------------------------------------------------


def _tiny_beir(folder):
    """Six documents, five judged training queries (the shape of tests/retrieval/test_sparse_pipeline.py)."""
    texts = ["Daily aspirin reduces the risk of ischemic stroke.", "Statins lower cholesterol in adults.",
             "The protein kinase phosphorylates the receptor.", "Vitamin D deficiency weakens bones.",
             "Insulin resistance precedes type 2 diabetes.", "Artemisinin treats malaria."]
    queries = ["aspirin stroke", "statins cholesterol", "kinase receptor", "vitamin d bones", "insulin diabetes"]
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n" for i, t in enumerate(texts)))
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"q{i}", "text": t}) + "\n" for i, t in enumerate(queries)))
    (folder / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(len(queries))))
    return folder


def _edit_first_text(path, suffix: str) -> None:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    rows[0]["text"] += suffix  # same ids and count: the old cache keys could not see it
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


@pytest.mark.java
def test_training_caches_are_rebuilt_when_a_file_they_came_from_changed(tmp_path, capsys) -> None:
    data = _tiny_beir(tmp_path / "tiny")
    config = {"data": str(data), "cache_dir": str(tmp_path / "cache"), "steps": 1, "batch_queries": 2,
              "docs_per_query": 3, "candidates_k": 3, "model": {"max_seq_length": 256}, "train_max_length": 32}

    def train(name: str) -> str:
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump({**config, "out_dir": str(tmp_path / name)}))
        capsys.readouterr()
        assert regkit("retrieval", "train", "--config", tmp_path / f"{name}.yaml") == 0
        return capsys.readouterr().err  # the CLI logs to stderr

    train("first")
    _edit_first_text(data / "queries.jsonl", " prevention")
    log = train("second")
    assert "candidates: " in log and "was mined from other inputs (queries.jsonl changed" in log
    assert "hidden-state cache: reusing" in log and "BM25 index cache" not in log  # the corpus did not change

    _edit_first_text(data / "corpus.jsonl", " In adults over 50.")
    log = train("third")
    for cache in ("hidden-state cache", "BM25 index cache"):
        assert f"{cache} " in log and "was built from other inputs (corpus.jsonl changed" in log
    assert "was mined from other inputs (corpus.jsonl changed" in log
    recorded = json.loads((tmp_path / "cache" / "tiny-bm25.inputs.json").read_text())
    assert recorded["inputs"]["corpus.jsonl"]["sha256"] == sha256_file(data / "corpus.jsonl")
