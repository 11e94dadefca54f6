"""DICOMweb access (dicomweb-client): credentials from the environment, QIDO-RS search, WADO-RS retrieve.

Credentials never appear in a URL, a log line, an error message, a payload or a report:
they come from environment variables and live only in the ``requests`` session.

    REGIONMIR_DICOMWEB_TOKEN                                 bearer token, or
    REGIONMIR_DICOMWEB_USER + REGIONMIR_DICOMWEB_PASSWORD    HTTP basic authentication
    REGIONMIR_DICOMWEB_CA                                    CA bundle (PEM) for a private TLS root
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

from regionmir.errors import PacsError
from regionmir.privacy import redact_url

log = logging.getLogger("regionmir")

IMAGE_MODALITIES = ("CR", "DX")  # what RegionMIR ingests; QIDO-RS is narrowed to these
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
QIDO_PAGE = 500  # results asked for per QIDO-RS request (a server may send fewer: we page on)
_INSTANCE_PATH = re.compile(r"^(?P<root>.*)/studies/(?P<st>[^/]+)/series/(?P<se>[^/]+)/instances/(?P<sop>[^/]+)/?$")


def is_url(text: str | Path) -> bool:
    """True for ``http://`` and ``https://`` addresses (a DICOMweb root or instance)."""
    return str(text).lower().startswith(("http://", "https://"))


def valid_uid(uid: str | None) -> bool:
    """A DICOM UID: digits and dots, at most 64 characters (safe as a file or folder name)."""
    return bool(uid) and len(uid) <= 64 and bool(_UID.match(uid))


@dataclass(frozen=True)
class InstanceRef:
    """One instance of a DICOMweb service, by its three UIDs."""

    study_uid: str
    series_uid: str
    sop_uid: str

    @property
    def path(self) -> str:
        """The WADO-RS path relative to the service root (the payload ``path`` of a PACS image)."""
        return f"studies/{self.study_uid}/series/{self.series_uid}/instances/{self.sop_uid}"


@dataclass(frozen=True)
class Query:
    """Which instances `regionmir ingest URL` takes (QIDO-RS filters)."""

    modalities: tuple[str, ...] = IMAGE_MODALITIES
    since: date | None = None  # StudyDate on or after
    study: str | None = None  # one StudyInstanceUID


def check_url(url: str) -> str:
    """``url`` without a trailing slash.

    Raises:
        PacsError: not http(s), or credentials written into the URL (they would reach logs).
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PacsError(f"{url!r} is not a DICOMweb address; use http(s)://host:port/dicom-web")
    if parts.username or parts.password:
        raise PacsError(
            "Credentials in the DICOMweb URL would be written to logs: remove them from the URL and set "
            "REGIONMIR_DICOMWEB_USER and REGIONMIR_DICOMWEB_PASSWORD (or REGIONMIR_DICOMWEB_TOKEN) instead."
        )
    return url.rstrip("/")


def session():
    """A ``requests`` session with the environment's credentials and CA bundle."""
    s = _session_class()()
    token = os.environ.get("REGIONMIR_DICOMWEB_TOKEN")
    user = os.environ.get("REGIONMIR_DICOMWEB_USER")
    if token:
        s.headers["Authorization"] = f"Bearer {token}"
    elif user:
        s.auth = (user, os.environ.get("REGIONMIR_DICOMWEB_PASSWORD", ""))
    ca = os.environ.get("REGIONMIR_DICOMWEB_CA")
    if ca:
        if not Path(ca).is_file():
            raise PacsError(f"REGIONMIR_DICOMWEB_CA names {ca}, which is not a file; point it to a PEM CA bundle.")
        s.verify = ca
    return s


def _session_class():
    """``requests.Session`` whose own CA bundle wins over ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``.

    Plain requests lets those environment variables replace ``Session.verify`` (a known
    requests issue); many hospital machines set them, which would silently ignore
    REGIONMIR_DICOMWEB_CA. Proxies and the rest of the environment still apply.
    """
    import requests

    class CASession(requests.Session):
        def merge_environment_settings(self, url, proxies, stream, verify, cert):
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            if isinstance(self.verify, str) and verify in (None, True):
                settings["verify"] = self.verify
            return settings

    return CASession


def connect(url: str):
    """A ``DICOMwebClient`` for the service root ``url`` (credentials from the environment).

    Raises:
        PacsError: a malformed URL or one with credentials in it.
    """
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(check_url(url), session=session(), timeout=60)
    # dicomweb-client retries 429/408/503/504 and connection errors; 3 attempts, 1 + 2 s apart,
    # ride out a busy PACS without making a mistyped address hang for half a minute
    client.set_http_retry_params(retry=True, max_attempts=3, wait_exponential_multiplier=500)
    return client


def _value(item: dict, tag: str) -> str | None:
    values = item.get(tag, {}).get("Value") or []
    return str(values[0]) if values else None


def _http(action: str, url: str, e: Exception) -> PacsError:
    """A PacsError for a failed request, without response bodies (they may echo header values)."""
    status = getattr(getattr(e, "response", None), "status_code", None)
    if status in (401, 403):
        hint = "check REGIONMIR_DICOMWEB_USER/PASSWORD or REGIONMIR_DICOMWEB_TOKEN"
    elif status is not None:
        hint = f"the server answered HTTP {status}; check the service root (it usually ends in /dicom-web)"
    else:
        hint = f"cannot reach it ({type(e).__name__}); check the address, the network and TLS (REGIONMIR_DICOMWEB_CA)"
    return PacsError(f"{action} at {redact_url(url)} failed: {hint}.")


