"""Framework tax: regkit against the plain loops underneath, measured side by side in one process.

Each row times regkit and its peer interleaved (A B A B ...) and compares the medians, so the ratio holds on a shared
machine whose load drifts; absolute numbers from different runs are not comparable. A row repeats its pair as often
as fits ``TIME_BUDGET_S`` judged by its first timed pair (``MIN_REPEATS`` to ``MAX_REPEATS``): a run of a fraction of a
second swings ±15 % with the host's load, so short rows take more pairs. Each row records its number of pairs and
the quartiles of the per-pair ratios (``pair_ratio_quartiles``), which show how far a ratio near its target can move.

* MF-BPR and MF softmax training throughput (positives/s) against a plain torch loop
  (:func:`pipelines.bench._speed_baselines.plain_torch_train`: same shapes, Adam, same loss, negatives from the
  same distribution, training pairs avoided), batch 1024 and 8192, 1 and 2 threads; target ratio ≥ 1.0.
* Full-catalogue evaluation of ML-100K u1 (459 users × 1,682 items, training items excluded):
  :func:`pipelines.evaluation.recsys.evaluate_encoded` (user embeddings, ranking, head/tail slices, coverage,
  popularity too; the test log encoded once beforehand, as the training loop's evaluator does) against
  :func:`pipelines.bench._speed_baselines.numpy_full_ranking` (matmul, argpartition, R/nDCG) on the same
  embeddings; target time ratio ≤ 1.5 with identical R@K / nDCG@K.
* Two-tower training throughput (``ml100k_two_tower_features.yaml``) on torchrec's EmbeddingBagCollection against
  the same model on plain ``nn.EmbeddingBag`` (``embedding_backend="torch"``); target ≥ 1.0.
* BM25 indexing of SciFact (1 and 2 threads; target ≥ 0.95) and search of its test queries (k = 1000 and 100,
  1 thread; target ≤ 1.05) against raw Pyserini (:func:`pipelines.bench._speed_baselines.pyserini_index`,
  :func:`~pipelines.bench._speed_baselines.pyserini_search`).
* Learned sparse search latency of the label-free adapted models against BM25 on the same engine and search path
  (:func:`_sparse_latency_rows`); target ≤ 1.1.

Needs the MovieLens-100K raw files (``$REGKIT_SHARED_DATA/ml-100k``), else the benchmark says so and returns no rows;
the BM25 rows need BEIR SciFact there and the learned sparse rows the outputs of ``--only label_free``, else they are
left out with a warning.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.bench import shared_data_dir
from pipelines.bench._speed_baselines import PlainSetup, numpy_full_ranking, plain_torch_train

logger = logging.getLogger(__name__)

TIME_BUDGET_S = 15.0  # per row, for the timed pairs after the warm-up pair
MIN_REPEATS, MAX_REPEATS = 3, 25
KS = (10, 20)
# the shapes and settings of pipelines/configs/ml100k_mf_bpr.yaml and ml100k_mf_softmax.yaml
CONFIGS = {
    "bpr": {"dim": 64, "lr": 0.005, "l2": 1e-4},
    "softmax": {"dim": 128, "lr": 0.005, "weight_decay": 1e-5, "normalize": True, "scale": 5.0},
}
# optimizer steps per timed run (ML-100K u1.base: 79 batches of 1024, 10 of 8192 per epoch)
STEPS = {("bpr", 1024): 80, ("bpr", 8192): 20, ("softmax", 1024): 40, ("softmax", 8192): 3}


@dataclass(frozen=True)
class Paired:
    """Medians of regkit's and its peer's interleaved runs, and the ratio (regkit ÷ peer) of each pair of runs."""

    regkit: float
    peer: float
    pair_ratios: tuple[float, ...]


def _interleaved(regkit: Callable[[], float], peer: Callable[[], float]) -> Paired:
    """A warm-up call of each, then alternating calls: as many pairs as fit ``TIME_BUDGET_S`` (module docstring).

    The number of pairs is judged by the first timed pair: the warm-up pays one-off costs (imports, JIT, caches).
    """
    regkit(), peer()
    started = time.perf_counter()
    a, b = [regkit()], [peer()]
    pair_s = time.perf_counter() - started
    repeats = int(min(MAX_REPEATS, max(MIN_REPEATS, TIME_BUDGET_S // max(pair_s, 1e-3))))
    for _ in range(repeats - 1):
        a.append(regkit())
        b.append(peer())
    return Paired(statistics.median(a), statistics.median(b), tuple(x / y for x, y in zip(a, b, strict=True)))


def _regkit_train(setup: PlainSetup, train: Any, steps: int) -> float:
    """Positives/s of :class:`recsys.trainer.Trainer` on MF with the run config's settings."""
    from recsys.data import InMemoryBatches, NegativeSampler
    from recsys.losses import EmbeddingL2
    from recsys.models import MatrixFactorization
    from recsys.trainer import TrainConfig, Trainer

    torch.manual_seed(0)
    model = MatrixFactorization(setup.num_users, setup.num_items, embedding_dim=setup.dim, normalize=setup.normalize,
                                temperature=1.0 / setup.scale)
    config = TrainConfig(epochs=steps, max_steps=steps, batch_size=setup.batch_size, loss=setup.loss, lr=setup.lr,
                         weight_decay=setup.weight_decay, sparse_weight_decay=setup.weight_decay,
                         show_progress=False, eval_every=0)
    trainer = Trainer(model, InMemoryBatches(train, setup.batch_size, seed=0), config,
                      hooks=[EmbeddingL2(setup.l2)] if setup.l2 else (), item_counts=train.item_counts(),
                      negative_sampler=NegativeSampler.from_interactions(train) if setup.loss == "bpr" else None)
    started = time.perf_counter()
    result = trainer.fit(resume=False)
    return result.examples / (time.perf_counter() - started)


