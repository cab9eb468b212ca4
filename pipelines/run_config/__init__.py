"""Run configs: one YAML loader, one ``--set`` mechanism and one typed schema per job, loaded once.

* ``regkit recsys train``: :func:`load_recsys_config` → :class:`RecsysRunConfig`;
* ``regkit retrieval train``: :func:`load_sparse_train_config` → :class:`retrieval.sparse_config.SparseTrainConfig`;
* ``regkit retrieval adapt``: :func:`load_sparse_adapt_config` → :class:`retrieval.sparse_config.SparseAdaptConfig`;
* ``regkit demo``: :func:`load_demo_config` → :class:`DemoConfig` (``pipelines/configs/demo.yaml`` ← the user's file).

Each reads its YAML files with :func:`load_yaml` (duplicate keys and alias bombs refused, every key's line kept),
deep-merges them, applies the ``--set a.b=value`` overrides in order, and validates the result once with pydantic
(:mod:`pipelines.run_config._schema`; errors worded by :mod:`pipelines.run_config._errors`). Any problem is one
:class:`ConfigError` line naming the file and line (or the ``--set``), the dotted key, what was expected and what
was found, with a did-you-mean for misspellings.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.config_files import ConfigError, apply_overrides, load_yaml, read_config_files
from pipelines.run_config._errors import validate
from pipelines.run_config.demo import DemoConfig
from pipelines.run_config.recsys import DataConfig, RecsysRunConfig, ValidationConfig
from pipelines.run_config.retrieval import SparseAdapt, SparseTrain, refuse_moved_keys
from retrieval.sparse_config import SparseAdaptConfig, SparseTrainConfig

__all__ = [
    "DEMO_DEFAULTS",
    "ConfigError",
    "DataConfig",
    "DemoConfig",
    "RecsysRunConfig",
    "ValidationConfig",
    "load_demo_config",
    "load_recsys_config",
    "load_sparse_adapt_config",
    "load_sparse_train_config",
    "load_yaml",
    "read_config_files",
    "recsys_config",
]

DEMO_DEFAULTS = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"

Paths = str | os.PathLike[str]


def load_recsys_config(path: Paths | None, overrides: Sequence[str] = ()) -> RecsysRunConfig:
    """``regkit recsys train``'s config: the defaults ← ``path`` ← ``overrides`` (``a.b=value``, YAML values)."""
    raw, sources = read_config_files(*([path] if path is not None else []))
    if isinstance(raw.get("ssl"), str):  # `ssl: cfm` shorthand, made a mapping so that `--set ssl.alpha=` keeps it
        raw["ssl"] = {"mode": raw["ssl"]}
    return validate(RecsysRunConfig, apply_overrides(raw, sources, overrides), sources)


def recsys_config(config: RecsysRunConfig | dict[str, Any]) -> RecsysRunConfig:
    """``config`` as a :class:`RecsysRunConfig` (a mapping is validated, and its errors name the keys)."""
    return config if isinstance(config, RecsysRunConfig) else validate(RecsysRunConfig, config)


def load_sparse_train_config(path: Paths, overrides: Sequence[str] = (), **values: Any) -> SparseTrainConfig:
    """``regkit retrieval train``'s config: ``path`` ← ``overrides`` ← ``values``.

    ``overrides`` are ``key=value`` strings (YAML values), ``values`` typed ones from Python; ``data`` and ``out_dir``
    are required.
    """
    raw, sources = read_config_files(path)
    raw = apply_overrides(raw, sources, overrides, values)
    refuse_moved_keys(raw, sources)
    return validate(SparseTrain, raw, sources)


def load_sparse_adapt_config(path: Paths | None, overrides: Sequence[str] = (), **values: Any) -> SparseAdaptConfig:
    """``regkit retrieval adapt``'s config: the defaults ← ``path`` (optional) ← ``overrides`` ← ``values``.

    As :func:`load_sparse_train_config`; ``data`` and ``out_dir`` are required (the CLI sets them).
    """
    raw, sources = read_config_files(*([path] if path is not None else []))
    raw = apply_overrides(raw, sources, overrides, values)
    refuse_moved_keys(raw, sources)
    return validate(SparseAdapt, raw, sources)


def _seed_models(raw: dict[Any, Any]) -> None:
    """A demo recommender trains with the demo's ``seed`` unless its own ``train.seed`` is set."""
    recsys = raw.get("recsys")
    models = recsys.get("models") if isinstance(recsys, dict) else None
    for fragment in models.values() if isinstance(models, dict) else ():
        if isinstance(fragment, dict) and isinstance(fragment.setdefault("train", {}), dict):
            fragment["train"].setdefault("seed", raw.get("seed", 0))


def load_demo_config(path: Paths | None = None, overrides: Sequence[str] = ()) -> DemoConfig:
    """``regkit demo``'s config: ``pipelines/configs/demo.yaml`` ← ``path`` (deep-merged) ← ``overrides``.

    A model set to ``null`` (``--set recsys.models.mf_dsl=null``) is skipped.
    """
    raw, sources = read_config_files(DEMO_DEFAULTS, *([path] if path is not None else []))
    raw = apply_overrides(raw, sources, overrides)
    _seed_models(raw)
    retrieval = raw.get("retrieval")
    if isinstance(retrieval, dict) and isinstance(retrieval.get("sparse"), dict):
        refuse_moved_keys(retrieval["sparse"], sources, ("retrieval", "sparse"))
    return validate(DemoConfig, raw, sources)
