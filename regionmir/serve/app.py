"""The JSON API of `regionmir serve`: routes, the bearer-token check and the upload cap.

Routes (all JSON; a search answers exactly the document `regionmir search --json` prints):

- ``GET  /api/health``: status, collection, model id, point count.
- ``GET  /api/anatomies``: the 36 regions with their point counts.
- ``GET  /api/images/{image_id}/regions``: a stored image's regions (boxes, findings, view, ctr).
- ``POST /api/search``: the body is the query image (raw bytes, capped); its name in ``?filename=``.
- ``POST /api/search/stored/{image_id}``: search with a stored image (found through the store).
- ``POST /api/search/url``: body ``{"url": WADO-RS instance URL}``, retrieved as `regionmir search URL`.

Search options are query parameters: ``anatomy`` (a slug or ``all``), ``top_k``, ``where``
(repeatable, the `--where` language), ``box``, ``study``, ``exclude_same_patient``, ``exact``.
Errors are ``{"error": one line, "param": the CLI option at fault or null}``.
"""

from __future__ import annotations

import hmac
import logging
import re
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import Body, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from regionmir.errors import RegionMIRError
from regionmir.serve.engine import Engine, NotFoundError
from regionmir.serve.engine import Query as SearchQuery

log = logging.getLogger("regionmir")
# an upload's name, kept when it is one plain path component: the file of that name in the archive
# is then recognised as `regionmir search FILE` recognises it (its boxes, its patient excluded)
SAFE_NAME = re.compile(r"[^./\\\x00-\x1f][^/\\\x00-\x1f]{0,200}")


def search_options(anatomy: str, top_k: Annotated[int, Query(ge=1, le=1000)] = 10,
                   where: Annotated[list[str] | None, Query()] = None, box: str | None = None,
                   study: str | None = None, exclude_same_patient: bool | None = None,
                   exact: bool = False) -> SearchQuery:
    """A search's query parameters, named as `regionmir search`'s options."""
    return SearchQuery(anatomy, top_k, where or [], box, study, exclude_same_patient, exact)


Options = Annotated[SearchQuery, Depends(search_options)]


class ApiError(Exception):
    """An answer other than 200: its status and one line."""

    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


def create_app(engine: Engine, token: str | None = None, max_upload_bytes: int = 64 << 20) -> FastAPI:
    """The ASGI app answering for ``engine``; with ``token``, every request needs ``Bearer token``."""
    app = FastAPI(title="RegionMIR", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")
    _add_guards(app, token)

    @app.get("/api/health")
    def health() -> dict:
        return engine.health()

    @app.get("/api/anatomies")
    def anatomies() -> list:
        return engine.anatomies()

    @app.get("/api/images/{image_id}/regions")
    def regions(image_id: str) -> dict:
        return {"image_id": image_id, "regions": engine.regions(image_id)}

    @app.post("/api/search")
    async def search_upload(request: Request, q: Options, filename: str = "query.dcm") -> dict:
        with tempfile.TemporaryDirectory(prefix="regionmir-upload-") as tmp:
            name = filename if SAFE_NAME.fullmatch(filename) else "query.dcm"
            path = await _receive(request, Path(tmp) / name, max_upload_bytes)
            return await run_in_threadpool(engine.search, path, q)

    @app.post("/api/search/stored/{image_id}")
    def search_stored(image_id: str, q: Options) -> dict:
        return engine.search(engine.stored_file(image_id), q)

    @app.post("/api/search/url")
    def search_url(q: Options, url: Annotated[str, Body(embed=True)]) -> dict:
        from regionmir.pacs.dicomweb import download_instance

        with tempfile.TemporaryDirectory(prefix="regionmir-query-") as tmp:
            return engine.search(download_instance(url, Path(tmp)), q)

    return app


async def _receive(request: Request, path: Path, limit: int) -> Path:
    """Stream the request body into ``path``; 413 past ``limit`` bytes (the file is then left to its folder)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"upload larger than {limit // (1 << 20)} MB (--max-upload-mb)")
    size = 0
    with path.open("wb") as out:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"upload larger than {limit // (1 << 20)} MB (--max-upload-mb)")
            out.write(chunk)
    if size == 0:
        raise ApiError(400, "no image in the request body")
    return path


def _add_guards(app: FastAPI, token: str | None) -> None:
    """The token check and the translation of every error into ``{"error": ...}``."""
    from regionmir.errors import UsageError
    from regionmir.privacy import redact_urls

    expected = f"Bearer {token}".encode() if token else None

    @app.middleware("http")
    async def require_token(request: Request, call_next):
        if expected is not None:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return JSONResponse({"error": "missing or wrong token (Authorization: Bearer TOKEN)", "param": None},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)

    def answer(status: int, message: str, param: str | None = None) -> JSONResponse:
        return JSONResponse({"error": " ".join(redact_urls(message).split()), "param": param}, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, e: StarletteHTTPException):  # no such route, wrong method
        return answer(e.status_code, str(e.detail))

    @app.exception_handler(ApiError)
    async def api_error(request, e: ApiError):
        return answer(e.status, e.message, e.param)

    @app.exception_handler(UsageError)
    async def usage_error(request, e: UsageError):
        return answer(400, e.reason, e.option)

    @app.exception_handler(NotFoundError)
    async def not_found(request, e: NotFoundError):
        return answer(404, str(e))

    @app.exception_handler(RegionMIRError)
    async def user_error(request, e: RegionMIRError):
        return answer(400, str(e))

    @app.exception_handler(RequestValidationError)
    async def bad_request(request, e: RequestValidationError):
        what = "; ".join(f"{'.'.join(map(str, err['loc'][1:]))}: {err['msg']}" for err in e.errors())
        return answer(400, f"bad request: {what}")

    @app.exception_handler(Exception)
    async def internal(request, e: Exception):  # details stay in the server's log, never in an answer
        log.exception("request failed")
        return answer(500, "internal error: see the server's log")
