"""`regionmir doctor`: check this installation (packages, codecs, model, GPU, store, home) and say what to fix."""

from __future__ import annotations

from pathlib import Path

import typer


def doctor(
    qdrant_url: str = typer.Option(
        None, "--qdrant-url", envvar="QDRANT_URL",
        help="Check this Qdrant server instead of the embedded store (default $QDRANT_URL).",
    ),
    model: Path = typer.Option(
        None, "--model", help="Model folder or encoder.onnx (default $REGIONMIR_HOME/model)."
    ),
    timeout: float = typer.Option(1.0, "--timeout", min=0.1, help="Seconds per server request."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for machines."),
) -> None:
    """Check packages, DICOM codecs, the model, the GPU, the store and $REGIONMIR_HOME.

    Each check reports OK, WARN or FAIL with a fix. Exits 1 when any check FAILs.
    The server's API key is read from $QDRANT_API_KEY.
    """
    from regionmir import config
    from regionmir.doctor.checks import FAIL, run_all

    checks = run_all(model, qdrant_url, config.qdrant_api_key(), timeout)
    failed = any(c.status == FAIL for c in checks)
    if as_json:
        import json

        typer.echo(json.dumps({"ok": not failed, "checks": [c.as_dict() for c in checks]}, indent=2))
    else:
        _print_table(checks)
    if failed:
        raise typer.Exit(1)


def _print_table(checks) -> None:
    from rich.console import Console
    from rich.table import Table

    style = {"OK": "green", "WARN": "yellow", "FAIL": "bold red"}
    table = Table("check", "status", "found", "fix", show_lines=True)
    for c in checks:
        table.add_row(c.name, f"[{style[c.status]}]{c.status}[/]", c.detail, c.fix)
    Console().print(table)
