"""The store contract shared by both backends: records, hits, filters, point ids, payload indexes."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, runtime_checkable

import numpy as np

from regionmir.errors import CollectionMismatchError, StoreError

# Namespace of RegionMIR point ids; fixed forever, since ids must be stable across runs.
REGIONMIR_NS = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/regionmir/point-ids")

# Payload fields indexed before any data is written, and the kind of each index (ARCHITECTURE.md):
# "keyword" fields match values exactly, "float" fields also take ranges (``Range``). Both backends
# create exactly these; a collection made before a field joined this table lacks its index (see
# ``NUMERIC_FIELDS``) until an ingest into it adds the index.
PAYLOAD_INDEXES: Mapping[str, str] = MappingProxyType({
    "anatomy": "keyword",
    "image_id": "keyword",
    "study_id": "keyword",
    "patient": "keyword",
    "view": "keyword",
    "modality": "keyword",
    "findings": "keyword",
    "model_id": "keyword",
    "box_source": "keyword",
    "ctr": "float",  # cardiothoracic ratio of the film (regions.cardiothoracic_ratio), 3 decimals
})
KEYWORD_FIELDS: tuple[str, ...] = tuple(k for k, kind in PAYLOAD_INDEXES.items() if kind == "keyword")
NUMERIC_FIELDS: tuple[str, ...] = tuple(k for k, kind in PAYLOAD_INDEXES.items() if kind == "float")

DISTANCE = "cosine"  # every collection; vectors are float32

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")



@dataclass(frozen=True)
class Range:
    """A numeric range condition: every bound given holds (``gt < x``, ``gte <= x``, ``x < lt``,
    ``x <= lte``); a point without a number under the key never matches, not even ``Range()``."""

    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None

    def __post_init__(self) -> None:
        for key in ("gt", "gte", "lt", "lte"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not math.isfinite(float(value))):
                raise StoreError(f"Range.{key} must be a finite number, got {value!r}.")

    def holds(self, value) -> bool:
        """Whether ``value`` (a payload value) lies in the range: the reference semantics."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return ((self.gt is None or value > self.gt) and (self.gte is None or value >= self.gte)
                and (self.lt is None or value < self.lt) and (self.lte is None or value <= self.lte))

    def __and__(self, other: Range) -> Range:
        """Both ranges at once: the tighter bound on each side (at an equal value, the strict one)."""
        lows = [(v, s) for v, s in ((self.gt, True), (self.gte, False), (other.gt, True), (other.gte, False))
                if v is not None]
        highs = [(v, s) for v, s in ((self.lt, True), (self.lte, False), (other.lt, True), (other.lte, False))
                 if v is not None]
        lo = max(lows, default=None)  # the larger value; at a tie True (strict) > False
        hi = min(highs, key=lambda b: (b[0], not b[1]), default=None)  # the smaller; at a tie strict
        return Range(gt=lo[0] if lo and lo[1] else None, gte=lo[0] if lo and not lo[1] else None,
                     lt=hi[0] if hi and hi[1] else None, lte=hi[0] if hi and not hi[1] else None)

    def describe(self, key: str) -> str:
        """``ctr>0.5``-style text of the range on ``key`` (conditions joined by a space)."""
        ops = (("gt", ">"), ("gte", ">="), ("lt", "<"), ("lte", "<="))
        return " ".join(f"{key}{op}{getattr(self, b):g}" for b, op in ops if getattr(self, b) is not None) or key


FilterValue = str | int | bool | Sequence[str | int] | Range


def point_id(sop_uid: str, anatomy_slug: str, model_id: str) -> str:
    """Stable id of the point for one region of one image embedded by one model.

    Args:
        sop_uid: SOP Instance UID (or dicom_id) of the image.
        anatomy_slug: ``Anatomy.slug`` of the region.
        model_id: the encoder's ``model_id``.

    Returns:
        A UUID string; the same inputs always give the same id, so re-ingesting is idempotent.
    """
    return str(uuid.uuid5(REGIONMIR_NS, f"{sop_uid}|{anatomy_slug}|{model_id}"))


@dataclass(frozen=True)
class PointRecord:
    """One region embedding to write: ``vector`` is (dim,) float32, ``payload`` JSON-able.

    ``shared`` holds more payload fields, stored in the point like ``payload``'s: the fields of
    its image, one dict object for all of the image's regions. The embedded store converts such
    a dict once per image instead of once per region (a third of an ingest's main-process CPU).
    """

    id: str
    vector: np.ndarray
    payload: dict
    shared: dict | None = None

    @property
    def full_payload(self) -> dict:
        """``payload`` and ``shared`` in one dict (``shared`` wins on a common key, as in the store)."""
        return self.payload if self.shared is None else {**self.payload, **self.shared}