def _plain_train(setup: PlainSetup, steps: int) -> float:
    started = time.perf_counter()
    positives = plain_torch_train(setup, steps)
    return positives / (time.perf_counter() - started)


def _row(work: str, paired: Paired, unit: str, target: float, higher_is_better: bool, **extra: Any) -> dict[str, Any]:
    ratio = paired.regkit / paired.peer
    met = ratio >= target if higher_is_better else ratio <= target
    low, _, high = statistics.quantiles(paired.pair_ratios, n=4)
    return {"work": work, "regkit": paired.regkit, "peer": paired.peer, "unit": unit, "ratio": ratio,
            "target": f"{'>=' if higher_is_better else '<='} {target}", "met": bool(met),
            "pairs": len(paired.pair_ratios), "pair_ratio_quartiles": [low, high], **extra}


def _training_rows(train: Any) -> list[dict[str, Any]]:
    rows = []
    for loss, options in CONFIGS.items():
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for batch_size in (1024, 8192):
                steps = STEPS[loss, batch_size]
                setup = PlainSetup(train.users, train.items, train.num_users, train.num_items, loss=loss,
                                   batch_size=batch_size, **options)
                paired = _interleaved(lambda s=setup, n=steps: _regkit_train(s, train, n),
                                      lambda s=setup, n=steps: _plain_train(s, n))
                rows.append(_row(f"MF {loss} training, dim {setup.dim}, batch {batch_size}, {threads} thread(s)",
                                 paired, "positives/s", 1.0, True, peer_name="plain torch loop"))
                logger.info("%s", rows[-1])
    return rows


def _evaluation_row(data: Any) -> dict[str, Any]:
    """Time of regkit's full evaluation vs the numpy baseline on one model's embeddings (short MF-BPR training)."""
    from threadpoolctl import threadpool_limits

    from pipelines.evaluation.recsys import encode_test, evaluate_encoded
    from recsys.data import InMemoryBatches, NegativeSampler
    from recsys.models import MatrixFactorization
    from recsys.serving import Recommender
    from recsys.trainer import TrainConfig, Trainer

    train, test = data.train, data.test_log
    torch.manual_seed(0)
    model = MatrixFactorization(train.num_users, train.num_items)
    Trainer(model, InMemoryBatches(train, 1024, seed=0), TrainConfig(epochs=5, loss="bpr", lr=0.005,
            show_progress=False, eval_every=0), negative_sampler=NegativeSampler.from_interactions(train)).fit()
    service = Recommender(model, data.users, data.items, data.user_features, data.item_features, seen=train)
    test_users = data.users.encode(test["user_id"].to_numpy())
    order = test["user_id"].unique(maintain_order=True)  # the users in the order regkit averages them
    rows_of = {int(user): row for row, user in enumerate(data.users.encode(order.to_numpy()))}
    with torch.no_grad():
        user_vectors = model.user_embeddings(torch.from_numpy(data.users.encode(order.to_numpy()))).numpy()
        item_vectors = model.item_embeddings().numpy()
    user_rows = np.array([rows_of.get(int(user), -1) for user in train.users])
    keep = user_rows >= 0
    seen = (user_rows[keep], train.items[keep])
    pairs = (np.array([rows_of[int(user)] for user in test_users]), data.items.encode(test["item_id"].to_numpy()))
    results: dict[str, dict[str, float]] = {}
    # both sides start from encoded test pairs: the numpy baseline's come ready-made, regkit's from encode_test, which
    # the training loop's evaluator runs once per run, not once per evaluation (timed separately below)
    encoding_started = time.perf_counter()
    encoded = encode_test(service, test)
    encoding_ms = (time.perf_counter() - encoding_started) * 1e3

    def regkit() -> float:
        started = time.perf_counter()
        results["regkit"] = evaluate_encoded(service, encoded, ks=KS)
        return (time.perf_counter() - started) * 1e3

    def numpy_baseline() -> float:
        started = time.perf_counter()
        results["numpy"] = numpy_full_ranking(user_vectors, item_vectors, seen, pairs, KS)
        return (time.perf_counter() - started) * 1e3

    torch.set_num_threads(1)
    with threadpool_limits(1):  # numpy's BLAS too (both sides' matrix products), else it takes every core
        paired = _interleaved(regkit, numpy_baseline)
    names = [f"{m}@{k}" for m in ("R", "nDCG") for k in KS]
    identical = all(results["regkit"][name] == results["numpy"][name] for name in names)
    return _row(f"full-catalogue evaluation, {len(order)} users x {train.num_items} items, 1 thread", paired, "ms",
                1.5, False, peer_name="numpy (matmul, argpartition, R/nDCG)",
                metrics_identical=identical, metrics={name: results["regkit"][name] for name in names},
                regkit_encode_test_ms=encoding_ms)


def _two_tower_row(config: Any, data: Any) -> dict[str, Any]:
    """Trainer throughput of the feature two-tower on torchrec's EmbeddingBagCollection vs plain nn.EmbeddingBag."""
    from recsys.data import InMemoryBatches
    from recsys.models import build_model
    from recsys.trainer import TrainConfig, Trainer

    def train(backend: str, steps: int = 40) -> float:
        torch.manual_seed(0)
        model = build_model("two_tower", {**config.model.options(), "embedding_backend": backend},
                            users=data.user_features, items=data.item_features, interactions=data.train)
        train_config = TrainConfig(epochs=steps, max_steps=steps, batch_size=1024, loss="softmax", lr=0.005,
                                   show_progress=False, eval_every=0)
        trainer = Trainer(model, InMemoryBatches(data.train, 1024, seed=0), train_config,
                          item_counts=data.train.item_counts())
        started = time.perf_counter()
        result = trainer.fit(resume=False)
        return result.examples / (time.perf_counter() - started)

    torch.set_num_threads(1)
    paired = _interleaved(lambda: train("torchrec"), lambda: train("torch"))
    return _row("two-tower training (ml100k_two_tower_features.yaml), batch 1024, 1 thread: torchrec EBC",
                paired, "examples/s", 1.0, True, peer_name="the same model on plain nn.EmbeddingBag")


