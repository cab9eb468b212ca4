"""Benchmarks (``make bench``), apart from the tests.

Each ``pipelines/bench/bench_<name>.py`` defines ``run(out_dir: Path) -> dict``: it measures a baseline and
the candidate in the same process, reports ratios, and returns JSON-serialisable results.
``python -m pipelines.bench --out DIR [--only NAME ...]`` runs them and writes ``DIR/<name>.json``.
"""
