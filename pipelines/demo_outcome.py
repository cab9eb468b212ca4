"""What the demo's steps hand each other: the run's measurements and a domain's runs for the A/B step."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.report import ReportPaths

logger = logging.getLogger(__name__)

__all__ = ["DemoOutcome", "DomainRuns"]


@dataclass
class DemoOutcome:
    """What :func:`pipelines.demo.run_demo` measured; each step of the demo fills its part.

    ``metrics`` is also written as metrics.json; ``figures`` and ``examples`` are the report's raw material.
    """

    metrics: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    examples: dict[str, Any] = field(default_factory=dict)
    report: ReportPaths | None = None


@dataclass
class DomainRuns:
    """One domain's evaluation as the A/B step compares it: qrels, a run per model, and the files holding them."""

    qrels: dict[str, dict[str, int]]
    runs: dict[str, dict[str, dict[str, float]]]
    qrels_path: Path
    run_paths: dict[str, Path]
