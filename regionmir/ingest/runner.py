"""Archive ingestion runner: composes the stages of :mod:`regionmir.ingest.stages` over a store.

``run_ingest`` opens the store and the collection (refusing one filled by another model),
skips images the ledger has, streams the rest through decode + crop workers, encodes whole
images in batches, upserts, records them in the ledger, and builds the index once at the end.
A kill at any moment loses at most the batch in flight; a rerun redoes it.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from regionmir import config
from regionmir.archive import Archive
from regionmir.errors import CollectionMismatchError
from regionmir.ingest.ledger import Ledger, entry_of, Report, default_report_path, ledger_family, ledger_path
from regionmir.ingest.stages import Prepared, Preparer, Skipped, batches, encode, mask_path, plan, prepared_stream, to_points

log = logging.getLogger("regionmir")


@dataclass(frozen=True)
class IngestConfig:
    """What `regionmir ingest` was asked to do."""

    archive: Path
    model: Path | None = None  # model folder or encoder.onnx; None: config.default_model_dir()
    collection: str = config.DEFAULT_COLLECTION
    qdrant_url: str | None = None  # None: the embedded store under $REGIONMIR_HOME/store
    api_key: str | None = None
    workers: int = field(default_factory=lambda: min(2, os.cpu_count() or 1))  # 0: in-process
    shard: tuple[int, int] = (0, 1)  # (i, n): the images whose stable hash mod n == i
    # crops per upsert and ledger record (whole images per batch; each upsert has a fixed cost:
    # a WAL append, an fsync), and per encoder call when the main process encodes (GPU)
    batch_size: int = 512
    report: Path | None = None  # JSONL report; None: $REGIONMIR_HOME/reports/ingest-*.jsonl
    # Layout of a collection created on a server (ignored when it exists; refused for the
    # embedded store unless None or 1). None: the server's defaults.
    shards: int | None = None  # shards of the collection, spread over the cluster's nodes
    replication_factor: int | None = None  # copies of each shard
    write_consistency: int | None = None  # replicas that must acknowledge a write


@dataclass
class IngestSummary:
    """Counts of one ingest run (the CLI prints it; `--json` dumps it)."""

    collection: str
    store: str
    model_id: str
    images: int = 0  # images of this shard
    ingested: int = 0
    regions: int = 0
    skipped: int = 0  # already in the ledger
    unlabeled: int = 0
    failed: int = 0
    duplicates: int = 0  # same SOPInstanceUID as an image already stored: left out, reported
    warnings: int = 0  # images ingested with some boxes dropped, or located by the localizer instead
    seconds: float = 0.0  # wall time of the run, index build included
    index_seconds: float = 0.0  # of which building the HNSW index (every store.index_every regions, and at the end)
    report: str | None = None

    @property
    def images_per_s(self) -> float:
        return self.ingested / self.seconds if self.seconds else 0.0

    @property
    def regions_per_s(self) -> float:
        return self.regions / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["images_per_s"] = round(self.images_per_s, 2)
        d["regions_per_s"] = round(self.regions_per_s, 2)
        d["seconds"] = round(self.seconds, 3)
        d["index_seconds"] = round(self.index_seconds, 3)
        return d


def check_model(meta: dict, collection: str, model_id: str, dim: int) -> None:
    """Refuse to mix models in one collection.

    Raises:
        CollectionMismatchError: ``collection`` was filled by another model or vector size.
    """
    have, have_dim = meta.get("model_id"), int(meta.get("embedding_dim") or meta.get("dim") or 0)
    if have != model_id or (have_dim and have_dim != dim):
        raise CollectionMismatchError(
            f"Collection {collection!r} holds embeddings of model {have} ({have_dim}-d), but the "
            f"model given is {model_id} ({dim}-d). Use the model that filled it (--model), or "
            f"another collection (--collection NEW)."
        )


def ensure_collection(store, name: str, encoder, archive_root: Path | None) -> dict:
    """The stored meta of collection ``name``, created for ``encoder`` when absent.

    Creation is idempotent: when another worker creates the collection between our check and
    our create, the store treats "already exists" as success, and the meta (with the winner's
    ``ingest_token``) is read back from the store, never taken from our own attempt.

    Raises:
        CollectionMismatchError: the collection exists and belongs to another model.
    """
    root = None if archive_root is None else str(Path(archive_root).resolve())  # None: a PACS source
    if name not in store.collections():
        meta = {
            "model_id": encoder.model_id,
            "embedding_dim": encoder.dim,
            "archive_root": root,  # payload `path`s are relative to it (search montages read images)
            "ingest_token": uuid.uuid4().hex,  # ties ledgers to this generation of the collection
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        store.create_collection(name, encoder.dim, meta)  # a no-op when it appeared meanwhile
    meta = store.collection_meta(name)
    check_model(meta, name, encoder.model_id, encoder.dim)
    if root is not None and meta.get("archive_root") not in (None, root):
        log.warning(
            "collection %r was created from archive %s; paths of %s are stored relative to "
            "their own root, and montages resolve them against %s",
            name, meta.get("archive_root"), root, meta.get("archive_root"),
        )
    return meta


def server_options(cfg: IngestConfig):
    """The store options for ``cfg``'s collection layout; None when none is given."""
    if cfg.shards is None and cfg.replication_factor is None and cfg.write_consistency is None:
        return None
    from regionmir.store.server import ServerOptions

    return ServerOptions(shard_number=cfg.shards, replication_factor=cfg.replication_factor,
                         write_consistency_factor=cfg.write_consistency)


