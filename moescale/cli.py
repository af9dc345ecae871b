"""The `moescale` command: parse, call the library, print. No logic of its own."""

from __future__ import annotations

import sys

import typer

from moescale import __version__
from moescale.errors import UserError

app = typer.Typer(
    name="moescale",
    help="Compute-optimal scaling of Mixture-of-Experts language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"moescale {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Compute-optimal scaling of Mixture-of-Experts language models."""


def main(argv: list[str] | None = None) -> None:
    """Entry point: a UserError becomes one line on stderr and exit code 2, never a traceback."""
    try:
        app(args=argv, prog_name="moescale")
    except UserError as err:
        print(f"moescale: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
