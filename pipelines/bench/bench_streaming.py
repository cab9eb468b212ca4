"""Streaming benchmark: peak memory of regkit's parquet reading path vs. interaction-log size (1M → 50M rows).

For each size a training log of ``rows`` interactions and a test log of ``rows / test_ratio`` are generated
under ``/tmp`` in 1M-row chunks (pyarrow ``ParquetWriter``; never the whole log in memory): ``users`` users drawn
uniformly, ``items`` items with Zipf(``zipf``) popularity. A fresh Python process per size then runs what a
streamed training and evaluation run does, and reports its peak resident memory (``ru_maxrss``) after each phase:

1. ``vocab``: user and item vocabularies and item frequencies, polars streaming group-bys
   (:meth:`recsys.data.Vocabulary.from_log`, :func:`recsys.data.item_frequencies`);
2. ``train``: MF-BPR optimizer steps (:class:`recsys.trainer.Trainer`, ``train_steps`` steps) over
   :class:`recsys.data.StreamingBatches` (record batches, shuffle buffer of ``buffer_rows``), then one whole
   epoch of batches with their negatives drawn (:class:`recsys.data.NegativeSampler`, uniform), exactly the
   batches a full epoch of training consumes. The model update itself is left out of the full epoch: on the shared
   2-core machine it costs ~0.5 s per 32k-row step, which does not change the memory being measured (the model
   and optimizer are already allocated by the optimizer steps) but would take longer than the whole bench budget;
3. ``eval``: full-catalogue R@10 / nDCG@10 of the trained model, one user partition of at most
   ``max_rows_per_part`` rows at a time
   (:func:`pipelines.evaluation.recsys_streaming.evaluate_recommendations_streaming`).

The vocabulary sizes are fixed, so a flat peak as rows grow means memory is O(vocabulary + buffers), not
O(log). For contrast, the in-memory path (:func:`recsys.data.encode_interactions` of the whole log, the
seen-item CSR, :func:`pipelines.evaluation.recsys.evaluate_recommendations`) is measured on the smaller sizes in
its own fresh process. Generated files are deleted after each size. Timings are wall-clock on a shared machine.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from common_regs.io import atomic_write_text

logger = logging.getLogger(__name__)

CONFIG: dict[str, Any] = {
    "sizes": [1_000_000, 10_000_000, 50_000_000],
    "in_memory_sizes": [1_000_000, 10_000_000],
    "users": 50_000,
    "items": 20_000,
    "zipf": 1.1,
    "test_ratio": 20,
    "chunk_rows": 1_000_000,
    "batch_size": 32_768,
    "train_steps": 30,
    "buffer_rows": 1 << 20,
    "embedding_dim": 32,
    "max_rows_per_part": 1_000_000,
    "ks": [10],
    "threads": 2,
    "seed": 0,
    "tmp_root": "/tmp",
}


def write_log(path: Path, rows: int, *, users: int, items: int, zipf: float, seed: int, chunk_rows: int) -> None:
    """``rows`` interactions (``user_id``, ``item_id``, ``timestamp``) written chunk by chunk with pyarrow."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, items + 1) ** zipf
    cdf = np.cumsum(popularity / popularity.sum())
    schema = pa.schema([("user_id", pa.int64()), ("item_id", pa.int64()), ("timestamp", pa.int64())])
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, chunk_rows):
            size = min(chunk_rows, rows - start)
            item = np.minimum(np.searchsorted(cdf, rng.random(size)), items - 1)
            writer.write_table(
                pa.table(
                    {
                        "user_id": rng.integers(0, users, size, dtype=np.int64),
                        "item_id": item.astype(np.int64),
                        "timestamp": np.arange(start, start + size, dtype=np.int64),
                    },
                    schema=schema,
                )
            )


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def _models(users: Any, items: Any, dim: int) -> tuple[Any, Any, Any]:
    from recsys.features import FeatureSpec, FeatureTable
    from recsys.models import build_model

    user_table = FeatureTable.build(users, [FeatureSpec("user_id", "id")])
    item_table = FeatureTable.build(items, [FeatureSpec("item_id", "id")])
    model = build_model("mf", {"embedding_dim": dim}, users=user_table, items=item_table)
    return model, user_table, item_table


