"""Recommendation evaluation: full ranking, R@K / nDCG@K with trec_eval's arithmetic, head / tail slices, coverage.

Protocol (Krichene & Rendle's "full ranking" setting): every user with at least one test item is ranked against the
whole catalogue, the user's training items excluded; ``R@K = hits@K / |test items|`` and ``nDCG@K`` with binary
gains, log2 discount and ideal DCG over ``min(|test items|, K)`` — exactly trec_eval's ``recall_K`` and
``ndcg_cut_K``, computed in one pass over index arrays by :mod:`pipelines.evaluation.binary_metrics` (the same
values as :func:`pipelines.evaluation.metrics.evaluate` on qrels and runs, tested). Means are over users with
test items; a user with no recommendations scores 0.

Beyond accuracy:

* ``coverage@K``: distinct recommended items / catalogue size;
* head / tail slices: items ranked by training popularity, the top ``head_fraction`` (20 %) are head, the rest
  tail; a slice's metrics restrict each user's test items to the slice (users with none are left out), the
  ranking is unchanged (the tail-slice protocol of Yao et al. 2021, see docs/recsys.md);
* ``head_share@K``: fraction of recommended slots filled by head items; ``avg_popularity@K``: mean training count
  of recommended items.

Ids are prefixed (``u:<user>``, ``i:<item>``) in qrels and runs because the shared evaluator drops documents
whose id equals the query id (a BEIR convention that would otherwise delete item 7 from user 7's list).
Scores in runs are ``K - rank`` so trec_eval's tie-breaking cannot reorder the list.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from pipelines.evaluation.binary_metrics import binary_topk_metrics, mean_over_users
from recsys.log_validation import LogSchemaError
from recsys.models.base import Recommender as RecModel
from recsys.serving import Recommender

logger = logging.getLogger(__name__)

__all__ = [
    "EncodedTest", "encode_test", "evaluate_encoded", "evaluate_recommendations", "head_items", "make_evaluator",
    "qrels_from_log", "rank_users", "run_from_lists", "unknown_users_warnings",
]


def qrels_from_log(test: pl.DataFrame) -> dict[str, dict[str, int]]:
    """``{"u:<user>": {"i:<item>": 1}}`` from a test log with raw ``user_id`` / ``item_id`` (duplicates merge)."""
    if test.height == 0:
        raise ValueError("the test split is empty: no held-out items to evaluate against.")
    qrels: dict[str, dict[str, int]] = {}
    for user, item in zip(test["user_id"].to_list(), test["item_id"].to_list(), strict=True):
        qrels.setdefault(f"u:{user}", {})[f"i:{item}"] = 1
    return qrels


def run_from_lists(users: Sequence[Any], lists: Sequence[Sequence[Any]]) -> dict[str, dict[str, float]]:
    """``{"u:<user>": {"i:<item>": K - rank}}`` from ranked raw item-id lists."""
    run: dict[str, dict[str, float]] = {}
    for user, ranked in zip(users, lists, strict=True):
        size = len(ranked)
        run[f"u:{user}"] = {f"i:{item}": float(size - rank) for rank, item in enumerate(ranked)}
    return run


def rank_users(
    service: Recommender, raw_users: np.ndarray, k: int, *, exclude_seen: bool = True
) -> tuple[np.ndarray, dict[str, dict[str, float]]]:
    """Top-``k`` item indices ``(U, k)`` of raw user ids (``-1`` pads), and the same lists as a ``u:`` / ``i:`` run."""
    items, _ = service.recommend_indices(service.users.encode(raw_users), k, exclude_seen=exclude_seen)
    lists = [service.items.decode(row[row >= 0]).tolist() for row in items]
    return items, run_from_lists(raw_users.tolist(), lists)


def unknown_users_warnings(users: int, unknown: int, *, log: bool = True) -> list[str]:
    """The warning (for ``metrics.json``; logged unless ``log`` is false) when no test user is in the training data."""
    if not users or unknown < users:
        return []
    message = (
        f"none of the {users} test users is in the training data: every list is the popularity fallback, so these "
        "metrics measure popularity, not the model; check that the test log's user ids match the training log's"
    )
    if log:
        logger.warning("%s", message)
    return [message]


def head_items(popularity: np.ndarray, head_fraction: float = 0.2) -> np.ndarray:
    """Boolean mask of head items: the ``ceil(head_fraction · n)`` most popular (ties broken by lower index)."""
    if not 0.0 < head_fraction < 1.0:
        raise ValueError(f"`head_fraction` must be in (0, 1), got {head_fraction}.")
    order = np.lexsort((np.arange(popularity.size), -popularity))
    mask = np.zeros(popularity.size, dtype=bool)
    mask[order[: math.ceil(head_fraction * popularity.size)]] = True
    return mask


def _measures(ks: Sequence[int]) -> list[str]:
    return [f"{name}@{k}" for name in ("R", "nDCG") for k in ks]


@dataclass(frozen=True)
class EncodedTest:
    """A raw-id test log as the index arrays evaluation needs, for one recommender's vocabularies and seen items.

    Built once by :func:`encode_test` (id checks, vocabulary lookups, distinct pairs, cold / unknown counts) and
    reused by every :func:`evaluate_encoded` call, e.g. once per epoch during training (:func:`make_evaluator`).
    """

    raw_users: np.ndarray  # test users in order of first appearance
    user_index: np.ndarray  # their vocabulary indices (OOV for unknown users)
    rows: np.ndarray  # each distinct (user, item) test pair: the user's position in raw_users ...
    pair_items: np.ndarray  # ... and the item's index (OOV for items outside the catalogue)
    cold: np.ndarray  # users without training interactions
    unknown_users: int
    unknown_items: int  # test interactions (rows of the log) whose item is outside the catalogue
    warnings: tuple[str, ...]
    relevant_keys: np.ndarray  # sorted ``row * (OOV + 1) + item`` of the pairs with known items: hit lookups


def encode_test(
    service: Recommender, test: pl.DataFrame | pl.LazyFrame, *, where: str = "test log", warn: bool = True
) -> EncodedTest:
    """Check and encode a raw-id test log against ``service`` (its vocabularies and seen items).

    ``where`` names the test log in errors (its file); ``warn=False`` leaves the warnings unlogged.
    """
    frame = test.collect() if isinstance(test, pl.LazyFrame) else test
    _check_id_columns(frame, service, where)
    if frame.height == 0:
        raise ValueError("the test split is empty: no held-out items to evaluate against.")
    raw_users, rows, pair_items = _test_pairs(frame, service)
    user_index = service.users.encode(raw_users)
    cold = service.is_cold(user_index)
    unknown_users = int((user_index == service.users.oov_index).sum())
    warnings = unknown_users_warnings(len(raw_users), unknown_users, log=warn)
    unknown_items = _log_unknown_items_and_cold_users(frame, service, cold)
    known = pair_items != service.items.oov_index
    relevant_keys = np.sort(rows[known] * (service.items.oov_index + 1) + pair_items[known])
    return EncodedTest(raw_users, user_index, rows, pair_items, cold, unknown_users, int(unknown_items.sum()),
                       tuple(warnings), relevant_keys)


def evaluate_recommendations(
    service: Recommender,
    test: pl.DataFrame | pl.LazyFrame,
    *,
    ks: Sequence[int] = (10, 20),
    head_fraction: float = 0.2,
    exclude_seen: bool = True,
    per_user: bool = False,
    where: str = "test log",
    warn: bool = True,
) -> dict[str, Any]:
    """Full-catalogue evaluation of ``service`` on a raw-id test log (module docstring).

    ``where`` names the test log in errors (its file); ``warn=False`` leaves the ``warnings`` unlogged (for a caller
    that pools several calls). Returns flat metrics (``R@10``, ``nDCG@20``, ``coverage@20``,
    ``tail/R@20``, ...) plus ``users``, ``cold_users``, ``unknown_test_users``, ``unknown_test_items`` and
    ``seconds`` (encoding + ranking + scoring time); ``warnings`` lists what makes the metrics misleading (every
    test user unknown: the lists are the popularity fallback, not the model's), also logged; ``per_user`` adds the
    per-user values under ``"per_user"``.
    """
    _check_ks(ks)
    started = time.perf_counter()
    metrics = evaluate_encoded(service, encode_test(service, test, where=where, warn=warn), ks=ks,
                               head_fraction=head_fraction, exclude_seen=exclude_seen, per_user=per_user)
    metrics["seconds"] = time.perf_counter() - started
    return metrics


def evaluate_encoded(
    service: Recommender,
    test: EncodedTest,
    *,
    ks: Sequence[int] = (10, 20),
    head_fraction: float = 0.2,
    exclude_seen: bool = True,
    per_user: bool = False,
) -> dict[str, Any]:
    """:func:`evaluate_recommendations` of a test log already encoded by :func:`encode_test`.

    ``seconds`` is the ranking and scoring time only.
    """
    _check_ks(ks)
    started = time.perf_counter()
    items, _ = service.recommend_indices(test.user_index, max(ks), exclude_seen=exclude_seen)
    head = head_items(service.popularity, head_fraction)
    # one pass over the lists for the three slices; the same values as trec_eval on qrels and runs (binary_metrics)
    overall, slices = _sliced_metrics(items, test, service.items.oov_index, head, ks)
    metrics: dict[str, Any] = {
        **{name: mean_over_users(values) for name, values in overall.items()},
        **_catalogue_metrics(items, service, head, ks),
        **slices,
        "users": len(test.raw_users),
        "cold_users": int(test.cold.sum()),
        "unknown_test_users": test.unknown_users,
        "unknown_test_items": test.unknown_items,
        **({"warnings": list(test.warnings)} if test.warnings else {}),
        "seconds": time.perf_counter() - started,
    }
    if per_user:
        metrics["per_user"] = {
            f"u:{user}": {name: float(values[row]) for name, values in overall.items()}
            for row, user in enumerate(test.raw_users.tolist())
        }
    return metrics


def _check_ks(ks: Sequence[int]) -> None:
    if not ks or min(ks) < 1:
        raise ValueError(f"`ks` must be positive cut-offs, got {list(ks)}.")


def _test_pairs(frame: pl.DataFrame, service: Recommender) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw test users in order of appearance, and each distinct (user, item) test pair as (user row, item index).

    Unknown items get the vocabulary's OOV index: never recommended, they count as relevant and missed.
    """
    pairs = frame.select("user_id", "item_id").unique(maintain_order=True)
    raw = pairs["user_id"].to_numpy()
    _, first, inverse = np.unique(raw, return_index=True, return_inverse=True)
    by_appearance = np.argsort(first)
    row_of = np.empty_like(by_appearance)
    row_of[by_appearance] = np.arange(by_appearance.size)
    return raw[first[by_appearance]], row_of[inverse.reshape(-1)], service.items.encode(pairs["item_id"])


def _sliced_metrics(
    items: np.ndarray, test: EncodedTest, oov: int, head: np.ndarray, ks: Sequence[int]
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Per-user overall metrics and the ``head/…`` / ``tail/…`` means.

    A slice restricts each user's test items to its items (users with none are left out); the lists are unchanged.
    """
    rows, pair_items, relevant_keys = test.rows, test.pair_items, test.relevant_keys
    known = pair_items != oov
    list_keys = np.arange(items.shape[0])[:, None] * (oov + 1) + items
    position = np.minimum(np.searchsorted(relevant_keys, list_keys), max(relevant_keys.size - 1, 0))
    hits = (items >= 0) & (relevant_keys[position] == list_keys) if relevant_keys.size else np.zeros_like(items, bool)
    users = items.shape[0]
    overall = binary_topk_metrics(hits, np.bincount(rows, minlength=users), ks)
    slices: dict[str, Any] = {}
    for name, mask in (("head", head), ("tail", ~head)):
        in_slice = known.copy()
        in_slice[known] = mask[pair_items[known]]
        relevant = np.bincount(rows[in_slice], minlength=users)
        judged = relevant > 0
        slices[f"{name}/users"] = int(judged.sum())
        if judged.any():
            sliced = binary_topk_metrics((hits & mask[items])[judged], relevant[judged], ks)
            slices.update({f"{name}/{key}": mean_over_users(values) for key, values in sliced.items()})
    return overall, slices


def _check_id_columns(frame: pl.DataFrame, service: Recommender, where: str) -> None:
    """Both id columns present, each of the id type (string or integer) of the model's vocabulary."""
    for column, vocabulary in (("user_id", service.users), ("item_id", service.items)):
        if column not in frame.columns:
            raise ValueError(f"{where} has no `{column}` column (columns: {frame.columns}).")
        given = "string" if frame[column].dtype == pl.String else "integer"
        if vocabulary.size and given != vocabulary.id_type:
            raise LogSchemaError(
                f"{where}: column `{column}` holds {given} ids but the model's are {vocabulary.id_type}s (an "
                f"integer id never equals a string one); cast the column to {vocabulary.id_type}s."
            )


def _log_unknown_items_and_cold_users(frame: pl.DataFrame, service: Recommender, cold: np.ndarray) -> np.ndarray:
    """Log test items outside the catalogue and cold-start users; returns the unknown-item mask of ``frame``."""
    unknown_items = ~service.items.contains(frame["item_id"])
    if unknown_items.any():
        logger.warning(
            "%d test interactions (%d distinct items) have item ids outside the catalogue; they stay in the qrels "
            "and count as misses",
            int(unknown_items.sum()),
            frame.filter(pl.Series(unknown_items))["item_id"].n_unique(),
        )
    if cold.any():
        logger.info(
            "%d test users have no training data (cold start; served by %s)",
            int(cold.sum()),
            "user features" if service.model.has_user_features else "popularity",
        )
    return unknown_items


def _catalogue_metrics(
    items: np.ndarray, service: Recommender, head: np.ndarray, ks: Sequence[int]
) -> dict[str, float]:
    """``coverage@K``, ``head_share@K`` and ``avg_popularity@K`` of the top-K item indices (``-1`` pads)."""
    popularity = service.popularity
    metrics: dict[str, float] = {}
    for k in ks:
        top = items[:, :k]
        valid = top[top >= 0]
        metrics[f"coverage@{k}"] = float(np.count_nonzero(np.bincount(valid, minlength=1)) / service.items.size)
        metrics[f"head_share@{k}"] = float(head[valid].mean()) if valid.size else 0.0
        metrics[f"avg_popularity@{k}"] = float(popularity[valid].mean()) if valid.size else 0.0
    return metrics


def make_evaluator(
    service: Recommender, test: pl.DataFrame, *, ks: Sequence[int] = (10, 20), head_fraction: float = 0.2
) -> Callable[[RecModel], dict[str, float]]:
    """The trainer's ``evaluate`` callback: re-index the catalogue with the current weights, then evaluate."""
    encoded = encode_test(service, test)

    def evaluate_model(model: RecModel) -> dict[str, float]:
        if model is not service.model:
            raise ValueError("the evaluator was built for a different model object.")
        service.refresh()
        metrics = evaluate_encoded(service, encoded, ks=ks, head_fraction=head_fraction)
        return {key: float(value) for key, value in metrics.items() if isinstance(value, int | float)}

    return evaluate_model