@dataclass(frozen=True)
class Hit:
    """One search result: ``score`` is the cosine similarity (higher is closer)."""

    id: str
    score: float
    payload: dict


def _frozen(mapping: Mapping | None) -> Mapping:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class Filter:
    """Payload conditions: a scalar value must match exactly, a sequence matches any of its values,
    a :class:`Range` bounds a number (``must={"ctr": Range(gt=0.5)}``).

    ``must`` conditions all hold; none of the ``must_not`` conditions hold.
    """

    must: Mapping[str, FilterValue] = field(default_factory=dict)
    must_not: Mapping[str, FilterValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "must", _frozen(self.must))
        object.__setattr__(self, "must_not", _frozen(self.must_not))

    def is_empty(self) -> bool:
        """True when the filter has no condition at all."""
        return not self.must and not self.must_not


def is_any(value: FilterValue) -> bool:
    """True when a filter value means "match any of these" (a sequence that is not a string)."""
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


@dataclass(frozen=True)
class StoredPoint:
    """One stored point as :meth:`Store.points` lists it: its id and whole payload."""

    id: str
    payload: dict


@runtime_checkable
class Store(Protocol):
    """A vector store of region points: named collections of cosine vectors with JSON payloads.

    Two backends implement it: :class:`~regionmir.store.embedded.EmbeddedStore` (qdrant-edge,
    in-process) and :class:`~regionmir.store.server.ServerStore` (a Qdrant server through
    qdrant-client). tests/store/test_store.py runs this contract against both, and
    tests/store/test_congruence.py checks that they answer alike. A collection holds the points of
    one model (:func:`~regionmir.store.collection.check_model`). Every method that reads or
    writes a collection ``name`` raises :class:`~regionmir.errors.StoreNotFoundError` when there
    is no such collection, and a server backend raises
    :class:`~regionmir.errors.StoreUnavailableError` when it cannot be reached.
    """

    location: str  # where the store lives, for messages: a folder or a server URL

    def collections(self) -> list[str]:
        """Names of the collections in the store, sorted.

        Raises:
            StoreUnavailableError: the server cannot be reached.
        """
        ...

    def create_collection(self, name: str, dim: int, meta: dict) -> None:
        """Create collection ``name`` of ``dim``-d cosine vectors, with its payload indexes.

        Idempotent: a collection that already exists for the same model and size is left as it
        is (so concurrent ingest workers may all call it).

        Args:
            name: letters, digits, ``_ . -`` (a folder name and a Qdrant collection name).
            dim: the vector size; stored in the metadata as ``dim``.
            meta: metadata to record; must hold ``model_id`` (the encoder that fills it).

        Raises:
            StoreError: a bad name, no ``model_id`` in ``meta``, or ``dim`` not positive.
            CollectionMismatchError: it exists with another ``model_id`` or ``dim``.
            StoreLockedError: (embedded) another process has the collection open.
        """
        ...

    def collection_meta(self, name: str) -> dict:
        """The metadata given at creation, plus ``name``, ``dim`` and ``distance``.

        Raises:
            StoreNotFoundError: no such collection.
            StoreError: (server) a collection without RegionMIR metadata.
        """
        ...

    def upsert(self, name: str, points: Sequence[PointRecord]) -> None:
        """Insert points, or replace those with the same id (payload and vector), in batches.

        Raises:
            StoreNotFoundError: no such collection.
            CollectionMismatchError: a vector of another size than the collection's.
            StoreError: a zero or non-finite vector.
        """
        ...

    def points(self, name: str, filter: Filter | None = None, limit: int = 100) -> list[StoredPoint]:
        """The stored points matching ``filter`` (all when ``None``), without any query vector.

        Args:
            name: the collection.
            filter: payload conditions the points must meet.
            limit: at most this many points are returned.

        Returns:
            Ids and whole payloads, in ascending point-id order (the same order on every
            backend); the first ``limit`` of them when more match.

        Raises:
            StoreNotFoundError: no such collection.
        """
        ...

    def search(
        self,
        name: str,
        vector: np.ndarray,
        top_k: int = 10,
        filter: Filter | None = None,
        exact: bool = False,
    ) -> list[Hit]:
        """The ``top_k`` nearest points to ``vector`` by cosine similarity among those matching ``filter``.

        Args:
            name: the collection.
            vector: the query, ``(dim,)``; it need not be normalized.
            top_k: at most this many hits.
            filter: payload conditions the hits must meet.
            exact: scan every matching point instead of walking the HNSW graph.

        Returns:
            Hits, best (highest score) first, with their payloads.

        Raises:
            StoreNotFoundError: no such collection.
            CollectionMismatchError: ``vector`` has another size than the collection's.
            StoreError: a zero or non-finite ``vector``.
        """
        ...

    def count(self, name: str, filter: Filter | None = None) -> int:
        """Number of points matching ``filter`` (all points when ``None``), counted exactly.

        Raises:
            StoreNotFoundError: no such collection.
        """
        ...

    def facet(self, name: str, key: str) -> dict[str, int]:
        """Points per value of the indexed keyword field ``key``, e.g. ``facet(name, "anatomy")``.

        A point with a list value counts once for each value in it.

        Raises:
            StoreNotFoundError: no such collection.
        """
        ...

    def value_range(self, name: str, key: str) -> tuple[float, float] | None:
        """The smallest and largest number stored under the float-indexed field ``key`` (``ctr``).

        Returns:
            ``(low, high)``, or None when no point holds a number there, or the collection has no
            index on ``key`` (made before the field joined ``PAYLOAD_INDEXES``).

        Raises:
            StoreNotFoundError: no such collection.
        """
        ...

    def build_index(self, name: str) -> None:
        """Have the HNSW index built for the points written so far, and wait until it is.

        Raises:
            StoreNotFoundError: no such collection.
            StoreError: (server) the index is still not built after the configured wait.
        """
        ...

    def index_every(self, name: str) -> int | None:
        """Points to write between two :meth:`build_index` calls; ``None``: build once, at the end.

        An ingest builds the index this often so that one build never holds more than one
        segment's points in memory (embedded); a server indexes in the background instead.
        """
        ...

    def close(self) -> None:
        """Flush what is written and release the store (the embedded store's lock, connections)."""
        ...


