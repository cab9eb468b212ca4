"""ML-100K raw files → parquet: the published counts, determinism, atomic output, clear errors."""

from __future__ import annotations

import shutil

import polars as pl
import pytest
import torch

from pipelines.cli import main
from pipelines.datasets.movielens import MovieLensFormatError, convert_movielens_100k, title_tokens, with_title_tokens
from recsys.data import Vocabulary, validate_log
from recsys.features import FeatureSpec, FeatureTable


def test_cli_conversion_matches_published_counts(ml100k_raw, tmp_path, capsys):
    out = tmp_path / "ml100k"
    assert main(["data", "movielens", "--raw", str(ml100k_raw), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "100,000" in printed and "1,682" in printed

    interactions = pl.read_parquet(out / "interactions.parquet")
    assert interactions.columns == ["user_id", "item_id", "timestamp", "rating"]
    assert interactions.height == 100_000
    assert interactions["user_id"].n_unique() == 943
    assert interactions["item_id"].n_unique() == 1682
    items = pl.read_parquet(out / "items.parquet")
    assert items.height == 1682
    assert items["genres"].explode().drop_nulls().n_unique() == 19
    toy_story = items.filter(pl.col("item_id") == 1).row(0, named=True)
    assert toy_story["year"] == 1995 and toy_story["genres"] == ["Animation", "Children's", "Comedy"]
    users = pl.read_parquet(out / "users.parquet")
    assert users.height == 943
    assert users.filter(pl.col("user_id") == 1).row(0, named=True) == {
        "user_id": 1, "age_bucket": "18-24", "gender": "M", "occupation": "technician", "zip_prefix": "857"
    }
    assert pl.read_parquet(out / "splits" / "u1.base.parquet").height == 80_000
    assert pl.read_parquet(out / "splits" / "u1.test.parquet").height == 20_000
    assert validate_log(out / "interactions.parquet").rows == 100_000


def test_conversion_is_deterministic_and_refuses_to_overwrite(ml100k_raw, tmp_path):
    first = convert_movielens_100k(ml100k_raw, tmp_path / "a")
    second = convert_movielens_100k(ml100k_raw, tmp_path / "b")
    assert first == second
    for name in ("interactions.parquet", "items.parquet", "users.parquet", "splits/u1.test.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    with pytest.raises(FileExistsError, match="already exists"):
        convert_movielens_100k(ml100k_raw, tmp_path / "a")


def test_malformed_raw_file_leaves_no_output(ml100k_raw, tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(ml100k_raw, raw)
    with open(raw / "u.data", "a", encoding="latin-1") as handle:
        handle.write("1\t2\tthree\t4\n")
    with pytest.raises(MovieLensFormatError, match=r"u.data:100001: non-numeric field"):
        convert_movielens_100k(raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.glob(".out.*")) == []  # no temporary folder left behind


def test_missing_raw_folder(tmp_path):
    assert main(["data", "movielens", "--raw", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 2


def test_title_tokens_feed_a_multi_valued_item_feature():
    items = pl.DataFrame(
        {
            "item_id": [1, 2, 3],
            "title": ["Shawshank Redemption, The (1994)", "Toy Story 2 (1999)", "Story of Us, The (1999)"],
        }
    )
    tokens = with_title_tokens(items)["title_tokens"].to_list()
    assert tokens == [["shawshank", "redemption"], ["toy", "story", "2"], ["story", "us"]]
    spec = FeatureSpec("title", "multi_categorical", "title_tokens", min_count=2)
    table = FeatureTable.build(Vocabulary.from_values("item_id", items["item_id"]), [spec], with_title_tokens(items))
    values, lengths = table.lookup(torch.arange(3))["title"]
    assert lengths.tolist() == [2, 3, 2]  # one value per token; tokens seen once share the OOV row
    oov, story = int(values[0]), int(values[3])
    assert story != oov and values.tolist() == [oov, oov, oov, story, oov, story, oov]
    assert title_tokens("(1994)") == [] and with_title_tokens(items.drop("title").with_columns(title=pl.lit(None)))[
        "title_tokens"
    ].to_list() == [[], [], []]
    with pytest.raises(MovieLensFormatError, match="no `title` column"):
        with_title_tokens(items.drop("title"))
