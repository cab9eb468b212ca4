"""Large-catalogue FAISS benchmark: recall@10 against exact search vs. QPS for IVF-PQ and HNSW on 1M items.

The catalogue is generated (no data set of item embeddings that size ships with regkit): ``items`` unit vectors
of ``dim`` float32 from a Gaussian mixture, ``clusters`` centres ~ N(0, I) with cluster sizes drawn from a
Dirichlet(1) (uneven, as item popularity clusters are) and per-item noise ~ N(0, ``noise``² I), then L2-normalised.
Queries are fresh draws from the same mixture, so each query's neighbours sit in a few overlapping clusters and
approximate search has real work to do (it is neither trivial nor hopeless).

Every index is built by regkit's serving code (:func:`recsys.serving.build_faiss_index` with an
:class:`~recsys.serving.IndexConfig`): exact ``IndexFlatIP`` (the baseline and ground truth), IVF-PQ at several
``nprobe`` (PQ codes only, and with the candidates re-ranked exactly: ``refine_factor``), HNSW at several
``efSearch``. For each: recall@10 = |top-10 ∩ exact top-10| / 10 averaged over the
queries, QPS = queries / wall time of one batched ``search`` call, bytes per vector, and build time. All FAISS
calls run with ``faiss.omp_set_num_threads(threads)``; QPS ratios against the exact index come from the same
process, and the exact search is timed again at the end to show how much the (shared) machine drifted. Absolute
numbers depend on the (shared) machine.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from common_regs.io import atomic_write_text

logger = logging.getLogger(__name__)

CONFIG: dict[str, Any] = {
    "items": 1_000_000,
    "dim": 64,
    "clusters": 2_000,
    "noise": 0.6,
    "queries": 1_000,
    "k": 10,
    "threads": 2,
    "seed": 0,
    "ivfpq": {"nlist": 1024, "pq_m": 16, "pq_nbits": 8, "refine_factor": 10, "nprobe": [1, 4, 16, 64]},
    "hnsw": {"hnsw_m": 16, "ef_construction": 40, "ef_search": [16, 32, 64, 128, 256]},
}


def make_catalogue(
    items: int, dim: int, *, clusters: int, noise: float, seed: int, chunk: int = 100_000
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.random.Generator]:
    """``(items, dim)`` float32 unit vectors from the mixture of the module docstring, generated in chunks.

    Returns the vectors, the centres, the cluster weights and the generator (to draw queries from the same mixture).
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)
    weights = rng.dirichlet(np.ones(clusters))
    vectors = np.empty((items, dim), dtype=np.float32)
    for start in range(0, items, chunk):
        stop = min(start + chunk, items)
        _draw(rng, centres, weights, noise, vectors[start:stop])
    return vectors, centres, weights, rng


