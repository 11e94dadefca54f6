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

# Payload fields that get a keyword index before any data is written (ARCHITECTURE.md).
PAYLOAD_INDEXES: tuple[str, ...] = (
    "anatomy",
    "image_id",
    "study_id",
    "patient",
    "view",
    "modality",
    "findings",
    "model_id",
    "box_source",
)

DISTANCE = "cosine"  # every collection; vectors are float32

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")

FilterValue = str | int | bool | Sequence[str | int]


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
    """Payload conditions: a scalar value must match exactly, a sequence matches any of its values.

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


@runtime_checkable
class Store(Protocol):
    """A vector store of region points; see docs/ARCHITECTURE.md for the contract."""

    location: str

    def collections(self) -> list[str]: ...
    def create_collection(self, name: str, dim: int, meta: dict) -> None: ...
    def collection_meta(self, name: str) -> dict: ...
    def upsert(self, name: str, points: Sequence[PointRecord]) -> None: ...
    def existing(self, name: str, ids: Sequence[str]) -> set[str]: ...
    def search(
        self,
        name: str,
        vector: np.ndarray,
        top_k: int = 10,
        filter: Filter | None = None,
        exact: bool = False,
    ) -> list[Hit]: ...
    def count(self, name: str, filter: Filter | None = None) -> int: ...
    def facet(self, name: str, key: str) -> dict[str, int]: ...
    def build_index(self, name: str) -> None: ...
    def index_every(self, name: str) -> int | None: ...  # points between two build_index calls; None: at the end
    def close(self) -> None: ...


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


def check_compatible(name: str, old: dict, dim: int, meta: dict) -> None:
    """Refuse to re-create a collection with another vector size or model.

    Raises:
        CollectionMismatchError: ``dim`` or ``meta['model_id']`` differ from the stored ones.
    """
    if int(old.get("dim", -1)) != int(dim):
        raise CollectionMismatchError(
            f"Collection {name!r} holds {old.get('dim')}-d vectors, not {dim}-d. "
            "Use another collection name (--collection) or delete the old one."
        )
    if old.get("model_id") != meta.get("model_id"):
        raise CollectionMismatchError(
            f"Collection {name!r} was filled by model {old.get('model_id')}, not "
            f"{meta.get('model_id')}. Use another collection name (--collection) or the same model."
        )


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
