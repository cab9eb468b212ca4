"""MovieLens-100K raw files (GroupLens) → regkit parquet tables.

Output folder:
    interactions.parquet  user_id, item_id, timestamp, rating  (sorted by user, timestamp, item)
    items.parquet         item_id, title, year, genres (list of genre names from ``u.genre``)
    users.parquet         user_id, age_bucket, gender, occupation, zip_prefix
    splits/<name>.parquet every canonical split present (u1.base … u5.test, ua.*, ub.*), same columns as
                          interactions
    manifest.json         row counts and the sha256 of every raw file read

The conversion is deterministic (fixed row order, no wall-clock metadata) and atomic: the folder appears
complete or not at all.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import polars as pl

from common_regs.io import atomic_dir

logger = logging.getLogger(__name__)

__all__ = ["AGE_BUCKETS", "MovieLensFormatError", "convert_movielens_100k", "title_tokens", "with_title_tokens"]

#: Age buckets of MovieLens-1M's ``users.dat`` (lower bounds), applied to ML-100K's exact ages.
AGE_BUCKETS: tuple[tuple[int, str], ...] = (
    (0, "<18"), (18, "18-24"), (25, "25-34"), (35, "35-44"), (45, "45-49"), (50, "50-55"), (56, "56+"),
)
_SPLIT_PATTERN = re.compile(r"^u[1-5a-b]\.(base|test)$")
_RATING_SCHEMA = {"user_id": pl.Int64, "item_id": pl.Int64, "rating": pl.Float64, "timestamp": pl.Int64}
_ENCODING = "latin-1"  # GroupLens files are ISO-8859-1 (accented titles)


class MovieLensFormatError(ValueError):
    """A raw MovieLens file is missing or malformed; names the file and line."""


def _lines(path: Path) -> list[tuple[int, str]]:
    if not path.is_file():
        raise MovieLensFormatError(f"{path}: file not found (expected the GroupLens ML-100K raw files).")
    text = path.read_text(encoding=_ENCODING)
    return [(no, line) for no, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _read_ratings(path: Path) -> pl.DataFrame:
    rows = []
    for line_no, line in _lines(path):
        parts = line.split("\t")
        if len(parts) != 4:
            raise MovieLensFormatError(f"{path}:{line_no}: expected 4 tab-separated fields, got {len(parts)}.")
        try:
            rows.append((int(parts[0]), int(parts[1]), float(parts[2]), int(parts[3])))
        except ValueError:
            raise MovieLensFormatError(f"{path}:{line_no}: non-numeric field in {line!r}.") from None
    if not rows:
        raise MovieLensFormatError(f"{path}: no ratings.")
    frame = pl.DataFrame(rows, schema=_RATING_SCHEMA, orient="row")
    return frame.select("user_id", "item_id", "timestamp", "rating").sort("user_id", "timestamp", "item_id")


def _year(release_date: str, title: str) -> int | None:
    match = re.search(r"(\d{4})$", release_date.strip()) or re.search(r"\((\d{4})\)\s*$", title)
    return int(match.group(1)) if match else None


def _read_items(raw: Path) -> pl.DataFrame:
    genre_names = [line.split("|")[0] for _, line in _lines(raw / "u.genre")]
    rows = []
    for line_no, line in _lines(raw / "u.item"):
        parts = line.split("|")
        if len(parts) != 5 + len(genre_names):
            raise MovieLensFormatError(
                f"{raw / 'u.item'}:{line_no}: expected {5 + len(genre_names)} '|'-separated fields, got {len(parts)}."
            )
        flags = parts[5:]
        genres = [name for name, flag in zip(genre_names, flags, strict=True) if flag.strip() == "1"]
        rows.append({"item_id": int(parts[0]), "title": parts[1], "year": _year(parts[2], parts[1]), "genres": genres})
    schema = {"item_id": pl.Int64, "title": pl.String, "year": pl.Int32, "genres": pl.List(pl.String)}
    return pl.DataFrame(rows, schema=schema).sort("item_id")


#: Function words dropped from title tokens: they carry no content and would be every title's shared value.
TITLE_STOPWORDS = frozenset({"a", "an", "and", "the", "of", "in", "on", "to", "for", "with", "at", "la", "le", "les",
                             "de", "du", "des", "il", "el", "der", "die", "das", "l", "d", "s"})


def title_tokens(title: str) -> list[str]:
    """The content words of a ``u.item`` title, each once (first-seen order).

    Lower-cased alphanumeric runs of the title without its trailing "(1995)" year; parenthesised alternative titles
    are kept, stopwords dropped.

    >>> title_tokens("Shawshank Redemption, The (1994)")
    ['shawshank', 'redemption']
    >>> title_tokens("City of Lost Children, The (Cité des enfants perdus, La) (1995)")
    ['city', 'lost', 'children', 'cité', 'enfants', 'perdus']
    """
    text = re.sub(r"\(\d{4}\)\s*$", "", title).lower()
    return list(dict.fromkeys(w for w in re.findall(r"[^\W_]+", text) if w not in TITLE_STOPWORDS))


def with_title_tokens(items: pl.DataFrame) -> pl.DataFrame:
    """``items`` (the ``items.parquet`` table) with a ``title_tokens`` list column (:func:`title_tokens`)."""
    if "title" not in items.columns:
        raise MovieLensFormatError(f"items table has no `title` column (columns: {items.columns}).")
    tokens = [title_tokens(t or "") for t in items["title"].to_list()]
    return items.with_columns(pl.Series("title_tokens", tokens, dtype=pl.List(pl.String)))


def _age_bucket(age: int) -> str:
    return [label for lower, label in AGE_BUCKETS if age >= lower][-1]


def _read_users(raw: Path) -> pl.DataFrame:
    rows = []
    for line_no, line in _lines(raw / "u.user"):
        parts = line.split("|")
        if len(parts) != 5:
            raise MovieLensFormatError(
                f"{raw / 'u.user'}:{line_no}: expected 5 '|'-separated fields, got {len(parts)}."
            )
        rows.append({
            "user_id": int(parts[0]),
            "age_bucket": _age_bucket(int(parts[1])),
            "gender": parts[2],
            "occupation": parts[3],
            "zip_prefix": parts[4][:3],
        })
    return pl.DataFrame(rows).sort("user_id")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def convert_movielens_100k(raw: str | Path, out: str | Path, *, overwrite: bool = False) -> dict:
    """Convert the ML-100K folder ``raw`` into parquet tables under ``out``; returns the manifest."""
    raw, out = Path(raw), Path(out)
    if not raw.is_dir():
        raise MovieLensFormatError(f"{raw}: not a directory (expected the extracted ml-100k folder).")
    interactions = _read_ratings(raw / "u.data")
    items = _read_items(raw)
    users = _read_users(raw)
    unknown_items = interactions.filter(~pl.col("item_id").is_in(items["item_id"].implode()))
    if unknown_items.height:
        raise MovieLensFormatError(f"{raw / 'u.data'}: item id {unknown_items['item_id'][0]} is not in u.item.")
    split_files = sorted(p for p in raw.iterdir() if _SPLIT_PATTERN.match(p.name))
    splits = {p.name: _read_ratings(p) for p in split_files}
    manifest = {
        "source": "MovieLens 100K (GroupLens)",
        "interactions": interactions.height,
        "users": interactions["user_id"].n_unique(),
        "items": items.height,
        "genres": len(_lines(raw / "u.genre")),
        "splits": {name: frame.height for name, frame in splits.items()},
        "sha256": {p.name: _sha256(p) for p in [raw / "u.data", raw / "u.item", raw / "u.user", *split_files]},
    }
    with atomic_dir(out, overwrite=overwrite, markers=("manifest.json",)) as tmp:
        interactions.write_parquet(tmp / "interactions.parquet", statistics=False)
        items.write_parquet(tmp / "items.parquet", statistics=False)
        users.write_parquet(tmp / "users.parquet", statistics=False)
        (tmp / "splits").mkdir()
        for name, frame in splits.items():
            frame.write_parquet(tmp / "splits" / f"{name}.parquet", statistics=False)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    logger.info("wrote %s", out)
    return manifest
