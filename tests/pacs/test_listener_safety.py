"""`regionmir listen` under hostile or failing conditions: who may connect, what it refuses, and what a
success status promises (the file and its folder on disk), with real sockets, a real pynetdicom
sender, strace and a file-size limit standing in for a full disk.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from pathlib import Path

import pydicom
import pytest
from helpers.orthanc import free_port
from helpers.pacs import AET, Listen, echo, model_with_localizer, send, uncompressed
from pydicom.uid import generate_uid

from regionmir.archive import Archive
from regionmir.pacs.listener import ACSE_TIMEOUT

# storage SOP classes that share the CR/DX prefix 1.2.840.10008.5.1.4.1.1.1 but are not radiographs
NOT_RADIOGRAPHS = {
    "1.2.840.10008.5.1.4.1.1.12.1": "XA",
    "1.2.840.10008.5.1.4.1.1.128": "PET",
    "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF",
    "1.2.840.10008.5.1.4.1.1.11.1": "GSPS",
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR",
}


@pytest.fixture(scope="module")
def kit(tiny_archive, tiny_model, tiny_localizer, tmp_path_factory):
    """A model with a localizer, the phantom files, and one uncompressed file to derive others from."""
    tmp = tmp_path_factory.mktemp("listen-safety")
    return {"model": model_with_localizer(tiny_model, tiny_localizer, tmp / "model"),
            "files": Archive(tiny_archive).dicom_paths(), "source": uncompressed(tiny_archive), "tmp": tmp}


def as_sop_class(src: Path, sop_class: str, out: Path) -> Path:
    """A copy of ``src`` claiming SOP class ``sop_class``, with UIDs of its own."""
    ds = pydicom.dcmread(src)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.save_as(out, enforce_file_format=True)
    return out


def sop_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


# ----------------------------------------------------------------------------- what is accepted


def test_only_cr_and_dx_sop_classes_are_stored_the_rest_answered_0122(kit, tmp_path):
    """Exact set membership: XA, PET, PDF and GSPS share CR's UID prefix and must still be refused."""
    files = {name: as_sop_class(kit["source"], uid, tmp_path / f"{name}.dcm") for uid, name in NOT_RADIOGRAPHS.items()}
    cr = as_sop_class(kit["source"], "1.2.840.10008.5.1.4.1.1.1", tmp_path / "cr.dcm")
    listen = Listen(tmp_path / "home", kit["model"], free_port(), batch_seconds=3600)
    try:
        statuses = send(listen.started["port"], [*files.values(), cr])
    finally:
        listen.stop()
    assert {name: statuses[sop_uid(p)] for name, p in files.items()} == {name: 0x0122 for name in files}
    assert statuses[sop_uid(cr)] == 0


def test_resent_images_in_the_ledger_are_skipped_not_ingested_again(kit, tmp_path):
    """The ledger knows a spooled image by its WADO-RS path (all three UIDs): a resend is counted as
    already stored and leaves the spool without being decoded, encoded or upserted again."""
    files = kit["files"][:3]
    listen = Listen(tmp_path / "home", kit["model"], free_port())
    try:
        assert set(send(listen.started["port"], files).values()) == {0}
        first = listen.wait_ingested(len(files))
        assert set(send(listen.started["port"], files).values()) == {0}
        again = listen.wait_ingested(len(files))
    finally:
        listen.stop()
    assert sum(e["ingested"] for e in first) == len(files)
    assert (sum(e["ingested"] for e in again), sum(e["skipped"] for e in again)) == (0, len(files))
    assert not list((tmp_path / "home" / "spool").rglob("*.dcm"))


def test_the_spool_source_knows_done_images_by_all_three_uids(tmp_path):
    """What `plan` calls done: the ledger entry of the instance's WADO-RS path. The same SOP Instance
    UID in another series is not done (the ingest reports it as a duplicate instead of dropping it)."""
    from regionmir.ingest.ledger import Ledger
    from regionmir.ingest.stages import ImageTask
    from regionmir.pacs.dicomweb import InstanceRef
    from regionmir.pacs.source import SpoolSource
    from regionmir.pacs.spool import Spool

    spool = Spool(tmp_path / "spool")
    done, twin, new = (InstanceRef("1.2", "1.2.3", "1.2.3.4"), InstanceRef("1.2", "1.2.9", "1.2.3.4"),
                       InstanceRef("1.2", "1.2.3", "1.2.3.5"))
    paths = {ref: spool.put(ref, b"DICM") for ref in (done, twin, new)}
    ledger = Ledger(tmp_path / "ledger", "token")
    try:
        ledger.mark([ImageTask(paths[done], done.path, done.sop_uid)])
        todo, skipped = SpoolSource(spool).plan((0, 1), ledger)
    finally:
        ledger.close()
    assert skipped == 1 and sorted(t.rel for t in todo) == sorted([twin.path, new.path])
    assert not paths[done].exists() and paths[twin].exists()  # the done one left the spool


# ----------------------------------------------------------------------------- what success promises


def _done(lines: list[str], i: int) -> int:
    """Index of the line where the system call started at line ``i`` returned (strace -f splits
    a call another thread interrupts into ``<unfinished ...>`` and ``<... name resumed>``)."""
    if "<unfinished ...>" not in lines[i]:
        return i
    pid, name = lines[i].split()[0], lines[i].split()[1].split("(")[0]
    return next(j for j in range(i + 1, len(lines)) if lines[j].startswith(pid + " ") and f"<... {name} resumed>" in lines[j])