def _bm25_rows(out_dir: Path) -> list[dict[str, Any]]:
    """BM25 indexing (docs/s) and search (ms/query) of SciFact: regkit against raw Pyserini on the same engine."""
    import shutil

    from pipelines.bench._speed_baselines import pyserini_index, pyserini_search
    from retrieval.beir import load_beir
    from retrieval.index import build_bm25_index
    from retrieval.jvm import ensure_jvm
    from retrieval.search import Bm25Searcher

    folder = shared_data_dir() / "beir" / "scifact"
    if not folder.is_dir():
        logger.warning("BM25 speed rows skipped: %s not found", folder)
        return []
    dataset = load_beir(folder)
    queries = {qid: dataset.queries[qid] for qid in dataset.qrels}  # the 300 test queries
    ensure_jvm()
    work = out_dir / "bm25"
    rows = []
    for threads in (1, 2):
        def regkit_index(threads: int = threads) -> float:
            shutil.rmtree(work, ignore_errors=True)
            started = time.perf_counter()
            build_bm25_index(dataset.corpus, work / "regkit", threads=threads, show_progress=False)
            return len(dataset.corpus) / (time.perf_counter() - started)

        def raw_index(threads: int = threads) -> float:
            shutil.rmtree(work, ignore_errors=True)
            started = time.perf_counter()  # both sides start from the loaded corpus (title and text apart)
            pyserini_index({doc_id: doc.contents for doc_id, doc in dataset.corpus.items()}, work / "collection",
                           work / "raw", threads)
            return len(dataset.corpus) / (time.perf_counter() - started)

        rows.append(_row(f"BM25 indexing, SciFact ({len(dataset.corpus)} docs), {threads} thread(s)",
                         _interleaved(regkit_index, raw_index), "docs/s", 0.95, True,
                         peer_name="raw Pyserini (JSONL shards + IndexCollection)"))
    build_bm25_index(dataset.corpus, work / "regkit", threads=2, show_progress=False, overwrite=True)
    from pyserini.search.lucene import LuceneSearcher

    raw = LuceneSearcher(str(work / "regkit"))
    with Bm25Searcher(work / "regkit") as searcher:
        raw.set_bm25(searcher.k1, searcher.b)
        for k in (1000, 100):
            def regkit_search(k: int = k) -> float:
                started = time.perf_counter()
                searcher.search(queries, k=k, threads=1, show_progress=False)
                return (time.perf_counter() - started) * 1e3 / len(queries)

            def raw_search(k: int = k) -> float:
                started = time.perf_counter()
                pyserini_search(raw, queries, k, threads=1)
                return (time.perf_counter() - started) * 1e3 / len(queries)

            rows.append(_row(f"BM25 search, SciFact ({len(queries)} test queries), k = {k}, 1 thread",
                             _interleaved(regkit_search, raw_search), "ms/query", 1.05, False,
                             peer_name="raw Pyserini LuceneSearcher.batch_search"))
    raw.close()
    shutil.rmtree(work, ignore_errors=True)
    return rows


def _same_ranking(one: dict[str, dict[str, float]], other: dict[str, dict[str, float]]) -> bool:
    """Equal runs: the same queries, documents in the same rank order, equal scores."""
    return one.keys() == other.keys() and all(list(one[q].items()) == list(other[q].items()) for q in one)


