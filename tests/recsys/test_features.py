"""recsys.features: id / categorical / multi-valued / bucketized features as jagged embedding-row indices."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from recsys.data import Vocabulary
from recsys.features import FeatureSpec, FeatureTable, jagged_lookup

ITEMS = pl.DataFrame(
    {
        "item_id": [10, 20, 30],
        "genres": [["Drama", "Comedy"], [], ["Drama"]],
        "year": [1990, None, 2005],
        "studio": ["A", "B", None],
    },
    schema={"item_id": pl.Int64, "genres": pl.List(pl.String), "year": pl.Int64, "studio": pl.String},
)
SPECS = [
    FeatureSpec("item_id", "id"),
    FeatureSpec("genres", "multi_categorical", column="genres"),
    FeatureSpec("year", "bucketized", column="year", boundaries=(1980.0, 2000.0)),
    FeatureSpec("studio", "categorical", column="studio"),
]


def _table() -> FeatureTable:
    # item 40 is in the vocabulary but not in the side table
    return FeatureTable.build(Vocabulary.from_values("item_id", [10, 20, 30, 40]), SPECS, ITEMS)


def test_lookup_matches_hand_encoding():
    table = _table()
    # genres vocabulary: Comedy=0, Drama=1, OOV/missing=2; year buckets: <1980:0, [1980,2000):1, >=2000:2, missing 3
    assert table.num_embeddings == {"item_id": 5, "genres": 3, "year": 4, "studio": 3}
    out = table.lookup(torch.tensor([0, 1, 2, 3, 4]))
    assert out["item_id"][0].tolist() == [0, 1, 2, 3, 4]
    assert out["genres"][0].tolist() == [1, 0, 2, 1, 2, 2] and out["genres"][1].tolist() == [2, 1, 1, 1, 1]
    assert out["year"][0].tolist() == [1, 3, 2, 3, 3]
    assert out["studio"][0].tolist() == [0, 1, 2, 2, 2]
    assert table.features["genres"].default_index == 2


def test_quantile_buckets_and_validation():
    table = FeatureTable.build(
        Vocabulary.from_values("item_id", [10, 20, 30]),
        [FeatureSpec("year", "bucketized", column="year", num_buckets=2)],
        ITEMS,
    )
    boundaries = table.features["year"].boundaries
    assert boundaries.tolist() == [1997.5]
    assert table.lookup(torch.tensor([0, 1, 2]))["year"][0].tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match="exactly one of `boundaries` or `num_buckets`"):
        FeatureSpec("year", "bucketized", column="year")
    with pytest.raises(TypeError, match="must be a list column"):
        FeatureTable.build(
            Vocabulary.from_values("item_id", [10]), [FeatureSpec("s", "multi_categorical", column="studio")], ITEMS
        )
    with pytest.raises(ValueError, match=r"`indices` must lie in \[0, 4\]"):
        _table().lookup(torch.tensor([5]))


def test_jagged_lookup_against_python_slices():
    values = torch.arange(10, 20)
    offsets = torch.tensor([0, 3, 3, 7, 10])
    indices = torch.tensor([3, 0, 1, 2, 0])
    got_values, got_lengths = jagged_lookup(values, offsets, indices)
    expected = [values[offsets[i] : offsets[i + 1]].tolist() for i in indices.tolist()]
    assert got_values.tolist() == [v for part in expected for v in part]
    assert got_lengths.tolist() == [len(part) for part in expected]


def test_save_load_round_trip(tmp_path):
    table = _table()
    loaded = FeatureTable.load(table.save(tmp_path / "items.npz"))
    indices = torch.tensor([4, 2, 0, 1])
    for key, (values, lengths) in table.lookup(indices).items():
        loaded_values, loaded_lengths = loaded.lookup(indices)[key]
        assert torch.equal(values, loaded_values) and torch.equal(lengths, loaded_lengths)
    assert loaded.features["genres"].categories.ids.tolist() == ["Comedy", "Drama"]
