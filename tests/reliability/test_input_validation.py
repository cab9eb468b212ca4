"""Inputs that used to pass validation and fail (or silently mislead) later, each run through the real CLI.

* ids too long for an id: refused by ``regkit data validate`` and ``regkit recsys train`` with the limit stated,
  before anything is allocated for them; vocabularies never pad ids to the longest one;
* BEIR ids holding whitespace (non-breaking spaces too) or longer than Lucene can index: refused at load with the
  file and line, before ``regkit beir eval`` indexes anything;
* integer ids in one log, string ids in the other: the error names the file with the odd type;
* no test user known to the model: exit 0 with the popularity metrics, a warning on stderr and in ``metrics.json``;
* a served model folder with a truncated file or another model's FAISS index: an error naming the file;
* errors on the training path name the file and the file's row, as ``regkit data validate`` does;
* a killed BM25 build leaves its collection beside the index (not in the system temp folder); the rerun removes it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tracemalloc
from pathlib import Path

import faiss
import numpy as np
import polars as pl
import pytest
import yaml

from pipelines.cli import main
from pipelines.faults import DEMO_DIR, run_cli, run_until
from recsys.data import MAX_ID_LENGTH, Vocabulary
from retrieval.beir import MAX_ID_LENGTH as MAX_BEIR_ID_LENGTH

USERS, ITEMS, PER_USER = 30, 20, 8


def _interactions(seed: int = 0) -> pl.DataFrame:
    """``USERS`` users with ``PER_USER`` distinct items each, in user order."""
    rng = np.random.default_rng(seed)
    rows = [(user, int(item)) for user in range(USERS) for item in rng.choice(ITEMS, PER_USER, replace=False)]
    return pl.DataFrame(rows, schema=["user_id", "item_id"], orient="row")


def _write_given(folder: Path, train: pl.DataFrame, test: pl.DataFrame) -> Path:
    """``train.parquet`` / ``test.parquet`` and a tiny MF config over them; returns the config."""
    folder.mkdir(parents=True, exist_ok=True)
    train.write_parquet(folder / "train.parquet")
    test.write_parquet(folder / "test.parquet")
    return _write_config(folder, {"dir": str(folder), "train": "train.parquet", "test": "test.parquet"})


def _write_config(folder: Path, data: dict) -> Path:
    config = {
        "seed": 0,
        "num_threads": 1,
        "data": {**data, "validation": {"method": "none"}},
        "model": {"name": "mf", "embedding_dim": 8},
        "train": {"epochs": 1, "batch_size": 64, "show_progress": False},
        "eval": {"ks": [5]},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _train(config: Path, run: Path) -> int:
    return main(["recsys", "train", "--config", str(config), "--output-dir", str(run)])


def _split_in_four(log: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    test = pl.int_range(pl.len()) % 4 == 0
    return log.filter(~test), log.filter(test)


# -- ids too long for an id ------------------------------------------------------------------------------------


def test_a_long_id_is_refused_by_validate_and_train_with_the_limit(tmp_path, capsys):
    train, test = _split_in_four(_interactions().with_columns(pl.col("user_id").cast(pl.String)))
    long_id = "u" * 100_000  # a million characters made training allocate 60.9 GiB: ids were padded to the longest
    train = train.with_columns(
        pl.when(pl.int_range(pl.len()) == 7).then(pl.lit(long_id)).otherwise("user_id").alias("user_id")
    )
    config = _write_given(tmp_path / "data", train, test)
    log = tmp_path / "data" / "train.parquet"
    limit = f"ids longer than the {MAX_ID_LENGTH:,}-character limit"

    assert main(["data", "validate", str(log)]) == 2
    error = capsys.readouterr().err
    assert f"{log}: column `user_id` has 1 {limit}" in error and "first at row 7" in error

    assert _train(config, tmp_path / "run") == 2
    error = capsys.readouterr().err
    assert f"{log}: column `user_id` has 1 {limit}" in error and "first at row 7" in error
    assert not (tmp_path / "run" / "model").exists()


def test_vocabularies_do_not_pad_ids_to_the_longest():
    ids = pl.Series([f"user-{number}" for number in range(20_000)] + ["x" * MAX_ID_LENGTH])
    tracemalloc.start()
    try:
        vocabulary = Vocabulary.from_values("user_id", ids)
        encoded = vocabulary.encode(ids)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # padded to the longest: 20,001 ids x 1,024 characters x 4 bytes = 82 MB; variable-width: about 2 MB
    assert peak < 16e6, f"peak {peak / 1e6:.1f} MB"
    assert vocabulary.decode(encoded).tolist() == ids.to_list()


def test_an_id_over_the_limit_is_refused_by_a_vocabulary():
    with pytest.raises(ValueError, match=f"holds an id of 1,025 characters .* limited to {MAX_ID_LENGTH:,}"):
        Vocabulary.from_values("item_id", ["a", "b" * (MAX_ID_LENGTH + 1)])


# -- errors name the file and its row ----------------------------------------------------------------------------


def test_training_errors_name_the_file_and_its_row_as_validate_does(tmp_path, capsys):
    log = _interactions().with_columns(rating=pl.lit(4.0))
    log = log.with_columns(pl.when(pl.int_range(pl.len()) == 7).then(float("nan")).otherwise("rating").alias("rating"))
    folder = tmp_path / "data"
    folder.mkdir()
    log.write_parquet(folder / "log.parquet")
    config = _write_config(
        folder, {"dir": str(folder), "log": "log.parquet", "split": "random_holdout", "test_fraction": 0.5}
    )

    assert main(["data", "validate", str(folder / "log.parquet")]) == 2
    assert "column `rating` has 1 null/NaN/infinite values (first at row 7)" in capsys.readouterr().err
    assert _train(config, tmp_path / "run") == 2  # was "train: ... (first at row 6)": a row of the train side
    error = capsys.readouterr().err
    assert f"{folder / 'log.parquet'}: column `rating` has 1 NaN/null values (first at row 7)" in error


def test_integer_train_ids_and_string_test_ids_name_the_test_file(tmp_path, capsys):
    train, test = _split_in_four(_interactions())
    config = _write_given(tmp_path / "data", train, test.with_columns(pl.col("user_id").cast(pl.String)))
    assert _train(config, tmp_path / "run") == 2
    error = capsys.readouterr().err
    assert f"{tmp_path / 'data' / 'test.parquet'}: column `user_id` holds string ids but" in error
    assert "train.parquet holds integer ids" in error


# -- a served model and its test log -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny MF run: ``(data folder, run folder)``."""
    root = tmp_path_factory.mktemp("served")
    config = _write_given(root / "data", *_split_in_four(_interactions()))
    assert _train(config, root / "run") == 0
    return root / "data", root / "run"