def _sparse_latency_rows(label_free: Path) -> list[dict[str, Any]]:
    """Latency of the adapted inference-free sparse models (``--only label_free``, seed 0) against BM25.

    Per collection, k = 10 / 100 / 1000, one query per call and all test queries in one call, 1 Lucene thread;
    each searcher opened once (:class:`retrieval.sparse_index.InferenceFreeSearcher`, whose time includes the
    query's tokenisation and IDF lookup; :class:`retrieval.search.Bm25Searcher`). Each row also records whether both
    searchers' one-thread runs equal their Pyserini runs (``same_runs_as_pyserini``).
    """
    from retrieval.beir import load_beir
    from retrieval.encoder import load_sparse_encoder
    from retrieval.search import Bm25Searcher
    from retrieval.sparse_index import InferenceFreeSearcher

    summary_file = label_free.parent / "label_free.json"  # active terms per document, measured while indexing
    summary = json.loads(summary_file.read_text())["results"] if summary_file.is_file() else {}
    rows = []
    for name in ("scifact", "nfcorpus", "cranfield", "cisi"):
        folder = label_free / name
        if not (folder / "sparse-s0-index").is_dir():
            logger.warning("sparse latency rows skipped for %s: run `python -m pipelines.bench --only label_free` "
                           "first", name)
            continue
        dataset = load_beir(shared_data_dir() / "beir" / name)
        queries = {qid: dataset.queries[qid] for qid in dataset.qrels}
        active = summary.get(name, {}).get("rows", {}).get("adapted seed 0", {}).get("active_terms")
        model = load_sparse_encoder(str(folder / "adapt-s0" / "model"))
        with InferenceFreeSearcher(model, folder / "sparse-s0-index") as sparse, \
                Bm25Searcher(folder / "bm25-index") as bm25:
            for k in (10, 100, 1000):
                # the one-thread path (Lucene directly) must return Pyserini's runs on this real collection
                same = all(_same_ranking(searcher.search(queries, k=k, threads=1),
                                         searcher.search(queries, k=k, threads=2)) for searcher in (sparse, bm25))
                for batched in (False, True):
                    def timed(searcher: Any, k: int = k, batched: bool = batched,
                              queries: dict[str, str] = queries) -> float:
                        started = time.perf_counter()
                        if batched:
                            searcher.search(queries, k=k, threads=1)
                        else:
                            for qid, text in queries.items():
                                searcher.search({qid: text}, k=k, threads=1)
                        return (time.perf_counter() - started) * 1e3 / len(queries)

                    rows.append(_row(f"learned sparse search, {name} ({len(queries)} queries), k = {k}, "
                                     f"{'batched' if batched else 'one query per call'}, 1 thread",
                                     _interleaved(lambda: timed(sparse), lambda: timed(bm25)), "ms/query", 1.1,
                                     False, peer_name="BM25 on the same engine",
                                     doc_active_terms=active, same_runs_as_pyserini=same))
                    logger.info("%s", rows[-1])
    return rows


def run(out_dir: Path) -> list[dict[str, Any]]:
    from pipelines.bench.bench_recsys import REPO, _data
    from pipelines.recsys_data import RunData
    from pipelines.run_config import ValidationConfig, load_recsys_config

    try:
        data_dir = _data(Path(out_dir))
    except FileNotFoundError as err:
        logger.warning("speed benchmark skipped: %s", err)
        return []
    config = load_recsys_config(REPO / "pipelines" / "configs" / "ml100k_mf_bpr.yaml", [f"data.dir={data_dir}"])
    data = RunData(config.data.model_copy(update={"validation": ValidationConfig(method="none")}))
    threads = torch.get_num_threads()
    try:
        rows = _training_rows(data.train) + [_evaluation_row(data)]
        features = load_recsys_config(REPO / "pipelines" / "configs" / "ml100k_two_tower_features.yaml",
                                      [f"data.dir={data_dir}"])
        rows.append(_two_tower_row(features, RunData(features.data.model_copy(
            update={"validation": ValidationConfig(method="none")}))))
        rows += _bm25_rows(Path(out_dir))
        rows += _sparse_latency_rows(Path(out_dir).parent / "label_free")
    finally:
        torch.set_num_threads(threads)
    for row in rows:
        row["cpu"] = _cpu_name()
    return rows


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"