def check_name(name: str) -> str:
    """Refuse collection names that are not safe as a folder name and a Qdrant collection name.

    Raises:
        StoreError: the name has characters other than letters, digits, ``_ . -``.
    """
    if not _NAME_RE.match(name):
        raise StoreError(
            f"Invalid collection name {name!r}: use letters, digits, '_', '.' or '-' "
            "(at most 128 characters, not starting with a dot)."
        )
    return name


def new_meta(name: str, dim: int, meta: dict) -> dict:
    """The metadata recorded with a new collection: the caller's ``meta`` plus name, dim, distance.

    Raises:
        StoreError: ``meta`` lacks ``model_id`` or ``dim`` is not a positive integer.
    """
    if "model_id" not in meta:
        raise StoreError(f"Collection {name!r} needs meta['model_id'] (the encoder that fills it).")
    if not isinstance(dim, (int, np.integer)) or dim <= 0:
        raise StoreError(f"Collection {name!r}: embedding dim must be a positive integer, got {dim!r}.")
    return {**meta, "name": name, "dim": int(dim), "distance": DISTANCE}


def as_vector(name: str, vector: np.ndarray, dim: int) -> np.ndarray:
    """``vector`` as a finite (dim,) float32 array.

    Raises:
        CollectionMismatchError: the vector has another size than the collection.
        StoreError: the vector has NaN/inf values or is all zeros.
    """
    v = np.asarray(vector, dtype=np.float32).reshape(-1)  # (dim,)
    if v.shape[0] != dim:
        raise CollectionMismatchError(
            f"Collection {name!r} holds {dim}-d vectors, got a {v.shape[0]}-d one: "
            "was it made with another model? Use the model that filled it."
        )
    norm = float(np.linalg.norm(v))
    if not math.isfinite(norm) or norm == 0.0:
        raise StoreError(f"Refusing a zero or non-finite vector for collection {name!r}.")
    return v


def as_vectors(name: str, vectors: Sequence[np.ndarray], dim: int) -> np.ndarray:
    """``vectors`` as a finite ``(N, dim)`` float32 matrix, checked as :func:`as_vector` checks one.

    Raises:
        CollectionMismatchError: a vector has another size than the collection.
        StoreError: a vector has NaN/inf values or is all zeros.
    """
    try:
        m = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1)  # (N, dim)
    except ValueError:  # ragged: find the odd one with its own message
        return np.stack([as_vector(name, v, dim) for v in vectors])
    if m.shape[1] != dim or not np.all(np.isfinite(norms := np.linalg.norm(m, axis=1))) or not np.all(norms > 0):
        return np.stack([as_vector(name, v, dim) for v in vectors])  # raises for the bad one
    return m


_PLAIN = (str, int, float, bool, type(None))


def jsonable(value):
    """``value`` with numpy scalars/arrays and tuples turned into plain JSON types (for payloads)."""
    if type(value) in _PLAIN:  # the common case first: an ingest converts ~12 fields per region
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
