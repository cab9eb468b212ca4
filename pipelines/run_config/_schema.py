"""Typed config sections (pydantic v2), and sections generated from the domain's dataclasses and constructors.

Every section is a :class:`Section`: unknown keys are refused (``extra="forbid"``), types are strict (YAML's
``true`` is not a number, its ``1e-3`` is a string and not a float, ``3`` is not a string), floats must be finite and
within float32 range (every float option ends up scaling float32 tensors: ``lr: 1.0e+300`` overflows inside the
optimizer), and sections are frozen once built.

A domain dataclass (``recsys.trainer.TrainConfig``, ``recsys.serving.IndexConfig`` ...) stays the domain's object:
:func:`domain` makes a field of that type whose mapping is checked by a strict section generated from the
dataclass's own fields (:func:`section_of`, so the two never drift apart), then built into the dataclass once, its
``__post_init__`` range checks included. :mod:`pipelines.run_config._errors` words the errors.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import inspect
import os
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import numpy as np
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, create_model
from pydantic_core import PydanticCustomError, core_schema

__all__ = [
    "Builds",
    "Fraction",
    "ModelOptions",
    "Number",
    "PathText",
    "Section",
    "domain",
    "options_model",
    "section_of",
]

FLOAT32_MAX = float(np.finfo(np.float32).max)


def _in_float32_range(value: float) -> float:
    if abs(value) > FLOAT32_MAX:
        raise PydanticCustomError("float32_range", "must be within ±3.4e+38 (it scales float32 tensors)")
    return value


Number = Annotated[float, AfterValidator(_in_float32_range)]
"""A finite float within float32 range (ints are accepted, booleans and strings are not)."""
Fraction = Annotated[float, Field(gt=0, lt=1)]
"""A float in (0, 1)."""
PathText = Annotated[str, BeforeValidator(lambda value: os.fspath(value) if isinstance(value, os.PathLike) else value)]
"""A file or folder name: a string in YAML, a string or ``Path`` from Python."""


class Section(BaseModel):
    """Base of every config section: unknown keys refused, strict types, finite floats, frozen."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


# -- sections generated from domain dataclasses and constructors ----------------------------------------------


def _strict(hint: Any) -> Any:
    """The config type of a field annotated ``hint`` (tuples and sequences are YAML lists); TypeError if none."""
    origin, args = get_origin(hint), get_args(hint)
    if hint is float:
        return Number
    if hint in (int, bool, str, type(None), Any) or origin is Literal:
        return hint
    if origin in (Union, types.UnionType):
        return Union[tuple(_strict(arg) for arg in args)]  # noqa: UP007 - built from a runtime tuple
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(set(args)) != 1:
            raise TypeError(f"no config type for the mixed tuple {hint!r}")
        return Annotated[list[_strict(args[0])], Field(min_length=len(args), max_length=len(args))]
    if origin in (list, tuple, collections.abc.Sequence):
        return list[_strict(args[0])] if args else list[Any]
    if hint is dict or origin is dict:
        return dict[str, _strict(args[1]) if args else Any]
    raise TypeError(f"no config type for {hint!r}")


def _default(value: Any) -> Any:
    """A default as the config type holds it (a tuple default of a list-typed field is a list)."""
    return list(value) if isinstance(value, tuple) else value


@functools.cache
def section_of(cls: type, exclude: frozenset[str] = frozenset(), **replaced: Any) -> type[Section]:
    """A strict :class:`Section` with the fields (names, types, defaults) of dataclass ``cls``.

    ``exclude`` drops fields the caller sets itself; ``replaced`` gives some fields another config type.
    """
    hints = get_type_hints(cls)
    fields: dict[str, Any] = {}
    for item in dataclasses.fields(cls):
        if item.name in exclude:
            continue
        if item.default is not dataclasses.MISSING:
            default: Any = _default(item.default)
        elif item.default_factory is not dataclasses.MISSING:
            default = Field(default_factory=item.default_factory)
        else:
            default = ...
        fields[item.name] = (replaced.get(item.name) or _strict(hints[item.name]), default)
    return create_model(cls.__name__, __base__=Section, __module__=__name__, **fields)


def _field_value(hint: Any, value: Any) -> Any:
    """A checked section value as the dataclass field annotated ``hint`` takes it."""
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_unset=True)
    if isinstance(value, list) and tuple in {get_origin(h) for h in (hint, *get_args(hint))}:
        return tuple(value)
    return value


def _plain(value: Any) -> Any:
    """A dataclass as plain data (tuples as lists), for ``resolved_config.yaml``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


@dataclasses.dataclass(frozen=True, eq=False)
class Builds:
    """``Annotated`` marker: check a mapping with ``section``, then build dataclass ``cls`` from it.

    An instance of ``cls`` is taken as it is.
    """

    cls: type
    section: type[Section]

    def build(self, section: Section) -> Any:
        hints = get_type_hints(self.cls)
        names = type(section).model_fields
        return self.cls(**{name: _field_value(hints[name], getattr(section, name)) for name in names})

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        def check(value: Any, checked: Any) -> Any:
            return value if isinstance(value, self.cls) else self.build(checked(value))

        return core_schema.no_info_wrap_validator_function(
            check, handler.generate_schema(self.section),
            serialization=core_schema.plain_serializer_function_ser_schema(_plain, when_used="always"),
        )


def domain(cls: type, **replaced: Any) -> Any:
    """The config type of a section that is dataclass ``cls`` (``replaced``: as in :func:`section_of`)."""
    return Annotated[cls, Builds(cls, section_of(cls, **replaced))]


class ModelOptions(Section):
    """Base of the per-model option sections built by :func:`options_model`."""

    def options(self) -> dict[str, Any]:
        """The constructor keyword arguments (every option but ``name``)."""
        return self.model_dump(exclude={"name"})


def options_model(name: str, cls: type) -> type[ModelOptions]:
    """The section of a model registered as ``name``.

    It holds ``name`` plus every constructor parameter of ``cls`` that has a default and a plain type (data objects
    such as the training interactions are not options).
    """
    hints = get_type_hints(cls.__init__)
    fields: dict[str, Any] = {"name": (Literal[name], ...)}
    for parameter in inspect.signature(cls.__init__).parameters.values():
        if parameter.default is inspect.Parameter.empty:
            continue
        try:
            fields[parameter.name] = (_strict(hints[parameter.name]), _default(parameter.default))
        except TypeError:
            continue
    return create_model(f"{cls.__name__}Options", __base__=ModelOptions, __module__=__name__, **fields)
