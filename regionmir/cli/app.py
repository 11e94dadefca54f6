"""The Typer application: registers one module per command and turns errors into one red line."""

from __future__ import annotations

import logging
import sys

import typer

from regionmir.cli import anatomies, phantom
from regionmir.cli import demo as demo_cmd
from regionmir.cli import evaluate as evaluate_cmd
from regionmir.cli import evaluate_real as evaluate_real_cmd
from regionmir.cli import doctor as doctor_cmd
from regionmir.cli import info as info_cmd
from regionmir.cli import ingest as ingest_cmd
from regionmir.cli import localize as localize_cmd
from regionmir.cli import train_localizer as train_localizer_cmd
from regionmir.cli import search as search_cmd
from regionmir.cli import train as train_cmd

app = typer.Typer(
    name="regionmir",
    help="Find chest X-rays with similar anatomy, region by region.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # DICOM headers carry patient data: never print locals
    add_completion=False,
)

# In pipeline order. Each command module imports only typer at import time; heavy imports
# happen inside the commands.
app.command("demo")(demo_cmd.demo)
app.command("anatomies")(anatomies.anatomies)
app.command("phantom")(phantom.phantom)
app.command("train")(train_cmd.train)
app.command("train-localizer")(train_localizer_cmd.train_localizer)
app.command("localize")(localize_cmd.localize)
app.command("ingest")(ingest_cmd.ingest)
app.command("search")(search_cmd.search)
app.command("info")(info_cmd.info)
app.command("evaluate")(evaluate_cmd.evaluate)
app.command("evaluate-real")(evaluate_real_cmd.evaluate_real)
app.command("doctor")(doctor_cmd.doctor)


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
        code = app(standalone_mode=False)  # click returns typer.Exit's code here instead of exiting
        if isinstance(code, int) and not isinstance(code, bool) and code:
            sys.exit(code)
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
