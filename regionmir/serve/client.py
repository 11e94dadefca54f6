"""The client side of `regionmir serve`, used by `regionmir search`: standard library only.

It imports neither fastapi nor the store, so a search sent to a running server starts in the
time it takes to import the CLI.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from regionmir.errors import RegionMIRError

TOKEN_ENV = "REGIONMIR_SERVE_TOKEN"


class ServerUnreachableError(RegionMIRError):
    """No server answers at the URL (refused, timed out): the caller may search in-process."""


class ServerAnswerError(RegionMIRError):
    """The server refused the query; ``param`` is the `regionmir search` option at fault, if any."""

    def __init__(self, message: str, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.message, self.param, self.status = message, param, status


def search_params(anatomy: str, top_k: int, where: list[str], box: str | None, study: str | None,
                  exclude_same_patient: bool | None, exact: bool) -> list[tuple[str, str]]:
    """The query parameters of a search, as the server's routes take them."""
    params = [("anatomy", anatomy), ("top_k", str(top_k)), *(("where", w) for w in where)]
    for key, value in (("box", box), ("study", study)):
        if value:
            params.append((key, value))
    if exclude_same_patient is not None:
        params.append(("exclude_same_patient", "true" if exclude_same_patient else "false"))
    if exact:
        params.append(("exact", "true"))
    return params


def search(url: str, image: str, params: list[tuple[str, str]], token: str | None = None,
           timeout: float = 600) -> dict:
    """The server's `--json` document for ``image`` (a file, or a WADO-RS URL the server retrieves).

    Raises:
        ServerUnreachableError: nothing answers at ``url``.
        ServerAnswerError: the server refused the query (its one-line reason).
    """
    from regionmir.pacs.dicomweb import is_url

    if is_url(image):
        return request(url, "/api/search/url", params, json.dumps({"url": image}).encode(), token, timeout,
                       "application/json")
    path = Path(image)
    return request(url, "/api/search", [*params, ("filename", path.name)], path.read_bytes(), token, timeout,
                   "application/octet-stream")


def request(url: str, route: str, params: list[tuple[str, str]] | None = None, body: bytes | None = None,
            token: str | None = None, timeout: float = 600, content_type: str | None = None) -> dict:
    """One JSON request to the server (POST when there is a ``body``).

    Raises:
        ServerUnreachableError, ServerAnswerError: as :func:`search`.
    """
    full = url.rstrip("/") + route + ("?" + urllib.parse.urlencode(params) if params else "")
    req = urllib.request.Request(full, data=body, method="POST" if body is not None else "GET")
    token = token or os.environ.get(TOKEN_ENV) or None
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if content_type:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as e:
        try:
            doc = json.loads(e.read())
        except ValueError:
            doc = {}
        message = str(doc.get("error") or f"server {url}: {e.reason}")
        if e.code == 401:
            message += f"; set {TOKEN_ENV} to the token of the server at {url}"
        raise ServerAnswerError(message, doc.get("param"), e.code) from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as e:
        reason = getattr(e, "reason", e)
        raise ServerUnreachableError(f"no RegionMIR server answers at {url} ({reason}).") from None