def _draw(rng: np.random.Generator, centres: np.ndarray, weights: np.ndarray, noise: float, out: np.ndarray) -> None:
    assignment = rng.choice(centres.shape[0], size=out.shape[0], p=weights)
    out[:] = centres[assignment] + noise * rng.standard_normal(out.shape, dtype=np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean over queries of |found ∩ exact| / k (rows are top-k id lists; -1 pads are never a hit)."""
    hits = [np.intersect1d(f[f >= 0], e).size for f, e in zip(found, exact, strict=True)]
    return float(np.mean(hits) / exact.shape[1])


def _timed_search(index: Any, queries: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    _, ids = index.search(queries, k)
    return ids, time.perf_counter() - started


def _row(name: str, setting: str, ids: np.ndarray, seconds: float, exact: np.ndarray, exact_qps: float,
         bytes_per_vector: float, build_seconds: float) -> dict[str, Any]:
    qps = exact.shape[0] / seconds
    return {"index": name, "setting": setting, "recall@10": round(recall_at_k(ids, exact), 4), "qps": round(qps, 1),
            "speedup_vs_exact": round(qps / exact_qps, 2), "bytes_per_vector": bytes_per_vector,
            "build_seconds": round(build_seconds, 1)}


def run(out_dir: Path, config: dict[str, Any] | None = None) -> dict[str, Any]:
    import faiss

    from recsys.serving import IndexConfig, build_faiss_index

    config = {**CONFIG, **(config or {})}
    faiss.omp_set_num_threads(config["threads"])
    k, dim = config["k"], config["dim"]
    started = time.perf_counter()
    vectors, centres, weights, rng = make_catalogue(
        config["items"], dim, clusters=config["clusters"], noise=config["noise"], seed=config["seed"]
    )
    queries = np.empty((config["queries"], dim), dtype=np.float32)
    _draw(rng, centres, weights, config["noise"], queries)
    logger.info("catalogue: %d × %d generated in %.1fs", *vectors.shape, time.perf_counter() - started)

    rows = []
    t0 = time.perf_counter()
    flat = build_faiss_index(vectors, IndexConfig(kind="flat"))
    flat_build = time.perf_counter() - t0
    exact, exact_seconds = _timed_search(flat, queries, k)
    exact_qps = len(queries) / exact_seconds
    rows.append(_row("flat (exact)", "-", exact, exact_seconds, exact, exact_qps, 4 * dim, flat_build))

    ivf = config["ivfpq"]
    t0 = time.perf_counter()
    refined = build_faiss_index(vectors, IndexConfig(kind="ivfpq", nlist=ivf["nlist"], pq_m=ivf["pq_m"],
                                                     pq_nbits=ivf["pq_nbits"], nprobe=1,
                                                     refine_factor=ivf["refine_factor"]))
    ivf_build = time.perf_counter() - t0
    ivfpq = faiss.downcast_index(refined.base_index)  # the same trained IVF-PQ, searched without re-ranking
    name = f"IVF{ivf['nlist']},PQ{ivf['pq_m']}x{ivf['pq_nbits']}"
    for index, label, size in ((ivfpq, name, ivfpq.code_size),
                               (refined, f"{name},RFlat(k×{ivf['refine_factor']})", ivfpq.code_size + 4 * dim)):
        for nprobe in ivf["nprobe"]:
            ivfpq.nprobe = nprobe
            ids, seconds = _timed_search(index, queries, k)
            rows.append(_row(label, f"nprobe={nprobe}", ids, seconds, exact, exact_qps, size, ivf_build))
            logger.info("%s", rows[-1])
    del ivfpq, refined

    hnsw_options = config["hnsw"]
    t0 = time.perf_counter()
    hnsw = build_faiss_index(vectors, IndexConfig(kind="hnsw", hnsw_m=hnsw_options["hnsw_m"],
                                                  ef_construction=hnsw_options["ef_construction"]))
    hnsw_build = time.perf_counter() - t0
    for ef_search in hnsw_options["ef_search"]:
        hnsw.hnsw.efSearch = ef_search
        ids, seconds = _timed_search(hnsw, queries, k)
        rows.append(_row(f"HNSW{hnsw_options['hnsw_m']},efC={hnsw_options['ef_construction']}",
                         f"efSearch={ef_search}", ids, seconds, exact, exact_qps,
                         4 * dim + 2 * hnsw_options["hnsw_m"] * 4, hnsw_build))
        logger.info("%s", rows[-1])
    del hnsw

    _, again_seconds = _timed_search(flat, queries, k)  # the exact baseline again: how much the machine drifted
    exact_qps_end = len(queries) / again_seconds
    del flat
    table = _markdown(rows) + (
        f"\n\nExact search QPS at the start / end of the run: {exact_qps:.1f} / {exact_qps_end:.1f} "
        f"({config['threads']} FAISS threads); '× exact QPS' uses the start value."
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "faiss_scale.md", table + "\n")
    return {"config": config, "faiss_version": faiss.__version__, "threads": config["threads"], "rows": rows,
            "exact_qps_start": exact_qps, "exact_qps_end": exact_qps_end,
            "table": table, "seconds": time.perf_counter() - started}


def _markdown(rows: list[dict[str, Any]]) -> str:
    header = "| index | setting | recall@10 | QPS | × exact QPS | bytes/vector | build s |"
    lines = [header, "|" + "---|" * 7]
    lines += [
        f"| {r['index']} | {r['setting']} | {r['recall@10']:.3f} | {r['qps']:.0f} | {r['speedup_vs_exact']:.1f} | "
        f"{r['bytes_per_vector']:.0f} | {r['build_seconds']:.0f} |"
        for r in rows
    ]
    return "\n".join(lines)