def test_eval_with_string_ids_against_an_integer_model_names_the_test_file(trained, tmp_path, capsys):
    data, run = trained
    strings = tmp_path / "strings.parquet"
    pl.read_parquet(data / "test.parquet").with_columns(pl.col("user_id").cast(pl.String)).write_parquet(strings)
    assert main(["recsys", "eval", "--model", str(run / "model"), "--test", str(strings)]) == 2
    assert f"{strings}: column `user_id` holds string ids but the model's are integers" in capsys.readouterr().err


def test_no_known_test_user_gives_popularity_metrics_and_a_warning(tmp_path, capsys):
    train, test = _split_in_four(_interactions())
    config = _write_given(tmp_path / "data", train, test.with_columns(pl.col("user_id") + 1_000))
    assert _train(config, tmp_path / "run") == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    assert metrics["unknown_test_users"] == metrics["users"] == test["user_id"].n_unique()
    assert 0.0 <= metrics["R@5"] <= 1.0  # the popularity fallback's lists, evaluated
    assert len(metrics["warnings"]) == 1 and "popularity, not the model" in metrics["warnings"][0]
    assert f"WARNING pipelines.evaluation.recsys: {metrics['warnings'][0]}" in capsys.readouterr().err


def _copy_model(run: Path, to: Path) -> Path:
    return Path(shutil.copytree(run / "model", to))


def test_the_manifest_records_the_index_shape_and_checksums(trained):
    model = trained[1] / "model"
    manifest = json.loads((model / "serving.json").read_text())
    index = faiss.read_index(str(model / "index.faiss"))
    assert manifest["faiss"] == {"ntotal": index.ntotal, "dimension": index.d} and index.ntotal == ITEMS
    for name in ("model.pt", "seen.npz", "index.faiss", "users.parquet"):
        assert manifest["files"][name]["sha256"] == hashlib.sha256((model / name).read_bytes()).hexdigest()


@pytest.mark.parametrize("dimension_change", [0, 1], ids=["foreign-same-shape", "other-dimension"])
def test_a_foreign_index_is_refused_naming_it(trained, tmp_path, capsys, dimension_change):
    model = _copy_model(trained[1], tmp_path / "model")
    dimension = faiss.read_index(str(model / "index.faiss")).d + dimension_change
    foreign = faiss.IndexFlatIP(dimension)
    foreign.add(np.random.default_rng(0).standard_normal((ITEMS, dimension)).astype(np.float32))
    faiss.write_index(foreign, str(model / "index.faiss"))  # was served silently (or failed with an empty message)
    assert main(["recsys", "recommend", "--model", str(model), "--user", "1"]) == 2
    error = capsys.readouterr().err
    assert f"{model / 'index.faiss'}: " in error and "SHA-256 differs" in error and "\n" not in error.strip()


