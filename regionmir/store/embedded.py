"""Embedded store: the Qdrant engine in-process through qdrant-edge-py, one shard folder per collection.

Layout under the store folder (``config.default_store_dir()`` by default)::

    <collection>/meta.json     collection metadata (model_id, dim, ...), written atomically
    <collection>/shard/        the qdrant-edge shard (segments + WAL)

A collection exists once its ``meta.json`` exists. A shard can be opened by one process only:
a second one gets :class:`StoreLockedError`. The HNSW index is built by :meth:`build_index`
(a blocking ``optimize()``), by an ingest every ``segment_points`` points and at its end;
points not yet indexed are searched exactly.

Layout (chosen by bench/bench_store.py): one shard per collection, filtered by the ``anatomy``
payload, with one HNSW graph per anatomy and no global graph (Qdrant's multitenancy layout).
It builds about 4x faster than a global graph, and as fast as one shard per anatomy without
36 write-ahead logs. Searches that do not keep a single anatomy are exact scans.

Placement (chosen by bench/bench_search_scale.py for MIMIC-CXR-sized collections): int8
quantized vectors and the HNSW graphs in RAM; the float32 originals (read to rescore the best
candidates) and the keyword payload indexes on disk, memory-mapped. At 100k regions in one
run that opened in 0.97 s with +129 MiB RSS, against 1.92 s and +217 MiB for float32 vectors
and indexes in RAM.

Segments of at most 2M points, each indexed as soon as it is full (also chosen there): at 4M
regions the build's peak memory fell from ~11.8 GB to 5.0 GB and its time from 1278 s to 746 s
against one 4M segment, and recall@10 at the default search breadth rose from 0.953 to 0.987
(0.9945 at ``hnsw_ef=128``, the default now), because each anatomy's graph stays the size of
a 2M-point collection's. Opening grows with the segments (23 s vs 15 s at 4M).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np
import qdrant_edge as qe

from regionmir.errors import StoreError, StoreLockedError, StoreNotFoundError
from regionmir.store.base import (
    KEYWORD_FIELDS,
    PAYLOAD_INDEXES,
    Filter,
    Hit,
    PointRecord,
    Range,
    StoredPoint,
    as_vector,
    as_vectors,
    check_name,
    is_any,
    jsonable,
    new_meta,
)
from regionmir.store.collection import check_model
from regionmir.store.damage import (
    DamagedCollectionError,
    flush_error,
    os_reason,
    read_meta,
)

log = logging.getLogger("regionmir")

META_FILE = "meta.json"
SHARD_DIR = "shard"
SEGMENTS_DIR = "segments"  # inside SHARD_DIR: the points (the engine's segments)
EDGE_CONFIG = "edge_config.json"  # inside SHARD_DIR: written by the engine when a shard is created
UPSERT_BATCH = 512  # points per update() call
SCROLL_PAGE = 1024  # points per scroll() call in points()
ANATOMY_GRAPHS = True  # default layout of new collections; see EdgeOptions.anatomy_graphs
QUANTIZATIONS = ("none", "int8", "binary")


def edge_filter(filter: Filter | None) -> qe.Filter | None:
    """Our :class:`Filter` as a qdrant-edge filter (``None`` when there is no condition)."""
    if filter is None or filter.is_empty():
        return None

    def cond(key: str, value) -> qe.FieldCondition:
        if isinstance(value, Range):
            return qe.FieldCondition(key, range=qe.RangeFloat(gt=value.gt, gte=value.gte, lt=value.lt, lte=value.lte))
        match = qe.MatchAny(list(value)) if is_any(value) else qe.MatchValue(value)
        return qe.FieldCondition(key, match=match)

    must = [cond(k, v) for k, v in filter.must.items()] or None
    must_not = [cond(k, v) for k, v in filter.must_not.items()] or None
    return qe.Filter(must=must, must_not=must_not)


def _one_anatomy(filter: Filter | None) -> bool:
    """True when ``filter`` keeps a single anatomy, so that anatomy's HNSW graph can serve it."""
    value = None if filter is None else filter.must.get("anatomy")
    return value is not None and (not is_any(value) or len(value) == 1)


