r"""trec_eval's ``recall_K`` and ``ndcg_cut_K`` for binary relevance, computed on arrays in one pass.

For recommendation lists the judgements are binary and every list is already ranked, so the two measures reduce to

.. math::

    \mathrm{R@K} = \frac{\mathrm{hits@K}}{|R|}, \qquad
    \mathrm{nDCG@K} = \frac{\sum_{r < K,\ \mathrm{hit}_r} 1/\log_2(r + 2)}{\sum_{r < \min(|R|, K)} 1/\log_2(r + 2)}

(``r`` the 0-based rank, ``|R|`` the user's relevant items, retrieved or not). The sums run rank by rank, the
divisions and the mean over users in the order trec_eval (through :func:`pipelines.evaluation.metrics.evaluate`)
and regkit do them, so the values are those of the trec_eval path, without building run and qrels dictionaries
(tests/pipelines/test_binary_metrics.py compares the two on random cases and on a recommender's slices).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = ["binary_topk_metrics", "mean_over_users"]


def binary_topk_metrics(hits: np.ndarray, relevant: np.ndarray, ks: Sequence[int]) -> dict[str, np.ndarray]:
    """Per-user ``R@K`` and ``nDCG@K`` (float64 arrays keyed ``"R@10"``, ``"nDCG@10"``, ...).

    Args:
        hits: ``(U, L)`` bool, ``hits[u, r]`` when the item at rank ``r`` of user ``u``'s list is relevant
            (False for padding). ``L`` may be shorter than a cut-off: missing ranks are misses.
        relevant: ``(U,)`` number of relevant items of each user, all ``>= 1``.
        ks: cut-offs.

    Raises:
        ValueError: a user without relevant items (trec_eval leaves such a user out), or shapes that disagree.
    """
    hits = np.asarray(hits, dtype=bool)
    relevant = np.asarray(relevant, dtype=np.int64)
    if hits.ndim != 2 or relevant.shape != (hits.shape[0],):
        raise ValueError(f"`hits` must be (U, L) and `relevant` (U,), got {hits.shape} and {relevant.shape}.")
    if relevant.size and relevant.min() < 1:
        raise ValueError("every user needs at least one relevant item; leave users without any out.")
    depth = max(max(ks), hits.shape[1])
    discount = np.array([1.0 / math.log2(rank + 2) for rank in range(depth)])
    padded = np.zeros((hits.shape[0], depth), dtype=bool)
    padded[:, : hits.shape[1]] = hits
    dcg = np.cumsum(padded * discount, axis=1)  # sequential sums; adding the zeros of misses is exact
    ideal = np.cumsum(discount)
    found = np.cumsum(padded, axis=1)
    recall = {f"R@{k}": found[:, k - 1] / relevant for k in ks}
    return {**recall, **{f"nDCG@{k}": dcg[:, k - 1] / ideal[np.minimum(relevant, k) - 1] for k in ks}}


def mean_over_users(values: np.ndarray) -> float:
    """The mean as :func:`pipelines.evaluation.metrics.evaluate` takes it: a left-to-right sum over the users."""
    return sum(values.tolist()) / values.size
