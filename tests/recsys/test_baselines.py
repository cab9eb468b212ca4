"""The closed-form baselines (most popular, EASE, ItemKNN, ALS): their weights against the papers' definitions computed
by brute force here, their rankings through regkit's FAISS serving against numpy, and their runs through the same
``regkit recsys train`` path as the neural models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import planted_log
import pytest
import torch

from pipelines.recsys_run import train_run
from pipelines.run_config import ConfigError, load_recsys_config
from recsys.data import Interactions, Vocabulary
from recsys.features import FeatureSpec, FeatureTable
from recsys.models import ALS, EASE, ItemKNN, MostPopular
from recsys.models.closed_form import interaction_matrix
from recsys.models.item_knn import item_knn_weights
from recsys.serving import Recommender


def _interactions(seed: int = 0, users: int = 40, items: int = 15, density: float = 0.3) -> Interactions:
    rng = np.random.default_rng(seed)
    dense = rng.random((users, items)) < density
    dense[0] = False  # a user without history
    rows, cols = np.nonzero(dense)
    # repeat a few pairs: a repeated pair must count once
    rows, cols = np.concatenate([rows, rows[:5]]), np.concatenate([cols, cols[:5]])
    return Interactions(users=rows.astype(np.int64), items=cols.astype(np.int64), num_users=users, num_items=items)


def _binary(interactions: Interactions) -> np.ndarray:
    matrix = np.zeros((interactions.num_users, interactions.num_items))
    matrix[interactions.users, interactions.items] = 1.0
    return matrix


def test_interaction_matrix_is_binary_with_repeats_counted_once():
    interactions = _interactions()
    assert np.array_equal(interaction_matrix(interactions).toarray(), _binary(interactions))


def test_item_knn_weights_match_the_shrunk_cosine_top_k_definition():
    interactions = _interactions(seed=1)
    matrix = _binary(interactions)
    k, shrink = 4, 2.0
    expected = np.zeros((matrix.shape[1], matrix.shape[1]))
    for i in range(matrix.shape[1]):
        column = {}
        for j in range(matrix.shape[1]):
            if j != i:
                dot = float(matrix[:, j] @ matrix[:, i])
                column[j] = dot / (np.linalg.norm(matrix[:, j]) * np.linalg.norm(matrix[:, i]) + shrink)
        for j in sorted(column, key=lambda j: (-column[j], j))[:k]:
            expected[j, i] = column[j]
    weights = item_knn_weights(interaction_matrix(interactions), k, shrink)
    np.testing.assert_allclose(weights, expected, rtol=1e-12, atol=1e-12)
    assert (np.count_nonzero(weights, axis=0) <= k).all()


def test_most_popular_ranks_items_by_distinct_users():
    interactions = _interactions(seed=2)
    model = MostPopular(interactions.num_users, interactions.num_items)
    model.fit(interactions)
    scores = model.user_embeddings(torch.arange(3)) @ model.item_embeddings().T
    np.testing.assert_array_equal(scores.numpy(), np.tile(_binary(interactions).sum(0), (3, 1)))


@pytest.mark.parametrize("model_class", [EASE, ItemKNN])
def test_history_models_serve_the_top_k_of_x_times_w_without_seen_items(model_class):
    interactions = _interactions(seed=3)
    model = model_class(interactions.num_users, interactions.num_items)
    model.fit(interactions)
    matrix = _binary(interactions)
    users = torch.arange(interactions.num_users)
    np.testing.assert_allclose(model.user_embeddings(users).numpy(), matrix)  # the history rows
    expected = matrix @ model.weights.double().numpy()
    np.testing.assert_allclose((model.user_embeddings(users) @ model.item_embeddings().T).numpy(), expected,
                               rtol=1e-5, atol=1e-6)
    users_vocab = Vocabulary.from_values("user_id", np.arange(interactions.num_users))
    items_vocab = Vocabulary.from_values("item_id", np.arange(interactions.num_items))
    tables = [FeatureTable.build(vocab, [FeatureSpec(vocab.name, "id")]) for vocab in (users_vocab, items_vocab)]
    service = Recommender(model, users_vocab, items_vocab, *tables, interactions)
    k = 5
    for user in range(1, interactions.num_users):
        scores = np.where(matrix[user] > 0, -np.inf, expected[user])
        got = np.asarray([item for item, _ in service.recommend([user], k)[0]])
        # FAISS may order exact ties either way: compare the scores of the lists
        np.testing.assert_allclose(np.sort(scores[got])[::-1], np.sort(scores)[::-1][:k], rtol=1e-5, atol=1e-6)


def test_cold_users_get_the_zero_vector():
    interactions = _interactions(seed=4)
    for model in (EASE(interactions.num_users, interactions.num_items),
                  ALS(interactions.num_users, interactions.num_items, factors=4, iterations=2)):
        model.fit(interactions)
        vectors = model.user_embeddings(torch.tensor([1, 2, interactions.num_users]), cold=torch.tensor([0, 1, 0]) > 0)
        assert vectors[0].abs().sum() > 0 and vectors[1:].abs().sum() == 0


def test_als_serves_the_factors_implicit_fits():
    implicit = pytest.importorskip("implicit", reason="ALS is fitted by the optional `implicit` library")
    interactions = _interactions(seed=5)
    model = ALS(interactions.num_users, interactions.num_items, factors=6, regularization=0.05, alpha=2.0,
                iterations=4, seed=7, num_threads=1)
    model.fit(interactions)
    reference = implicit.cpu.als.AlternatingLeastSquares(factors=6, regularization=0.05, alpha=2.0, iterations=4,
                                                         random_state=7, num_threads=1)
    reference.fit(interaction_matrix(interactions).astype("float32"), show_progress=False)
    np.testing.assert_allclose(model.item_embeddings().numpy(), reference.item_factors, rtol=1e-6, atol=1e-6)
    users = torch.arange(1, interactions.num_users)
    np.testing.assert_allclose(model.user_embeddings(users).numpy(), reference.user_factors[1:], rtol=1e-6, atol=1e-6)


def test_a_model_fitted_on_other_vocabularies_is_refused():
    model = EASE(10, 15)
    with pytest.raises(ValueError, match="index 40 users / 15 items, but the model has 10 / 15"):
        model.fit(_interactions())


def _config(planted: planted_log.PlantedLog, model: dict) -> dict:
    return {
        "seed": 0,
        "data": {"dir": str(planted.folder), "train": "train.parquet", "test": "test.parquet",
                 "validation": {"method": "random_holdout", "fraction": 0.2, "seed": 0}},
        "model": model,
        "eval": {"ks": [5, 10]},
    }


@pytest.mark.parametrize("model", [{"name": "most_popular"}, {"name": "ease", "l2": 10.0},
                                   {"name": "item_knn", "neighbours": 20}])
def test_baselines_run_validate_refit_and_serve_like_trained_models(planted, tmp_path, model):
    report = train_run(_config(planted, model), output_dir=tmp_path / "run")
    assert report["validation"]["best_epoch"] == 0 and "R@10" in report["validation"]["metrics"]
    assert (tmp_path / "run" / "test_run.trec").is_file()
    served = Recommender.load(tmp_path / "run" / "model")
    saved = json.loads((tmp_path / "run" / "model" / "serving.json").read_text())["test_metrics"]
    assert saved["R@10"] == pytest.approx(report["test"]["R@10"])
    from pipelines.evaluation.recsys import evaluate_recommendations

    reloaded = evaluate_recommendations(served, planted.test, ks=[5, 10])
    assert reloaded["R@10"] == pytest.approx(report["test"]["R@10"], abs=1e-9)
    # the planted clusters are learnable: the item-to-item models beat popularity
    if model["name"] != "most_popular":
        popular = train_run(_config(planted, {"name": "most_popular"}), output_dir=tmp_path / "popular")
        assert report["test"]["R@10"] > popular["test"]["R@10"] + 0.1


def test_baselines_refuse_what_needs_training_steps(planted, tmp_path):
    config = _config(planted, {"name": "ease"})
    with pytest.raises(ConfigError, match="fitted in closed form"):
        load_recsys_config(_write(tmp_path, {**config, "hooks": [{"name": "embedding_l2", "weight": 1e-4}]}))
    streamed = {**config, "data": {**config["data"], "streaming": True, "duplicates": "keep",
                                   "validation": None}}
    with pytest.raises(ConfigError, match="cannot fit `model.name`='ease'"):
        load_recsys_config(_write(tmp_path, streamed))


def _write(folder: Path, config: dict) -> Path:
    import yaml

    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