def _model_dir(model: Path | None) -> Path:
    model = Path(model) if model else config.default_model_dir()
    return model if model.is_dir() else model.parent


def run_ingest(
    cfg: IngestConfig,
    on_progress: Callable[[IngestSummary, int], None] | None = None,
    source=None,
) -> IngestSummary:
    """Ingest ``cfg.archive`` into ``cfg.collection``; return the counts.

    ``on_progress(summary, total)`` is called after each batch and each skipped image.
    ``source`` (a :mod:`regionmir.pacs.source` object) replaces the walk of ``cfg.archive``
    (which then only holds scene graphs): its ``plan`` lists the images, ``feed`` puts each on
    disk before it is decoded, and ``release`` is told which are in the ledger or the report.

    Raises:
        CollectionMismatchError: the collection belongs to another model.
        StoreLockedError: another process ingests the same shard with this $REGIONMIR_HOME.
        ModelError, StoreError, AnnotationError: from loading the model, store or archive
            (StoreError too for --shards/--replication-factor/--write-consistency on the
            embedded store).
    """
    from regionmir.inference.encoder import load_encoder
    from regionmir.store import open_store

    archive = Archive(cfg.archive)
    encoder = load_encoder(cfg.model)
    url = cfg.qdrant_url
    store = open_store(url, cfg.api_key, path=None if url else config.default_store_dir(),
                       options=server_options(cfg))
    try:
        meta = ensure_collection(store, cfg.collection, encoder, archive.root if source is None else None)
        ledger = Ledger(ledger_path(store.location, cfg.collection, cfg.shard),
                        str(meta.get("ingest_token", "")),
                        others=ledger_family(store.location, cfg.collection))
        try:
            return _run(cfg, archive, encoder, store, ledger, on_progress, source)
        finally:
            ledger.close()
    finally:
        store.close()


