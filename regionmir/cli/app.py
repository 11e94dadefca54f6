"""The Typer application: registers one module per command and turns errors into one red line."""

from __future__ import annotations

import logging
import sys

import typer

from regionmir.cli import anatomies, phantom
from regionmir.cli import demo as demo_cmd
from regionmir.cli import doctor as doctor_cmd
from regionmir.cli import evaluate as evaluate_cmd
from regionmir.cli import evaluate_real as evaluate_real_cmd
from regionmir.cli import info as info_cmd
from regionmir.cli import ingest as ingest_cmd
from regionmir.cli import listen as listen_cmd
from regionmir.cli import localize as localize_cmd
from regionmir.cli import search as search_cmd
from regionmir.cli import serve as serve_cmd
from regionmir.cli import train as train_cmd
from regionmir.cli import train_localizer as train_localizer_cmd

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
app.command("listen")(listen_cmd.listen)
app.command("search")(search_cmd.search)
app.command("serve")(serve_cmd.serve)
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
    if not verbose:  # pydicom's notes on odd header values: our one error line says what matters
        import warnings

        for handler in logging.getLogger().handlers:
            handler.addFilter(lambda r: r.levelno >= logging.ERROR or r.name.split(".")[0] != "pydicom")
        warnings.filterwarnings("ignore", category=UserWarning, module="pydicom")


INTERRUPTED = 130  # the shell's code for a command ended by Ctrl-C (128 + SIGINT)


def main() -> None:
    """Console entry point: run the app; every error a user can cause ends as one line on stderr."""
    try:
        code = app(standalone_mode=False)  # usage errors come back as exceptions, not exits
    except typer.Exit as e:
        code = e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        code = INTERRUPTED
    except Exception as e:  # noqa: BLE001 - sorted below; anything else is a bug and re-raised
        if type(e).__name__ == "NoArgsIsHelpError":  # `regionmir` alone: the help was printed
            sys.exit(0)
        message = user_error_message(e)
        if message is None:
            raise
        _fail(message, getattr(e, "exit_code", 1) if _is_usage_error(e) else 1)
    if code == INTERRUPTED:  # typer turns Ctrl-C in a command into a silent exit 130: say it
        _fail("interrupted", INTERRUPTED)
    if isinstance(code, int) and not isinstance(code, bool) and code:
        sys.exit(code)


def _is_usage_error(e: BaseException) -> bool:
    """A command-line parsing error (click's or typer's own copy of click: no import needed)."""
    return any(c.__name__ in ("ClickException", "UsageError") for c in type(e).__mro__)


def user_error_message(e: BaseException) -> str | None:
    """The one line to show for ``e``, or None when ``e`` is a bug (a traceback is right then).

    Usage errors name the option or argument and point to ``--help``; RegionMIR errors say
    what to do; a file the operating system refuses is named with its reason.
    """
    from regionmir.errors import RegionMIRError

    if isinstance(e, RegionMIRError):
        return str(e)
    if _is_usage_error(e):
        text = e.format_message() if hasattr(e, "format_message") else str(e)
        return f"{text.strip().rstrip('.')}. See `{_command_path(e)} --help`."
    if isinstance(e, OSError) and e.filename:
        return (f"{e.strerror or e}: {e.filename}. Check that the path exists and that you may "
                "read (and for outputs, write) it.")
    return None


def _command_path(e: BaseException) -> str:
    """``regionmir search`` for an error in `search`'s options, else ``regionmir``.

    Click's parser raises some usage errors (``--json=maybe``: a flag given a value) without
    their context; the subcommand is then the first word of the command line.
    """
    path = getattr(getattr(e, "ctx", None), "command_path", None)
    if path:
        return path
    names = {c.name for c in app.registered_commands}
    first = next((a for a in sys.argv[1:] if not a.startswith("-")), None)
    return f"regionmir {first}" if first in names else "regionmir"


def _fail(message: str, code: int) -> None:
    from rich.console import Console
    from rich.markup import escape

    from regionmir.privacy import redact_urls

    text = " ".join(redact_urls(message).split())  # one line, no URL credentials, whatever it held
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(text)}", highlight=False, markup=True)
    sys.exit(code)
