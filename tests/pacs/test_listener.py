"""`regionmir listen` (the installed console script) fed by a pynetdicom C-STORE client, as a PACS would.

The points must equal those of the folder ingest of the same files; a kill -9 mid-transfer
followed by a restart and a resend must end with every image once: nothing acknowledged lost.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pydicom
import pytest
from helpers.orthanc import free_port
from helpers.pacs import (
    AET,
    CLI,
    Listen,
    assert_same_as_folder,
    bad_instances,
    bare_copy,
    env_for,
    model_with_localizer,
    send,
    store_points,
)

from regionmir.archive import Archive
from regionmir.pacs.dicomweb import InstanceRef
from regionmir.pacs.spool import Spool


@pytest.fixture(scope="module")
def setup(tiny_archive, tiny_model, tiny_localizer, tmp_path_factory):
    """A model with a localizer, the bare files, bad instances, and the folder ingest to compare with."""
    tmp = tmp_path_factory.mktemp("listen")
    model = model_with_localizer(tiny_model, tiny_localizer, tmp / "model")
    folder = bare_copy(tiny_archive, tmp / "folder")
    home = tmp / "home-folder"
    r = subprocess.run([CLI, "ingest", str(folder), "--model", str(model), "--json", "--workers", "0"],
                       env=env_for(home), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return {"model": model, "folder": folder, "folder_home": home, "bad": bad_instances(tiny_archive, tmp / "bad"),
            "files": Archive(folder).dicom_paths()}


def test_echo_and_stored_images_equal_the_folder_ingest(setup, tmp_path):
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    home, port = tmp_path / "home", free_port()
    listen = Listen(home, setup["model"], port)
    try:
        ae = AE(ae_title="ECHOSCU")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", port, ae_title=AET)
        assert assoc.send_c_echo().Status == 0
        assoc.release()
        statuses = send(port, [*setup["files"], *setup["bad"].values()])
        sop = {k: str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for k, p in setup["bad"].items()}
        assert statuses.pop(sop["sr"]) == 0x0122  # refused politely: not a CR/DX image
        assert set(statuses.values()) == {0}  # RGB, truncated and NaN DX are accepted, then reported
        events = listen.wait_ingested(len(setup["files"]) + 3)
    finally:
        err = listen.stop()
    assert listen.proc.returncode == 0, err
    assert sum(e["failed"] for e in events) == 3
    report_ids = set()
    for e in events:
        for line in Path(e["report"]).read_text().splitlines():
            record = json.loads(line)
            if record["event"] == "failed":
                report_ids.add(record["image_id"])
    assert report_ids == {sop["rgb"], sop["truncated"], sop["nan"]}  # the listener outlived the NaN film
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in setup["files"]]
    private = {str(h.get(k)) for h in headers for k in ("PatientName", "PatientID", "PatientBirthDate")}
    logged = err + "".join(Path(e["report"]).read_text() for e in events)
    assert "INFO" in err and not [v for v in private if v in logged]  # the verbose log names no patient
    assert_same_as_folder(store_points(setup["folder_home"]), store_points(home))
    assert not list((home / "spool").rglob("*.dcm"))  # everything left the spool


def test_kill_9_mid_transfer_then_restart_and_resend_loses_nothing_and_duplicates_nothing(setup, tmp_path):
    home, port = tmp_path / "home", free_port()
    files = setup["files"]
    listen = Listen(home, setup["model"], port, batch_seconds=3600)  # receive, never ingest: all in the spool
    acked: dict[str, int] = {}
    sender = threading.Thread(target=lambda: acked.update(send(port, files)), daemon=True)
    sender.start()
    spool = home / "spool" / f"listen-{AET}"
    deadline = time.monotonic() + 30
    while len(list(spool.rglob("*.dcm"))) < len(files) // 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    listen.proc.send_signal(signal.SIGKILL)  # mid-transfer
    listen.proc.wait(30)
    sender.join(30)
    acknowledged = {s for s, status in acked.items() if status == 0}
    assert 0 < len(acknowledged) < len(files)  # killed mid-transfer
    spooled = {p.stem for p in spool.rglob("*.dcm")}
    assert acknowledged <= spooled  # every acknowledged image is on disk

    listen = Listen(home, setup["model"], port)  # restart: ingests the spool first
    try:
        listen.wait_ingested(len(spooled))
        assert acknowledged <= {p["sop_uid"] for p in store_points(home).values()}  # the listener idles now
        resent = send(port, files)  # the sender retries everything
        assert set(resent.values()) == {0}
        listen.wait_ingested(len(files))
    finally:
        listen.stop()
    points = store_points(home)
    folder = store_points(setup["folder_home"])
    assert_same_as_folder(folder, points)  # every image, each region once: no gaps, no duplicates
    assert len(points) == len(folder)


@pytest.mark.parametrize("background", [False, True], ids=["foreground", "background-job"])
def test_ctrl_c_ingests_what_was_received_then_exits_0(setup, tmp_path, background):
    home, port = tmp_path / "home", free_port()
    listen = Listen(home, setup["model"], port, batch_seconds=3600,  # no pass before the Ctrl-C
                    sigint_ignored=background)
    assert set(send(port, setup["files"][:4]).values()) == {0}
    err = listen.stop(signal.SIGINT)
    assert listen.proc.returncode == 0, err
    sops = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in setup["files"][:4]}
    assert {p["sop_uid"] for p in store_points(home).values()} == sops


def test_spool_put_is_complete_or_absent_and_refuses_unsafe_uids(tmp_path):
    spool = Spool(tmp_path / "spool")
    ref = InstanceRef("1.2.3", "1.2.3.4", "1.2.3.4.5")
    path = spool.put(ref, b"DICM-bytes")
    assert path == tmp_path / "spool" / "1.2.3" / "1.2.3.4" / "1.2.3.4.5.dcm" and path.read_bytes() == b"DICM-bytes"
    assert spool.pending() == [(path, ref)]
    (path.parent / ".x.dcm.123.part").write_bytes(b"half")  # a write cut by kill -9
    assert spool.pending() == [(path, ref)] and spool.clear_partial() == 1
    spool.remove([path])
    assert spool.pending() == [] and not (tmp_path / "spool" / "1.2.3").exists()
    from regionmir.errors import PacsError

    with pytest.raises(PacsError, match="malformed UIDs"):
        spool.put(InstanceRef("1.2", "../../etc", "1.2.3"), b"x")


def test_a_busy_store_delays_an_ingest_pass_and_loses_nothing(setup, tmp_path):
    from regionmir.store import open_store

    home, port, files = tmp_path / "home", free_port(), setup["files"][:4]
    listen = Listen(home, setup["model"], port)
    try:
        send(port, files[:2])
        listen.wait_ingested(2)
        held = open_store(path=home / "store")  # as a `regionmir search` would, for a while
        try:
            assert held.count("regions") == 2 * 29  # loads (and so locks) the collection
            assert set(send(port, files[2:]).values()) == {0}
            time.sleep(2)  # several passes find the store busy
            assert listen.lines.empty()
        finally:
            held.close()
        listen.wait_ingested(2)
    finally:
        err = listen.stop()
    assert listen.proc.returncode == 0 and "store busy" in err
    sops = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
    assert {p["sop_uid"] for p in store_points(home).values()} == sops


def test_only_the_allowed_calling_ae_titles_may_associate(setup, tmp_path):
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    home, port = tmp_path / "home", free_port()
    listen = Listen(home, setup["model"], port, extra=["--calling-ae", "PACS1"])
    try:
        for calling, ok in (("STRANGER", False), ("PACS1", True)):
            ae = AE(ae_title=calling)
            ae.add_requested_context(Verification)
            assoc = ae.associate("127.0.0.1", port, ae_title=AET)
            assert assoc.is_established is ok and assoc.is_rejected is not ok
            if ok:
                assert assoc.send_c_echo().Status == 0
                assoc.release()
        ae = AE(ae_title="PACS1")
        ae.add_requested_context(Verification)
        assert ae.associate("127.0.0.1", port, ae_title="SOMEONE_ELSE").is_rejected  # must call us by our title
    finally:
        listen.stop()


def test_a_busy_port_is_one_line_error(setup, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([CLI, "listen", "--port", str(port), "--host", "127.0.0.1", "--model", str(setup["model"])],
                           env=env_for(tmp_path / "home"), capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "pick a free port with --port" in r.stderr and "Traceback" not in r.stderr


if os.name != "posix":  # kill -9 and fsync'd folders are POSIX
    pytestmark = pytest.mark.skip(reason="POSIX only")
