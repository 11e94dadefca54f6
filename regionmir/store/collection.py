"""The collection's model contract: one collection holds the embeddings of one model.

A collection records the model that filled it in its metadata (``model_id``, and the vector
size under ``dim``, written by :func:`~regionmir.store.base.new_meta`). Everything that opens a
collection for a model goes through :func:`check_model`: the stores when a collection is
created again (two ingest workers racing), the ingest runner, and the searcher.
:func:`require_collection` and :func:`open_existing_store` are how a search finds its store and
collection. This module imports neither the ingest nor the search side.
"""

from __future__ import annotations

from regionmir.errors import CollectionMismatchError, StoreNotFoundError
from regionmir.store.base import Store


def check_model(meta: dict, collection: str, model_id: str, dim: int) -> None:
    """Refuse to mix models in one collection.

    Args:
        meta: the collection's stored metadata (:meth:`Store.collection_meta`).
        collection: its name, for the message.
        model_id: the model about to write or search it.
        dim: that model's embedding size.

    Raises:
        CollectionMismatchError: ``collection`` was filled by another model, or holds vectors
            of another size; the message names both models and what to do.
    """
    have, have_dim = meta.get("model_id"), meta.get("dim")
    if have == model_id and have_dim is not None and int(have_dim) == int(dim):
        return
    raise CollectionMismatchError(
        f"Collection {collection!r} was filled by model {have} ({have_dim}-d vectors), not by "
        f"model {model_id} ({dim}-d vectors); one collection holds one model's embeddings. Use "
        "the model that filled it (--model), or another collection (--collection NEW)."
    )


def require_collection(store: Store, name: str) -> dict:
    """The metadata of collection ``name``, which must exist.

    Raises:
        StoreNotFoundError: no such collection; the message lists those there are.
    """
    have = store.collections()
    if name not in have:
        raise StoreNotFoundError(
            f"No collection {name!r} in the store at {store.location} (collections: "
            f"{', '.join(have) or 'none'}). Fill it with `regionmir ingest ARCHIVE --collection {name}`, "
            "or pick one with --collection."
        )
    return store.collection_meta(name)


def open_existing_store(url: str | None = None, api_key: str | None = None) -> Store:
    """The store to search: ``url`` (a Qdrant server) or the embedded one, which must exist.

    Args:
        url: Qdrant server URL; ``None``: the embedded store under ``$REGIONMIR_HOME``.
        api_key: server API key; default ``$QDRANT_API_KEY``.

    Raises:
        StoreNotFoundError: no embedded store yet (the message says how to make one).
        StoreUnavailableError: the server cannot be reached.
    """
    from regionmir import config
    from regionmir.store import open_store

    if url:
        return open_store(url, api_key or config.qdrant_api_key())
    path = config.default_store_dir()
    store = open_store(None, None, path=path)
    if not store.collections():
        store.close()
        raise StoreNotFoundError(
            f"No RegionMIR store at {path} yet. Create one with `regionmir ingest ARCHIVE` "
            "(or point to a Qdrant server with --qdrant-url / $QDRANT_URL)."
        )
    return store
