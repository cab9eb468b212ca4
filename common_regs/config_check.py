"""Type checks for dataclass configs built from parsed YAML / JSON (one place for every regkit config loader).

YAML hands a loader whatever the user wrote: ``lr: 1e-3`` is a *string* under YAML 1.1 (which PyYAML follows),
``epochs: true`` is a bool (an ``int`` subclass in Python), ``.nan`` is a float, keys may be integers. Checking
each value against the dataclass field's annotation before construction turns these into one clear error naming
``<section>.<field>``, instead of a failure deep inside training.
"""

from __future__ import annotations

import math
import numbers
import types
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

__all__ = ["ConfigError", "check_config_fields"]


class ConfigError(TypeError, ValueError):
    """A config value of the wrong type or outside its allowed set; both a ``TypeError`` and a ``ValueError``."""


_EXPECTED = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_ABSTRACT = {int: numbers.Integral, float: numbers.Real}  # numpy scalars are fine


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _check(hint: Any, value: Any, where: str) -> None:
    origin, or_null = get_origin(hint), ""
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return
        hint = next(arg for arg in options if arg is not type(None))
        origin, or_null = get_origin(hint), " or null" if type(None) in options else ""
    if origin is Literal:
        if not isinstance(value, str) or value not in get_args(hint):
            raise ConfigError(f"`{where}` must be one of {list(get_args(hint))}, got {_describe(value)}.")
        return
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"`{where}` must be a list, got {_describe(value)}.")
        (item_hint,) = get_args(hint) or (Any,)
        for index, item in enumerate(value):
            _check(item_hint, item, f"{where}[{index}]")
        return
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"`{where}` must be a mapping, got {_describe(value)}.")
        return
    if hint not in _EXPECTED:
        return  # a type this check does not know: left to the dataclass's own __post_init__
    wanted = _ABSTRACT.get(hint, hint)
    if not isinstance(value, wanted) or (hint is not bool and isinstance(value, bool)):
        advice = "; YAML reads 1e-3 as a string, write 1.0e-3" if hint is float and isinstance(value, str) else ""
        raise ConfigError(f"`{where}` must be {_EXPECTED[hint]}{or_null}, got {_describe(value)}{advice}.")
    if hint is float and not math.isfinite(value):
        raise ConfigError(f"`{where}` must be a finite number, got {value!r}.")


def check_config_fields(cls: type, data: Mapping[Any, Any], *, section: str) -> None:
    """Check ``data`` against dataclass ``cls``: every key a field, every value of the field's annotated type.

    Understood annotations: ``bool``, ``int``, ``float``, ``str``, ``Literal[...]`` of strings, ``list[X]``,
    ``dict[...]`` and ``X | None``; other annotations are left to the dataclass. ``int`` accepts no bool, ``float``
    accepts integers but no bool and no NaN / ±inf.

    Raises:
        ConfigError: ``data`` is not a mapping, a key is unknown or not a string, or a value has the wrong type;
            the message names ``<section>.<field>`` and the value received.
    """
    if not is_dataclass(cls):
        raise TypeError(f"`cls` must be a dataclass, got {cls!r}.")
    if not isinstance(data, Mapping):
        raise ConfigError(f"the `{section}` section must be a mapping of options, got {_describe(data)}.")
    known = {f.name for f in fields(cls)}
    unknown = sorted(str(key) for key in data if key not in known)
    if unknown:
        raise ConfigError(f"unknown `{section}` options {unknown}; allowed: {sorted(known)}.")
    hints = get_type_hints(cls)
    for name, value in data.items():
        _check(hints[name], value, f"{section}.{name}")