def _first(lines: list[str], start: int, wanted, what: str) -> int:
    """Index of the first line from ``start`` on that is ``wanted``."""
    found = next((i for i in range(start, len(lines)) if wanted(lines[i])), None)
    assert found is not None, f"no {what} in the listener's system calls"
    return found


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace to watch the listener's system calls")
def test_success_is_sent_only_after_the_file_and_its_folder_are_fsynced(kit, tmp_path):
    """The system calls of the real listener, in order: the partial file fsync'd, renamed into place,
    its folder fsync'd, and only then anything sent on the association's TCP socket."""
    home, port, log = tmp_path / "home", free_port(), tmp_path / "strace.log"
    strace = ["strace", "-f", "-qq", "-yy", "-e", "signal=none", "-o", str(log),
              "-e", "trace=fsync,fdatasync,rename,renameat,renameat2,sendto,sendmsg,write"]
    listen = Listen(home, kit["model"], port, batch_seconds=3600, prefix=strace)
    image = kit["files"][0]
    try:
        assert set(send(port, [image]).values()) == {0}
    finally:
        child = int(Path(f"/proc/{listen.proc.pid}/task/{listen.proc.pid}/children").read_text().split()[0])
        os.kill(child, signal.SIGTERM)  # the listener, not strace
        listen.proc.communicate(timeout=60)
    ds = pydicom.dcmread(image, stop_before_pixels=True)
    folder = home / "spool" / f"listen-{AET}" / str(ds.StudyInstanceUID) / str(ds.SeriesInstanceUID)
    lines = log.read_text().splitlines()
    part = _first(lines, 0, lambda x: x.split()[1].startswith("fsync(") and f".{ds.SOPInstanceUID}.dcm." in x,
                  "fsync of the partial file")
    moved = _first(lines, part, lambda x: "rename" in x and f'/{ds.SOPInstanceUID}.dcm"' in x, "rename into place")
    folder_synced = _first(lines, moved, lambda x: x.split()[1].startswith("fsync(") and f"<{folder}>" in x,
                           "fsync of the folder after the rename")
    acked = _first(lines, moved, lambda x: x.split()[1].startswith(("sendto(", "sendmsg(", "write(")) and "<TCP" in x,
                   "answer on the association")
    assert _done(lines, part) < moved < _done(lines, folder_synced) < acked


def test_a_failed_spool_write_is_answered_a700_and_leaves_no_partial_file(kit, tmp_path):
    """A write that does not fit (here: the listener's file-size limit, as on a full disk) is
    answered 0xA700 and its partial file removed at once, not at the next start."""
    home, port, image = tmp_path / "home", free_port(), kit["files"][0]
    listen = Listen(home, kit["model"], port, batch_seconds=3600, file_size_limit=image.stat().st_size // 4)
    try:
        assert list(send(port, [image]).values()) == [0xA700]
        spool = home / "spool" / f"listen-{AET}"
        assert [p.name for p in spool.rglob("*") if p.is_file()] == []  # no .part, while it runs
        assert not list(spool.iterdir())  # nor the folders made for it
        assert echo(port) == 0  # and it goes on serving
    finally:
        err = listen.stop()
    assert listen.proc.returncode == 0 and "cannot spool an image" in err


# ----------------------------------------------------------------------------- who may connect


def test_listen_binds_this_machine_only_by_default(kit, tmp_path):
    listen = Listen(tmp_path / "home", kit["model"], free_port(), host=None)
    try:
        assert listen.started["host"] == "127.0.0.1"
        outside = _non_loopback_address()
        if outside:  # this machine's own address on a network: nothing may answer there
            with pytest.raises(OSError):
                socket.create_connection((outside, listen.started["port"]), timeout=5).close()
        assert echo(listen.started["port"]) == 0
    finally:
        listen.stop()


def _non_loopback_address() -> str | None:
    """An address of this machine that is not loopback, or None (no network)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # UDP: picks the outgoing interface, sends nothing
        except OSError:
            return None
        address = s.getsockname()[0]
    return None if address.startswith("127.") else address


def test_only_allowed_peer_addresses_may_connect(kit, tmp_path):
    """--allow-peer by address and by CIDR block; AE titles alone authenticate nobody."""
    port = free_port()
    listen = Listen(tmp_path / "home", kit["model"], port, extra=["--allow-peer", "127.0.0.2",
                                                                  "--allow-peer", "127.0.1.0/24"])
    try:
        assert echo(port, source="127.0.0.1") is None
        assert echo(port, source="127.0.0.3", calling="PACS1") is None
        assert echo(port, source="127.0.0.2") == 0
        assert echo(port, source="127.0.1.77") == 0
    finally:
        err = listen.stop()
    assert "refused a connection from 127.0.0.1: not in --allow-peer" in err


def test_idle_connections_from_one_host_do_not_lock_senders_out(kit, tmp_path):
    """Twelve TCP connections that never send an A-ASSOCIATE-RQ (pynetdicom alone: ten associations
    for everyone, each idle one held 30 s) must not keep another host, or the same one, from a C-ECHO."""
    port = free_port()
    listen = Listen(tmp_path / "home", kit["model"], port)
    idle = [socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.1", 0)) for _ in range(12)]
    try:
        time.sleep(1)  # the listener has accepted them all (or closed those over the limit)
        for source in ("127.0.0.2", "127.0.0.1"):
            start = time.monotonic()
            assert echo(port, source=source) == 0, source
            assert time.monotonic() - start < ACSE_TIMEOUT  # served now, not after idle ones time out
        still_open = sum(_is_open(s) for s in idle)
        assert still_open <= 8  # the default --max-per-peer
    finally:
        for s in idle:
            s.close()
        listen.stop()


def _is_open(sock: socket.socket) -> bool:
    """Whether the listener still holds the other end of ``sock`` open."""
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:  # nothing to read, not closed
        return True
    except OSError:  # reset
        return False
