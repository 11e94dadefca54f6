"""`regionmir listen`: a DICOM C-STORE SCP that ingests the CR/DX images a PACS or modality sends."""

from __future__ import annotations

from pathlib import Path

import typer


def _check_ae_title(title: str) -> str:
    """Refuse an unusable --ae-title as a usage error, before anything is made on disk."""
    from regionmir.errors import PacsError
    from regionmir.pacs.listener import check_ae_title

    try:
        return check_ae_title(title)
    except PacsError as e:
        raise typer.BadParameter(str(e), param_hint="--ae-title") from None


def _check_peers(values: list[str]) -> list[str]:
    """Refuse an --allow-peer that is not an IP address or CIDR block as a usage error."""
    from regionmir.pacs.gate import parse_peer

    for value in values:
        try:
            parse_peer(value)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="--allow-peer") from None
    return values


def listen(
    port: int = typer.Option(11112, "--port", min=1, max=65535, help="TCP port for DICOM associations."),
    ae_title: str = typer.Option("REGIONMIR", "--ae-title", callback=_check_ae_title,
                                 help="Our AE title (senders must call it); 1-16 characters, also names the spool."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; 0.0.0.0 for every interface (add --allow-peer)."),
    calling_ae: list[str] = typer.Option([], "--calling-ae", help="Accept only these calling AE titles (repeatable; not authentication) \\[default: any]."),  # noqa: B008
    allow_peer: list[str] = typer.Option([], "--allow-peer", callback=_check_peers,  # noqa: B008
                                         help="Accept connections only from this IP or CIDR block (repeatable) \\[default: any]."),
    per_peer: int = typer.Option(8, "--max-per-peer", min=1, max=64, help="Connections one peer address may hold at once."),
    spool: Path = typer.Option(None, "--spool",  # noqa: B008
                               file_okay=False, help="Spool folder \\[default: $REGIONMIR_HOME/spool/listen-AE]."),
    batch_seconds: float = typer.Option(2.0, "--batch-seconds", min=0.0, help="Ingest what arrived at most this often."),
    model: Path = typer.Option(None, "--model",  # noqa: B008
                               help="Model folder or encoder.onnx \\[default: $REGIONMIR_HOME/model]."),
    collection: str = typer.Option(None, "--collection", help="Collection name \\[default: regions]."),
    qdrant_url: str = typer.Option(None, "--qdrant-url", envvar="QDRANT_URL", help="Qdrant server; default: the embedded store."),
    workers: int = typer.Option(0, "--workers", min=0, help="Decode+crop processes per ingest pass (0: in-process)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON line per ingest pass (and the start) only."),
) -> None:
    """Receive CR/DX images over DICOM (C-STORE) and ingest them; C-ECHO is answered.

    An image is acknowledged only once it is fsync'd in the spool; the spool is ingested every
    --batch-seconds and on start, so Ctrl-C or kill -9 loses nothing that was acknowledged.
    """
    import json

    from regionmir import config
    from regionmir.pacs.listener import ListenConfig, Listener

    ingest = {"model": model, "collection": collection or config.DEFAULT_COLLECTION,
              "qdrant_url": qdrant_url or None, "api_key": config.qdrant_api_key(), "workers": workers}
    cfg = ListenConfig(port=port, ae_title=ae_title, host=host, spool=spool, batch_seconds=batch_seconds,
                       calling_aets=tuple(calling_ae), allowed_peers=tuple(allow_peer), per_peer=per_peer,
                       ingest=ingest)
    console = _console()

    def on_batch(s) -> None:
        if as_json:
            typer.echo(json.dumps({"event": "ingested", "received": listener.received, **s.as_dict()}), nl=True)
        elif s.ingested or s.failed or s.unlabeled or s.skipped:
            console.print(f"ingested {s.ingested} images ({s.regions} regions), {s.failed} failed, "
                          f"{s.unlabeled} unlabeled, {s.skipped} already stored; {listener.received} received "
                          f"so far; report {s.report}", highlight=False)

    listener = Listener(cfg, on_batch)
    listener.start()
    started = {"event": "listening", "ae_title": ae_title, "host": host, "port": port,
               "spool": str(cfg.spool_dir()), "collection": ingest["collection"]}
    if as_json:
        typer.echo(json.dumps(started))
    else:
        from rich.markup import escape

        console.print(f"[bold]{escape(ae_title)}[/] " + escape(
                      f"listening on {host}:{port}; spool {cfg.spool_dir()}; collection {ingest['collection']}. "
                      "Ctrl-C stops (what was received is ingested first)."), highlight=False)
    import signal
    import sys

    sys.stdout.flush()
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops like Ctrl-C: drain, then exit
    # a listener started as a background job of a script inherits SIGINT ignored: `kill -INT` and
    # Ctrl-C after `fg` must still stop it the documented way
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        listener.serve_forever()
    except KeyboardInterrupt:  # the normal way to stop a listener: exit 0 once drained
        pass
    if listener.error is not None:
        raise listener.error


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _console():
    from rich.console import Console

    return Console(stderr=True)
