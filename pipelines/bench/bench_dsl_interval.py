"""Choosing DSL's update interval ΔT on a validation split, never on u1.test.

MF-BPR (the ``bench_dsl`` protocol: 40 epochs of batch 1024, seed 0) at density 0.2 for each ΔT of ``INTERVALS``
(``None`` = never update: a static random sparse mask), trained on 90 % of each user's u1.base interactions and
evaluated (Recall@20 / NDCG@20, all items ranked, training items excluded) on the held-out 10 %. The ΔT with the
best validation Recall@20 is what ``bench_dsl.CONFIG["update_interval"]`` should hold.

``python -m pipelines.bench --only dsl_interval``
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from common_regs.io import atomic_write_text
from pipelines.bench.bench_dsl import CONFIG, _prepare_data, _train_one

logger = logging.getLogger(__name__)

INTERVALS: tuple[int | None, ...] = (10, 25, 50, 100, 300, None)
DENSITY = 0.2
VALIDATION_FRACTION = 0.1


def run(out_dir: Path) -> dict[str, Any]:
    threads = torch.get_num_threads()
    torch.set_num_threads(CONFIG["num_threads"])
    try:
        data, _ = _prepare_data(Path(out_dir), validation_fraction=VALIDATION_FRACTION)
        rows = []
        for interval in tqdm(INTERVALS, desc="ΔT on validation"):
            # "never": an interval longer than any run, so the random initial mask is never updated
            row, _ = _train_one(data, "mf", "dsl", DENSITY, seed=0, update_interval=interval or 10**9)
            label = str(interval) if interval else "never"
            rows.append({"update_interval": label, "R@20": row["R@20"], "nDCG@20": row["nDCG@20"]})
            logger.info("ΔT %s: validation R@20 %.4f", label, row["R@20"])
    finally:
        torch.set_num_threads(threads)
    best = max(rows, key=lambda r: r["R@20"])
    table = "| ΔT (steps) | validation R@20 | validation NDCG@20 |\n|---|---|---|\n" + "".join(
        f"| {r['update_interval']} | {r['R@20']:.4f} | {r['nDCG@20']:.4f} |\n" for r in rows
    )
    atomic_write_text(Path(out_dir) / "table.md", table)
    return {
        "protocol": (
            f"MF-BPR, d={DENSITY}, seed 0, u1.base split {1 - VALIDATION_FRACTION:.0%}/{VALIDATION_FRACTION:.0%}"
        ),
        "rows": rows,
        "best_update_interval": best["update_interval"],
        "table_markdown": table,
    }