MIN_FREE_BYTES = 32 * 2**20  # the engine maps files and writes its WAL when a collection opens


def _write_json_atomic(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half of one."""
    fd, tmp = tempfile.mkstemp(prefix=".meta-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class EdgeOptions:
    """Index settings of new embedded collections (``None``: Qdrant's default)."""

    hnsw_m: int = 16  # graph edges per node
    ef_construct: int = 100  # candidates while building the graph
    full_scan_threshold_kb: int | None = None  # filtered subsets below this size are scanned exactly
    indexing_threshold_kb: int | None = None  # segments below this size get no HNSW graph
    # Points per segment: an index build merges segments up to this size and no further, and an
    # ingest builds the index every this many points, so building a segment's graphs never
    # holds more than this many points in memory (~3 GB per million, bench_search_scale.py).
    # None: one segment, whatever its size (a 13.6M-region build would need ~40 GB).
    segment_points: int | None = 2_000_000
    # Search breadth (None: the graph's ef_construct, 100): 128 keeps recall@10 >= 0.99 on 2M-point
    # segments (0.9945 at 4M regions, p50 1.1 ms; 0.9975 at 13.6M, p50 3.3 ms; 64: 0.95; 256: 0.996-0.9995)
    hnsw_ef: int | None = 128
    # One HNSW graph per anatomy (m=0, payload_m, anatomy index is_tenant, no graph links for the
    # other fields) instead of one global graph: searches filtered by anatomy stay fast and the
    # index builds ~4x faster (bench/bench_store.py); searches without an anatomy filter scan.
    anatomy_graphs: bool = ANATOMY_GRAPHS
    # Compressed copies of the vectors kept in RAM and searched first: "int8" (scalar, 4x
    # smaller), "binary" (1 bit, 32x), or "none". The float32 originals rescore the best
    # `oversampling * top_k` candidates.
    quantization: str = "int8"
    vectors_on_disk: bool = True  # float32 originals read from disk (mmap) when rescoring, not held in RAM
    hnsw_on_disk: bool = False  # HNSW graphs read from disk (mmap) instead of held in RAM
    quantized_on_disk: bool = False  # the compressed vectors read from disk (mmap) instead of held in RAM
    indexes_on_disk: bool = True  # keyword payload indexes read from disk (mmap) instead of loaded into RAM
    oversampling: float = 2.0  # candidates per result rescored with the originals (quantized stores)

    def index_schema(self, key: str):
        """The index of payload field ``key`` (its kind in ``PAYLOAD_INDEXES``); with anatomy graphs
        only ``anatomy`` adds graph links."""
        memory = qe.Memory.Cold if self.indexes_on_disk else None
        if PAYLOAD_INDEXES[key] == "float":
            return qe.FloatIndexParams(enable_hnsw=False if self.anatomy_graphs else None, memory=memory)
        if not self.anatomy_graphs:
            return qe.KeywordIndexParams(memory=memory) if memory else qe.PayloadSchemaType.Keyword
        if key == "anatomy":
            return qe.KeywordIndexParams(is_tenant=True, memory=memory)
        return qe.KeywordIndexParams(enable_hnsw=False, memory=memory)

    def edge_config(self, dim: int) -> qe.EdgeConfig:
        """The qdrant-edge configuration of a new shard holding ``dim``-d cosine vectors."""
        hnsw = qe.HnswIndexConfig(
            m=0 if self.anatomy_graphs else self.hnsw_m,
            ef_construct=self.ef_construct,
            full_scan_threshold=self.full_scan_threshold_kb or 10_000,
            payload_m=self.hnsw_m if self.anatomy_graphs else None,
            memory=qe.Memory.Cold if self.hnsw_on_disk else qe.Memory.Pinned,
        )
        optimizers = None
        if self.indexing_threshold_kb is not None or self.segment_points is not None:
            max_kb = None if self.segment_points is None else self.segment_points * int(dim) * 4 // 1024
            optimizers = qe.EdgeOptimizersConfig(indexing_threshold=self.indexing_threshold_kb, max_segment_size=max_kb)
        vectors = qe.EdgeVectorParams(size=int(dim), distance=qe.Distance.Cosine,
                                      memory=qe.Memory.Cold if self.vectors_on_disk else qe.Memory.Cached)
        return qe.EdgeConfig(
            vectors=vectors,
            hnsw_config=hnsw,
            quantization_config=self.quantization_config(),
            optimizers=optimizers,
            wal_enabled=True,  # durability, and the lock that keeps a second process out
        )

    def quantization_config(self):
        """The qdrant-edge quantization of new shards, or None.

        Raises:
            StoreError: an unknown quantization name.
        """
        if self.quantization not in QUANTIZATIONS:
            raise StoreError(f"Unknown quantization {self.quantization!r}; use one of {', '.join(QUANTIZATIONS)}")
        memory = qe.Memory.Cold if self.quantized_on_disk else qe.Memory.Pinned
        if self.quantization == "int8":
            return qe.ScalarQuantizationConfig(qe.ScalarType.Int8, quantile=0.99, memory=memory)
        if self.quantization == "binary":
            return qe.BinaryQuantizationConfig(memory=memory,
                                               query_encoding=qe.BinaryQuantizationQueryEncoding.Scalar8Bits)
        return None

    def search_params(self, exact: bool, quantized: bool) -> qe.SearchParams:
        """Search breadth, and rescoring with the originals on a quantized collection (an exact
        search reads the originals only)."""
        quant = None
        if quantized:
            quant = qe.QuantizationSearchParams(ignore=True) if exact else \
                qe.QuantizationSearchParams(rescore=True, oversampling=self.oversampling)
        return qe.SearchParams(exact=exact, hnsw_ef=None if exact else self.hnsw_ef, quantization=quant)


class EmbeddedStore:
    """Qdrant in-process (qdrant-edge-py): a folder with one sub-folder per collection.

    Args:
        path: the store folder; created when missing.
        options: index settings for new collections and the HNSW search breadth.
    """

    def __init__(self, path: str | Path, options: EdgeOptions | None = None):
        self.root = Path(path).expanduser()
        self.location = str(self.root)
        self.options = options or EdgeOptions()
        self._shards: dict[str, qe.EdgeShard] = {}
        self._meta: dict[str, dict] = {}
        self._check_room()

    def _check_room(self) -> None:
        """Refuse to open or write on a full disk: the engine maps its files and would die of SIGBUS.

        Checked when the store opens and before each write (an upsert, an index build), so an
        ingest that fills the disk stops with this message between two batches: what the ledger
        holds is stored, and a rerun after freeing space resumes from there.

        Raises:
            StoreError: less than :data:`MIN_FREE_BYTES` free where the store lives.
        """
        import shutil

        where = next((p for p in (self.root, *self.root.parents) if p.exists()), None)
        if where is None:
            return
        free = shutil.disk_usage(where).free
        if free < MIN_FREE_BYTES:
            raise StoreError(
                f"Only {free // 2**20} MiB free on the disk of the store at {self.root}; it needs "
                f"{MIN_FREE_BYTES // 2**20} MiB to open or write safely. Free disk space, or move "
                "REGIONMIR_HOME to a disk with room. The stored points are intact (an ingest "
                "stopped here resumes where it stopped)."
            )

    # -- collections ---------------------------------------------------------------------
    def collections(self) -> list[str]:
        """Names of the collections in this store, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.parent.name for p in self.root.glob(f"*/{META_FILE}"))

    def create_collection(self, name: str, dim: int, meta: dict) -> None:
        """Create a collection with keyword payload indexes; a no-op when an identical one exists.

        Raises:
            CollectionMismatchError: it exists with another dim or model_id.
            StoreLockedError: another process has it open.
        """
        check_name(name)
        full = new_meta(name, dim, meta)
        folder = self.root / name
        if (folder / META_FILE).exists():
            check_model(self.collection_meta(name), name, full["model_id"], dim)
            try:
                self._add_missing_indexes(name)
            except StoreLockedError:  # a racing creator holds it, with every index made; a writer
                pass  # of this process that needs the shard opens it later and says so if it must
            return
        folder.mkdir(parents=True, exist_ok=True)
        shard = self._open_new_shard(folder, dim)
        for key in PAYLOAD_INDEXES:  # idempotent; before any data
            shard.update(qe.UpdateOperation.create_field_index(key, self.options.index_schema(key)))
        shard.flush()
        full["edge_layout"] = "anatomy-graphs" if self.options.anatomy_graphs else "global-graph"
        full["segment_points"] = self.options.segment_points
        full.update(quantization=self.options.quantization, vectors_on_disk=self.options.vectors_on_disk,
                    hnsw_on_disk=self.options.hnsw_on_disk, indexes_on_disk=self.options.indexes_on_disk)
        _write_json_atomic(folder / META_FILE, full)
        self._shards[name] = shard
        self._meta[name] = full

    def _add_missing_indexes(self, name: str) -> None:
        """Give a collection made before a field joined ``PAYLOAD_INDEXES`` (``ctr``) its index.

        Called when an ingest opens the collection again, as the server store re-creates its
        indexes: points it writes then carry the field, and filters on it use the index.
        """
        shard = self._shard(name)
        missing = [k for k in PAYLOAD_INDEXES if k not in set(shard.info().payload_schema)]
        for key in missing:
            log.info("Adding the %s payload index to collection %s", key, name)
            shard.update(qe.UpdateOperation.create_field_index(key, self.options.index_schema(key)))
        if missing:
            shard.flush()

    def _open_new_shard(self, folder: Path, dim: int) -> qe.EdgeShard:
        """The shard of a collection being created: a new one, or the one a stopped create left.

        A create that stopped before the engine wrote its configuration (a full disk, a file
        size limit) leaves a shard folder that cannot be loaded; it holds no points (none are
        written before ``meta.json``), so it is removed and made again.
        """
        import shutil

        shard_dir = folder / SHARD_DIR
        if shard_dir.exists() and not (shard_dir / EDGE_CONFIG).is_file():
            log.warning("Removing the unfinished collection %s (it holds no points) to create it again", folder)
            shutil.rmtree(shard_dir)
        if shard_dir.exists():  # a create that stopped before meta.json: finish it
            log.warning("Completing the unfinished collection %s", folder)
            return self._call(folder, lambda: qe.EdgeShard.load(str(shard_dir)))
        config = self.options.edge_config(dim)
        return self._call(folder, lambda: qe.EdgeShard.create(str(shard_dir), config))

    def collection_meta(self, name: str) -> dict:
        """The metadata given at creation, plus ``name``, ``dim`` and ``distance``.

        Raises:
            StoreNotFoundError: no such collection.
            DamagedCollectionError: its ``meta.json`` is damaged (the message names it and the fix).
        """
        if name not in self._meta:
            path = self.root / name / META_FILE
            if not path.exists():
                raise StoreNotFoundError(self._missing(name))
            self._meta[name] = read_meta(path)
        return dict(self._meta[name])

    def _missing(self, name: str) -> str:
        have = ", ".join(self.collections()) or "none"
        return (
            f"No collection {name!r} in the store at {self.root} (collections: {have}). "
            "Run `regionmir ingest` first, or use another store (--qdrant-url, or REGIONMIR_HOME)."
        )

    def _call(self, folder: Path, fn):
        """Run a shard open, turning the engine's lock error into :class:`StoreLockedError`."""
        try:
            return fn()
        except Exception as exc:  # qdrant-edge raises plain Exception with a message
            text = str(exc)
            if "WouldBlock" in text or "lock" in text.lower():
                raise StoreLockedError(
                    f"The store at {folder} is in use by another RegionMIR process (an ingest?); "
                    "wait for it to finish or use a Qdrant server (--qdrant-url)."
                ) from exc
            if any(m in text for m in ("os error 30", "os error 13", "os error 1)", "Read-only", "ermission denied")):
                raise StoreError(
                    f"Cannot open the store at {folder}: its folder is read-only or not yours "
                    f"({os_reason(text)}). The embedded store needs write access even to search "
                    "(Qdrant keeps its files open read-write): fix the permissions, or copy the "
                    "store to a writable folder and set REGIONMIR_HOME. The stored points are intact."
                ) from exc
            if "os error 27" in text or "File too large" in text:
                raise StoreError(
                    f"Cannot open the store at {folder}: a file grew past the file size limit "
                    "(File too large). Lift the limit (`ulimit -f unlimited`) or move REGIONMIR_HOME "
                    "to a file system that allows large files, then run the command again."
                ) from exc
            if "os error 28" in text or "No space left" in text:
                raise StoreError(
                    f"Cannot open the store at {folder}: the disk is full. Free disk space; the "
                    "stored points are intact."
                ) from exc
            raise StoreError(f"Cannot open the store at {folder}: {text}") from exc

    def _shard(self, name: str) -> qe.EdgeShard:
        """The open shard of a collection, opening it on first use.

        Raises:
            StoreNotFoundError: no such collection.
            DamagedCollectionError: its files are damaged (see :meth:`_check_whole`).
            StoreError: it cannot be opened (read-only, full disk, in use: :meth:`_call`).
        """
        if name not in self._shards:
            self.collection_meta(name)  # raises StoreNotFoundError
            folder = self.root / name
            if not (folder / SHARD_DIR / SEGMENTS_DIR).is_dir():  # before the engine makes an empty one
                raise DamagedCollectionError(folder, f"its points' folder {folder / SHARD_DIR / SEGMENTS_DIR} is missing")
            shard = self._call(folder, lambda: qe.EdgeShard.load(str(folder / SHARD_DIR)))
            self._check_whole(folder, shard)
            self._shards[name] = shard
        return self._shards[name]

    @staticmethod
    def _check_whole(folder: Path, shard: qe.EdgeShard) -> None:
        """Refuse a shard whose payload indexes are gone: its segments were removed or replaced.

        Every collection gets all of :data:`PAYLOAD_INDEXES` before its first point, so a shard
        without them lost its segments; searching it would fail deep in the engine. Only the
        keyword ones are required: collections made before ``ctr`` was stored lack its index.

        Raises:
            DamagedCollectionError: an index is missing (the shard is closed first).
        """
        have = set(shard.info().payload_schema)
        if not have.issuperset(KEYWORD_FIELDS):
            shard.close()
            raise DamagedCollectionError(folder, f"its segments in {folder / SHARD_DIR / SEGMENTS_DIR} were removed or "
                                  "replaced (its payload indexes are gone)")

    def _dim(self, name: str) -> int:
        return int(self.collection_meta(name)["dim"])

    # -- data ----------------------------------------------------------------------------
    def upsert(self, name: str, points: Sequence[PointRecord]) -> None:
        """Insert or replace points (same id: replaced), in batches.

        Raises:
            CollectionMismatchError: a vector of another size than the collection's.
        """
        shard, dim = self._shard(name), self._dim(name)
        self._check_room()  # the disk may have filled since the store opened: stop before SIGBUS
        for start in range(0, len(points), UPSERT_BATCH):
            chunk = points[start : start + UPSERT_BATCH]
            vectors = as_vectors(name, [p.vector for p in chunk], dim).tolist()  # one check, one copy
            batch = [qe.Point(p.id, v, jsonable(p.payload)) for p, v in zip(chunk, vectors)]
            shard.update(qe.UpdateOperation.upsert_points(batch))
            # Shared fields (an image's) once per group: converting a payload value into the
            # engine costs ~4 us a string, and an image's 36 regions share 10 of their 15 fields.
            # A kill between the two updates leaves points the ledger does not hold: redone.
            groups: dict[int, tuple[dict, list[str]]] = {}
            for p in chunk:
                if p.shared is not None:
                    groups.setdefault(id(p.shared), (p.shared, []))[1].append(p.id)
            for shared, ids in groups.values():
                shard.update(qe.UpdateOperation.set_payload(ids, jsonable(shared)))

    def points(self, name: str, filter: Filter | None = None, limit: int = 100) -> list[StoredPoint]:
        """The stored points matching ``filter``, in ascending id order, at most ``limit`` of them.

        Raises:
            StoreNotFoundError: no such collection.
        """
        shard, found, offset = self._shard(name), [], None
        while len(found) < limit:
            request = qe.ScrollRequest(offset=offset, limit=min(SCROLL_PAGE, limit - len(found)),
                                       filter=edge_filter(filter), with_payload=True, with_vector=False)
            records, offset = shard.scroll(request)
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
            CollectionMismatchError: ``vector`` has another size than the collection's.
        """
        shard = self._shard(name)
        v = as_vector(name, vector, self._dim(name))
        meta = self.collection_meta(name)
        if meta.get("edge_layout") == "anatomy-graphs":
            exact = exact or not _one_anatomy(filter)  # no global graph: scan, never walk it
        found = self._query(shard, v, top_k, filter, exact, meta.get("quantization", "none") != "none")
        if len(found) < top_k and not exact:  # a filtered graph walk can come back short: scan instead
            found = self._query(shard, v, top_k, filter, True, meta.get("quantization", "none") != "none")
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in found]

    def _query(self, shard, v: np.ndarray, top_k: int, filter: Filter | None, exact: bool, quantized: bool) -> list:
        request = qe.QueryRequest(
            limit=int(top_k),
            query=qe.Query.Nearest(v.tolist()),
            filter=edge_filter(filter),
            params=self.options.search_params(exact, quantized),
            with_payload=True,
        )
        return shard.query(request)

    def count(self, name: str, filter: Filter | None = None) -> int:
        """Number of points matching ``filter`` (all points when ``None``), counted exactly."""
        return int(self._shard(name).count(qe.CountRequest(exact=True, filter=edge_filter(filter))))

    def facet(self, name: str, key: str, limit: int = 10_000) -> dict[str, int]:
        """Points per value of an indexed keyword field, e.g. ``facet(name, "anatomy")``."""
        response = self._shard(name).facet(qe.FacetRequest(key, limit=limit, exact=True))
        return {str(h.value): int(h.count) for h in response.hits}

    def value_range(self, name: str, key: str) -> tuple[float, float] | None:
        """Smallest and largest number under the float-indexed ``key``; None: none, or no index."""
        shard = self._shard(name)
        if key not in set(shard.info().payload_schema):  # order_by needs the index
            return None
        ends = []
        for direction in (qe.Direction.Asc, qe.Direction.Desc):
            request = qe.ScrollRequest(limit=1, order_by=qe.OrderBy(key, direction=direction),
                                       with_payload=qe.PayloadSelector.Include([key]), with_vector=False)
            records, _ = shard.scroll(request)
            if not records:
                return None
            ends.append(float(records[0].payload[key]))
        return ends[0], ends[1]

    def index_every(self, name: str) -> int | None:
        """Points to upsert between two :meth:`build_index` calls: the collection's segment size.

        Building then never indexes more than one segment's points at once (memory bounded by
        the segment, not the collection). None when segments are not capped
        (``EdgeOptions.segment_points=None``): a build merges everything into one segment, so
        it builds once, at the end.
        """
        return self.collection_meta(name).get("segment_points")

    def build_index(self, name: str) -> None:
        """Build the HNSW graphs (blocking; tens of seconds per 100k points on 2 cores)."""
        shard = self._shard(name)
        self._check_room()
        shard.optimize()
        shard.flush()

    def close(self) -> None:
        """Flush and close every open shard, releasing their locks."""
        shards, self._shards = self._shards, {}
        failed = None
        for name, shard in shards.items():
            try:
                shard.flush()
            except Exception as exc:  # noqa: BLE001 - qdrant-edge raises plain Exception; named below
                failed = failed or (name, exc)
            shard.close()
        if failed:
            raise flush_error(self.root / failed[0], failed[1])

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
