"""BEIR folder loading: counts on SciFact, and clear errors naming file and line for malformed input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from retrieval.beir import BeirFormatError, load_beir, read_qrels


def _write_beir(folder: Path, corpus: str, queries: str, qrels: str, split: str = "test") -> Path:
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(corpus, encoding="utf-8")
    (folder / "queries.jsonl").write_text(queries, encoding="utf-8")
    (folder / "qrels" / f"{split}.tsv").write_text(qrels, encoding="utf-8")
    return folder


GOOD_CORPUS = "".join(json.dumps({"_id": d, "title": f"t{d}", "text": f"text {d}"}) + "\n" for d in ("d1", "d2"))
GOOD_QUERIES = json.dumps({"_id": "q1", "text": "hello"}) + "\n" + json.dumps({"_id": "q2", "text": "x"}) + "\n"
GOOD_QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t2\n"


def test_scifact_counts(scifact_dir):
    dataset = load_beir(scifact_dir, split="test")
    assert len(dataset.corpus) == 5183
    assert len(dataset.queries) == 1109
    assert len(dataset.qrels) == 300
    assert sum(len(d) for d in dataset.qrels.values()) == 339
    assert len(load_beir(scifact_dir, split="train").qrels) == 809


def test_small_folder_roundtrip_with_bom_and_crlf(tmp_path):
    folder = _write_beir(tmp_path / "ds", "\ufeff" + GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS.replace("\n", "\r\n"))
    dataset = load_beir(folder)
    assert dataset.qrels == {"q1": {"d1": 1, "d2": 2}}
    assert dataset.corpus["d1"].contents == "td1 text d1"
    assert dataset.split_queries == {"q1": "hello"}


@pytest.mark.parametrize(
    ("corpus", "queries", "qrels", "message"),
    [
        (GOOD_CORPUS + "{not json\n", GOOD_QUERIES, GOOD_QRELS, r"corpus.jsonl:3: malformed JSON"),
        (GOOD_CORPUS + json.dumps({"title": "no id"}) + "\n", GOOD_QUERIES, GOOD_QRELS,
         r"corpus.jsonl:3: missing field `_id`"),
        (GOOD_CORPUS + json.dumps({"_id": "d1", "text": "dup"}) + "\n", GOOD_QUERIES, GOOD_QRELS,
         r"corpus.jsonl:3: duplicate document id 'd1'"),
        (GOOD_CORPUS, json.dumps({"_id": "q1"}) + "\n", GOOD_QRELS, r"queries.jsonl:1: missing field `text`"),
        (GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS + "q1\td9\t1\n", r"judges document id 'd9'"),
        (GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS + "q7\td1\t1\n", r"query id 'q7' is not in"),
        (GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS + "q1\td1\n", r"test.tsv:4: expected 3 tab-separated columns"),
        (GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS + "q2\td1\thigh\n", r"test.tsv:4: score must be an integer"),
        ("", GOOD_QUERIES, GOOD_QRELS, r"corpus.jsonl: file is empty"),
    ],
)
def test_malformed_input_names_file_and_line(tmp_path, corpus, queries, qrels, message):
    folder = _write_beir(tmp_path / "ds", corpus, queries, qrels)
    with pytest.raises(BeirFormatError, match=message):
        load_beir(folder)


def test_missing_folder_split_and_file(tmp_path):
    with pytest.raises(BeirFormatError, match="directory not found"):
        load_beir(tmp_path / "absent")
    folder = _write_beir(tmp_path / "ds", GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS)
    with pytest.raises(BeirFormatError, match=r"no qrels for split 'dev'; available splits: \['test'\]"):
        load_beir(folder, split="dev")
    (folder / "queries.jsonl").unlink()
    with pytest.raises(BeirFormatError, match="queries.jsonl: file not found"):
        load_beir(folder)


def test_qrels_duplicate_judgment(tmp_path):
    path = tmp_path / "q.tsv"
    path.write_text("q1\td1\t1\nq1\td1\t2\n")
    with pytest.raises(BeirFormatError, match="q.tsv:2: duplicate judgment"):
        read_qrels(path)


def test_download_unpacks_the_official_zip_layout_once(tmp_path):
    import zipfile

    from retrieval.beir import download_beir

    source = _write_beir(tmp_path / "src" / "tiny", GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS)
    archive = tmp_path / "tiny.zip"
    with zipfile.ZipFile(archive, "w") as zipped:  # official zips hold one folder named after the dataset
        for path in source.rglob("*"):
            zipped.write(path, path.relative_to(source.parent))
    folder = download_beir("tiny", tmp_path / "cache", url=archive.as_uri())
    assert folder == tmp_path / "cache" / "tiny"
    assert load_beir(folder).qrels == {"q1": {"d1": 1, "d2": 2}}
    archive.unlink()  # a second call uses the cache, no download
    assert download_beir("tiny", tmp_path / "cache", url=archive.as_uri()) == folder


def test_download_failure_is_a_clear_error(tmp_path):
    from retrieval.beir import download_beir

    with pytest.raises(ConnectionError, match="could not download BEIR dataset 'nope'.*pass a local folder"):
        download_beir("nope", tmp_path, url=(tmp_path / "missing.zip").as_uri())
    assert not (tmp_path / "nope").exists() and not (tmp_path / "nope.zip").exists()


def test_non_utf8_bytes_name_file_and_line(tmp_path):
    folder = _write_beir(tmp_path / "ds", GOOD_CORPUS, GOOD_QUERIES, GOOD_QRELS)
    with open(folder / "corpus.jsonl", "ab") as handle:
        handle.write(b'{"_id": "d3", "text": "caf\xe9"}\n')
    with pytest.raises(BeirFormatError, match=r"corpus.jsonl:3: not UTF-8"):
        load_beir(folder)
