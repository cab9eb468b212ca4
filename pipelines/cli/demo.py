"""``regkit demo``: the main job on the bundled demo data."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    config: Path = typer.Option(
        None, "--config", help="YAML demo config, merged over pipelines/configs/demo.yaml (e.g. "
                               "pipelines/configs/demo_tiny.yaml for a one-minute run)."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a config value: section.key=value, YAML-parsed (repeatable), e.g. "
                          "--set retrieval.sparse.steps=30 --set recsys.models.mf_dsl=null."),
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Output folder: report, models, runs, indexes."),
    seed: int = typer.Option(None, "--seed", help="Seed of every step (overrides the config's seed)."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Rerun into a finished --out (only a folder regkit wrote is ever rewritten)."
    ),
) -> None:
    """Run the main job on the bundled demo data (data/demo) and write one report.

    Trains a two-tower (with and without CFM-SSL) and a DSL-sparse MF, serves them from FAISS, shows top-10 lists
    and Recall/nDCG@K with head/tail slices; evaluates BM25 and a briefly trained inference-free sparse retriever
    BEIR-style; compares one model pair per domain offline (paired A/B); prints the report's path. A finished
    ``--out`` is refused unless ``--overwrite``; a non-empty folder regkit did not write is refused always.
    """
    from pipelines.demo import load_demo_config, run_demo

    resolved = load_demo_config(config, [*overrides, *([f"seed={seed}"] if seed is not None else [])])
    run_demo(resolved, out, overwrite=overwrite)
