"""Recommenders: two-tower (torchrec), MF-BPR and LightGCN, behind one interface (:class:`Recommender`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recsys.data import Interactions
from recsys.features import FeatureTable
from recsys.models.base import RecBatch, Recommender, RecOutput, Similarity
from recsys.models.lightgcn import LightGCN
from recsys.models.mf import MatrixFactorization
from recsys.models.two_tower import TwoTower

__all__ = [
    "LightGCN",
    "MatrixFactorization",
    "RecBatch",
    "RecOutput",
    "Recommender",
    "Similarity",
    "TwoTower",
    "build_model",
    "model_names",
]


def model_names() -> list[str]:
    return sorted(cls.name for cls in Recommender.__subclasses__())


def build_model(
    name: str,
    config: Mapping[str, Any],
    *,
    users: FeatureTable,
    items: FeatureTable,
    interactions: Interactions | None = None,
) -> Recommender:
    """Construct the model registered as ``name`` (its class attribute) from constructor keyword ``config``.

    ``users`` / ``items`` give the vocabularies (and features, for the two-tower); LightGCN also needs the
    training ``interactions`` unless ``config`` carries ``graph_nnz`` (rebuilding a saved model).
    """
    classes = {cls.name: cls for cls in Recommender.__subclasses__()}
    if name not in classes:
        raise ValueError(f"`model.name` must be one of {sorted(classes)}, got {name!r}.")
    kwargs = dict(config)
    try:
        if name == "two_tower":
            return TwoTower(users, items, **kwargs)
        if name == "lightgcn":
            return LightGCN(users.entity.size, items.entity.size, interactions, **kwargs)
        return classes[name](users.entity.size, items.entity.size, **kwargs)
    except TypeError as err:
        raise TypeError(f"bad `model` options for {name!r}: {err}") from None