def test_an_index_of_another_shape_is_refused_even_with_a_matching_checksum(trained, tmp_path, capsys):
    model = _copy_model(trained[1], tmp_path / "model")
    dimension = faiss.read_index(str(model / "index.faiss")).d
    foreign = faiss.IndexFlatIP(dimension + 1)
    foreign.add(np.ones((ITEMS - 1, dimension + 1), dtype=np.float32))
    faiss.write_index(foreign, str(model / "index.faiss"))
    manifest = json.loads((model / "serving.json").read_text())
    data = (model / "index.faiss").read_bytes()
    manifest["files"]["index.faiss"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (model / "serving.json").write_text(json.dumps(manifest))
    assert main(["recsys", "recommend", "--model", str(model), "--user", "1"]) == 2
    assert (
        f"index.faiss: holds {ITEMS - 1} vectors of dimension {dimension + 1}, but this model serves {ITEMS} "
        f"items of dimension {dimension}"
    ) in capsys.readouterr().err


@pytest.mark.parametrize("name", ["model.pt", "seen.npz"])
def test_a_truncated_file_is_named(trained, tmp_path, capsys, name):
    model = _copy_model(trained[1], tmp_path / "model")
    (model / name).write_bytes((model / name).read_bytes()[:300])
    assert main(["recsys", "recommend", "--model", str(model), "--user", "1"]) == 2
    assert f"{model / name}: 300 bytes whose SHA-256 differs" in capsys.readouterr().err


# -- BEIR ids -----------------------------------------------------------------------------------------------------


def _beir_folder(folder: Path, *, doc_id: str = "d2", query_id: str = "q1") -> Path:
    folder.mkdir(parents=True)
    docs = [("d1", "apples and pears"), (doc_id, "bananas grow on trees"), ("d3", "cherries are red")]
    (folder / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": d, "title": "", "text": t}) + "\n" for d, t in docs), encoding="utf-8"
    )
    queries = [("q0", "red fruit"), (query_id, "bananas")]
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries), encoding="utf-8"
    )
    (folder / "qrels").mkdir()
    (folder / "qrels" / "test.tsv").write_text(
        f"query-id\tcorpus-id\tscore\nq0\td3\t1\n{query_id}\t{doc_id}\t1\n", encoding="utf-8"
    )
    return folder


@pytest.mark.parametrize(
    ("ids", "where", "reason"),
    [
        ({"doc_id": "d 2"}, "corpus.jsonl:2", "holds whitespace (' ' at character 1)"),
        ({"query_id": "q\u00a01"}, "queries.jsonl:2", "holds whitespace ('\\xa0' at character 1)"),
        ({"doc_id": "d" * 40_000}, "corpus.jsonl:2", "is 40,000 characters long ('dddd"),
    ],
    ids=["space-in-doc-id", "nbsp-in-query-id", "long-doc-id"],
)
def test_beir_ids_are_checked_at_load_naming_the_line(tmp_path, capsys, ids, where, reason):
    folder = _beir_folder(tmp_path / "beir", **ids)
    assert main(["data", "beir", "--from", str(folder)]) == 2
    error = capsys.readouterr().err
    assert f"{folder / where}: " in error and reason in error


def test_beir_eval_refuses_a_long_doc_id_before_indexing(tmp_path, capsys):
    folder = _beir_folder(tmp_path / "beir", doc_id="d" * 40_000)  # was "Anserini indexed 2 of 3 documents"
    out = tmp_path / "eval"
    assert main(["beir", "eval", "--data", str(folder), "--out", str(out), "--threads", "1"]) == 2
    error = capsys.readouterr().err
    assert f"{folder / 'corpus.jsonl'}:2: `_id` is 40,000 characters long" in error
    assert f"limited to {MAX_BEIR_ID_LENGTH:,} characters" in error and not (out / "index").exists()


# -- a killed BM25 build ------------------------------------------------------------------------------------------


@pytest.mark.java
def test_a_killed_bm25_build_leaves_no_collection_in_the_temp_folder(tmp_path, monkeypatch):
    system_temp = tmp_path / "system-temp"
    system_temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(system_temp))  # the subprocesses' tempfile.gettempdir()
    index = tmp_path / "out" / "index"
    args = ["retrieval", "index", "--data", DEMO_DIR / "beir", "--index", index, "--threads", "1"]

    def collection_written() -> bool:
        return any(tmp_path.rglob("part-*.jsonl"))

    killed = run_until(args, tmp_path / "killed.log", ready=collection_written, timeout=300)
    assert killed.killed, killed.log
    assert not list(system_temp.glob("regkit-collection-*"))  # was 30 MB per killed build, never removed
    assert (index.parent / ".index.collection.tmp").is_dir()  # beside the index: the next build removes it
    rerun = run_cli(args, tmp_path / "rerun.log", timeout=300)
    assert rerun.returncode == 0, rerun.log
    assert not list(system_temp.glob("regkit-collection-*"))
    assert sorted(p.name for p in index.parent.iterdir()) == ["index"]
