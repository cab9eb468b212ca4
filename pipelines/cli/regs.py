"""``regkit regs``: the common_regs method registry."""

from __future__ import annotations

import importlib

import typer
from rich.console import Console
from rich.table import Table

from common_regs.registry import list_methods

# Methods registered outside common_regs (they need the domain's data types); importing registers them.
DOMAIN_METHOD_MODULES = ("recsys.feature_masking", "recsys.ssl", "retrieval.losses")

app = typer.Typer(help="Regularization and compression methods of common_regs.", no_args_is_help=True)


@app.command("list")
def list_command(
    kind: str = typer.Option(None, help="Only methods of this hook kind (e.g. loss, mask_scheduler)."),
) -> None:
    """Print every registered method (common_regs and the recsys / retrieval ones), its hook kind, module and paper."""
    for module in DOMAIN_METHOD_MODULES:
        importlib.import_module(module)
    methods = list_methods(kind)
    if kind is not None and not methods:
        kinds = sorted({method.kind for method in list_methods()})
        raise typer.BadParameter(f"no method of kind {kind!r}; kinds: {kinds}.", param_hint="--kind")
    table = Table(title=f"common_regs methods ({len(methods)})")
    for column in ("name", "kind", "seed #", "module", "paper"):
        table.add_column(column)
    for method in methods:
        table.add_row(method.name, method.kind, str(method.seed or ""), method.module, method.paper)
    Console().print(table)