def _run(cfg, archive, encoder, store, ledger, on_progress, source=None) -> IngestSummary:
    tasks, skipped = source.plan(cfg.shard, ledger.done) if source else plan(archive, cfg.shard, ledger.done)
    release = source.release if source else (lambda tasks: None)
    report_path = Path(cfg.report) if cfg.report else default_report_path(cfg.collection)
    summary = IngestSummary(
        cfg.collection, store.location, encoder.model_id,
        images=len(tasks) + skipped, skipped=skipped, report=str(report_path),
    )
    total = len(tasks)
    report = Report(report_path)
    progress = on_progress or (lambda s, t: None)

    def on_skip(item: Skipped) -> None:
        setattr(summary, item.kind, getattr(summary, item.kind) + 1)
        report.write({"event": item.kind, "image_id": item.task.image_id, "path": mask_path(item.task.rel), "reason": item.reason})
        release([item.task])
        progress(summary, total)

    holders = dict(ledger.keys)  # entry of a point-id key -> (entry of its image, payload path)
    unindexed, index_every = 0, store.index_every(cfg.collection)  # regions since the last index build
    start = time.perf_counter()
    on_cpu = encoder.providers[0] == "CPUExecutionProvider"  # CPU: workers encode too; GPU: batched here
    preparer = Preparer(archive.root, encoder.spec, _model_dir(cfg.model),
                        encoder.path if on_cpu and cfg.workers > 0 else None)
    try:
        feed = source.feed(tasks, on_skip) if source else tasks
        for batch in batches(prepared_stream(preparer, feed, cfg.workers), cfg.batch_size, on_skip):
            batch, duplicates = split_duplicates(batch, holders)
            for p in batch:
                _report_notes(p, report, summary)
            if batch:
                embeddings = encode(encoder, batch, cfg.batch_size)  # (sum R, D)
                store.upsert(cfg.collection, to_points(batch, embeddings, encoder.model_id))
            ledger.mark([entry_of(p.task.rel) for p in batch] + [entry_of(d.task.rel) for d, _ in duplicates],
                        {entry_of(p.task.rel): (entry_of(p.key), p.fields["path"]) for p in batch})
            release([p.task for p in batch] + [d.task for d, _ in duplicates])
            for dup, first in duplicates:
                summary.duplicates += 1
                report.write(duplicate_record(dup, first))
            summary.ingested += len(batch)
            regions = sum(len(p.regions) for p in batch)
            summary.regions += regions
            unindexed += regions
            if index_every and unindexed >= index_every:  # bounded memory: one segment at a time
                t = time.perf_counter()
                store.build_index(cfg.collection)
                summary.index_seconds += time.perf_counter() - t
                unindexed = 0
            summary.seconds = time.perf_counter() - start
            progress(summary, total)
        if summary.ingested or (ledger.done and not ledger.indexed):  # a kill may have skipped it
            t = time.perf_counter()
            store.build_index(cfg.collection)
            ledger.mark_indexed()
            summary.index_seconds += time.perf_counter() - t
        summary.seconds = time.perf_counter() - start
        report.write({"event": "summary", **summary.as_dict()})
    finally:
        report.close()
    log.info("ingest %s: %s", cfg.collection, summary.as_dict())
    return summary


def split_duplicates(batch: list[Prepared], holders: dict[str, tuple[str, str]]
                     ) -> tuple[list[Prepared], list[tuple[Prepared, str]]]:
    """``(to store, [(duplicate, shown path of the image that keeps the points)])``.

    An image whose point-id key (SOPInstanceUID) another image already holds is a duplicate:
    the first image (in archive order, or from an earlier run) keeps its points. ``holders``
    maps ledger entries of keys to ``(entry of the image, its payload path)``: the ledger's,
    updated here with the images kept, so duplicates within one batch are caught too.
    """
    keep, duplicates = [], []
    for p in batch:
        key, me = entry_of(p.key), entry_of(p.task.rel)
        holder = holders.get(key)
        if holder is not None and holder[0] != me:
            duplicates.append((p, holder[1]))
            continue
        holders[key] = (me, p.fields["path"])
        keep.append(p)
    return keep, duplicates


def duplicate_record(dup: Prepared, first_path: str) -> dict:
    """The report line of a duplicate: both paths as payloads show them, never the UID itself."""
    return {
        "event": "duplicate", "image_id": dup.task.image_id, "path": dup.fields["path"],
        "duplicate_of": first_path,
        "reason": "same SOPInstanceUID as an image already stored; that image keeps its points "
                  "and this file was not stored",
    }


def _report_notes(p: Prepared, report: Report, summary: IngestSummary) -> None:
    """Write what the worker noticed about an ingested image (dropped boxes, localizer fallback)."""
    if p.notes:
        summary.warnings += 1
        report.write({"event": "warning", "image_id": p.task.image_id, "path": mask_path(p.task.rel),
                      "reason": "; ".join(p.notes)})
