"""The ``ssl`` switch of recsys runs (Yao et al. 2021, arXiv:2007.12865): config, trainer hooks, run report.

``ssl: none | rfm | cfm`` (or a mapping of :class:`recsys.ssl.SSLConfig` options) in a recsys YAML config adds the
feature-masking transform and the item-tower InfoNCE loss to the trainer hooks (:func:`ssl_hooks`), and
``regkit recsys train`` then writes ``report.md`` / ``report.html`` (plus ``figures/``) next to
``metrics.json``: the SSL settings, the test metrics (overall and head/tail slices) and the heatmap of the pairwise
mutual information between item features that Correlated Feature Masking ranks partners by
(:mod:`recsys.feature_mi`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from pipelines.report import Report
from recsys.data import Interactions
from recsys.feature_mi import MIMatrix
from recsys.features import FeatureTable
from recsys.ssl import SSLConfig, build_ssl_hooks, ssl_mutual_information

logger = logging.getLogger(__name__)

__all__ = ["add_ssl_section", "mi_heatmap", "resolve_ssl_config", "ssl_hooks"]


def resolve_ssl_config(ssl: SSLConfig, out: str | os.PathLike[str]) -> SSLConfig:
    """``ssl`` as a run in ``out`` uses it.

    With SSL on, the MI matrix is cached under ``out/cache`` unless ``mi_cache_dir`` says otherwise.
    """
    if ssl.mode != "none" and ssl.mi_cache_dir is None:
        return replace(ssl, mi_cache_dir=str(Path(out) / "cache"))
    return ssl


def ssl_hooks(ssl: SSLConfig, items: FeatureTable, interactions: Interactions, seed: int) -> list[Any]:
    """Fresh SSL trainer hooks for one fit (``[]`` when ``ssl`` is none)."""
    return build_ssl_hooks(ssl, items, item_counts=interactions.item_counts(), seed=seed)


def mi_heatmap(mi: MIMatrix, *, title: str | None = None) -> Figure:
    """Annotated heatmap of ``mi.values`` (nats); the diagonal (a feature's MI with itself) is drawn hatched-out."""
    k = len(mi.features)
    values = np.asarray(mi.values, dtype=float)
    shown = np.ma.masked_array(values, mask=np.eye(k, dtype=bool))
    figure, axis = plt.subplots(figsize=(1.2 * k + 2.5, 1.0 * k + 1.5))
    image = axis.imshow(shown, cmap="viridis")
    axis.set_xticks(range(k), mi.features, rotation=45, ha="right")
    axis.set_yticks(range(k), mi.features)
    off_diagonal = values[~np.eye(k, dtype=bool)]
    middle = float(off_diagonal.max() + off_diagonal.min()) / 2 if off_diagonal.size else 0.0
    for i in range(k):
        for j in range(k):
            color = "black" if i == j or values[i, j] > middle else "white"
            axis.text(j, i, f"{values[i, j]:.3f}", ha="center", va="center", color=color, fontsize=8)
    figure.colorbar(image, ax=axis, label="mutual information (nats)")
    axis.set_title(title or f"item-feature MI ({mi.weighting} weighting; diagonal = MI with itself)")
    return figure


def add_ssl_section(
    page: Report,
    report: dict[str, Any],
    ssl: SSLConfig,
    items: FeatureTable,
    interactions: Interactions,
) -> None:
    """Add the SSL settings and the item-feature MI heatmap to a run report; adds ``report["ssl"]``."""
    mi = ssl_mutual_information(ssl, items, item_counts=interactions.item_counts())
    report["ssl"] = {"mode": ssl.mode, "mi_weighting": mi.weighting, "mi": mi.as_dict()}
    page.heading(f"SSL ({ssl.mode.upper()}) settings").table(
        [{key: value for key, value in ssl.to_dict().items() if key != "mi_cache_dir"}]
    )
    page.heading("Item-feature mutual information")
    page.text(
        "CFM masks a seed feature together with its highest-MI partners (Yao et al. 2021, §3.2); "
        "MI is computed from the item table (recsys.feature_mi), entities weighted as stated in the title."
    )
    page.figure(mi_heatmap(mi), caption="pairwise MI between item features")
