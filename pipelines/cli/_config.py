"""``--config FILE`` for any ``regkit`` command: a YAML file of the command's option values.

Keys are the command's option names (``out_dir`` or ``out-dir``; arguments too, e.g. ``run_a``); values are what
the option takes (lists for repeatable options). The file becomes the command's defaults (click's ``default_map``),
so anything given on the command line overrides it. Unknown keys are an error naming them, a close known one and
the known ones. The file is read by regkit's one YAML loader (:func:`pipelines.config_files.load_yaml`): a key given
twice and an alias bomb are errors naming the line.

Values are checked when the file is read, against the option's type, and a wrong one is a ``BadParameter`` naming
the file, the key's line and the key: a list or mapping for a single-valued option, a nested list or mapping inside a
list, a boolean for a numeric option (YAML's ``yes`` / ``true`` is not a number), or anything the option's own
conversion refuses (``k: abc``). A single value for a repeatable option is taken as a one-element list; ``null`` means
"the option's default".
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, get_args, get_origin

import typer

from pipelines.config_files import ConfigError, load_yaml

__all__ = ["config_option", "options_as_overrides"]

_HELP = ("YAML file of this command's option values (keys = option names, e.g. `k: 100`); options given on the "
         "command line override it.")


def _load_defaults(ctx: typer.Context, param: Any, value: Path | None) -> Path | None:
    if value is None or ctx.resilient_parsing:
        return value
    path = Path(value)
    if not path.is_file():
        raise typer.BadParameter(f"{path}: config file not found.", param_hint="--config")
    try:
        loaded, sources = load_yaml(path)
    except ConfigError as err:
        raise typer.BadParameter(str(err), param_hint="--config") from None
    loaded = loaded or {}
    if not isinstance(loaded, dict):
        raise typer.BadParameter(f"{path}: expected a mapping of option names, got {type(loaded).__name__}.",
                                 param_hint="--config")
    params = {p.name: p for p in ctx.command.params if p.name not in ("config", "help")}
    values = {str(key).replace("-", "_"): item for key, item in loaded.items()}
    lines = {str(key).replace("-", "_"): sources.where((key,)) for key in loaded}
    if len(values) < len(loaded):
        names = [str(key).replace("-", "_") for key in loaded]
        spelled = sorted(str(key) for key, name in zip(loaded, names, strict=True) if names.count(name) > 1)
        raise typer.BadParameter(f"{path}: an option is given twice (keys {spelled}).", param_hint="--config")
    unknown = sorted(set(values) - set(params))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(params), n=1)
        hint = f" (did you mean `{close[0]}`?)" if close else ""
        raise typer.BadParameter(f"{lines[unknown[0]]}: unknown keys {unknown}{hint}; known: {sorted(params)}.",
                                 param_hint="--config")
    values = {key: _checked_value(ctx, params[key], lines[key], key, item) for key, item in values.items()}
    ctx.default_map = {**(ctx.default_map or {}), **values}
    return path


_SCALARS = (str, int, float, bool)


def _checked_value(ctx: typer.Context, param: Any, where: str, key: str, value: Any) -> Any:
    """``value`` as the default of ``param`` (a one-element list for a repeatable option).

    Raises a BadParameter naming ``where`` (``file:line``) when the value does not fit the option.
    """

    def refuse(reason: str) -> typer.BadParameter:
        return typer.BadParameter(f"{where}: key `{key}`: {reason}", param_hint="--config")

    if value is None:
        return None
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    repeatable = bool(getattr(param, "multiple", False)) or param.nargs == -1
    if repeatable:
        items = value if isinstance(value, list) else [value]
        element = get_args(annotation)[0] if get_origin(annotation) is list and get_args(annotation) else None
    elif isinstance(value, (list, dict)):
        raise refuse(f"takes one value, got a {type(value).__name__} {_shown(value)}.")
    else:
        items, element = [value], annotation
    for item in items:
        if not isinstance(item, _SCALARS):
            raise refuse(f"values must be strings or numbers, got a {type(item).__name__} {_shown(item)}.")
        if isinstance(item, bool) and element in (int, float):
            raise refuse(f"expected a number, got the boolean {item!r} (YAML reads yes/no/true/false as booleans).")
    coerce = getattr(param, "get_runtime_param", None)  # typer's own conversion of this option's values
    if coerce is not None:
        try:
            coerce().coerce(items if repeatable else value, param=param, ctx=ctx)
        except typer.BadParameter as err:
            raise refuse(f"{err.message} (got {_shown(value)}).") from None
    return items if repeatable else value


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def config_option() -> Any:
    """The ``--config`` option (eager: it is read before the other options, which it supplies defaults for)."""
    return typer.Option(None, "--config", help=_HELP, is_eager=True, callback=_load_defaults)


def options_as_overrides(section: str = "", **options: Any) -> list[str]:
    """Command-line options as run-config ``--set`` overrides (``section.key=value``, JSON is YAML); None = not given.

    A job command appends these after the user's ``--set`` values, so its own options win.
    """
    prefix = f"{section}." if section else ""
    return [f"{prefix}{key}={json.dumps(value)}" for key, value in options.items() if value is not None]
