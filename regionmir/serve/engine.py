"""What `regionmir serve` holds open: the store, the encoder and localizer, and one Searcher.

Every route's work happens here, one request at a time (the embedded engine is single-writer
and the Searcher records stage timings per search), so the routes stay thin.
"""

from __future__ import annotations

import re
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from regionmir.errors import ImageReadError, RegionMIRError

IMAGE_ID = re.compile(r"[^./\\\x00-\x1f][^/\\\x00-\x1f]{0,200}")  # a stored image id: one name, never a path
SHOWN_KEYS = ("anatomy", "box", "confidence", "view", "findings", "ctr", "study_id", "image_id", "path")


class NotFoundError(RegionMIRError):
    """The request names a stored image the collection does not hold."""


@dataclass
class Query:
    """The options of one search, as `regionmir search` takes them (strings unparsed)."""

    anatomy: str
    top_k: int = 10
    where: list[str] = field(default_factory=list)
    box: str | None = None
    study: str | None = None
    exclude_same_patient: bool | None = None
    exact: bool = False


class Engine:
    """The open store and models of one server.

    Args:
        model: model folder or encoder file (None: ``$REGIONMIR_HOME/model``).
        collection: the collection served (None: the default).
        qdrant_url: a Qdrant server (None: the embedded store, held until :meth:`close`).

    Raises:
        StoreNotFoundError, StoreLockedError, CollectionMismatchError, ModelError.
    """

    def __init__(self, model: Path | None = None, collection: str | None = None, qdrant_url: str | None = None):
        from regionmir import config
        from regionmir.inference.folder import ModelFolder
        from regionmir.search.searcher import Searcher
        from regionmir.store.collection import open_existing_store, require_collection

        self.collection = collection or config.DEFAULT_COLLECTION
        self.store = open_existing_store(qdrant_url or None)
        try:
            meta = require_collection(self.store, self.collection)
            folder = ModelFolder(model)
            encoder = folder.load_encoder()
            localizer = folder.load_localizer()  # None: the folder has none
            self.searcher = Searcher(self.store, self.collection, encoder, localizer, meta=meta)
            self.has_localizer = localizer is not None
        except BaseException:
            self.store.close()
            raise
        self.lock = threading.Lock()

    def close(self) -> None:
        """Release the store (the embedded one's lock)."""
        self.store.close()

    def search(self, image: Path, q: Query) -> dict:
        """The `regionmir search --json` document of ``image`` (a file in the server's temporary area).

        Raises:
            UsageError: a bad box or --where (its ``option`` names it).
            RegionMIRError: as `regionmir search` (unknown anatomy, unreadable image, ...).
        """
        from regionmir.search.query import document, parse_query, run_query
        from regionmir.search.where import check_where

        t0, started = time.perf_counter(), time.time()
        anatomy, box, conditions = parse_query(q.anatomy, q.box, q.where)
        with self.lock:
            s = self.searcher
            s.timings = defaultdict(float)
            timings: dict[str, float] = {}
            check_where(self.store, self.collection, conditions)
            try:
                outcome = run_query(s, image, anatomy, box, None, conditions, q.study, q.exclude_same_patient,
                                    q.top_k, q.exact, timings)
            except ImageReadError as e:  # its message names the server's file (and the client's file name)
                reason = e.reason.replace(str(image.parent), "").replace(image.name, "the query image")
                raise RegionMIRError(f"Cannot read the query image: {reason}") from None
            return document(outcome, s, timings, t0, started)

    def stored_file(self, image_id: str) -> Path:
        """The archive file of stored image ``image_id``: found through the store, never from the id.

        Raises:
            NotFoundError: an id that is no stored image (or not one of an archive folder).
        """
        stored = self.regions(image_id)
        root = self.searcher.meta.get("archive_root")
        rel = next((str(p.get("path") or "") for p in stored.values()), "")
        if not root:
            raise NotFoundError(f"image {image_id} came from a PACS: search by its WADO-RS URL instead")
        from regionmir.archive import resolve_path

        path = resolve_path(root, rel)
        base = Path(root).resolve()
        if path is None or not path.resolve().is_relative_to(base):
            raise NotFoundError(f"the file of stored image {image_id} is no longer under the archive folder")
        return path

    def regions(self, image_id: str) -> dict[str, dict]:
        """Stored regions of ``image_id`` by anatomy slug, only the fields a response may carry.

        Raises:
            NotFoundError: not an image id, or no such image in the collection.
        """
        if not IMAGE_ID.fullmatch(image_id):
            raise NotFoundError("an image id is one name (no '/', '\\', leading '.'), not a path")
        with self.lock:
            stored = self.searcher.stored_regions(image_id)
        if not stored:
            raise NotFoundError(f"no image {image_id} in collection {self.collection!r}")
        return {slug: {k: p.get(k) for k in SHOWN_KEYS} for slug, p in sorted(stored.items())}

    def anatomies(self) -> list[dict]:
        """The region vocabulary, with the number of regions of each in the collection."""
        from regionmir.anatomy import Anatomy

        return [{"slug": a.slug, "name": a.bbox_name, "index": a.index, "boxed": a.boxed,
                 "points": int(self.searcher.counts.get(a.slug, 0))} for a in Anatomy]

    def health(self) -> dict:
        """What a client checks before it sends a query."""
        s = self.searcher
        return {"status": "ok", "collection": self.collection, "model_id": s.encoder.model_id,
                "points": int(sum(s.counts.values())), "localizer": self.has_localizer}
