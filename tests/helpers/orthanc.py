"""A real Orthanc (the Debian package) started as a plain process on loopback ports, for tests and bench/.

``apt-get install -y orthanc orthanc-dicomweb`` provides ``/usr/sbin/Orthanc`` and the DICOMweb
plugin; :func:`orthanc_missing` says what is missing where they are not installed.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

PLUGIN_DIRS = ("/usr/share/orthanc/plugins", "/usr/lib/orthanc", "/usr/local/share/orthanc/plugins")
AE_TITLE = "ORTHANC"


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc",) if Path(p).is_file()), None)


def dicomweb_plugin() -> Path | None:
    for folder in PLUGIN_DIRS:
        found = sorted(Path(folder).glob("libOrthancDicomWeb.so*")) if Path(folder).is_dir() else []
        if found:
            return found[0]
    return None


def orthanc_missing() -> str | None:
    """Why Orthanc cannot be started here, or None when it can."""
    if orthanc_binary() is None:
        return "needs Orthanc: apt-get install -y orthanc orthanc-dicomweb"
    if dicomweb_plugin() is None:
        return "needs Orthanc's DICOMweb plugin: apt-get install -y orthanc-dicomweb"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Orthanc:
    """A running Orthanc: REST at ``url``, DICOMweb at ``dicomweb``, DICOM at 127.0.0.1:``dicom_port``."""

    url: str
    dicomweb: str
    dicom_port: int
    auth: tuple[str, str] | None = None  # HTTP basic user and password, when it asks for them
    ae_title: str = AE_TITLE

    def upload(self, path: Path) -> dict:
        """Store one DICOM file through the REST API; returns Orthanc's answer."""
        r = requests.post(f"{self.url}/instances", data=Path(path).read_bytes(), auth=self.auth, timeout=30)
        r.raise_for_status()
        return r.json()

    def clear(self) -> None:
        """Delete every patient (and so every instance)."""
        for pid in requests.get(f"{self.url}/patients", auth=self.auth, timeout=30).json():
            requests.delete(f"{self.url}/patients/{pid}", auth=self.auth, timeout=30).raise_for_status()


@contextmanager
def running_orthanc(folder: Path, auth: tuple[str, str] | None = None) -> Iterator[Orthanc]:
    """Start Orthanc with storage and config under ``folder`` (HTTP basic ``auth`` if given); stop it on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    http, dicom = free_port(), free_port()
    config = {
        "Name": "regionmir-test", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "HttpPort": http, "DicomPort": dicom, "DicomAet": AE_TITLE, "RemoteAccessAllowed": False,
        "AuthenticationEnabled": auth is not None, "RegisteredUsers": dict([auth]) if auth else {},
        "HttpServerEnabled": True, "DicomServerEnabled": True,
        "Plugins": [str(dicomweb_plugin())], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "StorageCompression": False, "OverwriteInstances": True,
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = (folder / "orthanc.log").open("w")
    proc = subprocess.Popen([orthanc_binary(), str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{url}/system", auth=auth, timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not start; see {folder / 'orthanc.log'}")
            time.sleep(0.1)
        yield Orthanc(url, f"{url}/dicom-web", dicom, auth)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