def child_streaming(train: Path, test: Path, options: dict[str, Any]) -> dict[str, Any]:
    """The streamed path in this (fresh) process; returns peak RSS after each phase and timings."""
    import pyarrow.parquet as pq
    import torch

    from pipelines.evaluation.recsys_streaming import evaluate_recommendations_streaming
    from recsys.data import Interactions, NegativeSampler, StreamingBatches, Vocabulary, item_frequencies, scan_log
    from recsys.serving import Recommender
    from recsys.trainer import TrainConfig, Trainer

    torch.set_num_threads(options["threads"])
    torch.manual_seed(options["seed"])
    result: dict[str, Any] = {"rss_after_imports_mb": _peak_mb()}
    started = time.perf_counter()
    log = scan_log(train)
    users = Vocabulary.from_log(log, "user_id")
    items = Vocabulary.from_log(log, "item_id")
    popularity = item_frequencies(train, items)
    result.update(vocab_seconds=time.perf_counter() - started, rss_after_vocab_mb=_peak_mb(),
                  users=users.size, items=items.size)

    started = time.perf_counter()
    model, user_table, item_table = _models(users, items, options["embedding_dim"])
    batches = StreamingBatches(train, users, items, options["batch_size"], seed=options["seed"],
                               buffer_rows=options["buffer_rows"])
    sampler = NegativeSampler(items.size, seed=options["seed"])
    config = TrainConfig(epochs=1, max_steps=options["train_steps"], batch_size=options["batch_size"], loss="bpr",
                         optimizer="sgd", lr=0.05, seed=options["seed"], eval_every=0, show_progress=False)
    trained = Trainer(model, batches, config, negative_sampler=sampler).fit()
    result.update(train_seconds=time.perf_counter() - started, train_steps=trained.steps,
                  train_examples_per_second=trained.examples_per_second)
    started = time.perf_counter()
    epoch_rows = epoch_batches = 0
    for step, batch in enumerate(batches.batches(0)):
        negatives = sampler.sample(batch.users, config.num_negatives, step)
        epoch_rows += len(batch)
        epoch_batches += int(negatives.shape[0] == len(batch))
    epoch_seconds = time.perf_counter() - started
    log_rows = pq.ParquetFile(train).metadata.num_rows
    if epoch_rows != log_rows:
        raise RuntimeError(f"the epoch yielded {epoch_rows} rows, the log has {log_rows}.")
    result.update(epoch_seconds=epoch_seconds, epoch_rows=epoch_rows, epoch_batches=epoch_batches,
                  epoch_rows_per_second=epoch_rows / epoch_seconds, rss_after_train_mb=_peak_mb())

    started = time.perf_counter()
    empty = Interactions(users=np.empty(0, dtype=np.int64), items=np.empty(0, dtype=np.int64),
                         num_users=users.size, num_items=items.size)
    service = Recommender(model, users, items, user_table, item_table, empty)
    metrics = evaluate_recommendations_streaming(
        service, train, test, popularity=popularity, ks=options["ks"],
        max_rows_per_part=options["max_rows_per_part"], work_dir=options["tmp_dir"], show_progress=False,
    )
    result.update(eval_seconds=time.perf_counter() - started, rss_after_eval_mb=_peak_mb(),
                  eval={k: v for k, v in metrics.items() if not k.startswith(("head/", "tail/"))})
    result["peak_rss_mb"] = _peak_mb()
    return result


def child_in_memory(train: Path, test: Path, options: dict[str, Any]) -> dict[str, Any]:
    """The in-memory path (whole log encoded, seen CSR, in-memory evaluation) for contrast."""
    import polars as pl
    import torch

    from pipelines.evaluation.recsys import evaluate_recommendations
    from recsys.data import Vocabulary, encode_interactions, scan_log
    from recsys.serving import Recommender

    torch.set_num_threads(options["threads"])
    torch.manual_seed(options["seed"])
    result: dict[str, Any] = {"rss_after_imports_mb": _peak_mb()}
    started = time.perf_counter()
    log = scan_log(train)
    users, items = Vocabulary.from_log(log, "user_id"), Vocabulary.from_log(log, "item_id")
    interactions = encode_interactions(train, users, items)
    model, user_table, item_table = _models(users, items, options["embedding_dim"])
    service = Recommender(model, users, items, user_table, item_table, interactions)
    result.update(load_seconds=time.perf_counter() - started, rss_after_load_mb=_peak_mb())
    started = time.perf_counter()
    evaluate_recommendations(service, pl.read_parquet(test, columns=["user_id", "item_id"]), ks=options["ks"])
    result.update(eval_seconds=time.perf_counter() - started, rss_after_eval_mb=_peak_mb(), peak_rss_mb=_peak_mb())
    return result


