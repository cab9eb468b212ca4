"""The plain loops regkit's speed is measured against: torch training loops, a numpy full-ranking evaluation,
``implicit`` ALS used directly, and raw Pyserini indexing and search.

Written as someone would without regkit, on the same shapes, optimizer and negatives distribution as the regkit
run they are compared with (:mod:`pipelines.bench.bench_speed`), so anyone can re-run the ratios.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class PlainSetup:
    """What both sides train on: index arrays of the training log and the model/optimizer settings."""

    users: np.ndarray
    items: np.ndarray
    num_users: int
    num_items: int
    loss: str  # "bpr" or "softmax"
    dim: int
    lr: float
    batch_size: int
    l2: float = 0.0  # BPR: the batch L2 of the touched rows (regkit's embedding_l2 hook)
    weight_decay: float = 0.0  # softmax: Adam weight decay
    normalize: bool = False
    scale: float = 1.0


def plain_torch_train(setup: PlainSetup, steps: int, seed: int = 0) -> int:
    """Train MF with a plain torch loop for ``steps`` batches; returns the number of positives seen."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    user_table = nn.Embedding(setup.num_users + 1, setup.dim)
    item_table = nn.Embedding(setup.num_items + 1, setup.dim)
    nn.init.normal_(user_table.weight, std=0.1)
    nn.init.normal_(item_table.weight, std=0.1)
    optimizer = torch.optim.Adam([user_table.weight, item_table.weight], lr=setup.lr, weight_decay=setup.weight_decay)
    users, items = torch.from_numpy(setup.users), torch.from_numpy(setup.items)
    seen = np.zeros((setup.num_users, setup.num_items), dtype=bool)
    seen[setup.users, setup.items] = True
    counts = np.bincount(setup.items, minlength=setup.num_items).clip(min=1)
    log_q = torch.from_numpy(np.log(counts / counts.sum())).float()
    positives, step = 0, 0
    while step < steps:
        order = torch.randperm(users.numel())
        for start in range(0, users.numel(), setup.batch_size):
            if step == steps:
                break
            step += 1
            rows = order[start : start + setup.batch_size]
            u, i = users[rows], items[rows]
            eu, ei = user_table(u), item_table(i)
            if setup.loss == "bpr":
                j = torch.from_numpy(_negatives(rng, seen, u.numpy(), setup.num_items))
                ej = item_table(j)
                loss = -F.logsigmoid((eu * ei).sum(-1) - (eu * ej).sum(-1)).mean()
                loss = loss + setup.l2 * (eu.pow(2).sum() + ei.pow(2).sum() + ej.pow(2).sum()) / (2 * u.numel())
            else:
                if setup.normalize:
                    eu, ei = F.normalize(eu, dim=-1), F.normalize(ei, dim=-1)
                logits = setup.scale * eu @ ei.T - log_q[i][None, :]
                same = i[None, :] == i[:, None]
                same.fill_diagonal_(False)
                loss = F.cross_entropy(logits.masked_fill(same, float("-inf")), torch.arange(u.numel()))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            positives += u.numel()
    return positives


def _negatives(rng: np.random.Generator, seen: np.ndarray, users: np.ndarray, num_items: int) -> np.ndarray:
    """Uniform items, a draw that is a training item of its user re-drawn up to 5 rounds (regkit's distribution)."""
    negatives = rng.integers(0, num_items, size=users.size)
    for _ in range(5):
        collided = seen[users, negatives]
        if not collided.any():
            break
        negatives[collided] = rng.integers(0, num_items, size=int(collided.sum()))
    return negatives


