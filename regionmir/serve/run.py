"""Running the server: the loopback-or-token rule, the socket, uvicorn and the discovery file."""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass
from pathlib import Path

from regionmir.errors import RegionMIRError

log = logging.getLogger("regionmir")


@dataclass(frozen=True)
class ServeConfig:
    """`regionmir serve`'s options."""

    host: str = "127.0.0.1"
    port: int = 8765  # 0: any free port (the discovery file says which)
    token: str | None = None  # required for a host other than loopback
    max_upload_mb: int = 64
    model: Path | None = None
    collection: str | None = None
    qdrant_url: str | None = None


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback name or address (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token.

    Raises:
        RegionMIRError: ``host`` is not loopback and there is no token.
    """
    if not is_loopback(host) and not token:
        raise RegionMIRError(f"--host {host} would answer other machines: give --token TOKEN "
                             "(or REGIONMIR_SERVE_TOKEN) so every request must carry it, or keep the default 127.0.0.1.")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``.

    Raises:
        RegionMIRError: the address is taken or cannot be used.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as e:
        sock.close()
        raise RegionMIRError(f"cannot listen on {host}:{port} ({e.strerror or e}): choose another --port "
                             "(0 picks a free one) or --host.") from None
    sock.listen(128)
    return sock


def url_of(sock: socket.socket) -> str:
    """``http://HOST:PORT`` of a bound socket (a wildcard host is reached through loopback)."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(cfg: ServeConfig, home: Path, ready=None) -> None:
    """Open the store and models, listen, announce the server in ``home`` and answer until stopped.

    ``ready(url)`` is called once the socket listens (the CLI prints the address).

    Raises:
        RegionMIRError: no token for a non-loopback host, the port is taken, or the store/model
            cannot be opened (locked by an ingest, missing, another model's collection).
    """
    import uvicorn

    from regionmir.serve import discovery
    from regionmir.serve.app import create_app
    from regionmir.serve.engine import Engine

    check_exposure(cfg.host, cfg.token)
    running = None if cfg.qdrant_url else discovery.find(home)
    if running is not None:
        raise RegionMIRError(f"`regionmir serve` already serves {home} at {running.url} (pid {running.pid}): "
                             "use that one, or stop it first.")
    engine = Engine(cfg.model, cfg.collection, cfg.qdrant_url)
    try:
        sock = bind(cfg.host, cfg.port)
        app = create_app(engine, cfg.token, cfg.max_upload_mb << 20)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        url = url_of(sock)
        announce = cfg.qdrant_url is None  # a Qdrant server's collection is not this home's store
        if announce:
            discovery.write(home, url, cfg.token, engine.collection)
        try:
            if ready is not None:
                ready(url)
            server.run(sockets=[sock])
        finally:
            if announce:
                discovery.remove(home)
            sock.close()
    finally:
        engine.close()
