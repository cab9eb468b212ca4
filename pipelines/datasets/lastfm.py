"""The LastFM split of the LightGCN reference code (``data1.txt`` / ``test1.txt``) → regkit parquet tables.

The files (He et al., "LightGCN", SIGIR 2020, github.com/gusye1234/LightGCN-PyTorch, ``data/lastfm``; built from
HetRec 2011's Last.fm-2k) hold one ``user<TAB>artist<TAB>plays`` row per pair with 1-based ids (the reference
loader subtracts 1; regkit keeps them as written). Output folder:

    splits/train.parquet, splits/test.parquet  user_id, item_id, plays (the listening count; regkit treats every row
                                               as one positive)
    manifest.json                              row / user / item counts and the sha256 of every raw file read

The conversion is deterministic and atomic: the folder appears complete or not at all.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import polars as pl

from common_regs.io import atomic_dir

logger = logging.getLogger(__name__)

__all__ = ["LastFMFormatError", "convert_lastfm"]

_FILES = {"train": "data1.txt", "test": "test1.txt"}
_SCHEMA = {"user_id": pl.Int64, "item_id": pl.Int64, "plays": pl.Float64}  # a few counts are written 3.2466e+05


class LastFMFormatError(ValueError):
    """A raw LastFM file is missing or malformed; names the file and line."""


def _read_pairs(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise LastFMFormatError(f"{path}: file not found (expected the LightGCN LastFM files data1.txt, test1.txt).")
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise LastFMFormatError(f"{path}:{line_no}: expected 3 tab-separated fields (user, artist, plays), "
                                    f"got {len(parts)}.")
        try:
            rows.append((int(parts[0]), int(parts[1]), float(parts[2])))
        except ValueError:
            raise LastFMFormatError(f"{path}:{line_no}: integer ids and a numeric count expected: {line!r}.") from None
    if not rows:
        raise LastFMFormatError(f"{path}: no rows.")
    return pl.DataFrame(rows, schema=_SCHEMA, orient="row").sort("user_id", "item_id")


def convert_lastfm(raw: str | Path, out: str | Path, *, overwrite: bool = False) -> dict:
    """Convert the LastFM folder ``raw`` into parquet split files under ``out``; returns the manifest."""
    raw, out = Path(raw), Path(out)
    if not raw.is_dir():
        raise LastFMFormatError(f"{raw}: not a directory (expected the folder with data1.txt and test1.txt).")
    splits = {name: _read_pairs(raw / file) for name, file in _FILES.items()}
    overlap = splits["train"].join(splits["test"], on=["user_id", "item_id"], how="semi")
    if overlap.height:
        row = overlap.row(0, named=True)
        raise LastFMFormatError(f"{raw / _FILES['test']}: pair ({row['user_id']}, {row['item_id']}) is also in "
                                f"{_FILES['train']}: a test pair must be unseen in training.")
    manifest = {
        "source": "LastFM (LightGCN reference split of HetRec 2011 Last.fm-2k)",
        "splits": {name: frame.height for name, frame in splits.items()},
        "users": pl.concat([f["user_id"] for f in splits.values()]).n_unique(),
        "items": pl.concat([f["item_id"] for f in splits.values()]).n_unique(),
        "sha256": {file: hashlib.sha256((raw / file).read_bytes()).hexdigest() for file in _FILES.values()},
    }
    with atomic_dir(out, overwrite=overwrite, markers=("manifest.json",)) as tmp:
        (tmp / "splits").mkdir()
        for name, frame in splits.items():
            frame.write_parquet(tmp / "splits" / f"{name}.parquet", statistics=False)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    logger.info("wrote %s", out)
    return manifest
