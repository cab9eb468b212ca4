"""``regkit demo``: the main job on the bundled demo data."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Folder for the demo's indexes, runs and report."),
) -> None:
    """Run the main job on the bundled demo data (data/demo) and print the results."""
    from pipelines.demo import run_demo

    run_demo(out)
