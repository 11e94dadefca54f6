"""Vector store of region points: one interface, an embedded (qdrant-edge) and a server backend.

- :mod:`~regionmir.store.base`: the ``Store`` contract, records, hits, filters (``Range``), point ids,
  payload indexes
- :mod:`~regionmir.store.collection`: a collection's model contract (``check_model``) and
  finding the store and collection to search
- :mod:`~regionmir.store.embedded`, :mod:`~regionmir.store.server`: the two backends
- :mod:`~regionmir.store.damage`: damaged or unwritable embedded-store files, named with their fix
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from regionmir.store.base import (
    NUMERIC_FIELDS,
    PAYLOAD_INDEXES,
    REGIONMIR_NS,
    Filter,
    Hit,
    PointRecord,
    Range,
    Store,
    StoredPoint,
    point_id,
)
from regionmir.store.collection import check_model, open_existing_store, require_collection

if TYPE_CHECKING:
    from regionmir.store.server import ServerOptions

# ServerOptions field -> how a person sets it (`regionmir ingest` option / environment variable)
LAYOUT_OPTIONS = {
    "shard_number": "--shards / QDRANT_SHARDS",
    "replication_factor": "--replication-factor / QDRANT_REPLICATION_FACTOR",
    "write_consistency_factor": "--write-consistency / QDRANT_WRITE_CONSISTENCY",
}


def open_store(
    url: str | None = None,
    api_key: str | None = None,
    path: Path | str | None = None,
    *,
    options: ServerOptions | None = None,
) -> Store:
    """Open the store: a Qdrant server when ``url`` (or ``$QDRANT_URL``) is set, else the embedded one.

    Args:
        url: Qdrant server URL (``http://host:6333`` or ``https://...``).
        api_key: server API key; default ``$QDRANT_API_KEY``.
        path: embedded store folder; default ``config.default_store_dir()``.
        options: server collection layout (shards, replication, write consistency), timeouts,
            retries. The embedded store is one shard with one copy: layout values other than
            ``None`` or 1 are refused there.

    Raises:
        StoreUnavailableError: the server cannot be reached or refuses the API key.
        StoreError: cluster layout options given for the embedded store.
    """
    from regionmir import config

    url = url or (None if path is not None else config.qdrant_url())
    if url:
        from regionmir.store.server import ServerStore

        check_url(url)
        return ServerStore(url=url, api_key=api_key or config.qdrant_api_key(), options=options)
    from regionmir.store.embedded import EmbeddedStore

    _refuse_layout_for_embedded(options)

    return EmbeddedStore(Path(path) if path is not None else config.default_store_dir())


def check_url(url: str) -> None:
    """Refuse a Qdrant URL that cannot be a server address, before any client sees it.

    Raises:
        StoreError: no http(s) scheme, no host, or a port outside 1-65535.
    """
    from urllib.parse import urlsplit

    from regionmir.errors import StoreError
    from regionmir.privacy import redact_url

    hint = "Give --qdrant-url (or QDRANT_URL) like http://localhost:6333 or https://host:6333."
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError when out of range or not a number
    except ValueError as e:
        raise StoreError(f"Qdrant URL {shown!r} is not valid ({e}). {hint}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StoreError(f"Qdrant URL {shown!r} needs http:// or https:// and a host name. {hint}")
    if port == 0:
        raise StoreError(f"Qdrant URL {shown!r} has port 0. {hint}")


def _refuse_layout_for_embedded(options: ServerOptions | None) -> None:
    """Raise when ``options`` asks for a shard/replica layout the embedded store cannot have."""
    from regionmir.errors import StoreError

    given = {k: getattr(options, k, None) for k in LAYOUT_OPTIONS}
    wrong = {k: v for k, v in given.items() if v not in (None, 1)}
    if wrong:
        said = ", ".join(f"{LAYOUT_OPTIONS[k]} = {v}" for k, v in wrong.items())
        raise StoreError(
            f"{said}: only a Qdrant server or cluster has shards and replicas; the embedded "
            "store is a single shard with one copy. Set --qdrant-url (or QDRANT_URL) to use a "
            "server, or leave these options unset."
        )


__all__ = [
    "NUMERIC_FIELDS",
    "PAYLOAD_INDEXES",
    "REGIONMIR_NS",
    "Filter",
    "Hit",
    "LAYOUT_OPTIONS",
    "PointRecord",
    "Range",
    "Store",
    "StoredPoint",
    "check_model",
    "check_url",
    "open_existing_store",
    "open_store",
    "point_id",
    "require_collection",
]
