"""``regkit regs``: the common_regs method registry."""

from __future__ import annotations

import textwrap

import typer
from rich.console import Console
from rich.text import Text

from common_regs.registry import list_methods

app = typer.Typer(help="Regularization and compression methods of common_regs.", no_args_is_help=True)


@app.command("list")
def list_command(
    kind: str = typer.Option(None, help="Only methods of this hook kind (e.g. loss, mask_scheduler)."),
) -> None:
    """Print every registered method, its hook kind, module and paper.

    Methods come from common_regs, recsys, retrieval and the packages of the ``regkit.methods`` entry points.
    """
    methods = list_methods(kind)
    if kind is not None and not methods:
        kinds = sorted({method.kind for method in list_methods()})
        raise typer.BadParameter(f"no method of kind {kind!r}; kinds: {kinds}.", param_hint="--kind")
    # One entry per method (name line, then paper and module indented) instead of a table: five columns in 80
    # cut the names short, and a name is what a config's `hooks:` entry needs.
    console = Console(highlight=False)
    console.print(Text(f"common_regs methods ({len(methods)}): name, hook kind, seed-paper number; paper; module"))
    for method in methods:
        seed = f"  seed #{method.seed}" if method.seed else ""
        paper = textwrap.fill(method.paper, width=console.width, initial_indent="    ", subsequent_indent="    ")
        console.print(Text.assemble((method.name, "bold"), f"  {method.kind}{seed}\n{paper}\n    {method.module}"),
                      soft_wrap=True)  # wrapped above, a long module name is not cut
