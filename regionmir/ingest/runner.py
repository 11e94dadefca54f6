"""Ingest runner: a source's images -> the stages of :mod:`regionmir.ingest.stages` -> a store.

``run_ingest`` opens the store and the collection (refusing one filled by another model),
plans what the ledger does not have, streams it through decode + crop workers, encodes whole
images in batches, upserts, records them in the ledger, and builds the index every segment
and at the end. A kill at any moment loses at most the batch in flight; a rerun redoes it.
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
from regionmir.errors import CollectionMismatchError, ModelError, RegionMIRError
from regionmir.ingest.ledger import Ledger, ledger_family, ledger_path
from regionmir.ingest.report import Report, default_report_path
from regionmir.ingest.sources import ArchiveSource, Source
from regionmir.ingest.stages import (
    Prepared,
    Preparer,
    Skipped,
    batches,
    encode,
    to_points,
)
from regionmir.ingest.workers import prepared_stream
from regionmir.store.collection import check_model

log = logging.getLogger("regionmir")


@dataclass(frozen=True)
class IngestConfig:
    """What `regionmir ingest` was asked to do."""

    archive: Path | None = None  # archive folder; None when run_ingest is given another source
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
    # a new collection stores payload paths and image ids only as salted hashes (no folder or
    # file name at all); a collection made so keeps doing it for every later ingest
    hash_paths: bool = False


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


def ensure_collection(store, name: str, encoder, archive_root: Path | None, hash_paths: bool = False) -> dict:
    """The stored meta of collection ``name``, created for ``encoder`` when absent.

    Creation is idempotent: when another worker creates the collection between our check and
    our create, the store treats "already exists" as success, and the meta (with the winner's
    ``ingest_token``) is read back from the store, never taken from our own attempt.
    ``hash_paths`` is recorded in a new collection's meta (search hashes a query's name the same
    way to find it); an existing collection keeps the way it was made.

    Raises:
        CollectionMismatchError: the collection exists and belongs to another model, or
            ``hash_paths`` is asked of one that holds plain paths.
    """
    root = None if archive_root is None else str(Path(archive_root).resolve())  # None: a PACS source
    if name in store.collections():
        meta = store.collection_meta(name)
        check_model(meta, name, encoder.model_id, encoder.dim)
        _check_hash_paths(meta, name, hash_paths)
    else:
        meta = {
            "model_id": encoder.model_id,
            "archive_root": root,  # payload `path`s are relative to it (search montages read images)
            "ingest_token": uuid.uuid4().hex,  # ties ledgers to this generation of the collection
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **({"hash_paths": True} if hash_paths else {}),  # payload paths and image ids are salted hashes
        }
        # when another worker created it meanwhile: a no-op after the store's own check_model
        store.create_collection(name, encoder.dim, meta)
        meta = store.collection_meta(name)
    if root is not None and meta.get("archive_root") not in (None, root):
        log.warning(
            "collection %r was created from archive %s; paths of %s are stored relative to "
            "their own root, and montages resolve them against %s",
            name, meta.get("archive_root"), root, meta.get("archive_root"),
        )
    return meta


def _check_hash_paths(meta: dict, name: str, hash_paths: bool) -> None:
    """Refuse ``--hash-paths`` for a collection filled with (masked) paths: half of its images
    would keep their paths, and the ledger would skip them.

    Raises:
        CollectionMismatchError: with what to do instead.
    """
    if hash_paths and not meta.get("hash_paths"):
        raise CollectionMismatchError(
            f"Collection {name!r} was filled without --hash-paths: its payloads show paths (with the "
            "parts naming a patient masked). Ingest with --hash-paths into a new --collection, or "
            "drop --hash-paths to add to this one."
        )


def check_localizer(path: Path | None) -> None:
    """Load the model folder's localizer once, before any work: a broken file would otherwise
    fail every unannotated image, one by one, in the report.

    Raises:
        ModelError: the file cannot be loaded, with what to do about it.
    """
    if path is None:
        return
    from regionmir.inference.localizer import Localizer

    try:
        Localizer(path, device="cpu", threads=1)
    except ModelError as e:
        raise ModelError(
            f"{e} Replace {path} with a working localizer (train one with `regionmir "
            "train-localizer`, or copy the one of the model's release), or remove it to ingest "
            "annotated images only."
        ) from None


def server_options(cfg: IngestConfig):
    """The store options for ``cfg``'s collection layout; None when none is given."""
    if cfg.shards is None and cfg.replication_factor is None and cfg.write_consistency is None:
        return None
    from regionmir.store.server import ServerOptions

    return ServerOptions(shard_number=cfg.shards, replication_factor=cfg.replication_factor,
                         write_consistency_factor=cfg.write_consistency)


