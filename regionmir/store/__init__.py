"""Vector store of region points: one interface, an embedded (qdrant-edge) and a server backend."""

from __future__ import annotations

from pathlib import Path

from regionmir.store.base import (
    PAYLOAD_INDEXES,
    REGIONMIR_NS,
    Filter,
    Hit,
    PointRecord,
    Store,
    point_id,
)


def open_store(
    url: str | None = None, api_key: str | None = None, path: Path | str | None = None
) -> Store:
    """Open the store: a Qdrant server when ``url`` (or ``$QDRANT_URL``) is set, else the embedded one.

    Args:
        url: Qdrant server URL (``http://host:6333`` or ``https://...``).
        api_key: server API key; default ``$QDRANT_API_KEY``.
        path: embedded store folder; default ``config.default_store_dir()``.

    Raises:
        StoreUnavailableError: the server cannot be reached or refuses the API key.
    """
    from regionmir import config

    url = url or (None if path is not None else config.qdrant_url())
    if url:
        from regionmir.store.server import ServerStore

        return ServerStore(url=url, api_key=api_key or config.qdrant_api_key())
    from regionmir.store.embedded import EmbeddedStore

    return EmbeddedStore(Path(path) if path is not None else config.default_store_dir())


__all__ = [
    "PAYLOAD_INDEXES",
    "REGIONMIR_NS",
    "Filter",
    "Hit",
    "PointRecord",
    "Store",
    "open_store",
    "point_id",
]
