"""The typed config of ``regkit demo`` (:class:`DemoConfig`): ``pipelines/configs/demo.yaml`` holds every value.

Each recommender under ``recsys.models`` is a ``regkit recsys train`` fragment (``model`` / ``train`` / ``hooks`` /
``ssl`` / ``index``, plus ``ids_only``), checked when the config is loaded; :meth:`DemoConfig.recsys_run` completes
it with the demo's data, split files, validation and cut-offs into a :class:`RecsysRunConfig`.
``retrieval.sparse`` holds :class:`retrieval.sparse_config.SparseTrainConfig` options
(:meth:`DemoConfig.sparse_train` adds the data and folders). A model's name becomes its sub-folder, so it must be a
plain name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, Field, NonNegativeInt, PositiveInt, model_validator

from common_regs.output_folders import check_name
from pipelines.datasets.demo import DemoSpec
from pipelines.run_config._schema import Fraction, PathText, Section, domain
from pipelines.run_config.recsys import (
    SSL,
    DataConfig,
    EvalConfig,
    Hooks,
    Ks,
    ModelConfig,
    RecsysRunConfig,
    Validation,
    check_ssl_model,
    default_model,
)
from pipelines.run_config.retrieval import SparseOptions
from recsys.features import FeatureSpec
from recsys.serving import IndexConfig
from recsys.ssl import SSLConfig
from recsys.trainer import TrainConfig
from retrieval.sparse_config import SparseTrainConfig

__all__ = ["DemoConfig", "RecsysModel"]

Pair = Annotated[list[str], Field(min_length=2, max_length=2)]
Names = Annotated[list[str], Field(min_length=1)]
ModelName = Annotated[str, AfterValidator(lambda name: check_name(name, "`recsys.models` key"))]


class DemoData(Section):
    """``data``: the bundled data (``dir: null``), another folder of the same layout, or freshly generated data."""

    dir: PathText | None = None
    generate: domain(DemoSpec) | None = None


class DemoSplit(Section):
    """``recsys.split``: the per-user random hold-out of the demo log."""

    test_fraction: Fraction
    seed: int


class RecsysModel(Section):
    """One recommender of the demo: a ``regkit recsys train`` fragment; ``ids_only`` drops the side features."""

    ids_only: bool = False
    model: ModelConfig = Field(default_factory=default_model)
    train: domain(TrainConfig) = Field(default_factory=TrainConfig)
    hooks: Hooks = Field(default_factory=list)
    ssl: SSL = SSLConfig()
    index: domain(IndexConfig) = IndexConfig()

    @model_validator(mode="after")
    def _consistent(self) -> RecsysModel:
        check_ssl_model(self.ssl, self.model)
        return self


class DemoRecsys(Section):
    """``recsys``: the split, validation, features and cut-offs every model shares, the models, the A/B pairs."""

    num_threads: PositiveInt | None = None
    split: DemoSplit
    validation: Validation
    ks: Ks
    head_fraction: Fraction
    show_users: list[int | str] = Field(default_factory=list)
    top_k: PositiveInt
    user_features: list[domain(FeatureSpec)]
    item_features: list[domain(FeatureSpec)]
    models: dict[ModelName, RecsysModel | None]
    ab: list[Pair] = Field(default_factory=list)

    def named(self) -> dict[str, RecsysModel]:
        """The models to train (a model set to null is skipped)."""
        return {name: model for name, model in self.models.items() if model is not None}


def _checked_sparse(options: Section) -> Section:
    """The options' own range checks (a ``SparseTrainConfig`` on placeholder folders), before any work."""
    SparseTrainConfig(**{**options.model_dump(exclude_unset=True), "data": ".", "out_dir": "."})
    return options


class DemoRetrieval(Section):
    """``retrieval``: BEIR cut-off and measures, the shown queries, the sparse model's options, the A/B pairs."""

    k: PositiveInt
    measures: Names
    show_queries: NonNegativeInt = 2
    sparse: Annotated[SparseOptions, AfterValidator(_checked_sparse)]
    ab: list[Pair] = Field(default_factory=list)


class DemoAB(Section):
    """``ab``: the metrics compared per domain, the confidence level and the bootstrap resamples."""

    recsys_metrics: Names
    retrieval_metrics: Names
    confidence: Fraction
    resamples: PositiveInt


def _check_pairs(pairs: list[list[str]], section: str, names: list[str]) -> None:
    for pair in pairs:
        unknown = [name for name in pair if name not in names]
        if unknown:
            raise ValueError(f"`{section}.ab` names {unknown}, not among the {section} models {names}.")


class DemoConfig(Section):
    """The whole demo (``pipelines/configs/demo.yaml`` documents every value)."""

    seed: int
    threads: PositiveInt
    data: DemoData
    recsys: DemoRecsys
    retrieval: DemoRetrieval
    ab: DemoAB

    @model_validator(mode="after")
    def _consistent(self) -> DemoConfig:
        models = list(self.recsys.named())
        if not models:
            raise ValueError("`recsys.models` is empty: the demo needs at least one recommender.")
        _check_pairs(self.recsys.ab, "recsys", models)
        _check_pairs(self.retrieval.ab, "retrieval", ["bm25", "sparse"])
        return self

    def recsys_run(self, name: str, files: Mapping[str, str | Path]) -> RecsysRunConfig:
        """The ``regkit recsys train`` config of model ``name`` on the demo's ``files``.

        ``files`` are the ``train`` / ``test`` split files and the ``users`` / ``items`` side tables; the served model
        is the best validation epoch (no refit).
        """
        rec, fragment = self.recsys, self.recsys.named()[name]
        ids = {"user_features": [FeatureSpec("user_id", "id")], "item_features": [FeatureSpec("item_id", "id")]}
        features = ids if fragment.ids_only else {"user_features": rec.user_features,
                                                  "item_features": rec.item_features}
        data = DataConfig(split="given", **{key: str(path) for key, path in files.items()},
                          validation=rec.validation, **features)
        return RecsysRunConfig(
            seed=self.seed, num_threads=rec.num_threads or self.threads, data=data, model=fragment.model,
            train=fragment.train, hooks=fragment.hooks, ssl=fragment.ssl, index=fragment.index,
            eval=EvalConfig(ks=rec.ks, head_fraction=rec.head_fraction, refit=False),
        )

    def sparse_train(self, data: str | Path, out_dir: str | Path, cache_dir: str | Path) -> SparseTrainConfig:
        """The sparse retriever's training config.

        It takes the demo's seed and threads unless ``retrieval.sparse`` sets them.
        """
        options = self.retrieval.sparse.model_dump(exclude_unset=True)
        return SparseTrainConfig(**{"threads": self.threads, "seed": self.seed, **options, "data": str(data),
                                    "out_dir": str(out_dir), "cache_dir": str(cache_dir)})

    def to_dict(self) -> dict[str, Any]:
        """The whole config as plain data: what the demo's ``resolved_config.yaml`` holds."""
        return self.model_dump(mode="json")
