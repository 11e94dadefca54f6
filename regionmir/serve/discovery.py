"""How a `regionmir search` finds the server of its home: ``$REGIONMIR_HOME/serve.json``.

The server writes the file once its socket listens and removes it on exit. It holds the URL,
the server's pid and host name, and the SHA-256 of its token (never the token). A file whose
pid is dead (a server that was killed) or that another machine wrote is ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

FILE_NAME = "serve.json"


@dataclass(frozen=True)
class ServerInfo:
    """A running server of one home, as its discovery file describes it."""

    url: str  # http://127.0.0.1:PORT, without a trailing slash
    pid: int
    host: str  # socket.gethostname() of the machine it runs on
    token_sha256: str | None  # None: the server needs no token
    collection: str  # the collection it serves


def token_hash(token: str | None) -> str | None:
    """The SHA-256 hex digest of ``token`` (None for no token)."""
    return hashlib.sha256(token.encode()).hexdigest() if token else None


def path_for(home: Path) -> Path:
    """The discovery file of ``home``."""
    return Path(home) / FILE_NAME


def write(home: Path, url: str, token: str | None, collection: str) -> Path:
    """Announce a server of ``home`` at ``url`` (this process); returns the file written.

    Written to a temporary name and renamed, so a reader never sees half a file.
    """
    info = {"url": url.rstrip("/"), "pid": os.getpid(), "host": socket.gethostname(),
            "token_sha256": token_hash(token), "collection": collection}
    path = path_for(home)
    tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)
    return path


def remove(home: Path) -> None:
    """Remove ``home``'s discovery file if this process wrote it."""
    path = path_for(home)
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def find(home: Path) -> ServerInfo | None:
    """The live server of ``home``, or None (no file, an unreadable one, a dead pid, another host)."""
    try:
        raw = json.loads(path_for(home).read_text())
        info = ServerInfo(str(raw["url"]).rstrip("/"), int(raw["pid"]), str(raw["host"]), raw.get("token_sha256"),
                          str(raw["collection"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if info.host != socket.gethostname() or not _alive(info.pid):
        return None
    return info


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (signal 0 checks without sending anything)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True
