"""Qdrant server probe and wait (regionmir.store.probe).

Three kinds of test, marked in the section headers below:

* a real server's behaviour: parametrized over [fake, real]. The real one is a Qdrant in Docker
  (conftest's ``qdrant_server_url``, and ``qdrant_server_with_key`` for a secured one), run with
  ``pytest -m integration`` and skipped with the reason where no Docker engine runs. The fake must
  pass the same test, so it cannot drift from what Qdrant really answers.
* faults a real server cannot be made to show on demand (a not-ready cluster of 3 peers, a server
  that becomes ready while we wait, a 5xx, a hang, something that is not Qdrant): tests/fake_qdrant.py
  only, as a fault injector.
* no server at all: a closed port, and wait_until_ready's loop with scripted probes and a fake clock.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from helpers.fake_qdrant import FakeQdrant

from regionmir.store.probe import NotReady, Probe, collection_exists, probe, wait_until_ready

KEY = "secret"  # the fake's key; the real secured server brings its own


@dataclass
class Server:
    """A Qdrant to probe: where, its API key (None: it needs none), its version, and a way to add a collection."""

    url: str
    key: str | None
    version: str
    add_collection: Callable[[str], None]


@contextmanager
def fake_server(key: str | None) -> Iterator[Server]:
    with FakeQdrant(api_key=key) as q:
        yield Server(q.url, key, q.version, q.collections.append)


@contextmanager
def real_server(url: str, key: str | None) -> Iterator[Server]:
    """The Docker server, seen through qdrant-client; the collections added are dropped after."""
    from qdrant_client import QdrantClient, models

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "Api key is used with an insecure connection"
        client = QdrantClient(url=url, api_key=key)
    made = []

    def add(name: str) -> None:
        client.create_collection(name, vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
        made.append(name)

    try:
        yield Server(url, key, client.info().version, add)
    finally:
        for name in made:
            client.delete_collection(name)
        client.close()


REAL_TOO = ["fake", pytest.param("real", marks=pytest.mark.integration)]


@pytest.fixture(params=REAL_TOO)
def secured(request) -> Iterator[Server]:
    """A Qdrant that requires an API key: the fake, or ``qdrant_server_with_key``."""
    if request.param == "fake":
        with fake_server(KEY) as server:
            yield server
    else:
        with real_server(*request.getfixturevalue("qdrant_server_with_key")) as server:
            yield server


@pytest.fixture(params=REAL_TOO)
def open_server(request) -> Iterator[Server]:
    """A Qdrant without an API key: the fake, or the session's ``qdrant_server_url``."""
    if request.param == "fake":
        with fake_server(None) as server:
            yield server
    else:
        with real_server(request.getfixturevalue("qdrant_server_url"), None) as server:
            yield server


def unique(prefix: str = "probe") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"  # the real servers live for the whole session


# -- a real server's behaviour: fake and real ---------------------------------------------------


def test_probe_reads_version_collections_and_readiness(secured):
    names = sorted(unique() for _ in range(2))
    for name in names:
        secured.add_collection(name)
    p = probe(secured.url, secured.key)
    assert p.usable and p.ready and p.auth_ok and p.error is None
    assert p.version == secured.version and p.peers is None  # one server: cluster disabled
    assert set(names) <= set(p.collections) and list(p.collections) == sorted(p.collections)


def test_probe_reports_a_refused_or_missing_key(secured):
    wrong = probe(secured.url, "nope")
    assert wrong.reachable and wrong.auth_ok is False and not wrong.usable
    assert wrong.ready and wrong.version == secured.version  # /readyz and / answer without a key
    assert "refused" in wrong.error
    missing = probe(secured.url, None)
    assert missing.auth_ok is False and "is required" in missing.error


def test_collection_exists(secured):
    name = unique()
    secured.add_collection(name)
    assert collection_exists(secured.url, secured.key, name)
    assert not collection_exists(secured.url, secured.key, unique("absent"))
    assert not collection_exists(secured.url, "nope", name)  # a refused key finds nothing


def test_wait_returns_at_once_for_a_ready_server_and_stops_on_a_refused_key(secured):
    got = wait_until_ready(secured.url, secured.key, deadline_s=10, sleep=lambda s: pytest.fail("slept"))
    assert got.usable and got.version == secured.version
    with pytest.raises(NotReady, match="refused"):
        wait_until_ready(secured.url, "nope", deadline_s=10, sleep=lambda s: pytest.fail("slept"))


def test_a_server_without_a_key_is_usable_with_or_without_one(open_server):
    name = unique()
    open_server.add_collection(name)
    for key in (None, "ignored"):  # a key sent to a server that has none is not checked
        p = probe(open_server.url, key)
        assert p.usable and name in p.collections and p.error is None