def numpy_full_ranking(
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    seen: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    ks: tuple[int, ...],
) -> dict[str, float]:
    """R@K / nDCG@K (binary gains, 1/log2(rank+1)) of every test user over all items, seen items excluded.

    ``seen`` and ``test`` are (row, item) index pairs, rows indexing ``user_vectors``; sums run rank by rank and
    the mean user by user, as trec_eval and regkit do, so the numbers are the same to the last bit.
    """
    scores = user_vectors @ item_vectors.T
    scores[seen] = -np.inf
    k = max(ks)
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), axis=1, kind="stable"), 1)
    relevant = np.zeros(scores.shape, dtype=bool)
    relevant[test] = True
    hits = np.take_along_axis(relevant, top, 1)
    count = relevant.sum(1)
    discount = np.array([1.0 / math.log2(rank + 2) for rank in range(k)])
    dcg, ideal = np.cumsum(hits * discount, axis=1), np.cumsum(discount)
    metrics = {}
    for cut in ks:
        metrics[f"R@{cut}"] = sum((hits[:, :cut].sum(1) / count).tolist()) / count.size
        metrics[f"nDCG@{cut}"] = sum((dcg[:, cut - 1] / ideal[np.minimum(count, cut) - 1]).tolist()) / count.size
    return metrics


def implicit_als_full_ranking(
    train: Any, test: Any, options: dict[str, Any], ks: tuple[int, ...]
) -> dict[str, float]:
    """``implicit`` ALS fitted on a raw-id ``train`` log, R@K / nDCG@K of :func:`numpy_full_ranking` on ``test``.

    ``options``: ``factors``, ``regularization``, ``alpha``, ``iterations`` (e.g. ``ml100k_als.yaml``'s model).
    Test pairs whose user or item is not in ``train`` are dropped.
    """
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    users, user_index = np.unique(train["user_id"].to_numpy(), return_inverse=True)
    items, item_index = np.unique(train["item_id"].to_numpy(), return_inverse=True)
    matrix = sp.csr_matrix((np.ones(user_index.size, dtype=np.float32), (user_index, item_index)),
                           shape=(users.size, items.size))
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    solver = AlternatingLeastSquares(factors=options["factors"], regularization=options["regularization"],
                                     alpha=options["alpha"], iterations=options["iterations"], random_state=0)
    with threadpool_limits(1, "blas"):
        solver.fit(matrix, show_progress=False)
    test_users, test_items = test["user_id"].to_numpy(), test["item_id"].to_numpy()
    known = np.isin(test_users, users) & np.isin(test_items, items)
    evaluated = np.unique(test_users[known])
    row_of = {int(user): number for number, user in enumerate(evaluated)}
    seen_rows = np.array([row_of.get(int(user), -1) for user in users[user_index]])
    seen = (seen_rows[seen_rows >= 0], item_index[seen_rows >= 0])
    pairs = (np.array([row_of[int(user)] for user in test_users[known]]), np.searchsorted(items, test_items[known]))
    return numpy_full_ranking(solver.user_factors[np.searchsorted(users, evaluated)], solver.item_factors, seen,
                              pairs, ks)


def pyserini_index(contents: dict[str, str], collection: Path, index: Path, threads: int) -> None:
    """BM25 index as a Pyserini user builds one: JSONL shards (one per thread), then ``IndexCollection``.

    The arguments of Pyserini's BEIR "flat" regressions (positions, document vectors and raw text stored).
    """
    from jnius import autoclass

    collection.mkdir(parents=True)
    files = [open(collection / f"part-{i}.jsonl", "w", encoding="utf-8") for i in range(threads)]
    for number, (doc_id, text) in enumerate(contents.items()):
        files[number % threads].write(json.dumps({"id": doc_id, "contents": text}) + "\n")
    for file in files:
        file.close()
    autoclass("io.anserini.index.IndexCollection").main([
        "-collection", "JsonCollection", "-input", str(collection), "-index", str(index),
        "-generator", "DefaultLuceneDocumentGenerator", "-threads", str(threads),
        "-storePositions", "-storeDocvectors", "-storeRaw", "-quiet",
    ])


def pyserini_search(searcher: Any, queries: dict[str, str], k: int, threads: int) -> dict[str, dict[str, float]]:
    """``LuceneSearcher.batch_search`` of every query, hits read into ``{qid: {docid: score}}``."""
    hits = searcher.batch_search(list(queries.values()), list(queries), k=k, threads=threads)
    return {qid: {hit.docid: hit.score for hit in found} for qid, found in hits.items()}
