"""What every run records next to its outputs: versions, git commit, seed, configuration."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common_regs.io import atomic_write_text

__all__ = ["git_commit", "run_metadata", "write_run_metadata"]

_PACKAGES = ("regkit", "torch", "torchrec", "fbgemm-gpu-cpu", "faiss-cpu", "polars", "pyserini",
             "sentence-transformers", "transformers", "ir-measures", "numpy")


def git_commit() -> str | None:
    """The commit of the regkit checkout, or None outside a git checkout (or without git)."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=Path(__file__).parent
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return result.stdout.strip() or None


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def run_metadata(config: dict[str, Any] | None = None, seed: int | None = None) -> dict[str, Any]:
    """Creation time, git commit, Python, platform and package versions, with ``seed`` and ``config``."""
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {name: _version(name) for name in _PACKAGES},
        "seed": seed,
        "config": config or {},
    }


def write_run_metadata(out_dir: str | Path, config: dict[str, Any] | None = None, seed: int | None = None) -> Path:
    """Write :func:`run_metadata` to ``<out_dir>/run.json`` atomically; returns its path."""
    return atomic_write_text(Path(out_dir) / "run.json", json.dumps(run_metadata(config, seed), indent=2) + "\n")