def _spawn(mode: str, train: Path, test: Path, options: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "POLARS_MAX_THREADS": str(options["threads"]), "OMP_NUM_THREADS": str(options["threads"])}
    command = [sys.executable, "-m", "pipelines.bench.bench_streaming", mode, str(train), str(test),
               json.dumps(options)]
    completed = subprocess.run(command, capture_output=True, text=True, env=env, check=False,
                               cwd=Path(__file__).resolve().parents[2])
    if completed.returncode != 0:
        raise RuntimeError(f"{mode} child failed ({completed.returncode}):\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def run(out_dir: Path, config: dict[str, Any] | None = None) -> dict[str, Any]:
    import pyarrow.parquet as pq

    config = {**CONFIG, **(config or {})}
    rows_out: list[dict[str, Any]] = []
    started = time.perf_counter()
    for number, rows in enumerate(config["sizes"]):
        folder = Path(tempfile.mkdtemp(prefix="regkit-stream-bench-", dir=config["tmp_root"]))
        try:
            train, test = folder / "train.parquet", folder / "test.parquet"
            t0 = time.perf_counter()
            common = {k: config[k] for k in ("users", "items", "zipf", "chunk_rows")}
            write_log(train, rows, seed=config["seed"] + 2 * number, **common)
            write_log(test, max(1, rows // config["test_ratio"]), seed=config["seed"] + 2 * number + 1, **common)
            generated = time.perf_counter() - t0
            options = {k: config[k] for k in ("batch_size", "train_steps", "buffer_rows", "embedding_dim",
                                              "max_rows_per_part", "ks", "threads", "seed")}
            options["tmp_dir"] = str(folder)
            entry: dict[str, Any] = {
                "rows": rows,
                "test_rows": pq.ParquetFile(test).metadata.num_rows,
                "train_file_mb": round(train.stat().st_size / 2**20, 1),
                "generate_seconds": round(generated, 1),
                "streaming": _spawn("streaming", train, test, options),
            }
            if rows in config["in_memory_sizes"]:
                entry["in_memory"] = _spawn("in_memory", train, test, options)
            logger.info("streaming bench %d rows: %s", rows, entry)
            rows_out.append(entry)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    table = _markdown(rows_out)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "streaming.md", table + "\n")
    return {"config": config, "rows": rows_out, "table": table, "seconds": time.perf_counter() - started}


def _markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| interactions | parquet MB | streamed: peak RSS MB | after vocab / epoch / eval | seconds vocab / epoch "
        "/ eval | epoch rows/s | in-memory path: peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        s = row["streaming"]
        memory = row.get("in_memory", {}).get("peak_rss_mb")
        phases = f"{s['rss_after_vocab_mb']:.0f} / {s['rss_after_train_mb']:.0f} / {s['rss_after_eval_mb']:.0f}"
        seconds = f"{s['vocab_seconds']:.0f} / {s['epoch_seconds']:.0f} / {s['eval_seconds']:.0f}"
        lines.append(
            f"| {row['rows']:,} | {row['train_file_mb']:.0f} | **{s['peak_rss_mb']:.0f}** | {phases} | {seconds} | "
            f"{s['epoch_rows_per_second']:,.0f} | {f'{memory:.0f}' if memory is not None else 'not run'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    mode, train_arg, test_arg, options_arg = sys.argv[1:5]
    runner = {"streaming": child_streaming, "in_memory": child_in_memory}[mode]
    print(json.dumps(runner(Path(train_arg), Path(test_arg), json.loads(options_arg))))
