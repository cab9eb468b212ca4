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
    # users concentrate on their liked genres: the top-2 genres of a user cover far more than 2/6 of their items
    primary = dict(zip(items["item_id"].to_list(), (int(b[1:]) // spec.brands_per_genre for b in items["brand"]),
                       strict=True))
    shares = []
    for _, group in log.group_by("user_id"):
        genres = np.bincount([primary[i] for i in group["item_id"].to_list()], minlength=spec.genres)
        shares.append(np.sort(genres)[-2:].sum() / genres.sum())
    assert float(np.mean(shares)) > 0.75
    with pytest.raises(FileExistsError):
        write_longtail_log(folder, spec)
