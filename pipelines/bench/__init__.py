"""Benchmarks (``make bench``), apart from the tests.

Each ``pipelines/bench/bench_<name>.py`` defines ``run(out_dir: Path) -> dict``: it measures a baseline and
the candidate in the same process, reports ratios, and returns JSON-serialisable results.
``python -m pipelines.bench --out DIR [--only NAME ...]`` runs them and writes ``DIR/<name>.json``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["shared_data_dir"]


def shared_data_dir() -> Path:
    """The public datasets the benchmarks read: ``$REGKIT_SHARED_DATA``, else ``shared/data`` beside the checkout."""
    return Path(os.environ.get("REGKIT_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
