"""Server store: a Qdrant server (or qdrant-client's local mode, for tests) through qdrant-client."""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from regionmir.errors import (
    CollectionMismatchError,
    StoreError,
    StoreNotFoundError,
    StoreUnavailableError,
)
from regionmir.privacy import redact_url
from regionmir.store.base import (
    PAYLOAD_INDEXES,
    Filter,
    Hit,
    PointRecord,
    Range,
    StoredPoint,
    as_vector,
    check_name,
    is_any,
    jsonable,
    new_meta,
)
from regionmir.store.collection import check_model
from regionmir.store.retry import RetryPolicy, call_with_retries, is_transient, status_of

log = logging.getLogger("regionmir")
T = TypeVar("T")

SCROLL_PAGE = 1000  # points per scroll request in points()


@dataclass(frozen=True)
class ServerOptions:
    """How collections are laid out on the server and how requests behave."""

    shard_number: int | None = None  # None: server default (1, or one per node in a cluster)
    replication_factor: int | None = None  # copies of each shard; >1 needs a cluster
    write_consistency_factor: int | None = None  # replicas that must ack a write
    timeout: float = 60.0  # seconds per request
    upsert_batch: int = 256  # points per upsert request (wait=True)
    index_timeout: float = 3600.0  # build_index(): seconds to wait for status green
    hnsw_ef: int | None = None  # HNSW search breadth; None: server default
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        for key in ("shard_number", "replication_factor", "write_consistency_factor"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise StoreError(f"ServerOptions.{key} must be a positive integer or None, got {value!r}.")
        rf, wcf = self.replication_factor, self.write_consistency_factor
        if rf is not None and wcf is not None and wcf > rf:
            raise StoreError(
                f"write consistency {wcf} exceeds the replication factor {rf}: a write cannot be "
                "acknowledged by more replicas than exist. Lower --write-consistency."
            )


def server_filter(filter: Filter | None) -> models.Filter | None:
    """Our :class:`Filter` as a qdrant-client filter (``None`` when there is no condition)."""
    if filter is None or filter.is_empty():
        return None

    def cond(key: str, value) -> models.FieldCondition:
        if isinstance(value, Range):
            return models.FieldCondition(key=key, range=models.Range(gt=value.gt, gte=value.gte, lt=value.lt,
                                                                     lte=value.lte))
        if is_any(value):
            return models.FieldCondition(key=key, match=models.MatchAny(any=list(value)))
        return models.FieldCondition(key=key, match=models.MatchValue(value=value))

    must = [cond(k, v) for k, v in filter.must.items()] or None
    must_not = [cond(k, v) for k, v in filter.must_not.items()] or None
    return models.Filter(must=must, must_not=must_not)


class ServerStore:
    """Qdrant through qdrant-client: a server at ``url``, or local mode (``location=":memory:"``).

    Args:
        url: server URL; TLS when it starts with ``https``.
        api_key: server API key (sent as the ``api-key`` header).
        client: an already constructed ``QdrantClient`` (then ``url``/``location`` are unused).
        location: qdrant-client local mode: ``":memory:"`` or a folder (pure Python, for tests).
        options: collection layout, timeouts, retries.

    Raises:
        StoreUnavailableError: the server cannot be reached or refuses the API key.
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        client: QdrantClient | None = None,
        location: str | None = None,
        options: ServerOptions | None = None,
    ):
        self.options = options or ServerOptions()
        self._local = client is None and url is None
        if client is not None:
            self.client, self.location = client, "qdrant-client (given)"
        elif url is not None:
            https = url.startswith("https")
            if api_key and not https:
                log.warning("Sending QDRANT_API_KEY to %s without TLS; use an https:// URL", redact_url(url))
            with warnings.catch_warnings():  # said once above, in our log, instead
                warnings.filterwarnings("ignore", "Api key is used with an insecure", UserWarning)
                self.client = QdrantClient(url=url, api_key=api_key, https=https,
                                           timeout=int(self.options.timeout), check_compatibility=False)
            self.location = redact_url(url)  # shown in messages; the client keeps the real URL
        elif location is not None:
            path = None if location == ":memory:" else location
            self.client = QdrantClient(location=location) if path is None else QdrantClient(path=path)
            self.location = f"qdrant-local:{location}"
        else:
            raise StoreError("ServerStore needs url=, client= or location=.")
        self._local = self._local or type(getattr(self.client, "_client", None)).__name__ == "QdrantLocal"
        self._meta: dict[str, dict] = {}
        self.collections()  # fail now, with a clear message, when the server is unreachable

    # -- plumbing ------------------------------------------------------------------------
    def _call(self, fn: Callable[[], T], what: str, name: str | None = None) -> T:
        """Run one client call with retries, turning its errors into RegionMIR errors."""
        try:
            with warnings.catch_warnings():
                if self._local:  # local mode warns that indexes / search params do nothing
                    warnings.filterwarnings("ignore", r".*[Ll]ocal (Qdrant|mode)", UserWarning)
                return call_with_retries(fn, self.options.retry, what)
        except (UnexpectedResponse, ResponseHandlingException, ValueError) as exc:
            raise self._error(exc, name) from exc

    def _error(self, exc: Exception, name: str | None) -> StoreError:
        status, text = status_of(exc), _text(exc)
        if status in (401, 403):
            return StoreUnavailableError(
                f"Qdrant at {self.location} refused the API key (HTTP {status}): set QDRANT_API_KEY "
                "(or --api-key) to the server's key."
            )
        if status == 404 and name is None:  # /collections itself is missing: not Qdrant
            return StoreUnavailableError(
                f"{self.location} answered HTTP 404 to Qdrant's /collections: it is not a Qdrant "
                "server, or the URL has an extra path. Point --qdrant-url (or QDRANT_URL) at the "
                "server's REST port, by default http://host:6333."
            )
        if status == 404 or (isinstance(exc, ValueError) and "not found" in text):
            return StoreNotFoundError(
                f"No collection {name!r} on Qdrant at {self.location}. Run `regionmir ingest` "
                "first, or check --collection and QDRANT_URL."
            )
        if is_transient(exc):
            if status is None:
                return StoreUnavailableError(
                    f"cannot reach Qdrant at {self.location}: {text}; is the server running? "
                    "check QDRANT_URL"
                )
            return StoreUnavailableError(
                f"Qdrant at {self.location} kept failing (HTTP {status}) after "
                f"{self.options.retry.attempts} tries: {text}"
            )
        if "dimension" in text.lower():
            return CollectionMismatchError(f"Collection {name!r} on {self.location}: {text}")
        return StoreError(f"Qdrant at {self.location} rejected the request: {text}")

    def _dim(self, name: str) -> int:
        return int(self.collection_meta(name)["dim"])

    # -- collections ---------------------------------------------------------------------
    def collections(self) -> list[str]:
        """Names of the collections on the server, sorted."""
        res = self._call(self.client.get_collections, "list collections")
        return sorted(c.name for c in res.collections)

    def create_collection(self, name: str, dim: int, meta: dict) -> None:
        """Create a cosine collection with its payload indexes; a no-op when an identical one exists.

        The metadata travels in the collection's config (Qdrant collection metadata).

        Raises:
            CollectionMismatchError: it exists with another dim or model_id.
        """
        check_name(name)
        full = new_meta(name, dim, meta)
        exists = self._call(lambda: self.client.collection_exists(name), "check collection", name)
        if exists or not self._create(name, dim, full):  # not created: another worker did, just now
            check_model(self.collection_meta(name), name, full["model_id"], dim)
        for key, kind in PAYLOAD_INDEXES.items():  # idempotent; before any data (or added to an old one)
            schema = models.PayloadSchemaType.FLOAT if kind == "float" else models.PayloadSchemaType.KEYWORD
            self._call(lambda k=key, s=schema: self.client.create_payload_index(
                name, k, s, wait=True), "create payload index", name)

    def _create(self, name: str, dim: int, full: dict) -> bool:
        """Create the collection; False when it already exists (HTTP 409; ValueError in local mode)."""
        o = self.options
        try:
            self._call(lambda: self.client.create_collection(
                name,
                vectors_config=models.VectorParams(size=int(dim), distance=models.Distance.COSINE),
                shard_number=o.shard_number,
                replication_factor=o.replication_factor,
                write_consistency_factor=o.write_consistency_factor,
                metadata=full,
            ), "create collection", name)
        except StoreError as exc:
            cause = exc.__cause__
            local_exists = isinstance(cause, ValueError) and "already exists" in str(cause)
            if status_of(cause) != 409 and not local_exists:
                raise
            return False
        return True

    def collection_meta(self, name: str) -> dict:
        """The metadata given at creation, plus ``name``, ``dim`` and ``distance``.

        Raises:
            StoreNotFoundError: no such collection.
            StoreError: the collection has no RegionMIR metadata.
        """
        if name not in self._meta:
            info = self._call(lambda: self.client.get_collection(name), "get collection", name)
            meta = dict(getattr(info.config, "metadata", None) or {})
            if not meta:
                raise StoreError(
                    f"Collection {name!r} on {self.location} has no RegionMIR metadata: it was not "
                    "made by RegionMIR, or the server is too old to keep collection metadata "
                    "(docker-compose.yml pins qdrant/qdrant:v1.19.1). Use another "
                    "--collection; on an old server, upgrade it, delete this collection and ingest again."
                )
            self._meta[name] = meta
        return dict(self._meta[name])

    # -- data ----------------------------------------------------------------------------
    def upsert(self, name: str, points: Sequence[PointRecord]) -> None:
        """Insert or replace points in batches, each acknowledged (``wait=True``) before the next.

        Raises:
            CollectionMismatchError: a vector of another size than the collection's.
            StoreUnavailableError: the server failed after all retries.
        """
        dim, size = self._dim(name), self.options.upsert_batch
        for start in range(0, len(points), size):
            batch = [
                models.PointStruct(id=p.id, vector=as_vector(name, p.vector, dim).tolist(), payload=jsonable(p.full_payload))
                for p in points[start : start + size]
            ]
            self._call(lambda b=batch: self.client.upsert(name, b, wait=True), "upsert", name)

    def points(self, name: str, filter: Filter | None = None, limit: int = 100) -> list[StoredPoint]:
        """The stored points matching ``filter``, in ascending id order, at most ``limit`` of them.

        Raises:
            StoreNotFoundError: no such collection.
            StoreUnavailableError: the server failed after all retries.
        """
        found, offset, flt = [], None, server_filter(filter)
        while len(found) < limit:
            page = min(SCROLL_PAGE, limit - len(found))
            records, offset = self._call(lambda o=offset, n=page: self.client.scroll(
                name, scroll_filter=flt, limit=n, offset=o, with_payload=True, with_vectors=False),
                "list points", name)
            found += [StoredPoint(str(r.id), dict(r.payload or {})) for r in records]
            if offset is None:
                break
        return found

    def search(
        self,
        name: str,
        vector: np.ndarray,
        top_k: int = 10,
        filter: Filter | None = None,
        exact: bool = False,
    ) -> list[Hit]:
        """The ``top_k`` nearest points by cosine similarity, best first, among those matching ``filter``.

        Raises:
            StoreNotFoundError: no such collection.
            CollectionMismatchError: ``vector`` has another size than the collection's.
        """
        v = as_vector(name, vector, self._dim(name))
        params = models.SearchParams(exact=exact, hnsw_ef=None if exact else self.options.hnsw_ef)
        res = self._call(lambda: self.client.query_points(
            name, query=v.tolist(), limit=int(top_k), query_filter=server_filter(filter),
            search_params=params, with_payload=True), "search", name)
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in res.points]

    def count(self, name: str, filter: Filter | None = None) -> int:
        """Number of points matching ``filter`` (all points when ``None``), counted exactly."""
        res = self._call(lambda: self.client.count(
            name, count_filter=server_filter(filter), exact=True), "count", name)
        return int(res.count)

    def facet(self, name: str, key: str, limit: int = 10_000) -> dict[str, int]:
        """Points per value of an indexed keyword field, e.g. ``facet(name, "anatomy")``."""
        res = self._call(lambda: self.client.facet(name, key, limit=limit, exact=True), "facet", name)
        return {str(h.value): int(h.count) for h in res.hits}

    def value_range(self, name: str, key: str) -> tuple[float, float] | None:
        """Smallest and largest number under the float-indexed ``key``; None: none, or no index
        (qdrant-client's local mode has no indexes, and orders without one)."""
        info = self._call(lambda: self.client.get_collection(name), "get collection", name)
        if not self._local and key not in (info.payload_schema or {}):  # order_by needs the index
            return None
        ends = []
        for direction in (models.Direction.ASC, models.Direction.DESC):
            records, _ = self._call(lambda d=direction: self.client.scroll(
                name, limit=1, order_by=models.OrderBy(key=key, direction=d), with_payload=[key],
                with_vectors=False), "list points", name)
            if not records:
                return None
            ends.append(float(records[0].payload[key]))
        return ends[0], ends[1]

    def index_every(self, name: str) -> int | None:
        """None: the server indexes in the background as points arrive; wait once, at the end."""
        return None

    def build_index(self, name: str) -> None:
        """Wait until the server has finished indexing (collection status green).

        Raises:
            StoreError: still not green after ``options.index_timeout`` seconds.
        """
        deadline, wait = time.monotonic() + self.options.index_timeout, 0.2
        while True:
            info = self._call(lambda: self.client.get_collection(name), "get collection", name)
            status = str(info.status.value if hasattr(info.status, "value") else info.status)
            if status == "green":
                return
            if status == "grey":  # optimizations pending but not triggered: an update triggers them
                self._call(lambda: self.client.update_collection(
                    name, optimizers_config=models.OptimizersConfigDiff()), "trigger optimizers", name)
            if status == "red" or time.monotonic() > deadline:
                raise StoreError(
                    f"Collection {name!r} on {self.location} is {status} after waiting "
                    f"{self.options.index_timeout:.0f} s for indexing; check the server's log. "
                    "Search works meanwhile, but slower."
                )
            time.sleep(wait)
            wait = min(wait * 2, 5.0)

    def close(self) -> None:
        """Close the client's connections."""
        self.client.close()

    def __enter__(self) -> ServerStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _text(exc: Exception) -> str:
    """A short description of a qdrant-client error, without headers (which hold the API key)."""
    if isinstance(exc, UnexpectedResponse):
        try:
            return str(exc.structured().get("status", {}).get("error", exc.reason_phrase))
        except Exception:
            return f"HTTP {exc.status_code} {exc.reason_phrase}"
    if isinstance(exc, ResponseHandlingException):
        return f"{type(exc.source).__name__}: {exc.source}"
    return str(exc)
