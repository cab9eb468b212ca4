"""One-line errors for pydantic validation of a run config, mapped back to the file and line of each key.

:func:`validate` runs a schema over a raw config (parsed YAML, merged and overridden) and turns the first problem
into a :class:`pipelines.config_files.ConfigError`: ``<file:line or --set a.b=v>: <dotted key> <what is wrong>, got
<what was found>`` with a did-you-mean for a misspelt key or choice, and, for a number YAML 1.1 read as a string
(``1e-3``, ``1.0e300``), the spelling it reads as a number. Keys and choices come from the schema itself, walked
along the error's location.
"""

from __future__ import annotations

import difflib
import functools
import re
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError

from pipelines.config_files import ConfigError, Sources
from pipelines.run_config._schema import Builds

__all__ = ["validate"]

_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
    "bool_parsing": "true or false", "string_type": "a string", "list_type": "a list", "tuple_type": "a list",
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
    "dataclass_type": "a mapping", "dataclass_args_type": "a mapping", "finite_number": "a finite number",
}
_NUMBERS = ("an integer", "a number")


def _split_annotated(hint: Any) -> tuple[Any, tuple[Any, ...]]:
    if get_origin(hint) is Annotated:
        return hint.__origin__, hint.__metadata__
    return hint, ()


def _fields(hint: Any) -> dict[str, Any] | None:
    base, metadata = _split_annotated(hint)
    members = [arg for arg in get_args(base) if arg is not type(None)]
    if get_origin(base) in (Union, types.UnionType) and len(members) == 1:
        return _fields(members[0])  # an optional section
    builds = next((item for item in metadata if isinstance(item, Builds)), None)
    model = builds.section if builds is not None else base
    if isinstance(model, type) and issubclass(model, BaseModel):
        return {name: info.rebuild_annotation() for name, info in model.model_fields.items()}
    return None


def _step(hint: Any, element: Any) -> Any:
    """The type at ``element`` of ``hint``.

    ``hint`` itself for an element that is a pydantic tag (a union member's name, a validator's name) rather than a
    key.
    """
    base, _ = _split_annotated(hint)
    fields = _fields(hint)
    if fields is not None:
        return fields.get(element, hint)
    origin, args = get_origin(base), get_args(base)
    if origin in (Union, types.UnionType):
        members = [arg for arg in args if arg is not type(None)]
        for member in members:  # a discriminated union's tag: the member whose `name` is that literal
            member_fields = _fields(member) or {}
            if "name" in member_fields and get_args(member_fields["name"]) == (element,):
                return member
        return _step(members[0], element) if len(members) == 1 else hint
    if origin is list and isinstance(element, int):
        return args[0] if args else Any
    if origin is dict:
        return args[1] if args else Any
    return hint


def _type_at(schema: Any, loc: tuple[Any, ...]) -> Any:
    for element in loc:
        schema = _step(schema, element)
    return schema


def _choices(hint: Any) -> list[Any]:
    base, _ = _split_annotated(hint)
    if get_origin(base) in (Union, types.UnionType):
        return [choice for arg in get_args(base) for choice in _choices(arg)]
    return list(get_args(base)) if get_origin(base) is Literal else []


def _keys_in(data: Any, loc: tuple[Any, ...], *, last: bool) -> tuple[tuple[Any, ...], str]:
    """The elements of ``loc`` that are keys (or list indices) of ``data``, and their dotted name.

    The name reads like ``data.item_features[1].kind``; ``last`` keeps the final element even when the data lacks it (a
    missing key).
    """
    keys, text, node = [], "", data
    for position, element in enumerate(loc):
        in_list = isinstance(node, list)
        if isinstance(node, dict) and element in node:
            node = node[element]
        elif in_list and isinstance(element, int) and 0 <= element < len(node):
            node = node[element]
        elif not (last and position == len(loc) - 1):
            continue
        keys.append(element)
        text += f"[{element}]" if in_list else f".{element}" if text else str(element)
    return tuple(keys), text


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _did_you_mean(word: Any, options: list[Any]) -> str:
    close = difflib.get_close_matches(str(word), [str(option) for option in options], n=1, cutoff=0.6)
    return f" (did you mean `{close[0]}`?)" if close else ""


def _yaml_number(text: str) -> str | None:
    """How to write the number ``text`` so that YAML 1.1 reads a float (a dot, and a sign on the exponent)."""
    try:
        number = float(text)
    except ValueError:
        return None
    mantissa, _, exponent = repr(number).partition("e")
    if "." not in mantissa and mantissa.lstrip("-").isdigit():
        mantissa += ".0"
    return f"{mantissa}e{exponent}" if exponent else mantissa


