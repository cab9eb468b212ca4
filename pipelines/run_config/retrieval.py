"""The typed config of ``regkit retrieval train``: :class:`retrieval.sparse_training.SparseTrainConfig`, with its
``model`` section checked as :class:`retrieval.encoder.SparseEncoderConfig` fields."""

from __future__ import annotations

from pipelines.run_config._schema import domain, section_of
from retrieval.encoder import SparseEncoderConfig
from retrieval.sparse_training import SparseTrainConfig

__all__ = ["SparseOptions", "SparseTrain"]

_ENCODER = section_of(SparseEncoderConfig)

SparseTrain = domain(SparseTrainConfig, model=_ENCODER)
"""A whole training config (``data`` and ``out_dir`` required), built into a ``SparseTrainConfig``."""

SparseOptions = section_of(SparseTrainConfig, frozenset({"data", "out_dir", "cache_dir"}), model=_ENCODER)
"""The options of a ``SparseTrainConfig`` whose data and folders the caller sets (the demo)."""