def run_ingest(
    cfg: IngestConfig,
    on_progress: Callable[[IngestSummary, int], None] | None = None,
    source: Source | None = None,
) -> IngestSummary:
    """Ingest ``source`` (default: the archive folder ``cfg.archive``) into ``cfg.collection``.

    ``on_progress(summary, total)`` is called after each batch and each skipped image. A
    ``source`` given (a PACS: :mod:`regionmir.pacs.source`) is closed by the caller.

    Raises:
        CollectionMismatchError: the collection belongs to another model.
        StoreLockedError: another process ingests the same shard with this $REGIONMIR_HOME.
        ModelError, StoreError, AnnotationError: from loading the model, store or archive
            (StoreError too for --shards/--replication-factor/--write-consistency on the
            embedded store).
    """
    from regionmir.inference.folder import ModelFolder
    from regionmir.store import open_store

    if source is None:
        if cfg.archive is None:
            raise ValueError("run_ingest needs cfg.archive (an archive folder) or a source")
        source = ArchiveSource(Archive(cfg.archive))
    folder = ModelFolder(cfg.model)
    encoder = folder.load_encoder()
    check_localizer(folder.localizer_file)
    url = cfg.qdrant_url
    store = open_store(url, cfg.api_key, path=None if url else config.default_store_dir(),
                       options=server_options(cfg))
    try:
        meta = ensure_collection(store, cfg.collection, encoder, source.archive_root, cfg.hash_paths)
        ledger = Ledger(ledger_path(store.location, cfg.collection, cfg.shard),
                        str(meta.get("ingest_token", "")),
                        others=ledger_family(store.location, cfg.collection))
        try:
            preparer = _preparer(cfg, source, encoder, folder.localizer_file, bool(meta.get("hash_paths")))
            return _run(cfg, source, encoder, store, ledger, preparer, on_progress or (lambda s, t: None))
        finally:
            ledger.close()
    finally:
        store.close()


class Indexer:
    """Builds a collection's HNSW index every ``every`` regions (one segment) and at the end, timed."""

    def __init__(self, store, collection: str, summary: IngestSummary):
        self.store, self.collection, self.summary = store, collection, summary
        self.every = store.index_every(collection)  # None: only at the end
        self.pending = 0  # regions upserted since the last build

    def added(self, regions: int) -> None:
        """``regions`` were upserted: build when a segment is full (memory stays bounded)."""
        self.pending += regions
        if self.every and self.pending >= self.every:
            self.build()

    def build(self) -> None:
        t = time.perf_counter()
        self.store.build_index(self.collection)
        self.summary.index_seconds += time.perf_counter() - t
        self.pending = 0


