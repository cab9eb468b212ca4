"""The typed configs of ``regkit retrieval train`` and ``adapt``: :mod:`retrieval.sparse_config`'s dataclasses.

Their ``model`` section is checked as :class:`retrieval.encoder.SparseEncoderConfig` fields, ``adapt``'s
``pseudo_queries`` as :class:`retrieval.pseudo_queries.PseudoQueryConfig` fields, and ``hooks`` as
:mod:`common_regs.hook_specs` entries (checked by the dataclass itself).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

from pipelines.config_files import ConfigError, Sources
from pipelines.run_config._schema import Builds, domain, section_of
from retrieval.encoder import SparseEncoderConfig
from retrieval.pseudo_queries import PseudoQueryConfig
from retrieval.sparse_config import SparseAdaptConfig, SparseTrainConfig

__all__ = ["SparseAdapt", "SparseOptions", "SparseTrain", "refuse_moved_keys"]

_ENCODER = section_of(SparseEncoderConfig)

SparseTrain = domain(SparseTrainConfig, model=_ENCODER)
"""A whole training config (``data`` and ``out_dir`` required), built into a ``SparseTrainConfig``."""

SparseAdapt = Annotated[SparseAdaptConfig, Builds(SparseAdaptConfig, section_of(
    SparseAdaptConfig, frozenset({"split"}), model=_ENCODER, pseudo_queries=section_of(PseudoQueryConfig)))]
"""A whole adaptation config (``data`` and ``out_dir`` required; no ``split``: no judgment is read)."""

SparseOptions = section_of(SparseTrainConfig, frozenset({"data", "out_dir", "cache_dir"}), model=_ENCODER)
"""The options of a ``SparseTrainConfig`` whose data and folders the caller sets (the demo)."""

_MOVED = {"flops": "mode", "flops_weight": "weight", "flops_warmup_steps": "warmup_steps", "l0_threshold": "threshold"}
"""Keys of the FLOPS penalty that are now the options of its ``hooks`` entry."""


def refuse_moved_keys(raw: Mapping[str, Any], sources: Sources, prefix: tuple[str, ...] = ()) -> None:
    """Name the ``hooks`` entry that replaces a FLOPS key of an older config (``flops_weight: 0.002``).

    Such a key is not refused as merely unknown.
    """
    for key, option in _MOVED.items():
        if key in raw:
            where = sources.where((*prefix, key))
            dotted = ".".join((*prefix, key))
            raise ConfigError(
                f"{where + ': ' if where else ''}`{dotted}` is now the option `{option}` of the FLOPS entry of "
                f"`hooks`: write `hooks: [{{name: idf_aware_flops, {option}: {raw[key]!r}}}]` (weight, warmup_steps, "
                "mode, threshold; see pipelines/configs/sparse_scifact_b.yaml)."
            )
