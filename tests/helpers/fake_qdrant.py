"""A fault injector for the few Qdrant REST endpoints the probe reads, served on 127.0.0.1 from a thread.

It answers ``/readyz``, ``/``, ``/collections``, ``/collections/<name>`` and ``/cluster`` the way
Qdrant does, including 401 for a wrong ``api-key`` header (``/`` and ``/readyz`` answer without
one, as Qdrant's whitelist has it). Its attributes make the faults a real server cannot be made to
show on demand: not ready, a cluster of ``peers``, another ``version``, a ``delay`` before every
answer, or any ``answer`` at all. tests/store/test_probe.py runs the tests of normal behaviour against a
real Qdrant as well, which keeps this imitation honest; test_doctor and test_deploy use it too.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeQdrant:
    """``with FakeQdrant(api_key="k") as q: q.url`` -> ``http://127.0.0.1:<port>``."""

    def __init__(self, api_key: str | None = None, version: str = "1.19.1"):
        self.api_key = api_key
        self.version = version
        self.ready = True
        self.collections: list[str] = []
        self.peers: int | None = None  # None: cluster disabled
        self.delay = 0.0  # seconds before each answer: a server that hangs
        self.requests: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeQdrant:
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, path: str, key: str | None) -> tuple[int, dict]:
        """(status, body) for a GET of ``path`` with header ``api-key: key``."""
        self.requests.append(path)
        if path == "/readyz":  # Qdrant serves health endpoints and / without a key
            return (200, {"ok": True}) if self.ready else (503, {"ok": False})
        if path == "/":
            return 200, {"title": "qdrant - vector search engine", "version": self.version}
        if self.api_key and key != self.api_key:
            return 401, {"status": {"error": "Must provide an API key or an Authorization bearer token"}}
        if path == "/collections":
            return 200, {"result": {"collections": [{"name": n} for n in self.collections]}, "status": "ok"}
        if path.startswith("/collections/"):
            name = path.removeprefix("/collections/")
            if name in self.collections:
                return 200, {"result": {"status": "green"}, "status": "ok"}
            return 404, {"status": {"error": f"Not found: Collection `{name}` doesn't exist!"}}
        if path == "/cluster":
            if self.peers is None:
                return 200, {"result": {"status": "disabled"}, "status": "ok"}
            peers = {str(i): {"uri": f"http://qdrant-{i}:6335/"} for i in range(self.peers)}
            return 200, {"result": {"status": "enabled", "peers": peers}, "status": "ok"}
        return 404, {"status": {"error": "not found"}}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                time.sleep(fake.delay)
                status, body = fake.answer(self.path, self.headers.get("api-key"))
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args):  # keep test output clean
                pass

        return Handler
