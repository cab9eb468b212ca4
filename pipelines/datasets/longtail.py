"""A generated interaction log with a long tail whose tail items are predictable from their features.

Built for the SSL benchmark (Yao et al. 2021, arXiv:2007.12865: SSL should help most where clicks are sparse):

* items: a ``brand`` (``genres · brands_per_genre`` brands, about ``items / brands`` items each) that belongs to
  one primary genre; genres = the primary genre plus 0-2 extra ones (so brand and genres are strongly correlated);
  a release ``year`` whose decade leans on the primary genre; a Zipf(``zipf``) popularity over a random item
  order (the long tail);
* users: ``liked`` preferred brands; each interaction picks a liked brand (prob ``taste``) or any brand, then an
  item of that brand with probability ∝ popularity. A liked brand holds a few head items and many tail items, so
  a user's top 20 by the true preference contains tail items, and a tail item is relevant to exactly the users
  who like its brand, which its features reveal even when its id was seen only a few times;
* written as ``interactions.parquet`` (user_id, item_id, timestamp, rating) and ``items.parquet`` (item_id,
  genres, brand, year) through :func:`common_regs.io.atomic_dir`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from common_regs.io import atomic_dir

logger = logging.getLogger(__name__)

__all__ = ["LongTailSpec", "write_longtail_log"]


@dataclass(frozen=True)
class LongTailSpec:
    """Sizes and knobs of the generated log (module docstring); ``interactions_per_user`` is a [low, high) range."""

    seed: int = 11
    users: int = 2000
    items: int = 2000
    genres: int = 12
    brands_per_genre: int = 6
    liked: int = 3
    interactions_per_user: tuple[int, int] = (15, 50)
    taste: float = 0.85
    zipf: float = 1.0


def _tables(spec: LongTailSpec, rng: np.random.Generator) -> tuple[pl.DataFrame, pl.DataFrame]:
    primary = rng.integers(0, spec.genres, size=spec.items)
    extra = [rng.choice(spec.genres, size=int(rng.integers(0, 3)), replace=False) for _ in range(spec.items)]
    genres = [sorted({int(p), *map(int, e)}) for p, e in zip(primary, extra, strict=True)]
    brand = primary * spec.brands_per_genre + rng.integers(0, spec.brands_per_genre, size=spec.items)
    decade = (primary % 6) + rng.integers(0, 2, size=spec.items)
    year = 1950 + 10 * decade + rng.integers(0, 10, size=spec.items)
    popularity = rng.permutation(1.0 / np.arange(1, spec.items + 1) ** spec.zipf)
    brands = spec.genres * spec.brands_per_genre
    by_brand = [np.flatnonzero(brand == b) for b in range(brands)]
    within = [popularity[members] / popularity[members].sum() for members in by_brand]
    rows = []
    clock = 1_600_000_000
    for user in range(spec.users):
        liked = rng.choice(brands, size=spec.liked, replace=False)
        count = int(rng.integers(*spec.interactions_per_user))
        picks = np.where(
            rng.random(count) < spec.taste, rng.choice(liked, size=count), rng.integers(0, brands, size=count)
        )
        seen: set[int] = set()
        for chosen in picks.tolist():
            if by_brand[chosen].size == 0:
                continue
            item = int(rng.choice(by_brand[chosen], p=within[chosen]))
            if item in seen:
                continue
            seen.add(item)
            clock += int(rng.integers(1, 600))
            rows.append((user + 1, item + 1, clock, 1.0))
    log = pl.DataFrame(
        rows,
        schema={"user_id": pl.Int64, "item_id": pl.Int64, "timestamp": pl.Int64, "rating": pl.Float64},
        orient="row",
    )
    items = pl.DataFrame(
        {
            "item_id": np.arange(1, spec.items + 1),
            "genres": [[f"g{g}" for g in names] for names in genres],
            "brand": [f"b{b}" for b in brand],
            "year": year.astype(np.int32),
        }
    )
    return log, items


def write_longtail_log(out: str | Path, spec: LongTailSpec = LongTailSpec(), *, overwrite: bool = False) -> Path:
    """Write ``out/interactions.parquet``, ``out/items.parquet`` and ``out/spec.json``; returns ``out``."""
    out = Path(out)
    log, items = _tables(spec, np.random.default_rng(spec.seed))
    counts = log.group_by("item_id").len()["len"].to_numpy()
    logger.info(
        "long-tail log: %d interactions, %d users, %d of %d items seen, max/median item count %d/%d",
        log.height,
        log["user_id"].n_unique(),
        counts.size,
        spec.items,
        counts.max(),
        np.median(counts),
    )
    with atomic_dir(out, overwrite=overwrite, markers=("spec.json",)) as tmp:
        log.write_parquet(tmp / "interactions.parquet", statistics=False)
        items.write_parquet(tmp / "items.parquet", statistics=False)
        (tmp / "spec.json").write_text(json.dumps(asdict(spec), indent=2) + "\n")
    return out
