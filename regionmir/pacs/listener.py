"""The DICOM listener: a C-STORE SCP (pynetdicom) that spools CR/DX images durably and ingests them in batches.

A C-STORE is answered with success only after the file is fsync'd into the spool
(:class:`~regionmir.pacs.spool.Spool`); C-ECHO is answered; other SOP classes get status
0x0122 (SOP class not supported) with a comment. A background thread ingests the spool every
``batch_seconds`` through the normal ingest (same point ids, same ledger, same report), and
removes files once they are in the ledger or the report. On start the spool left by an
earlier run (Ctrl-C, kill -9, power cut) is ingested first: nothing acknowledged is lost, and
the ledger keeps a resent image from being stored twice. Every connection passes
:class:`~regionmir.pacs.gate.PeerGate` first (allowed addresses, connections per peer).
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
TOTAL_CONNECTIONS = 32  # connections all peers together may hold at once
# seconds: a sender must send its A-ASSOCIATE-RQ (or answer a release) this soon after connecting,
# and an association idle this long is aborted; pynetdicom's 30 / 60 s let idle sockets hold places
ACSE_TIMEOUT, NETWORK_TIMEOUT, DIMSE_TIMEOUT = 10, 30, 30


def check_ae_title(title: str) -> str:
    """``title`` if it is a usable AE title for the listener, which also names its spool folder.

    1 to 16 printable ASCII characters without a backslash (DICOM), and without a path separator,
    ``..`` or spaces at either end (the spool folder ``listen-<AE>`` must stay in the spool folder).

    Raises:
        PacsError: the title is not usable; the message says why.
    """
    from regionmir.errors import PacsError

    problem = None
    if not 1 <= len(title) <= 16:
        problem = f"has {len(title)} characters; an AE title has 1 to 16"
    elif any(not " " <= c <= "~" for c in title):
        problem = "has a character that is not printable ASCII"
    elif any(c in title for c in "\\/") or ".." in title:
        problem = "has a backslash, a slash or '..'"
    elif title != title.strip():
        problem = "starts or ends with a space"
    if problem:
        raise PacsError(f"AE title {title!r} {problem}; use letters, digits and _ (e.g. REGIONMIR).")
    return title


@dataclass(frozen=True)
class ListenConfig:
    """What `regionmir listen` was asked to do."""

    port: int = 11112
    ae_title: str = "REGIONMIR"
    host: str = "127.0.0.1"  # this machine only; a PACS elsewhere needs --host 0.0.0.0 (and --allow-peer)
    spool: Path | None = None  # None: $REGIONMIR_HOME/spool/listen-<ae_title>
    batch_seconds: float = 2.0  # ingest what arrived at most this often
    calling_aets: tuple[str, ...] = ()  # accept associations only from these AE titles; () all
    allowed_peers: tuple[str, ...] = ()  # accept connections only from these IPs / CIDR blocks; () all
    per_peer: int = 8  # connections one peer address may hold at once
    ingest: dict = field(default_factory=dict)  # IngestConfig fields: model, collection, qdrant_url, ...

    def spool_dir(self) -> Path:
        return Path(self.spool) if self.spool else config.home() / "spool" / f"listen-{self.ae_title}"


def _allowed_peers(values: tuple[str, ...]) -> tuple:
    """The ``--allow-peer`` values as networks.

    Raises:
        PacsError: a value that is not an IP address or CIDR block.
    """
    from regionmir.errors import PacsError
    from regionmir.pacs.gate import parse_peer

    try:
        return tuple(parse_peer(v) for v in values)
    except ValueError as e:
        raise PacsError(f"--allow-peer: {e}") from None


def _bind_error(cfg: ListenConfig, e: OSError):
    """A PacsError naming the option to change: --host for an unknown or foreign address, else --port."""
    import errno
    import socket

    from regionmir.errors import PacsError

    where = f"Cannot listen on {cfg.host}:{cfg.port} ({e.strerror or type(e).__name__})"
    if isinstance(e, socket.gaierror) or e.errno == errno.EADDRNOTAVAIL:
        return PacsError(f"{where}; --host takes an address of this machine (127.0.0.1, or 0.0.0.0 for all).")
    return PacsError(f"{where}; pick a free port with --port.")


def _status(code: int, comment: str):
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]
    return ds


class Listener:
    """The SCP plus its ingest thread. ``on_batch(summary)`` is called after every ingest pass."""

    def __init__(self, cfg: ListenConfig, on_batch: Callable | None = None):
        check_ae_title(cfg.ae_title)  # before the spool folder named after it is made
        self.allowed = _allowed_peers(cfg.allowed_peers)
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
        except Exception:  # noqa: BLE001 - undecodable data set or missing UIDs
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
            PacsError: the address cannot be bound.
            ModelError: no usable encoder (checked now, not at the first image).
        """
        from regionmir.inference.encoder import load_encoder

        load_encoder(self.cfg.ingest.get("model"))  # fail now, not after acknowledging images
        removed = self.spool.clear_partial()
        if removed:
            log.info("removed %d partial spool files of an interrupted run (never acknowledged)", removed)
        ae = self._application_entity()
        self._thread = threading.Thread(target=self._ingest_loop, name="regionmir-ingest", daemon=True)
        self._thread.start()  # first pass: what the spool holds from before
        try:
            self._server = self._serve(ae)
        except OSError as e:
            self.stop(drain=False)
            raise _bind_error(self.cfg, e) from None

    def _application_entity(self):
        """The pynetdicom AE: our title, the calling titles allowed, short timeouts, every storage context."""
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES
        from pynetdicom.presentation import StoragePresentationContexts
        from pynetdicom.sop_class import Verification

        ae = AE(ae_title=self.cfg.ae_title)
        ae.require_called_aet = True
        if self.cfg.calling_aets:
            ae.require_calling_aet = list(self.cfg.calling_aets)
        ae.acse_timeout, ae.network_timeout, ae.dimse_timeout = ACSE_TIMEOUT, NETWORK_TIMEOUT, DIMSE_TIMEOUT
        ae.maximum_associations = 2 * TOTAL_CONNECTIONS  # the gate keeps the count; evicted ones end in ms
        for cx in StoragePresentationContexts:  # accept all, answer non-images with 0x0122
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        return ae

    def _serve(self, ae):
        """Bind and serve in a background thread, every connection passing the peer gate first."""
        from pynetdicom import evt

        from regionmir.pacs.gate import PeerGate, gated_server_class

        gate = PeerGate(self.allowed, self.cfg.per_peer, TOTAL_CONNECTIONS)
        handlers = [(evt.EVT_C_STORE, self.handle_store), (evt.EVT_C_ECHO, self.handle_echo)]
        server = ae.make_server((self.cfg.host, self.cfg.port), evt_handlers=handlers,
                                server_class=gated_server_class(gate))
        threading.Thread(target=server.serve_forever, name="regionmir-scp", daemon=True).start()
        ae._servers.append(server)  # as AE.start_server does: server.shutdown() removes it
        return server

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
