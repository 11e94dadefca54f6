"""Shared by the PACS tests: a folder ingest to compare with, points of a home's store, bad instances."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from regionmir.archive import Archive

SALT = "pacs-test-salt"
CLI = str(Path(sys.executable).parent / "regionmir")  # the installed console script
AET = "REGIONMIR"  # the AE title the tests give `regionmir listen`

# Fields naming where an image came from, which differ between a folder and a PACS (docs/pacs.md,
# "From a PACS"): the folder's file stem / MIMIC study folder / relative path against the PACS's
# SOP Instance UID / Study Instance UID / WADO-RS path. Every other payload field is the same.
SOURCE_FIELDS = ("image_id", "study_id", "path")


def env_for(home: Path) -> dict[str, str]:
    """Environment of a console-script subprocess using ``home`` and the shared salt."""
    env = {**os.environ, "REGIONMIR_HOME": str(home), "REGIONMIR_SALT": SALT, "QDRANT_URL": ""}
    for key in ("REGIONMIR_DICOMWEB_USER", "REGIONMIR_DICOMWEB_PASSWORD", "REGIONMIR_DICOMWEB_TOKEN"):
        env.pop(key, None)
    return env


def bare_copy(archive: Path, dst: Path) -> Path:
    """The DICOM files of ``archive`` alone (no scene graphs, splits or gold CSV): boxes come from the localizer."""
    for path in Archive(archive).dicom_paths():
        rel = Archive(archive).relative(path)
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, dst / rel)
    return dst


def model_with_localizer(tiny_model: Path, tiny_localizer: Path, dst: Path) -> Path:
    """A model folder holding the tiny encoder and the tiny localizer."""
    shutil.copytree(tiny_model, dst)
    shutil.copy(Path(tiny_localizer) / "localizer.onnx", dst / "localizer.onnx")
    return dst


def store_points(home: Path, name: str = "regions") -> dict[str, dict]:
    """Every point of collection ``name`` in the embedded store of ``home``: id -> payload."""
    return {i: p for i, (p, _) in _exact(home, name).items()}


def probe_scores(home: Path, name: str = "regions", probes: int = 3) -> dict[str, tuple[float, ...]]:
    """id -> cosine scores against fixed random probes: equal scores mean equal vectors (to float precision)."""
    rng = np.random.default_rng(0)
    out: dict[str, list[float]] = {}
    for _ in range(probes):
        for i, (_, score) in _exact(home, name, rng).items():
            out.setdefault(i, []).append(score)
    return {i: tuple(s) for i, s in out.items()}


def _exact(home: Path, name: str, rng: np.random.Generator | None = None) -> dict[str, tuple[dict, float]]:
    """id -> (payload, score) of every point, scored against a random probe (all ones without ``rng``)."""
    from regionmir.store import open_store

    store = open_store(path=Path(home) / "store")
    try:
        n = store.count(name)
        dim = int(store.collection_meta(name)["dim"])
        probe = rng.normal(size=dim).astype(np.float32) if rng is not None else np.ones(dim, np.float32)
        hits = store.search(name, probe, top_k=max(n, 1), exact=True)
        assert len(hits) == n
        return {h.id: (h.payload, h.score) for h in hits}
    finally:
        store.close()


def assert_same_as_folder(folder: dict[str, dict], pacs: dict[str, dict]) -> None:
    """``pacs`` points equal ``folder`` points: same ids, same payloads but for :data:`SOURCE_FIELDS`,
    and those as documented (image_id = SOP UID, study_id = Study UID, path = WADO-RS path)."""
    assert set(pacs) == set(folder) and folder
    for pid, p in pacs.items():
        f = folder[pid]
        assert {k: v for k, v in p.items() if k not in SOURCE_FIELDS} == {k: v for k, v in f.items() if k not in SOURCE_FIELDS}
        assert p["image_id"] == p["sop_uid"] and p["study_id"] == p["study_uid"]
        assert p["path"] == f"studies/{p['study_uid']}/series/{p['series_uid']}/instances/{p['sop_uid']}"


def uncompressed(archive: Path) -> Path:
    """A phantom DICOM of ``archive`` stored uncompressed (to derive bad instances from)."""
    for path in Archive(archive).dicom_paths():
        if pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian:
            return path
    raise AssertionError("the phantom archive has no uncompressed DICOM")


def bad_instances(archive: Path, out: Path) -> dict[str, Path]:
    """Instances that must be reported, not ingested: an SR, an RGB DX, a DX with truncated pixels,
    and a DX whose pixels decode to NaN (a NaN RescaleSlope: it once crashed every listener restart).

    Each sits in a DX study of its own, so a CR/DX search finds it. Returns kind -> file.
    """
    out.mkdir(parents=True, exist_ok=True)
    src = uncompressed(archive)
    files = {}
    for kind in ("sr", "rgb", "truncated", "nan"):
        ds = pydicom.dcmread(src)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.Modality = "DX"
        if kind == "sr":
            del ds.PixelData
            for key in ("Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
                        "SamplesPerPixel", "PhotometricInterpretation"):
                if key in ds:
                    delattr(ds, key)
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
        elif kind == "rgb":
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
            ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
            ds.PixelData = np.zeros((ds.Rows, ds.Columns, 3), np.uint8).tobytes()
        elif kind == "truncated":
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
            ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
        else:
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
            ds.RescaleSlope, ds.RescaleIntercept, ds.WindowCenter, ds.WindowWidth = "NaN", "0", "2000", "4000"
        files[kind] = out / f"{kind}.dcm"
        ds.save_as(files[kind], enforce_file_format=True)
    return files


class Listen:
    """`regionmir --verbose listen --json` in a subprocess; its JSON lines arrive on a queue (stderr: the log)."""

    def __init__(self, home: Path, model: Path, port: int, batch_seconds: float = 0.2, extra: list[str] = (),
                 sigint_ignored: bool = False, host: str | None = "127.0.0.1", prefix: list[str] = (),
                 file_size_limit: int | None = None):
        """``host`` None: the default bind address; ``prefix``: a command to run the listener under
        (strace); ``file_size_limit``: RLIMIT_FSIZE of the listener (writes past it fail, as on a full disk)."""
        where = ["--host", host] if host else []
        cmd = [*prefix, CLI, "--verbose", "listen", "--port", str(port), *where, "--ae-title", AET, "--model", str(model),
               "--json", "--batch-seconds", str(batch_seconds), *extra]

        def preexec() -> None:
            if sigint_ignored:  # started as a script's background job (`regionmir listen &`) inherits SIGINT ignored
                signal.signal(signal.SIGINT, signal.SIG_IGN)
            if file_size_limit is not None:
                import resource

                resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

        self.proc = subprocess.Popen(cmd, env=env_for(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=preexec)  # noqa: PLW1509 - async-signal-safe calls only
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.started = self.next_event(30)  # the "listening" line: host, port, spool
        assert self.started["event"] == "listening"

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def next_event(self, timeout: float = 30) -> dict:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            self.proc.kill()
            raise AssertionError(f"listen said nothing for {timeout} s: {self.proc.stderr.read()[-2000:]}") from None

    def wait_ingested(self, n: int, timeout: float = 60) -> list[dict]:
        """Ingest events until ``n`` images were ingested, reported or found already stored, in total."""
        events, done, deadline = [], 0, time.monotonic() + timeout
        while done < n:
            e = self.next_event(max(0.1, deadline - time.monotonic()))
            events.append(e)
            done += e["ingested"] + e["failed"] + e["unlabeled"] + e["skipped"]
        return events

    def stop(self, sig=signal.SIGTERM) -> str:
        self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=60)
        return err


def echo(port: int, source: str = "127.0.0.1", calling: str = "ECHOSCU") -> int | None:
    """C-ECHO status from a sender at address ``source`` (any 127.x.y.z on Linux), or None when no
    association was established."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=AET, bind_address=(source, 0))
    if not assoc.is_established:
        return None
    status = assoc.send_c_echo()
    assoc.release()
    return int(status.Status) if "Status" in status else None


def send(port: int, files: list[Path], stop_after: int | None = None) -> dict[str, int]:
    """C-STORE ``files`` in one association; SOP Instance UID -> status (missing: never answered)."""
    from pynetdicom import AE

    datasets = [pydicom.dcmread(p) for p in files]
    ae = AE(ae_title="STORESCU")
    for sop, syntax in {(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in datasets}:
        ae.add_requested_context(sop, syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title=AET)
    assert assoc.is_established
    out = {}
    try:
        for ds in datasets[:stop_after]:
            status = assoc.send_c_store(ds)
            if "Status" not in status:  # the association went away
                break
            out[str(ds.SOPInstanceUID)] = int(status.Status)
    finally:
        if assoc.is_established:
            assoc.release()
    return out
