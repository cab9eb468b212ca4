"""Recommenders behind one interface (:class:`Recommender`).

Trained: two-tower (torchrec), MF, LightGCN. Fitted in closed form (the baselines, :mod:`recsys.models.closed_form`):
most popular, EASE, ItemKNN, ALS (``implicit``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recsys.data import Interactions
from recsys.features import FeatureTable
from recsys.models.als import ALS
from recsys.models.base import MODELS, RecBatch, Recommender, RecOutput, Similarity, register_model
from recsys.models.closed_form import ClosedFormRecommender
from recsys.models.ease import EASE
from recsys.models.item_knn import ItemKNN
from recsys.models.lightgcn import LightGCN
from recsys.models.mf import MatrixFactorization
from recsys.models.most_popular import MostPopular
from recsys.models.two_tower import TwoTower

__all__ = [
    "ALS",
    "EASE",
    "MODELS",
    "ClosedFormRecommender",
    "ItemKNN",
    "LightGCN",
    "MatrixFactorization",
    "MostPopular",
    "RecBatch",
    "RecOutput",
    "Recommender",
    "Similarity",
    "TwoTower",
    "build_model",
    "model_names",
    "register_model",
]


def model_names() -> list[str]:
    """The names a run config's ``model.name`` accepts."""
    return sorted(MODELS)


def build_model(
    name: str,
    config: Mapping[str, Any],
    *,
    users: FeatureTable,
    items: FeatureTable,
    interactions: Interactions | None = None,
) -> Recommender:
    """Construct the model registered as ``name`` from constructor keywords ``config``.

    Models are registered with :func:`recsys.models.base.register_model`. ``users`` / ``items`` give the
    vocabularies (and features, for the two-tower); LightGCN also needs the training ``interactions`` unless
    ``config`` carries ``graph_nnz`` (rebuilding a saved model).
    """
    if name not in MODELS:
        raise ValueError(f"`model.name` must be one of {model_names()}, got {name!r}.")
    try:
        return MODELS[name].from_data(dict(config), users=users, items=items, interactions=interactions)
    except TypeError as err:
        raise TypeError(f"bad `model` options for {name!r}: {err}") from None
