"""The DICOM listener: a C-STORE SCP (pynetdicom) that spools CR/DX images durably and ingests them in batches.

A C-STORE is answered with success only after the file is fsync'd into the spool
(:class:`~regionmir.pacs.spool.Spool`); C-ECHO is answered; other SOP classes get status
0x0122 (SOP class not supported) with a comment. A background thread ingests the spool every
``batch_seconds`` through the normal ingest (same point ids, same ledger, same report), and
removes files once they are in the ledger or the report. On start the spool left by an
earlier run (Ctrl-C, kill -9, power cut) is ingested first: nothing acknowledged is lost, and
the ledger keeps a resent image from being stored twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from regionmir import config
from regionmir.errors import StoreLockedError
from regionmir.pacs.dicomweb import InstanceRef, valid_uid
from regionmir.pacs.spool import Spool

log = logging.getLogger("regionmir")

# The storage SOP classes of chest radiographs; every other one is answered 0x0122.
IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.1": "CR Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
}
SUCCESS, OUT_OF_RESOURCES, NOT_SUPPORTED, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0x0122, 0xC000


@dataclass(frozen=True)
class ListenConfig:
    """What `regionmir listen` was asked to do."""

    port: int = 11112
    ae_title: str = "REGIONMIR"
    host: str = "0.0.0.0"  # a PACS sends from another machine
    spool: Path | None = None  # None: $REGIONMIR_HOME/spool/listen-<ae_title>
    batch_seconds: float = 2.0  # ingest what arrived at most this often
    calling_aets: tuple[str, ...] = ()  # accept associations only from these AE titles; () all
    ingest: dict = field(default_factory=dict)  # IngestConfig fields: model, collection, qdrant_url, ...

    def spool_dir(self) -> Path:
        return Path(self.spool) if self.spool else config.home() / "spool" / f"listen-{self.ae_title}"


def _status(code: int, comment: str):
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]
    return ds


class Listener:
    """The SCP plus its ingest thread. ``on_batch(summary)`` is called after every ingest pass."""

    def __init__(self, cfg: ListenConfig, on_batch: Callable | None = None):
        self.cfg = cfg
        self.spool = Spool(cfg.spool_dir())
        self.on_batch = on_batch or (lambda summary: None)
        self.received = 0  # C-STOREs acknowledged with success
        self.refused = 0  # C-STOREs answered with a failure status
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server = None
        self.error: Exception | None = None  # what stopped the ingest thread, if anything

    # ------------------------------------------------------------------ DICOM side

    def handle_store(self, event):
        """EVT_C_STORE: spool the image durably, then answer success (or say why not)."""
        sop_class = str(event.request.AffectedSOPClassUID)
        if sop_class not in IMAGE_SOP_CLASSES:
            self.refused += 1
            return _status(NOT_SUPPORTED, "RegionMIR stores CR and DX images only")
        try:
            ds = event.dataset
            ref = InstanceRef(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
        except Exception:  # undecodable data set or missing UIDs
            self.refused += 1
            return _status(CANNOT_UNDERSTAND, "data set without Study/Series/SOP Instance UIDs")
        if not all(valid_uid(u) for u in (ref.study_uid, ref.series_uid, ref.sop_uid)):
            self.refused += 1
            return _status(CANNOT_UNDERSTAND, "malformed UID (not digits and dots)")
        try:
            self.spool.put(ref, event.encoded_dataset())
        except OSError as e:
            log.error("cannot spool an image (%s); answered out of resources", type(e).__name__)
            self.refused += 1
            return _status(OUT_OF_RESOURCES, "RegionMIR cannot write its spool")
        self.received += 1
        self._wake.set()
        return SUCCESS

    def handle_echo(self, event):
        """EVT_C_ECHO: verification succeeds while the listener runs."""
        return SUCCESS

    def start(self) -> None:
        """Ingest what an earlier run left in the spool, and start accepting associations.

        Raises:
            PacsError: the port cannot be bound.
            ModelError: no usable encoder (checked now, not at the first image).
        """
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
        from pynetdicom.presentation import StoragePresentationContexts
        from pynetdicom.sop_class import Verification

        from regionmir.errors import PacsError
        from regionmir.inference.encoder import load_encoder

        load_encoder(self.cfg.ingest.get("model"))  # fail now, not after acknowledging images
        removed = self.spool.clear_partial()
        if removed:
            log.info("removed %d partial spool files of an interrupted run (never acknowledged)", removed)
        ae = AE(ae_title=self.cfg.ae_title)
        ae.require_called_aet = True
        if self.cfg.calling_aets:
            ae.require_calling_aet = list(self.cfg.calling_aets)
        for cx in StoragePresentationContexts:  # accept all, answer non-images with 0x0122
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        handlers = [(evt.EVT_C_STORE, self.handle_store), (evt.EVT_C_ECHO, self.handle_echo)]
        self._thread = threading.Thread(target=self._ingest_loop, name="regionmir-ingest", daemon=True)
        self._thread.start()  # first pass: what the spool holds from before
        try:
            self._server = ae.start_server((self.cfg.host, self.cfg.port), block=False, evt_handlers=handlers)
        except OSError as e:
            self.stop(drain=False)
            raise PacsError(
                f"Cannot listen on {self.cfg.host}:{self.cfg.port} ({e.strerror}); pick a free port with --port."
            ) from None

    def stop(self, drain: bool = True) -> None:
        """Stop accepting; with ``drain``, ingest what was received before returning."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if drain and self.error is None and self.spool.pending():
            self.ingest_pending()

    # ------------------------------------------------------------------ ingest side

    def ingest_pending(self):
        """One ingest pass over the spool; returns its IngestSummary."""
        from regionmir.ingest.runner import IngestConfig, run_ingest
        from regionmir.pacs.source import SpoolSource

        cfg = IngestConfig(**self.cfg.ingest)
        summary = run_ingest(cfg, source=SpoolSource(self.spool))
        self.on_batch(summary)
        return summary

    def _ingest_loop(self) -> None:
        first = True
        while not self._stop.is_set():
            if not first:
                self._wake.wait()
                self._stop.wait(self.cfg.batch_seconds)  # gather a batch (returns early on stop)
                if self._stop.is_set():
                    return
            self._wake.clear()
            first = False
            if not self.spool.pending():
                continue
            try:
                self.ingest_pending()
            except StoreLockedError as e:  # a search or ingest holds the embedded store: retry later
                log.warning("store busy, the spool waits for the next pass: %s", e)
                self._wake.set()
            except Exception as e:  # noqa: BLE001 - the spool keeps the images for the next start
                self.error = e
                log.error("ingest of the spool failed (%s); images stay spooled: %s", type(e).__name__, e)
                return

    def serve_forever(self) -> None:
        """Block until Ctrl-C (KeyboardInterrupt) or the ingest thread fails, then stop and drain."""
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(0.5)
        finally:
            self.stop(drain=self.error is None)
