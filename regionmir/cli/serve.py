"""`regionmir serve`: hold the store and models open and answer searches as a JSON API."""

from __future__ import annotations

from pathlib import Path

import typer


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on; other than loopback needs --token."),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port (0: any free one)."),
    token: str = typer.Option(None, "--token", envvar="REGIONMIR_SERVE_TOKEN", show_envvar=False,
                              help="Every request must carry 'Authorization: Bearer TOKEN' \\[env: REGIONMIR_SERVE_TOKEN]."),
    max_upload_mb: int = typer.Option(64, "--max-upload-mb", min=1, help="Largest query image accepted."),
    model: Path = typer.Option(None, "--model", help="Model folder or encoder.onnx \\[default: $REGIONMIR_HOME/model]."),  # noqa: B008
    collection: str = typer.Option(None, "--collection", help="Collection \\[default: regions]."),
    qdrant_url: str = typer.Option(None, "--qdrant-url", envvar="QDRANT_URL", help="Qdrant server; default: the embedded store."),
    as_json: bool = typer.Option(False, "--json", help="Once listening, print {url, home, pid} as JSON on stdout."),
) -> None:
    """Answer searches over HTTP until stopped (Ctrl-C); `regionmir search` uses it when it runs.

    The embedded store and the models stay open, so a search takes the time of the search
    alone. Routes and security: docs/serve.md.
    """
    import json
    import os
    import signal
    import sys

    from rich.console import Console

    from regionmir import config
    from regionmir.serve.run import ServeConfig
    from regionmir.serve.run import serve as run

    home = config.require_home()
    cfg = ServeConfig(host, port, token or None, max_upload_mb, model, collection, qdrant_url or None)

    def ready(url: str) -> None:
        if as_json:
            typer.echo(json.dumps({"url": url, "home": str(home), "pid": os.getpid()}))
            sys.stdout.flush()
        else:
            Console(stderr=True, highlight=False, soft_wrap=True).print(
                f"RegionMIR serving {home} at {url} (Ctrl-C stops)", markup=False)

    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops like Ctrl-C: serve.json removed, store closed
    try:
        run(cfg, home, ready)
    except KeyboardInterrupt:  # uvicorn re-raises the signal it drained on: the normal way to stop
        pass


def _interrupt(signum, frame):
    raise KeyboardInterrupt