# -- faults on demand: the fake only ------------------------------------------------------------


@pytest.fixture
def fake():
    with FakeQdrant(api_key=KEY) as q:
        yield q


def test_probe_counts_cluster_peers_and_sees_not_ready(fake):
    fake.peers, fake.ready = 3, False
    p = probe(fake.url, KEY)
    assert p.peers == 3 and p.auth_ok and not p.ready and not p.usable
    assert "not ready" in p.error


def test_probe_of_something_that_is_not_qdrant(fake):
    fake.answer = lambda path, key: (404, {"detail": "no"}) if path == "/collections" else (200, {})
    p = probe(fake.url, KEY)
    assert p.reachable and p.auth_ok is None and "is this a Qdrant server" in p.error


def test_probe_of_a_server_error(fake):
    fake.answer = lambda path, key: (500, {"status": {"error": "boom"}}) if path == "/collections" else (200, {})
    p = probe(fake.url, KEY)
    assert p.reachable and p.auth_ok is None and not p.usable and "answered HTTP 500" in p.error


def test_probe_of_a_server_that_hangs(fake):
    fake.delay = 2.0
    p = probe(fake.url, KEY, timeout=0.2)
    assert not p.reachable and not p.usable
    assert p.error.startswith(f"cannot reach Qdrant at {fake.url}") and "timed out" in p.error


def test_wait_against_a_server_that_becomes_ready(fake):
    fake.ready = False
    sleeps = []

    def sleep(s):
        sleeps.append(s)
        fake.ready = True  # the server finishes starting while we wait

    got = wait_until_ready(fake.url, KEY, deadline_s=10, sleep=sleep)
    assert got.usable and sleeps == [1.0]


# -- no server: a closed port, scripted probes and a fake clock ---------------------------------


def test_probe_of_a_closed_port_says_so():
    p = probe("http://127.0.0.1:1", None, timeout=0.5)
    assert not p.reachable and p.auth_ok is None
    assert p.error.startswith("cannot reach Qdrant at http://127.0.0.1:1")
    assert not collection_exists("http://127.0.0.1:1", None, "regions", timeout=0.5)


class Clock:
    """A fake monotonic clock that sleep() advances."""

    def __init__(self):
        self.now, self.sleeps = 0.0, []

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def scripted(*probes: Probe):
    """A probe_fn returning ``probes`` in turn (the last one forever), counting calls."""
    calls = []

    def probe_fn(url, api_key, timeout):
        calls.append(url)
        return probes[min(len(calls) - 1, len(probes) - 1)]

    return probe_fn, calls


DOWN = Probe("u", False, error="cannot reach Qdrant at u: refused")
UP = Probe("u", True, True, True, "1.19.1", (), None)


def test_wait_retries_with_backoff_until_ready():
    clock = Clock()
    fn, calls = scripted(DOWN, DOWN, DOWN, UP)
    got = wait_until_ready("u", probe_fn=fn, sleep=clock.sleep, clock=lambda: clock.now)
    assert got is UP and len(calls) == 4
    assert clock.sleeps == [1.0, 2.0, 4.0]


def test_wait_gives_up_at_the_deadline_with_the_last_reason():
    clock = Clock()
    fn, calls = scripted(DOWN)
    with pytest.raises(NotReady, match="gave up after 30 s: cannot reach Qdrant"):
        wait_until_ready("u", deadline_s=30, probe_fn=fn, sleep=clock.sleep, clock=lambda: clock.now)
    assert sum(clock.sleeps) <= 30 and max(clock.sleeps) == 10.0


def test_wait_stops_at_once_when_the_key_is_refused():
    refused = Probe("u", True, True, False, error="Qdrant at u answered 401: the API key was refused")
    fn, calls = scripted(refused)
    with pytest.raises(NotReady, match="refused") as info:
        wait_until_ready("u", "bad", probe_fn=fn, sleep=lambda s: pytest.fail("slept"))
    assert len(calls) == 1 and info.value.probe is refused


def test_wait_for_cluster_peers():
    clock = Clock()
    one = Probe("u", True, True, True, "1.19.1", (), 1)
    three = Probe("u", True, True, True, "1.19.1", (), 3)
    fn, calls = scripted(one, one, three)
    got = wait_until_ready("u", expect_peers=3, probe_fn=fn, sleep=clock.sleep, clock=lambda: clock.now)
    assert got is three and len(calls) == 3
    fn, _ = scripted(one)
    with pytest.raises(NotReady, match="1 of 3 cluster peers"):
        wait_until_ready("u", expect_peers=3, deadline_s=5, probe_fn=fn, sleep=clock.sleep,
                         clock=lambda: clock.now)