def _run(cfg, source: Source, encoder, store, ledger: Ledger, preparer: Preparer, progress) -> IngestSummary:
    repair = ledger.reconcile(store, cfg.collection)  # images whose points the store lost: redone
    tasks, skipped = source.plan(cfg.shard, ledger)
    report = Report(Path(cfg.report) if cfg.report else default_report_path(cfg.collection))
    if repair:
        report.write(repair)
    summary = IngestSummary(cfg.collection, store.location, encoder.model_id, images=len(tasks) + skipped,
                            skipped=skipped, report=str(report.path))
    indexer = Indexer(store, cfg.collection, summary)
    start = time.perf_counter()  # planning (a folder walk, a QIDO search) is not ingest time

    def on_skip(item: Skipped) -> None:
        setattr(summary, item.kind, getattr(summary, item.kind) + 1)
        path, image_id = preparer.shown(item.task, ())  # when the item has none: nothing read
        report.write({"event": item.kind, "image_id": item.image_id or image_id,
                      "path": item.path or path, "reason": item.reason})
        source.release([item.task])
        progress(summary, len(tasks))

    try:
        for batch in batches(prepared_stream(preparer, source.feed(tasks, on_skip), cfg.workers),
                             cfg.batch_size, on_skip):
            stored, duplicates = split_duplicates(batch, ledger)
            if stored:
                store.upsert(cfg.collection, to_points(stored, encode(encoder, stored, cfg.batch_size), encoder.model_id))
            ledger.mark(p.task for p in batch)  # duplicates too: they are reported, never stored
            source.release(p.task for p in batch)
            _tally(stored, duplicates, report, summary)
            indexer.added(sum(len(p.regions) for p in stored))
            summary.seconds = time.perf_counter() - start
            progress(summary, len(tasks))
        if summary.ingested or (ledger.done and not ledger.indexed):  # a kill may have skipped it
            indexer.build()
            ledger.mark_indexed()
        summary.seconds = time.perf_counter() - start
        report.write({"event": "summary", **summary.as_dict()})
    finally:
        report.close()
    log.info("ingest %s: %s", cfg.collection, summary.as_dict())
    if report.error is not None:  # told once the points are stored, indexed and ledgered
        raise RegionMIRError(report.unwritten(summary))
    return summary


def _preparer(cfg: IngestConfig, source: Source, encoder, localizer: Path | None, hash_paths: bool) -> Preparer:
    """The workers' decode + crop stage; on a CPU the workers encode too (on a GPU, batched here)."""
    on_cpu = encoder.providers[0] == "CPUExecutionProvider"
    return Preparer(source.annotations, encoder.spec, localizer, encoder.path if on_cpu and cfg.workers > 0 else None,
                    hash_paths)


def split_duplicates(batch: list[Prepared], ledger: Ledger) -> tuple[list[Prepared], list[tuple[Prepared, str]]]:
    """``(to store, [(duplicate, shown path of the image that keeps the points)])``.

    An image whose point-id key (SOPInstanceUID) another image already holds is a duplicate:
    the first image (in archive order, or from an earlier run) keeps its points
    (:meth:`Ledger.claim`); duplicates within one batch are caught too.
    """
    keep, duplicates = [], []
    for p in batch:
        first = ledger.claim(p.task, p.key, p.fields["path"], len(p.regions), p.fields["image_id"])
        if first is None:
            keep.append(p)
        else:
            duplicates.append((p, first))
    return keep, duplicates


def _tally(stored: list[Prepared], duplicates: list[tuple[Prepared, str]], report: Report,
           summary: IngestSummary) -> None:
    """Count a batch in ``summary``; report its warnings and duplicates."""
    for p in stored:
        if p.notes:  # dropped boxes, localizer fallback
            summary.warnings += 1
            report.write({"event": "warning", "image_id": p.fields["image_id"], "path": p.fields["path"],
                          "reason": "; ".join(p.notes)})
    for dup, first in duplicates:
        report.write(duplicate_record(dup, first))
    summary.duplicates += len(duplicates)
    summary.ingested += len(stored)
    summary.regions += sum(len(p.regions) for p in stored)


def duplicate_record(dup: Prepared, first_path: str) -> dict:
    """The report line of a duplicate: both paths as payloads show them, never the UID itself."""
    return {
        "event": "duplicate", "image_id": dup.fields["image_id"], "path": dup.fields["path"],
        "duplicate_of": first_path,
        "reason": "same SOPInstanceUID as an image already stored; that image keeps its points "
                  "and this file was not stored",
    }
