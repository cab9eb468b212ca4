"""``regkit data lastfm``: the LightGCN LastFM files → parquet splits, with file:line errors on malformed input."""

from __future__ import annotations

import polars as pl
import pytest

from pipelines.cli import main
from pipelines.datasets.lastfm import LastFMFormatError, convert_lastfm
from recsys.data import validate_log


@pytest.mark.shared_data
def test_cli_conversion_matches_the_reference_files(lastfm_raw, tmp_path, capsys):
    out = tmp_path / "lastfm"
    assert main(["data", "lastfm", "--raw", str(lastfm_raw), "--out", str(out)]) == 0
    train, test = (pl.read_parquet(out / "splits" / f"{name}.parquet") for name in ("train", "test"))
    # one row per line of the reference files
    assert train.height == sum(1 for line in (lastfm_raw / "data1.txt").read_text().splitlines() if line.strip())
    assert test.height == sum(1 for line in (lastfm_raw / "test1.txt").read_text().splitlines() if line.strip())
    assert train.join(test, on=["user_id", "item_id"], how="semi").height == 0
    assert validate_log(out / "splits" / "train.parquet").rows == train.height
    first = (lastfm_raw / "data1.txt").read_text().splitlines()[0].split("\t")
    row = train.filter((pl.col("user_id") == int(first[0])) & (pl.col("item_id") == int(first[1])))
    assert row["plays"].to_list() == [float(first[2])]
    assert "split train" in capsys.readouterr().out


def _write(folder, train: str, test: str = "1\t3\t5\n"):
    folder.mkdir(exist_ok=True)
    (folder / "data1.txt").write_text(train)
    (folder / "test1.txt").write_text(test)
    return folder


@pytest.mark.parametrize(("train", "test", "message"), [
    ("1\t2\t10\n1\t2\n", "1\t3\t5\n", r"data1.txt:2: expected 3 tab-separated fields"),
    ("1\tx\t10\n", "1\t3\t5\n", r"data1.txt:1: integer ids and a numeric count expected"),
    ("1\t2\t10\n", "1\t2\t5\n", r"test1.txt: pair \(1, 2\) is also in data1.txt"),
    ("\n", "1\t3\t5\n", r"data1.txt: no rows"),
])
def test_malformed_files_name_the_file_and_line(tmp_path, train, test, message):
    raw = _write(tmp_path / "raw", train, test)
    with pytest.raises(LastFMFormatError, match=message):
        convert_lastfm(raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_scientific_notation_counts_and_missing_files(tmp_path):
    raw = _write(tmp_path / "raw", "1\t2\t3.2466e+05\n2\t2\t7\n")
    manifest = convert_lastfm(raw, tmp_path / "out")
    assert manifest["splits"] == {"train": 2, "test": 1} and manifest["users"] == 2 and manifest["items"] == 2
    assert pl.read_parquet(tmp_path / "out" / "splits" / "train.parquet")["plays"].to_list() == [324660.0, 7.0]
    (raw / "test1.txt").unlink()
    with pytest.raises(LastFMFormatError, match="test1.txt: file not found"):
        convert_lastfm(raw, tmp_path / "other")
