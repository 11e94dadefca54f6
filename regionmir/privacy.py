"""Patient privacy: pseudonyms (a salted hash, never the raw PatientID) and paths with patient folders masked."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from regionmir.config import home
from regionmir.errors import RegionMIRError


def salt(path: Path | None = None) -> bytes:
    """The installation's secret salt: ``$REGIONMIR_SALT``, else ``$REGIONMIR_HOME/salt``.

    The salt file is created on first use with mode 0600. Keep it with the store: the same
    patient gets the same pseudonym only under the same salt.
    """
    env = os.environ.get("REGIONMIR_SALT")
    if env:
        return env.encode()
    path = path or home() / "salt"
    if not path.exists():
        _create_salt(path)
    key = path.read_text().strip().encode()
    if not key:
        raise RegionMIRError(f"The salt file {path} is empty. Restore it from a backup of this "
                             "installation (pseudonyms depend on it) or delete it to start anew.")
    return key


def _create_salt(path: Path) -> None:
    """Write a new salt file with mode 0600, atomically: concurrent first uses agree on one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)  # fails if another process made the salt first: keep theirs
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            if not path.exists():
                os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def pseudonym(patient_id: str | None, key: bytes | None = None) -> str | None:
    """A stable 16-hex-digit pseudonym of ``patient_id`` under the salt (None stays None)."""
    if patient_id is None or str(patient_id).strip() == "":
        return None
    key = salt() if key is None else key
    digest = hmac.new(key, str(patient_id).strip().encode(), hashlib.sha256).hexdigest()
    return "pt-" + digest[:16]


_PATIENT_DIR = re.compile(r"p\d{6,}")  # MIMIC-CXR patient folders: p10000032


def mask_path(rel: str, patient_id: str | None = None) -> str:
    """``rel`` with every folder that names the patient replaced by ``*`` (a glob pattern).

    MIMIC-CXR folders carry the subject id (``files/p10/p10000032/s5.../x.dcm``), which is the
    DICOM PatientID: payloads and reports keep ``files/p10/*/s5.../x.dcm`` instead, and
    :func:`regionmir.archive.resolve_path` finds the file again under the archive root.
    """
    parts = rel.split("/")
    pid = (patient_id or "").strip()
    for k, part in enumerate(parts[:-1]):
        if (len(pid) >= 4 and pid in part) or _PATIENT_DIR.fullmatch(part):
            parts[k] = "*"
    return "/".join(parts)
