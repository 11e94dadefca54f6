"""The Typer application: registers one module per command and turns errors into one red line."""

from __future__ import annotations

import logging
import sys

import typer

from regionmir.cli import anatomies

app = typer.Typer(
    name="regionmir",
    help="Find chest X-rays with similar anatomy, region by region.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # DICOM headers carry patient data: never print locals
    add_completion=False,
)

# Each command module imports only typer at import time; heavy imports happen inside commands.
app.command("anatomies")(anatomies.anatomies)


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details.")):
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def main() -> None:
    """Console entry point: run the app, printing RegionMIR errors as one line on stderr."""
    from regionmir.errors import RegionMIRError

    try:
        app(standalone_mode=False)
    except RegionMIRError as e:
        from rich.console import Console

        Console(stderr=True).print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except Exception as e:  # click usage errors and the like
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise
