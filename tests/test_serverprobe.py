"""Qdrant server probe and wait: against a fake Qdrant on 127.0.0.1 and with fake clocks."""

from __future__ import annotations

import pytest
from fake_qdrant import FakeQdrant

from regionmir.store.probe import NotReady, Probe, collection_exists, probe, wait_until_ready


@pytest.fixture
def qdrant():
    with FakeQdrant(api_key="secret") as q:
        yield q


def test_probe_reads_version_collections_and_readiness(qdrant):
    qdrant.collections = ["regions", "other"]
    p = probe(qdrant.url, "secret")
    assert p.usable and p.error is None
    assert (p.version, p.collections, p.peers) == ("1.19.1", ("other", "regions"), None)


def test_probe_reports_a_refused_or_missing_key(qdrant):
    wrong = probe(qdrant.url, "nope")
    assert wrong.reachable and wrong.auth_ok is False and not wrong.usable
    assert "refused" in wrong.error
    assert "is required" in probe(qdrant.url, None).error


def test_probe_counts_cluster_peers_and_sees_not_ready(qdrant):
    qdrant.peers, qdrant.ready = 3, False
    p = probe(qdrant.url, "secret")
    assert p.peers == 3 and p.auth_ok and not p.ready and not p.usable
    assert "not ready" in p.error


def test_probe_of_a_closed_port_says_so():
    p = probe("http://127.0.0.1:1", None, timeout=0.5)
    assert not p.reachable and p.auth_ok is None
    assert p.error.startswith("cannot reach Qdrant at http://127.0.0.1:1")


def test_probe_of_something_that_is_not_qdrant(qdrant):
    qdrant.answer = lambda path, key: (404, {"detail": "no"}) if path == "/collections" else (200, {})
    p = probe(qdrant.url, "secret")
    assert p.reachable and p.auth_ok is None and "is this a Qdrant server" in p.error


def test_collection_exists(qdrant):
    qdrant.collections = ["regions"]
    assert collection_exists(qdrant.url, "secret", "regions")
    assert not collection_exists(qdrant.url, "secret", "absent")
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


def test_wait_against_a_server_that_becomes_ready(qdrant):
    qdrant.ready = False
    sleeps = []

    def sleep(s):
        sleeps.append(s)
        qdrant.ready = True  # the server finishes starting while we wait

    got = wait_until_ready(qdrant.url, "secret", deadline_s=10, sleep=sleep)
    assert got.usable and sleeps == [1.0]
