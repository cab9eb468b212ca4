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
    "MODELS",
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


# The models a config can name. Explicit rather than Recommender.__subclasses__(): wrappers such as
# recsys.distributed.ShardedTwoTower subclass Recommender under an existing name and must not replace it.
MODELS: dict[str, type[Recommender]] = {cls.name: cls for cls in (LightGCN, MatrixFactorization, TwoTower)}


def model_names() -> list[str]:
    return sorted(MODELS)


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
    if name not in MODELS:
        raise ValueError(f"`model.name` must be one of {model_names()}, got {name!r}.")
    kwargs = dict(config)
    try:
        if name == "two_tower":
            return TwoTower(users, items, **kwargs)
        if name == "lightgcn":
            return LightGCN(users.entity.size, items.entity.size, interactions, **kwargs)
        return MODELS[name](users.entity.size, items.entity.size, **kwargs)
    except TypeError as err:
        raise TypeError(f"bad `model` options for {name!r}: {err}") from None