def find_instances(client, query: Query) -> list[InstanceRef]:
    """Every instance of a CR/DX series matching ``query``, sorted by UIDs (stable for shards).

    Raises:
        PacsError: the service cannot be reached, refuses us, or answers without UIDs.
    """
    refs = set()
    for series in _find_series(client, query):
        st, se = _value(series, "0020000D"), _value(series, "0020000E")
        if not (valid_uid(st) and valid_uid(se)):
            log.warning("QIDO-RS returned a series without valid UIDs; skipped")
            continue
        found = _paged(client.search_for_instances, "QIDO-RS instance search", client,
                       study_instance_uid=st, series_instance_uid=se, fields=["00080016"])
        for item in found:
            sop = _value(item, "00080018")
            if valid_uid(sop):
                refs.add(InstanceRef(st, se, sop))
    return sorted(refs, key=lambda r: (r.study_uid, r.series_uid, r.sop_uid))


def _find_series(client, query: Query) -> list[dict]:
    out = []
    for modality in query.modalities:
        filters = {"Modality": modality}
        if query.since is not None:
            filters["StudyDate"] = f"{query.since:%Y%m%d}-"
        out += _paged(client.search_for_series, "QIDO-RS series search", client,
                      study_instance_uid=query.study, search_filters=filters, fields=["0020000D", "00080020"])
    return out


def _paged(search, action: str, client, **params) -> list[dict]:
    """Every result of a QIDO-RS search, asked for page by page until a page brings nothing new.

    A server may send fewer results than asked for per page, so only an empty page, or one that
    holds nothing not seen before (a server that ignores ``offset`` sends its first page again and
    again), ends the search: it always ends, after at most one request beyond the results.

    Raises:
        PacsError: a request failed.
    """
    import json

    results, seen = [], set()
    while True:
        try:
            page = search(**params, limit=QIDO_PAGE, offset=len(results))
        except Exception as e:  # noqa: BLE001 - requests.HTTPError, ConnectionError, ...
            raise _http(action, client.base_url, e) from None
        new = [item for item in page if json.dumps(item, sort_keys=True) not in seen]
        if not new:
            if page:
                log.warning("%s: the server sent results it had sent already (it ignores offset); "
                            "%d results kept", action, len(results))
            return results
        seen.update(json.dumps(item, sort_keys=True) for item in new)
        results += new


def retrieve(client, ref: InstanceRef) -> bytes:
    """The DICOM file of ``ref``, retrieved with WADO-RS as stored (``transfer-syntax=*``).

    Raises:
        PacsError: the request failed.
    """
    from io import BytesIO

    import requests
    from pydicom.filewriter import dcmwrite

    try:
        ds = client.retrieve_instance(ref.study_uid, ref.series_uid, ref.sop_uid)
        buffer = BytesIO()
        dcmwrite(buffer, ds, enforce_file_format=True)
    except requests.RequestException as e:
        raise _http(f"WADO-RS retrieve of instance {ref.sop_uid}", client.base_url, e) from None
    except Exception as e:  # noqa: BLE001 - pydicom's many types for an unparsable part
        raise PacsError(f"WADO-RS returned instance {ref.sop_uid} in a form that cannot be parsed "
                        f"({type(e).__name__}); check it in the PACS viewer.") from None
    return buffer.getvalue()


def parse_instance_url(url: str) -> tuple[str, InstanceRef]:
    """``(service root, instance)`` of a WADO-RS instance URL ``.../studies/X/series/Y/instances/Z``.

    Raises:
        PacsError: not an instance URL.
    """
    m = _INSTANCE_PATH.match(check_url(url))
    if not m or not all(valid_uid(m[k]) for k in ("st", "se", "sop")):
        raise PacsError(
            f"{url!r} is not a WADO-RS instance URL; give .../dicom-web/studies/UID/series/UID/instances/UID"
        )
    return m["root"], InstanceRef(m["st"], m["se"], m["sop"])


def download_instance(url: str, folder: Path) -> Path:
    """Retrieve the WADO-RS instance ``url`` into ``folder/<SOPInstanceUID>.dcm`` (a query image).

    The file is named by its SOP Instance UID, the ``image_id`` of a PACS-ingested image, so
    a query that is in the collection is recognised (its own boxes, its patient excluded).

    Raises:
        PacsError: not an instance URL, or the request failed.
    """
    root, ref = parse_instance_url(url)
    out = Path(folder) / f"{ref.sop_uid}.dcm"
    out.write_bytes(retrieve(connect(root), ref))
    return out


def download_paths(root: str, paths: list[str], folder: Path) -> int:
    """Retrieve the instances named by payload ``paths`` (``studies/../instances/<uid>``) into ``folder/<path>``.

    For montages of PACS hits; paths that are not WADO-RS paths are left alone. Returns how
    many files were written.

    Raises:
        PacsError: a request failed.
    """
    client, n = None, 0
    for rel in dict.fromkeys(paths):
        parts = rel.split("/")
        if len(parts) != 6 or parts[0::2] != ["studies", "series", "instances"]:
            continue
        ref = InstanceRef(parts[1], parts[3], parts[5])
        if not all(valid_uid(u) for u in (ref.study_uid, ref.series_uid, ref.sop_uid)):
            continue
        client = client or connect(root)
        out = Path(folder) / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(retrieve(client, ref))
        n += 1
    return n