def _type_hint(expected: str, value: Any) -> str:
    if expected in _NUMBERS and isinstance(value, bool):
        return " (YAML reads yes / no / true / false as booleans)"
    if expected == "a number" and isinstance(value, str):
        written = _yaml_number(value.strip())
        if written is not None:
            return (f" (YAML 1.1 reads {value} as a string: a float needs a dot and a signed exponent; "
                    f"write {written})")
    return ""


def _explain(error: dict[str, Any], schema: Any, raw: Any) -> tuple[str, tuple[Any, ...]]:
    """One sentence for a pydantic error, and the key path it is about.

    A section's own error message, which may name a key inside it, ends the sentence.
    """
    loc, kind, value = tuple(error["loc"]), error["type"], error.get("input")
    keys, dotted = _keys_in(raw, loc, last=kind == "missing")
    name = f"`{dotted}`" if keys else "the config"
    if kind in ("extra_forbidden", "unexpected_keyword_argument", "invalid_key"):
        key = value if kind == "invalid_key" else loc[-1]  # a key that is not a string: a number, null, a boolean
        section = loc[:-1] if loc and loc[-1] == key else loc
        known = list(_fields(_type_at(schema, section)) or {})
        parent_keys, parent = _keys_in(raw, section, last=False)
        parent = f"`{parent}`" if parent_keys else "the config"
        return (f"unknown key {_shown(key) if kind == 'invalid_key' else name}{_did_you_mean(key, known)} in "
                f"{parent}, which takes: {', '.join(known)}.", keys)
    if kind == "missing":
        return f"{name} is required.", keys
    if kind in _EXPECTED:
        expected = _EXPECTED[kind]
        return f"{name} must be {expected}, got {_shown(value)}{_type_hint(expected, value)}.", keys
    if kind == "literal_error":
        choices = _choices(_type_at(schema, loc))
        return f"{name} must be one of {choices}, got {_shown(value)}{_did_you_mean(value, choices)}.", keys
    if kind == "union_tag_invalid":
        tags = re.findall(r"'([^']*)'", str(error["ctx"]["expected_tags"]))
        tag, discriminator = error["ctx"]["tag"], error["ctx"]["discriminator"].strip("'")
        field = f"`{dotted}.{discriminator}`"
        return f"{field} must be one of {tags}, got {_shown(tag)}{_did_you_mean(tag, tags)}.", (*keys, discriminator)
    if kind in ("value_error", "assertion_error"):
        message = str(error["ctx"]["error"])
        named = keys and f"`{dotted}" in message
        return (message if named or not keys else f"{name}: {message}"), keys
    if kind in ("too_short", "too_long"):
        bound = "at least" if kind == "too_short" else "at most"
        count = error["ctx"]["min_length" if kind == "too_short" else "max_length"]
        return f"{name} must hold {bound} {count} item{'s' * (count != 1)}, got {_shown(value)}.", keys
    phrase = error["msg"]
    phrase = "must be " + phrase[len("Input should be "):] if phrase.startswith("Input should be ") else phrase
    return f"{name} {phrase}, got {_shown(value)}.", keys


def _recorded(path: tuple[Any, ...], sources: Sources) -> int:
    """Length of the longest prefix of ``path`` whose source is recorded (0 if none)."""
    return next((cut for cut in range(len(path), 0, -1) if path[:cut] in sources.origin), 0)


def _where(detail: str, keys: tuple[Any, ...], sources: Sources) -> str | None:
    """The source of ``keys``, or of a key inside them that a section's own message names.

    The inner key (``lr`` of ``train``) is used when it is recorded more precisely.
    """
    own = _recorded(keys, sources)
    for named in re.findall(r"`([A-Za-z_][\w.]*(?:\[\d+\])*)`", detail):  # `train.lr`, `hooks[1]`
        parts = tuple(int(part) if part.isdigit() else part for part in re.split(r"[.\[\]]+", named) if part)
        for end in range(len(keys), -1, -1):
            cut = _recorded(keys[:end] + parts, sources)
            if cut > max(end, own):
                return sources.origin[(keys[:end] + parts)[:cut]]
    return sources.where(keys)


@functools.cache
def _adapter(schema: Any) -> TypeAdapter:
    return TypeAdapter(schema)


def validate(schema: Any, raw: Any, sources: Sources | None = None) -> Any:
    """``raw`` (parsed YAML, merged and overridden) validated as ``schema``.

    ``schema`` is a :class:`Section` or a :func:`domain` type.

    Raises:
        ConfigError: the first problem, as ``<file:line or --set>: <what is wrong with which key>``.
    """
    try:
        return _adapter(schema).validate_python(raw)
    except ValidationError as err:
        error = err.errors(include_url=False)[0]
        message, keys = _explain(error, schema, raw)
        detail = str(error["ctx"]["error"]) if error["type"] in ("value_error", "assertion_error") else ""
        where = _where(detail, keys, sources or Sources())
        raise ConfigError(f"{where}: {message}" if where else message) from None
