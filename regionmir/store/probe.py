"""Qdrant server probe over plain HTTP (stdlib only): reachable, ready, API key, version, peers.

`regionmir doctor` reports from one probe; the ingest worker (ingest/worker.py) calls
:func:`wait_until_ready` before it starts. Only the Qdrant REST endpoints are used:
``/readyz`` (no key needed), ``/`` (version), ``/collections`` (key check) and ``/cluster``.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from regionmir.privacy import redact_url


@dataclass(frozen=True)
class Probe:
    """What one probe of a Qdrant server found."""

    url: str
    reachable: bool  # something answered HTTP
    ready: bool = False  # /readyz said 200 (consensus and shards loaded, in a cluster)
    auth_ok: bool | None = None  # None: not asked (server unreachable)
    version: str | None = None
    collections: tuple[str, ...] | None = None
    peers: int | None = None  # cluster peers; None when the server runs alone
    error: str | None = None  # one line for a person, None when all is well

    @property
    def usable(self) -> bool:
        """Ready and the API key accepted: an ingest or a search can start."""
        return self.reachable and self.ready and bool(self.auth_ok)


def _get(url: str, api_key: str | None, timeout: float) -> tuple[int, dict | None]:
    """GET ``url``; (status, JSON body or None). Raises OSError when nothing answers."""
    request = urllib.request.Request(url, headers={"api-key": api_key} if api_key else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, None


def _reason(e: OSError) -> str:
    inner = getattr(e, "reason", None)  # URLError wraps the socket error
    return str(inner if inner is not None else e)


def probe(url: str, api_key: str | None = None, timeout: float = 1.0) -> Probe:
    """Ask a Qdrant server how it is, with ``timeout`` seconds per request (4 requests at most).

    Never raises for network trouble: the answer is in :attr:`Probe.error`.
    """
    base = url.rstrip("/")
    shown = redact_url(base)  # every message and Probe.url: no credentials
    try:
        ready_status, _ = _get(f"{base}/readyz", None, timeout)
        _, root = _get(f"{base}/", api_key, timeout)
        status, body = _get(f"{base}/collections", api_key, timeout)
    except (OSError, ValueError) as e:  # ValueError: a malformed URL
        return Probe(shown, False, error=f"cannot reach Qdrant at {shown}: {_reason(e)}")
    version = root.get("version") if isinstance(root, dict) else None
    if status in (401, 403):
        which = "was refused" if api_key else "is required"
        return Probe(shown, True, ready_status == 200, False, version,
                     error=f"Qdrant at {shown} answered {status}: the API key {which}")
    if status != 200 or not isinstance(body, dict):
        return Probe(shown, True, ready_status == 200, None, version,
                     error=f"{shown}/collections answered HTTP {status}; is this a Qdrant server?")
    names = tuple(sorted(c["name"] for c in body.get("result", {}).get("collections", [])))
    peers = _peers(base, api_key, timeout)
    error = None if ready_status == 200 else f"Qdrant at {shown} is not ready yet (/readyz {ready_status})"
    return Probe(shown, True, ready_status == 200, True, version, names, peers, error)


def _peers(base: str, api_key: str | None, timeout: float) -> int | None:
    try:
        status, body = _get(f"{base}/cluster", api_key, timeout)
    except OSError:
        return None
    result = body.get("result", {}) if status == 200 and isinstance(body, dict) else {}
    return len(result.get("peers", {})) if result.get("status") == "enabled" else None


class NotReady(Exception):
    """The server did not become usable in time, or refused the API key (see :attr:`probe`)."""

    def __init__(self, message: str, last: Probe):
        super().__init__(message)
        self.probe = last


def wait_until_ready(
    url: str,
    api_key: str | None = None,
    *,
    deadline_s: float = 120.0,
    expect_peers: int = 0,
    timeout: float = 2.0,
    probe_fn: Callable[..., Probe] = probe,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    on_wait: Callable[[Probe], None] = lambda p: None,
) -> Probe:
    """Probe until the server is usable (and has ``expect_peers`` peers), for ``deadline_s`` at most.

    Waits 1 s, 2 s, 4 s ... (capped at 10 s) between probes. A refused API key ends the wait
    at once: retrying cannot fix it.

    Raises:
        NotReady: the key was refused, or the deadline passed.
    """
    end, pause = clock() + deadline_s, 1.0
    while True:
        last = probe_fn(url, api_key, timeout)
        if last.auth_ok is False:
            raise NotReady(last.error or "API key refused", last)
        peers_ok = expect_peers <= 1 or (last.peers or 0) >= expect_peers
        if last.usable and peers_ok:
            return last
        if clock() + pause > end:
            why = last.error or f"{last.peers or 1} of {expect_peers} cluster peers joined"
            raise NotReady(f"gave up after {deadline_s:.0f} s: {why}", last)
        on_wait(last)
        sleep(pause)
        pause = min(pause * 2, 10.0)


def collection_exists(url: str, api_key: str | None, name: str, timeout: float = 2.0) -> bool:
    """True when the server has collection ``name``; False when it has not or does not answer."""
    from urllib.parse import quote

    try:
        status, _ = _get(f"{url.rstrip('/')}/collections/{quote(name, safe='')}", api_key, timeout)
    except (OSError, ValueError):
        return False
    return status == 200
