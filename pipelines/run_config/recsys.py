"""The typed run config of ``regkit recsys train`` (:class:`RecsysRunConfig`).

Sections are described in :mod:`pipelines.recsys_run`.

The domain's own objects are built here, once: ``train`` is a :class:`recsys.trainer.TrainConfig`, ``ssl`` a
:class:`recsys.ssl.SSLConfig`, ``index`` a :class:`recsys.serving.IndexConfig`, feature lists hold
:class:`recsys.features.FeatureSpec`; ``model`` is one options section per registered model, generated from the
model's constructor (:func:`pipelines.run_config._schema.options_model`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BeforeValidator, Field, PositiveInt, field_validator, model_validator

from common_regs.hook_specs import check_hook_specs
from pipelines.run_config._schema import Fraction, ModelOptions, Number, PathText, Section, domain, options_model
from recsys.features import FeatureSpec
from recsys.models import MODELS
from recsys.serving import IndexConfig
from recsys.ssl import SSLConfig
from recsys.trainer import TrainConfig

__all__ = [
    "SSL",
    "DataConfig",
    "EvalConfig",
    "Hooks",
    "Ks",
    "ModelConfig",
    "RecsysRunConfig",
    "Validation",
    "ValidationConfig",
    "check_ssl_model",
    "default_model",
]


class ValidationConfig(Section):
    """``data.validation``: the split that early stopping watches (``null`` = none).

    ``random_holdout`` (``fraction`` of each user's rows, ``seed``, ``user_fraction`` of the users),
    ``leave_last_out`` (the latest ``n`` per user) and ``temporal`` (the latest ``fraction`` overall) are carved from
    the training log; ``given`` reads ``file``, a held-out log beside the train / test files; ``none`` skips it.
    """

    method: Literal["none", "given", "random_holdout", "leave_last_out", "temporal"] = "random_holdout"
    fraction: Fraction = 0.1
    seed: int = 0
    user_fraction: Annotated[float, Field(gt=0, le=1)] = 1.0
    n: PositiveInt = 1
    file: PathText | None = None

    @field_validator("method", mode="before")
    @classmethod
    def _null_is_none(cls, value: Any) -> Any:
        return "none" if value is None else value

    @model_validator(mode="after")
    def _given_needs_file(self) -> ValidationConfig:
        if self.method == "given" and not self.file:
            raise ValueError("`method`='given' needs `file` (a parquet log beside the train / test files).")
        return self


Validation = Annotated[ValidationConfig, BeforeValidator(lambda value: {"method": "none"} if value is None else value)]
"""``data.validation`` (``null`` = no validation split)."""
Ks = Annotated[list[PositiveInt], Field(min_length=1)]
"""Cut-offs of the ranking metrics."""


def _ids(name: str) -> list[FeatureSpec]:
    return [FeatureSpec(name=name, kind="id")]


class DataConfig(Section):
    """``data``: the interaction logs, their split, side tables, features and validation split."""

    dir: PathText | None = None
    train: PathText | None = None
    test: PathText | None = None
    log: PathText | None = None
    split: Literal["given", "random_holdout", "leave_last_out", "temporal"] = "given"
    test_fraction: Fraction = 0.2
    leave_last: PositiveInt = 1
    split_seed: int = 0
    users: PathText | None = None
    items: PathText | None = None
    user_features: list[domain(FeatureSpec)] = Field(default_factory=lambda: _ids("user_id"))
    item_features: list[domain(FeatureSpec)] = Field(default_factory=lambda: _ids("item_id"))
    rating_threshold: Number | None = None
    duplicates: Literal["drop", "keep", "error"] = "drop"
    validation: Validation = ValidationConfig()
    streaming: bool = False
    streaming_part_rows: PositiveInt = 2_000_000  # rows per user partition (evaluator's default: ~100 MB of ids)


class EvalConfig(Section):
    """``eval``: cut-offs, head share of the items, and whether to refit on the whole training split."""

    ks: Ks = Field(default_factory=lambda: [10, 20])
    head_fraction: Fraction = 0.2
    refit: bool = True


def _named(value: Any) -> Any:
    """A ``model`` mapping without ``name`` is the default model, ``mf``."""
    return {"name": "mf", **value} if isinstance(value, dict) and "name" not in value else value


_OPTIONS = {name: options_model(name, cls) for name, cls in sorted(MODELS.items())}
ModelConfig = Annotated[
    Union[tuple(_OPTIONS.values())],  # noqa: UP007 - built from a runtime tuple
    Field(discriminator="name"),
    BeforeValidator(_named),
]
"""``model``: ``name`` (a registered model) and that model's constructor options."""


def default_model() -> ModelOptions:
    """The ``model`` section when none is given: MF with its constructor defaults."""
    return _OPTIONS["mf"](name="mf")


def _checked_hooks(specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    check_hook_specs(specs, domain="recsys")
    return specs


Hooks = Annotated[list[dict[str, Any]], AfterValidator(_checked_hooks)]
"""``hooks``: ``{name: <common_regs method or adapter>, <its options>}`` mappings (:mod:`common_regs.hook_specs`)."""
SSL = Annotated[
    domain(SSLConfig), BeforeValidator(lambda value: {} if value is None else {"mode": value}
                                       if isinstance(value, str) else value)
]
"""``ssl``: ``none`` / ``rfm`` / ``cfm`` or a mapping of :class:`recsys.ssl.SSLConfig` options."""


def check_ssl_model(ssl: SSLConfig, model: ModelOptions) -> None:
    """SSL regularizes the item tower, so it needs the two-tower model."""
    if ssl.mode != "none" and model.name != "two_tower":
        raise ValueError(f"`ssl.mode`={ssl.mode!r} regularizes the item tower: it needs `model.name`='two_tower', "
                         f"got {model.name!r}.")


class RecsysRunConfig(Section):
    """One ``regkit recsys train`` run (sections: :mod:`pipelines.recsys_run`)."""

    seed: int = 0
    num_threads: PositiveInt | None = None
    output_dir: PathText = "runs/recsys"
    data: DataConfig = DataConfig()
    model: ModelConfig = Field(default_factory=default_model)
    train: domain(TrainConfig) = Field(default_factory=TrainConfig)
    hooks: Hooks = Field(default_factory=list)
    ssl: SSL = SSLConfig()
    eval: EvalConfig = EvalConfig()
    index: domain(IndexConfig) = IndexConfig()

    @model_validator(mode="after")
    def _consistent(self) -> RecsysRunConfig:
        check_ssl_model(self.ssl, self.model)
        if self.data.streaming:
            self._check_streaming()
        if MODELS[self.model.name].closed_form and self.hooks:
            raise ValueError(f"`model.name`={self.model.name!r} is fitted in closed form, without training steps: "
                             "`hooks` need a trained model (remove them or pick mf / lightgcn / two_tower).")
        return self

    def _check_streaming(self) -> None:
        """Refuse, in one line each, what ``data.streaming`` cannot do without the whole training log in memory."""
        data, method = self.data, self.data.validation.method
        refusals = [
            (data.split != "given", f"needs `data.split`='given' (it reads the training file), got {data.split!r}"),
            (method not in ("none", "given"), "needs `data.validation.method`='none' or 'given' (a carve holds "
             f"the whole training log), got {method!r}"),
            (data.rating_threshold is not None, "needs `data.rating_threshold`=null (filter the file beforehand), "
             f"got {data.rating_threshold!r}"),
            (data.duplicates != "keep", "needs `data.duplicates`='keep' (finding duplicates holds every pair; "
             f"deduplicate the file beforehand), got {data.duplicates!r}"),
            (self.model.name == "lightgcn", "cannot train `model.name`='lightgcn' (its graph holds every "
             "training pair)"),
            (MODELS[self.model.name].closed_form, f"cannot fit `model.name`={self.model.name!r} (a baseline fitted "
             "in closed form on the whole training matrix)"),
            (self.ssl.mode != "none", "cannot run `ssl` (its item statistics are computed in memory), got mode "
             f"{self.ssl.mode!r}"),
        ]
        for refused, reason in refusals:
            if refused:
                raise ValueError(f"`data.streaming`=true {reason}.")

    def to_dict(self) -> dict[str, Any]:
        """The whole config as plain data (every default filled in): what ``resolved_config.yaml`` holds."""
        return self.model_dump(mode="json")

    def identity(self) -> dict[str, Any]:
        """What the run computes: :meth:`to_dict` without ``output_dir``.

        So the same run in another folder (or resumed after a move) has the same config hash in ``_STARTED.json`` /
        ``_SUCCESS.json``.
        """
        return self.model_dump(mode="json", exclude={"output_dir"})
