"""Damaged or unwritable embedded-store files: what is wrong, in words, with the fix that works.

:mod:`~regionmir.store.embedded` reads a collection's ``meta.json`` through :func:`read_meta`
and turns the engine's errors into these messages, so that every command (info, search,
ingest, doctor) says the same one line instead of a traceback from deep in the engine.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from regionmir.errors import StoreError


class DamagedCollectionError(StoreError):
    """A collection whose files are damaged: ``detail`` says what is wrong, ``fix`` what works.

    Deleting the collection folder always works: the next ingest creates the collection with a
    new ``ingest_token``, so the ledger starts afresh and every image is stored again.
    """

    def __init__(self, folder: Path, what: str):
        self.detail = f"The collection at {folder} is damaged: {what}"
        self.fix = (f"Restore the folder from a backup, or delete it (rm -r {folder}) and run "
                    f"`regionmir ingest ARCHIVE --collection {folder.name}` to store the archive again.")
        super().__init__(f"{self.detail}. {self.fix}")


def read_meta(path: Path) -> dict:
    """The collection metadata in ``path``, checked: a mapping with ``model_id`` and a positive ``dim``.

    Raises:
        DamagedCollectionError: the file cannot be read, is empty, not JSON, not an object, or lacks those keys.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DamagedCollectionError(path.parent, f"{path} cannot be read ({e.strerror or e})") from None
    try:
        meta = json.loads(data.decode("utf-8"))
    except ValueError:  # UnicodeDecodeError is one
        raise DamagedCollectionError(path.parent, f"{path} is {'empty' if not data.strip() else 'not JSON'}") from None
    if not isinstance(meta, dict):
        raise DamagedCollectionError(path.parent, f"{path} holds a JSON {type(meta).__name__}, not an object")
    dim = meta.get("dim")
    if type(dim) is not int or dim <= 0 or "model_id" not in meta:
        raise DamagedCollectionError(path.parent, f'{path} lacks the vector size ("dim") or the model ("model_id")')
    return meta


def os_reason(text: str) -> str:
    """The operating system's words in an engine error (``Read-only file system (os error 30)``)."""
    m = re.search(r"([A-Z][A-Za-z -]+) \(os error \d+\)", text)
    return m.group(0) if m else text.split(":")[-1].strip()


def flush_error(folder: Path, exc: Exception) -> StoreError:
    """The error for a shard that could not write its files when closed (a disk that filled up)."""
    text = str(exc)
    if "os error 28" in text or "No space left" in text:
        return StoreError(
            f"Cannot write the store at {folder}: the disk is full. Free disk space and run the "
            "command again; the points an ingest recorded in its ledger are intact, and it resumes "
            "where it stopped."
        )
    return StoreError(f"Cannot write the store at {folder}: {os_reason(text)}")
