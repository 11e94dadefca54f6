"""What may be shown: pseudonyms (a salted hash, never the raw PatientID), paths with the parts that
name the patient masked, and URLs without credentials."""

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
_UID = re.compile(r"[0-2](\.(0|[1-9]\d*)){3,}")  # a DICOM UID (WADO-RS paths, UID-named files): no patient data


def mask_path(rel: str, *patient: str | None) -> str:
    """``rel`` with every part that names the patient replaced by ``*`` (a glob pattern).

    ``patient`` holds the file's own PatientID, PatientName and PatientBirthDate (any of them;
    :attr:`regionmir.dicom.DicomHeader.patient_values`). A folder, or the file's name less its
    suffix, names the patient when it is a MIMIC-CXR subject folder (``p10000032``, which is the
    PatientID there) or holds one of those values, compared without case or separators: a
    name part or id of four or more letters and digits anywhere in it (``PAT9876_chest``,
    ``DOE^JOHN_19450101``), a shorter one as a whole word (``A12``), a number (an id, a birth
    date, also written ``1950-03-04``, ``04.03.1950`` or ``03-04-1950``) as a whole number. A
    DICOM UID (``1.2.840....``: the parts of a WADO-RS path) names no one and is kept. So
    ``files/p10/p10000032/s5.../x.dcm`` is kept as ``files/p10/*/s5.../x.dcm``, and
    :func:`regionmir.archive.resolve_path` finds the file again under the archive root.
    """
    needles = _needles(patient)
    parts = rel.split("/")
    for k, part in enumerate(parts):
        last = k == len(parts) - 1
        stem, dot, suffix = part.rpartition(".") if last and "." in part else (part, "", "")
        if _UID.fullmatch(part):
            continue
        if _PATIENT_DIR.fullmatch(stem) or (needles and _names_patient(stem, needles)):
            parts[k] = "*" + dot + suffix
    return "/".join(parts)


def _plain(text: str) -> str:
    """``text`` in lower case without separators: ``"Doe^John 1945-01-01"`` -> ``"doejohn19450101"``."""
    return re.sub(r"[\W_]+", "", text.casefold())


def _needles(values) -> tuple[set[str], set[str]]:
    """(words and names to look for, numbers to look for) of the patient's header values."""
    words, numbers = set(), set()
    for value in values:
        value = str(value or "").strip()
        if not value:
            continue
        pieces = [value, *re.split(r"[\^\s,]+", value)]  # a PersonName's family^given^middle
        if re.fullmatch(r"\d{8}", value):  # a DA birth date YYYYMMDD, also day-first and month-first
            pieces += [value[6:] + value[4:6] + value[:4], value[4:6] + value[6:] + value[:4]]
        for piece in map(_plain, pieces):
            if len(piece) >= 2 or (piece and piece == _plain(value)):
                (numbers if piece.isdigit() else words).add(piece)
    return words, numbers


def _names_patient(part: str, needles: tuple[set[str], set[str]]) -> bool:
    """Whether one path part holds one of ``needles`` (see :func:`mask_path`)."""
    words, numbers = needles
    tokens = [_plain(t) for t in re.split(r"[\W_]+", part) if t]
    plain = "".join(tokens)
    if any(w in tokens or (len(w) >= 4 and w in plain) for w in words):
        return True
    runs = _number_runs(tokens)
    return any(n in runs for n in numbers)


def _number_runs(tokens: list[str]) -> set[str]:
    """Each number of ``tokens``, and each run of up to three neighbouring numbers written together
    (``1950``, ``03``, ``04`` -> ``19500304``): how a date or an id split by separators reads."""
    runs = set()
    for i, token in enumerate(tokens):
        joined = ""
        for t in tokens[i:i + 3]:
            if not t.isdigit():
                break
            joined += t
            runs.add(joined)
    return runs


_URL = re.compile(r"https?://[^\s'\"<>]+", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` with its secrets as ``***``: a ``user:password@`` and every query value
    (``?access_token=...``). Host, port and path stay, so that a person can tell which server."""
    scheme, _, rest = url.partition("://")
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    path, q, query = tail.partition("?")
    if q:
        query = re.sub(r"=[^&#]*", "=***", query)
    return f"{scheme}://{netloc}{path}{q}{query}"


def redact_urls(text: str) -> str:
    """``text`` with every http(s) URL in it passed through :func:`redact_url`."""
    return _URL.sub(lambda m: redact_url(m.group(0)), text)
