"""Run reports: ``report.md`` + ``report.html`` (plots embedded) + ``metrics.json`` in a run folder.

A report records what was run (configuration, versions, git commit, a fingerprint of the input data), the metric
tables and the plots. The HTML is self-contained (PNG figures embedded as data URIs) so it opens anywhere; the
markdown links the same figures saved under ``figures/``.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # reports are written headless
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from common_regs.io import atomic_path, atomic_write_text  # noqa: E402
from pipelines.provenance import run_metadata  # noqa: E402

logger = logging.getLogger(__name__)

__all__ = ["Report", "ReportPaths", "bar_plot", "data_fingerprint", "histogram_plot", "line_plot"]


@dataclass(frozen=True)
class ReportPaths:
    """The files :meth:`Report.write` wrote: ``report.md``, ``report.html`` and ``metrics.json``."""

    markdown: Path
    html: Path
    metrics: Path


@dataclass
class _Block:
    kind: str  # "heading" | "text" | "table" | "figure"
    payload: Any
    caption: str = ""


def data_fingerprint(paths: Sequence[str | os.PathLike[str]]) -> dict[str, dict[str, Any]]:
    """sha256 and size of every input file (folders: every file inside, sorted)."""
    files: list[Path] = []
    for path in map(Path, paths):
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    fingerprint = {}
    for path in files:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        fingerprint[str(path)] = {"sha256": digest.hexdigest(), "bytes": path.stat().st_size}
    return fingerprint


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


@dataclass
class Report:
    """Collects headings, text, tables and figures, then writes them in markdown and HTML."""

    title: str
    blocks: list[_Block] = field(default_factory=list)

    def heading(self, text: str) -> Report:
        self.blocks.append(_Block("heading", text))
        return self

    def text(self, text: str) -> Report:
        self.blocks.append(_Block("text", text))
        return self

    def table(self, rows: Sequence[Mapping[str, Any]], caption: str = "") -> Report:
        if rows:
            columns = list(dict.fromkeys(key for row in rows for key in row))
            self.blocks.append(_Block("table", (columns, [[_format(row.get(c, "")) for c in columns] for row in rows]),
                                      caption))
        return self

    def figure(self, figure: Figure, caption: str) -> Report:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        plt.close(figure)
        self.blocks.append(_Block("figure", buffer.getvalue(), caption))
        return self

    def write(
        self,
        out_dir: str | os.PathLike[str],
        *,
        metrics: Mapping[str, Any],
        config: Mapping[str, Any] | None = None,
        inputs: Sequence[str | os.PathLike[str]] = (),
        seed: int | None = None,
    ) -> ReportPaths:
        """Write ``report.md``, ``report.html``, ``metrics.json`` and ``figures/*.png`` into ``out_dir``."""
        out = Path(out_dir)
        (out / "figures").mkdir(parents=True, exist_ok=True)
        provenance = run_metadata(dict(config or {}), seed)
        provenance["data"] = data_fingerprint(inputs)
        figure_names = []
        for index, block in enumerate(b for b in self.blocks if b.kind == "figure"):
            name = f"figures/figure{index + 1}.png"
            with atomic_path(out / name) as tmp:
                tmp.write_bytes(block.payload)
            figure_names.append(name)
        metrics_path = atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2, default=float) + "\n")
        md = atomic_write_text(out / "report.md", self._markdown(figure_names, provenance))
        page = atomic_write_text(out / "report.html", self._html(provenance))
        logger.info("report written to %s", page)
        return ReportPaths(markdown=md, html=page, metrics=metrics_path)

    def _markdown(self, figure_names: list[str], provenance: dict) -> str:
        lines = [f"# {self.title}", ""]
        figures = iter(figure_names)
        for block in self.blocks:
            if block.kind == "heading":
                lines += [f"## {block.payload}", ""]
            elif block.kind == "text":
                lines += [block.payload, ""]
            elif block.kind == "table":
                columns, rows = block.payload
                if block.caption:
                    lines += [f"*{block.caption}*", ""]
                lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
                lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
                lines.append("")
            else:
                lines += [f"![{block.caption}]({next(figures)})", "", f"*{block.caption}*", ""]
        lines += ["## Provenance", "", "```json", json.dumps(provenance, indent=2), "```", ""]
        return "\n".join(lines)

    def _html(self, provenance: dict) -> str:
        parts = [
            "<!DOCTYPE html><html><head><meta charset='utf-8'>",
            f"<title>{html.escape(self.title)}</title>",
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;}table{border-collapse:collapse;"
            "margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#eee}"
            "figure{margin:1em 0}pre{background:#f6f6f6;padding:1em;overflow:auto}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
        ]
        for block in self.blocks:
            if block.kind == "heading":
                parts.append(f"<h2>{html.escape(block.payload)}</h2>")
            elif block.kind == "text":
                parts.append(f"<p>{html.escape(block.payload)}</p>")
            elif block.kind == "table":
                columns, rows = block.payload
                caption = f"<caption>{html.escape(block.caption)}</caption>" if block.caption else ""
                header = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
                body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                               for row in rows)
                parts.append(f"<table>{caption}<tr>{header}</tr>{body}</table>")
            else:
                data = base64.b64encode(block.payload).decode("ascii")
                parts.append(f"<figure><img alt='{html.escape(block.caption)}' src='data:image/png;base64,{data}'>"
                             f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
        parts.append("<h2>Provenance</h2><pre>" + html.escape(json.dumps(provenance, indent=2)) + "</pre>")
        parts.append("</body></html>")
        return "\n".join(parts)


def histogram_plot(
    values: Sequence[float], *, xlabel: str, title: str, bins: int = 30, zero_line: bool = True
) -> Figure:
    """Histogram of per-query values; ``zero_line`` marks 0 (for differences)."""
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.hist(list(values), bins=bins, color="#4c72b0", edgecolor="white")
    if zero_line:
        axis.axvline(0.0, color="black", linewidth=0.8)
    axis.set(xlabel=xlabel, ylabel="queries", title=title)
    return figure


def line_plot(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, xlabel: str, ylabel: str,
              title: str) -> Figure:
    """One line per ``{label: (xs, ys)}`` entry of ``series``, with a legend when there are several."""
    figure, axis = plt.subplots(figsize=(6, 3.5))
    for label, (xs, ys) in series.items():
        axis.plot(list(xs), list(ys), marker="o", markersize=3, label=label)
    axis.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if len(series) > 1:
        axis.legend()
    return figure


def bar_plot(groups: Mapping[str, Mapping[str, float]], *, ylabel: str, title: str) -> Figure:
    """Grouped bars: ``{group (x tick): {series: value}}``."""
    figure, axis = plt.subplots(figsize=(6, 3.5))
    names = list(dict.fromkeys(s for values in groups.values() for s in values))
    width = 0.8 / max(len(names), 1)
    for offset, name in enumerate(names):
        xs = [i + offset * width for i in range(len(groups))]
        axis.bar(xs, [values.get(name, 0.0) for values in groups.values()], width=width, label=name)
    axis.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(groups))], list(groups))
    axis.set(ylabel=ylabel, title=title)
    if len(names) > 1:
        axis.legend()
    return figure
