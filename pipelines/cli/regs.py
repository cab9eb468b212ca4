"""``regkit regs``: the common_regs method registry."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from typing import Literal

import typer
from rich.console import Console
from rich.text import Text

from common_regs.registry import MethodInfo, list_methods

app = typer.Typer(help="Regularization and compression methods of common_regs.", no_args_is_help=True)


def _as_record(method: MethodInfo) -> dict[str, object]:
    """The JSON view of one method; ``seed`` is a number, a list of numbers, or null."""
    seed: object = None if not method.seeds else method.seeds[0] if len(method.seeds) == 1 else list(method.seeds)
    return {"name": method.name, "seed": seed, "paper": method.paper, "kind": method.kind,
            "fidelity": method.fidelity, "verified_by": method.verified_by, "module": method.module}


@app.command("list")
def list_command(
    kind: str = typer.Option(None, help="Only methods of this hook kind (e.g. loss, mask_scheduler)."),
    output_format: Literal["text", "json"] = typer.Option(
        "text", "--format", help="text (for reading) or json (a list of objects, for scripts)."),
) -> None:
    """Print every registered method: hook kind, seed-paper number, fidelity, paper and module.

    Fidelity says how the code follows the paper: paper-equation, official-code (checked against the authors'
    code), reconstruction (the exact equation could not be confirmed) or diagnostic (a measurement, not a method).
    Methods come from common_regs, recsys, retrieval and the packages of the ``regkit.methods`` entry points.
    """
    methods = list_methods(kind)
    if kind is not None and not methods:
        kinds = sorted({method.kind for method in list_methods()})
        raise typer.BadParameter(f"no method of kind {kind!r}; kinds: {kinds}.", param_hint="--kind")
    if output_format == "json":
        typer.echo(json.dumps([_as_record(method) for method in methods], indent=1, ensure_ascii=False))
        return
    # One entry per method (name line, then paper and module indented) instead of a table: five columns in 80
    # cut the names short, and a name is what a config's `hooks:` entry needs.
    console = Console(highlight=False)
    counts = Counter(method.fidelity for method in methods)
    by_fidelity = ", ".join(f"{count} {fidelity}" for fidelity, count in counts.most_common())
    console.print(Text(f"{len(methods)} methods: {by_fidelity}\n"
                       "each: name, hook kind, seed-paper number, fidelity; paper; module"))
    for method in methods:
        seed = f"  seed #{', #'.join(map(str, method.seeds))}" if method.seeds else ""
        paper = textwrap.fill(method.paper, width=console.width, initial_indent="    ", subsequent_indent="    ")
        console.print(Text.assemble((method.name, "bold"), f"  {method.kind}{seed}  {method.fidelity}\n{paper}\n"
                                    f"    {method.module}"), soft_wrap=True)  # wrapped above: no name is cut
