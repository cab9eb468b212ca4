"""``--config FILE`` for any ``regkit`` command: a YAML file of the command's option values.

Keys are the command's option names (``out_dir`` or ``out-dir``; arguments too, e.g. ``run_a``); values are what
the option takes (lists for repeatable options). The file becomes the command's defaults (click's ``default_map``),
so anything given on the command line overrides it. Unknown keys are an error naming them and the known ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml

__all__ = ["config_option"]

_HELP = ("YAML file of this command's option values (keys = option names, e.g. `k: 100`); options given on the "
         "command line override it.")


def _load_defaults(ctx: typer.Context, param: Any, value: Path | None) -> Path | None:
    if value is None or ctx.resilient_parsing:
        return value
    path = Path(value)
    if not path.is_file():
        raise typer.BadParameter(f"{path}: config file not found.", param_hint="--config")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise typer.BadParameter(f"{path}: not valid YAML ({err}).", param_hint="--config") from None
    if not isinstance(loaded, dict):
        raise typer.BadParameter(f"{path}: expected a mapping of option names, got {type(loaded).__name__}.",
                                 param_hint="--config")
    known = {p.name for p in ctx.command.params if p.name not in ("config", "help")}
    values = {str(key).replace("-", "_"): item for key, item in loaded.items()}
    unknown = sorted(set(values) - known)
    if unknown:
        raise typer.BadParameter(f"{path}: unknown keys {unknown}; known: {sorted(known)}.", param_hint="--config")
    ctx.default_map = {**(ctx.default_map or {}), **values}
    return path


def config_option() -> Any:
    """The ``--config`` option (eager: it is read before the other options, which it supplies defaults for)."""
    return typer.Option(None, "--config", help=_HELP, is_eager=True, callback=_load_defaults)
