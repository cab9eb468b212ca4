"""pipelines.datasets.longtail: the generated long-tail log has its documented structure."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from pipelines.datasets.longtail import LongTailSpec, write_longtail_log


def test_longtail_log_has_a_long_tail_and_feature_bound_relevance(tmp_path) -> None:
    spec = LongTailSpec(users=300, items=400, genres=6, brands_per_genre=3)
    folder = write_longtail_log(tmp_path / "lt", spec)
    log = pl.read_parquet(folder / "interactions.parquet")
    items = pl.read_parquet(folder / "items.parquet")
    assert log.columns == ["user_id", "item_id", "timestamp", "rating"] and items.height == 400
    assert not log.select(["user_id", "item_id"]).is_duplicated().any()
    counts = np.sort(log.group_by("item_id").len()["len"].to_numpy())[::-1]
    assert counts[: int(0.2 * counts.size)].sum() / counts.sum() > 0.5  # top 20% of items take most clicks
    # every brand sits in one primary genre, which is among the item's genres
    brand_genre = {}
    for brand, genres in zip(items["brand"].to_list(), items["genres"].to_list(), strict=True):
        primary = f"g{int(brand[1:]) // spec.brands_per_genre}"
        assert primary in genres
        brand_genre.setdefault(brand, primary)
        assert brand_genre[brand] == primary
    # users concentrate on their liked brands: their top `liked` brands cover most of their items
    brand_of = dict(zip(items["item_id"].to_list(), (int(b[1:]) for b in items["brand"]), strict=True))
    brands = spec.genres * spec.brands_per_genre
    shares = []
    for _, group in log.group_by("user_id"):
        counts_per_brand = np.bincount([brand_of[i] for i in group["item_id"].to_list()], minlength=brands)
        shares.append(np.sort(counts_per_brand)[-spec.liked :].sum() / counts_per_brand.sum())
    assert float(np.mean(shares)) > 0.75
    with pytest.raises(FileExistsError):
        write_longtail_log(folder, spec)
