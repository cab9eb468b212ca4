"""The ``regkit`` command line: one Typer app with a sub-app per package (``pipelines/cli/<pkg>.py``).

``python -m pipelines`` runs the same app. Failures exit with status 2 and a one-line reason.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

import typer

from pipelines.cli import ab, beir, data, demo, recsys, regs, retrieval

if TYPE_CHECKING:
    import click

__all__ = ["app", "main"]

app = typer.Typer(
    name="regkit",
    help="Recommendation and retrieval on a shared library of regularization and compression methods.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # click's plain help: rich's option panel cuts option names and defaults at 80 columns
)
app.add_typer(ab.app, name="ab")
app.add_typer(data.app, name="data")
app.add_typer(regs.app, name="regs")
app.add_typer(recsys.app, name="recsys")
app.add_typer(retrieval.app, name="retrieval")
app.add_typer(beir.app, name="beir")
app.command(name="demo")(demo.demo)

REGKIT_PACKAGES = ("common_regs", "recsys", "retrieval", "pipelines", "regkit")


@app.callback()
def root(
    log_level: str = typer.Option("INFO", "--log-level", help="Python logging level: DEBUG, INFO, WARNING, ERROR."),
) -> None:
    """regkit: two-tower recommenders and learned sparse retrievers, with reusable regularizers."""
    level = logging.getLevelName(log_level.upper())
    if not isinstance(level, int):
        raise typer.BadParameter(f"unknown log level {log_level!r}", param_hint="--log-level")
    # Third-party libraries log their start-up at INFO on the root logger (fbgemm's kernels, faiss's CPU probing):
    # noise for a user, so they get WARNING unless DEBUG is asked for; regkit's own packages log at `level`.
    logging.basicConfig(
        level=level if level <= logging.DEBUG else max(level, logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    for package in REGKIT_PACKAGES:
        logging.getLogger(package).setLevel(level)
    # torchrec calls torch.fx's deprecated is_fx_tracing(); the warning is about torchrec's code, not the user's.
    logging.getLogger("torch.fx._symbolic_trace").setLevel(max(level, logging.ERROR))


def _first_sentence(text: str) -> str:
    words = text.split("\n\n", 1)[0].split()
    end = next((i for i, word in enumerate(words) if word.endswith(".")), len(words) - 1)
    return " ".join(words[: end + 1])


def _whole_summaries(command: click.Command) -> None:
    """Give every subcommand its help's whole first sentence as its summary.

    Click would cut it with "..." to fit the terminal's width, while the command list wraps a summary it is given.
    """
    for sub in getattr(command, "commands", {}).values():  # Typer vendors click: duck-type groups
        if not sub.short_help and sub.help:
            sub.short_help = _first_sentence(sub.help)
        _whole_summaries(sub)


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the exit status."""
    command = typer.main.get_command(app)
    _whole_summaries(command)
    try:
        command.main(args=argv, prog_name="regkit", standalone_mode=False)
    except typer.Exit as done:
        return done.exit_code
    except typer.TyperException as usage:  # usage errors (Typer's vendored click): show usage and the reason
        show = getattr(usage, "show", None)
        show() if show else typer.echo(f"regkit: error: {usage.format_message()}", err=True)
        return usage.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except Exception as err:  # noqa: BLE001 - the CLI's contract: one line, non-zero status
        logging.getLogger("regkit").debug("failure", exc_info=True)
        reason = str(err).strip() or f"{type(err).__name__} (no message; `regkit --log-level DEBUG ...` shows where)"
        typer.echo(f"regkit: error: {reason}", err=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
