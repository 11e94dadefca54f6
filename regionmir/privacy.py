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
    return read_salt(path)


def read_salt(path: Path) -> bytes:
    """The salt in the file ``path``; ingest, search and `regionmir doctor` refuse a damaged one alike.

    Raises:
        RegionMIRError: ``path`` is a folder, is not UTF-8 text, or is empty (the message says what to do).
    """
    fix = "Restore it from a backup of this installation (pseudonyms depend on it) or delete it to start anew."
    if path.is_dir():
        raise RegionMIRError(f"The salt file {path} is a folder, not a file. {fix}")
    try:
        key = path.read_bytes().decode("utf-8").strip().encode()
    except UnicodeDecodeError:  # a salt is written as hex text: these bytes are damage
        raise RegionMIRError(f"The salt file {path} is not text (damaged?). {fix}") from None
    if not key:
        raise RegionMIRError(f"The salt file {path} is empty. {fix}")
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
    PatientID there) or holds one of those values (:func:`names_patient`). A DICOM UID
    (``1.2.840....``: the parts of a WADO-RS path) names no one and is kept. So
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
        if _PATIENT_DIR.fullmatch(stem) or _names_patient(stem, needles):
            parts[k] = "*" + dot + suffix
    return "/".join(parts)


def names_patient(text: str, *patient: str | None) -> bool:
    """Whether ``text`` (a folder or file name) names the patient of header values ``patient``.

    Compared without case or separators: a value or name part of three or more letters or
    digits anywhere in it (``PAT9876_chest``, ``A12stuff``, ``DOE^JOHN_19450101``, a birth date
    also written ``1950-03-04``, ``04.03.1950`` or ``03-04-1950``), a shorter one as a whole
    word (``Li``, id ``7``); a MIMIC-CXR subject folder (``p10000032``) always. Too short a
    value to tell from chance is all that is ever kept: a false match only hides a name.
    """
    return bool(_PATIENT_DIR.fullmatch(text)) or _names_patient(text, _needles(patient))


def hashed(text: str, kind: str, key: bytes | None = None) -> str:
    """``kind-`` and 20 hex digits of a salted hash of ``text``: a stable stand-in that names no one.

    Under one salt the same ``text`` always gets the same stand-in, so reruns, the ledger and a
    search's lookup of a query agree; without the salt it cannot be guessed back from a list of
    names or ids. ``kind`` ("img", "path") keeps stand-ins of different things apart.
    """
    key = salt() if key is None else key
    return f"{kind}-" + hmac.new(key, f"{kind}:{text}".encode(), hashlib.sha256).hexdigest()[:20]


def shown_image_id(image_id: str, *patient: str | None, hash_all: bool = False) -> str:
    """The image id payloads and reports show for a file whose stem is ``image_id``.

    The stem itself (a MIMIC ``dicom_id``, ``IM000001``, a SOPInstanceUID) unless it names the
    patient (a file named by its PatientID, ``12345678.dcm``) or ``hash_all`` (a collection of
    ``--hash-paths``): then its salted hash (:func:`hashed`). Search computes the same from the
    query file, so a query finds its own stored regions either way.
    """
    if hash_all or (not _UID.fullmatch(image_id) and names_patient(image_id, *patient)):
        return hashed(image_id, "img")
    return image_id


def shown_path(rel: str, *patient: str | None, hash_all: bool = False) -> str:
    """The path payloads, reports and the ledger show: :func:`mask_path`, or with ``hash_all``
    its salted hash (montages then cannot find the image: the price of showing no name at all)."""
    return hashed(rel, "path") if hash_all else mask_path(rel, *patient)


def _plain(text: str) -> str:
    """``text`` in lower case without separators: ``"Doe^John 1945-01-01"`` -> ``"doejohn19450101"``."""
    return re.sub(r"[\W_]+", "", text.casefold())


def _needles(values) -> set[str]:
    """The plain forms (:func:`_plain`) to look for of the patient's header values and name parts."""
    needles = set()
    for value in values:
        value = str(value or "").strip()
        if not value:
            continue
        pieces = [value, *re.split(r"[\^\s,]+", value)]  # a PersonName's family^given^middle
        if re.fullmatch(r"\d{8}", value):  # a DA birth date YYYYMMDD, also day-first and month-first
            pieces += [value[6:] + value[4:6] + value[:4], value[4:6] + value[6:] + value[:4]]
        for piece in map(_plain, pieces):
            if len(piece) >= 2 or (piece and piece == _plain(value)):
                needles.add(piece)
    return needles


SHORT = 3  # a value of fewer letters or digits is looked for as a whole word only


def _names_patient(part: str, needles: set[str]) -> bool:
    """Whether one path part holds one of ``needles`` (see :func:`names_patient`)."""
    if not needles:
        return False
    tokens = [_plain(t) for t in re.split(r"[\W_]+", part) if t]
    plain = "".join(tokens)
    return any(n in tokens or (len(n) >= SHORT and n in plain) for n in needles)


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
