"""Server-only paths of the store: retry policy, error mapping, collection options, index wait."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from unittest import mock

import httpx
import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from regionmir.errors import CollectionMismatchError, StoreError, StoreNotFoundError, StoreUnavailableError
from regionmir.store import PAYLOAD_INDEXES, PointRecord, open_store, point_id
from regionmir.store.retry import RetryPolicy, call_with_retries, is_transient
from regionmir.store.server import ServerOptions, ServerStore

FAST = ServerOptions(retry=RetryPolicy(attempts=3, base_delay=0.01, jitter=0.0), timeout=5)


def http_error(status: int, headers: dict | None = None) -> UnexpectedResponse:
    body = json.dumps({"status": {"error": f"boom {status}"}}).encode()
    return UnexpectedResponse(status, "reason", body, httpx.Headers(headers or {}))


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_server_errors_and_throttling_are_transient(status):
    assert is_transient(http_error(status))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_user_errors_are_not_transient(status):
    assert not is_transient(http_error(status))


def test_connection_problems_are_transient_other_errors_not():
    assert is_transient(ResponseHandlingException(httpx.ConnectError("refused")))
    assert is_transient(ResponseHandlingException(httpx.ReadTimeout("slow")))
    assert is_transient(ConnectionResetError())
    assert not is_transient(ResponseHandlingException(ValueError("bad json")))
    assert not is_transient(ValueError("Collection x not found"))


def test_retry_delays_double_up_to_the_cap_and_honour_retry_after():
    p = RetryPolicy(base_delay=0.5, max_delay=3.0, jitter=0.0)
    assert [p.delay(i) for i in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert p.delay(0, retry_after=7.0) == 7.0
    spread = {RetryPolicy(jitter=0.1).delay(1) for _ in range(20)}
    assert all(0.9 <= d <= 1.1 for d in spread) and len(spread) > 1


def flaky(errors):
    """A function raising ``errors`` one by one, then returning "ok"; counts its calls."""
    calls = []

    def fn():
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "ok"

    return fn, calls


def test_transient_errors_are_retried_with_backoff():
    fn, calls = flaky([http_error(503), ResponseHandlingException(httpx.ConnectError("x"))])
    slept = []
    policy = RetryPolicy(attempts=4, base_delay=0.5, jitter=0.0)
    assert call_with_retries(fn, policy, sleep=slept.append) == "ok"
    assert len(calls) == 3 and slept == [0.5, 1.0]


def test_user_error_is_raised_at_once():
    fn, calls = flaky([http_error(400)])
    with pytest.raises(UnexpectedResponse):
        call_with_retries(fn, RetryPolicy(), sleep=lambda s: None)
    assert len(calls) == 1


def test_gives_up_after_the_last_attempt():
    fn, calls = flaky([http_error(502)] * 10)
    slept = []
    with pytest.raises(UnexpectedResponse):
        call_with_retries(fn, RetryPolicy(attempts=3, jitter=0.0), sleep=slept.append)
    assert len(calls) == 3 and len(slept) == 2


def test_throttling_waits_as_long_as_the_server_asks():
    fn, _ = flaky([http_error(429, {"Retry-After": "4"})])
    slept = []
    call_with_retries(fn, RetryPolicy(base_delay=0.1, jitter=0.0), sleep=slept.append)
    assert slept == [4.0]


# -- against a tiny HTTP server that answers every request with one status ----------------
@pytest.fixture
def fake_qdrant():
    """Start an HTTP server answering ``status`` to everything; returns (url, set_status, hits)."""
    state = {"status": 200, "hits": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            state["hits"] += 1
            body = json.dumps({"status": {"error": "nope"}}).encode()
            self.send_response(state["status"])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}", state
    server.shutdown()
    server.server_close()


def test_wrong_api_key_names_the_variable_and_is_not_retried(fake_qdrant):
    url, state = fake_qdrant
    state["status"] = 401
    with pytest.raises(StoreUnavailableError, match="refused the API key.*QDRANT_API_KEY"):
        ServerStore(url=url, api_key="wrong-key", options=FAST)
    assert state["hits"] == 1


def test_server_errors_are_retried_then_reported(fake_qdrant):
    url, state = fake_qdrant
    state["status"] = 503
    with pytest.raises(StoreUnavailableError, match=r"kept failing \(HTTP 503\) after 3 tries"):
        ServerStore(url=url, options=FAST)
    assert state["hits"] == 3


def test_unreachable_server_says_what_to_check(monkeypatch):
    monkeypatch.setattr("regionmir.store.retry.time.sleep", lambda s: None)
    with pytest.raises(StoreUnavailableError, match=r"cannot reach Qdrant at http://127.0.0.1:9.*QDRANT_URL"):
        open_store("http://127.0.0.1:9")  # discard port: nothing listens


def test_open_store_uses_qdrant_url_from_environment(monkeypatch):
    monkeypatch.setattr("regionmir.store.retry.time.sleep", lambda s: None)
    monkeypatch.setenv("QDRANT_URL", "http://127.0.0.1:9")
    with pytest.raises(StoreUnavailableError, match="127.0.0.1:9"):
        open_store()


# -- with a recording client -------------------------------------------------------------
def recording_client(statuses=("green",)):
    """A mock QdrantClient that records calls; get_collection walks through ``statuses``."""
    client = mock.Mock(spec=QdrantClient)
    client.get_collections.return_value = SimpleNamespace(collections=[])
    client.collection_exists.return_value = False
    seq = iter(statuses)
    meta = {"model_id": "m", "dim": 4, "name": "c", "distance": "cosine"}

    def get_collection(name):
        status = next(seq, statuses[-1])
        return SimpleNamespace(status=SimpleNamespace(value=status), config=SimpleNamespace(metadata=meta))

    client.get_collection.side_effect = get_collection
    return client


def test_create_collection_passes_cluster_options_and_indexes_before_data():
    client = recording_client()
    opts = ServerOptions(shard_number=6, replication_factor=2, write_consistency_factor=2, upsert_batch=2)
    store = ServerStore(client=client, options=opts)
    store.create_collection("c", 4, {"model_id": "m"})
    kwargs = client.create_collection.call_args.kwargs
    assert (kwargs["shard_number"], kwargs["replication_factor"], kwargs["write_consistency_factor"]) == (6, 2, 2)
    assert kwargs["metadata"]["model_id"] == "m" and kwargs["vectors_config"].size == 4
    indexed = [c.args[1] for c in client.create_payload_index.call_args_list]
    assert indexed == list(PAYLOAD_INDEXES)
    kinds = {c.args[1]: c.args[2] for c in client.create_payload_index.call_args_list}
    assert kinds["ctr"] == models.PayloadSchemaType.FLOAT and kinds["view"] == models.PayloadSchemaType.KEYWORD
    assert all(c.kwargs["wait"] for c in client.create_payload_index.call_args_list)
    pts = [PointRecord(point_id(str(i), "spine", "m"), np.ones(4, np.float32), {}) for i in range(5)]
    store.upsert("c", pts)
    sizes = [len(c.args[1]) for c in client.upsert.call_args_list]
    assert sizes == [2, 2, 1] and all(c.kwargs["wait"] for c in client.upsert.call_args_list)
    names = [c[0] for c in client.method_calls]
    assert max(i for i, n in enumerate(names) if n == "create_payload_index") < names.index("upsert")


class IndexingCollection:
    """A server collection that indexes on a fake clock (``sleep`` moves it on): ``statuses`` gives
    the status before ``grey_at`` seconds; from then on it is grey (optimizations pending) until
    someone triggers the optimizers, and green ``index_s`` seconds after that. ``None`` for
    ``grey_at`` never reaches grey."""

    def __init__(self, status: str = "yellow", grey_at: float | None = 3.0, index_s: float = 2.0):
        self.now, self.triggered_at = 0.0, None
        self.early, self.grey_at, self.index_s = status, grey_at, index_s

    def status(self) -> str:
        if self.grey_at is None or self.now < self.grey_at:
            return self.early
        if self.triggered_at is None:
            return "grey"
        return "green" if self.now >= self.triggered_at + self.index_s else "yellow"

    def client(self):
        client = recording_client()
        client.get_collection.side_effect = lambda name: SimpleNamespace(
            status=SimpleNamespace(value=self.status()), config=SimpleNamespace(metadata={}))
        client.update_collection.side_effect = self.trigger
        return client

    def trigger(self, *args, **kwargs) -> None:
        """update_collection: any update starts pending optimizations (only the first one counts)."""
        if self.triggered_at is None:
            self.triggered_at = self.now

    def install(self, monkeypatch) -> None:
        """The store's clock becomes this one; a wait past 24 h means the loop never gives up."""
        def sleep(seconds):
            assert self.now < 86_400, "build_index kept polling long after its timeout"
            self.now += seconds

        monkeypatch.setattr("regionmir.store.server.time", SimpleNamespace(monotonic=lambda: self.now, sleep=sleep))


def test_build_index_waits_for_green_and_triggers_grey(monkeypatch):
    collection = IndexingCollection()  # yellow 3 s, grey until triggered, green 2 s later
    collection.install(monkeypatch)
    ServerStore(client=collection.client(), options=ServerOptions(index_timeout=60)).build_index("c")
    assert collection.status() == "green"  # it returned once indexing was done, not before
    assert collection.triggered_at is not None and collection.triggered_at >= 3.0  # grey was triggered
    assert collection.now <= 60  # well before the timeout


@pytest.mark.parametrize("status", ["yellow", "grey"])
def test_build_index_gives_up_only_after_the_timeout(monkeypatch, status):
    collection = IndexingCollection(status, grey_at=None)  # never finishes
    collection.install(monkeypatch)
    store = ServerStore(client=collection.client(), options=ServerOptions(index_timeout=30))
    with pytest.raises(StoreError, match=f"is {status} after waiting 30 s"):
        store.build_index("c")
    assert collection.now >= 30  # it waited the whole timeout


def test_build_index_gives_up_at_once_on_red(monkeypatch):
    collection = IndexingCollection("red", grey_at=None)
    collection.install(monkeypatch)
    with pytest.raises(StoreError, match="is red after waiting"):
        ServerStore(client=collection.client(), options=ServerOptions(index_timeout=30)).build_index("c")
    assert collection.now < 30  # red will not turn green by waiting


def test_missing_collection_on_server_is_not_found():
    client = recording_client()
    client.get_collection.side_effect = http_error(404)
    with pytest.raises(StoreNotFoundError, match="No collection 'gone'"):
        ServerStore(client=client).collection_meta("gone")


def test_collection_without_regionmir_metadata_is_refused_with_what_to_do():
    store = ServerStore(location=":memory:")
    store.client.create_collection("foreign", vectors_config=models.VectorParams(size=4, distance=models.Distance.COSINE))
    assert store.collections() == ["foreign"]  # no side collection of RegionMIR's own
    with pytest.raises(StoreError, match=r"'foreign' .*has no RegionMIR metadata.*too old.*another --collection"):
        store.collection_meta("foreign")
    with pytest.raises(StoreError, match="has no RegionMIR metadata"):
        store.create_collection("foreign", 4, {"model_id": "m"})


def test_numpy_values_in_payloads_are_sent_as_plain_json():
    client = recording_client()
    store = ServerStore(client=client)
    payload = {"confidence": np.float32(0.5), "box": np.array([1, 2, 3, 4]), "n": np.int64(2)}
    store.upsert("c", [PointRecord(point_id("1", "spine", "m"), np.ones(4, np.float32), payload)])
    sent = client.upsert.call_args.args[1][0].payload
    assert sent == {"confidence": 0.5, "box": [1, 2, 3, 4], "n": 2}
    assert json.dumps(sent) and type(sent["confidence"]) is float


def test_collection_created_meanwhile_by_another_worker_is_accepted():
    client = recording_client()
    client.create_collection.side_effect = http_error(409)
    store = ServerStore(client=client)
    store.create_collection("c", 4, {"model_id": "m"})  # same dim and model: fine
    with pytest.raises(StoreError, match="filled by model"):
        ServerStore(client=client).create_collection("c", 4, {"model_id": "other"})


# -- collection layout options: open_store -> ServerStore -> create_collection --------------
def spy_on_create(client: QdrantClient) -> list[dict]:
    """Record the keyword arguments of every ``client.create_collection`` call (still made)."""
    calls, real = [], client.create_collection

    def create_collection(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    client.create_collection = create_collection
    return calls


def test_open_store_passes_layout_options_to_create_collection(monkeypatch):
    local = QdrantClient(location=":memory:")  # the "server": local mode ignores sharding
    monkeypatch.setattr("regionmir.store.server.QdrantClient", lambda **kwargs: local)
    calls = spy_on_create(local)
    opts = ServerOptions(shard_number=3, replication_factor=2, write_consistency_factor=1)
    store = open_store("http://qdrant.invalid:6333", options=opts)
    assert store.options is opts
    store.create_collection("c", 4, {"model_id": "m"})
    (kwargs,) = [c for c in calls if c["metadata"]]
    assert (kwargs["shard_number"], kwargs["replication_factor"], kwargs["write_consistency_factor"]) == (3, 2, 1)
    assert store.collection_meta("c")["model_id"] == "m"


def test_default_layout_leaves_it_to_the_server():
    store = ServerStore(location=":memory:")
    calls = spy_on_create(store.client)
    store.create_collection("c", 4, {"model_id": "m"})
    assert [(c["shard_number"], c["replication_factor"], c["write_consistency_factor"]) for c in calls] == [
        (None, None, None)]


@pytest.mark.parametrize("options,message", [
    ({"shard_number": 3}, "--shards / QDRANT_SHARDS = 3"),
    ({"replication_factor": 2}, "--replication-factor / QDRANT_REPLICATION_FACTOR = 2"),
    ({"replication_factor": 2, "write_consistency_factor": 2}, "QDRANT_WRITE_CONSISTENCY = 2"),
])
def test_embedded_store_refuses_cluster_layout(tmp_path, options, message):
    with pytest.raises(StoreError, match=f"{message}.*single shard.*--qdrant-url") as info:
        open_store(path=tmp_path / "store", options=ServerOptions(**options))
    assert not isinstance(info.value, StoreUnavailableError)
    assert not (tmp_path / "store").exists()


def test_embedded_store_accepts_the_layout_it_has(tmp_path):
    store = open_store(path=tmp_path / "store", options=ServerOptions(shard_number=1, replication_factor=1))
    store.create_collection("c", 4, {"model_id": "m"})
    assert store.collections() == ["c"]
    store.close()


@pytest.mark.parametrize("options,message", [
    ({"shard_number": 0}, "shard_number must be a positive integer"),
    ({"replication_factor": -1}, "replication_factor must be a positive integer"),
    ({"replication_factor": 2, "write_consistency_factor": 3}, "write consistency 3 exceeds the replication factor 2"),
])
def test_server_options_refuse_impossible_layouts(options, message):
    with pytest.raises(StoreError, match=message):
        ServerOptions(**options)


def test_local_mode_collection_created_meanwhile_is_accepted():
    client = QdrantClient(location=":memory:")
    first, second = ServerStore(client=client), ServerStore(client=client)
    second.client = mock.Mock(wraps=client)
    second.client.collection_exists.return_value = False  # checked before the other created it
    first.create_collection("c", 4, {"model_id": "m", "ingest_token": "first"})
    second.create_collection("c", 4, {"model_id": "m", "ingest_token": "second"})
    assert second.client.create_collection.call_count == 1  # tried, got "already exists"
    assert second.collection_meta("c")["ingest_token"] == "first"
    with pytest.raises(CollectionMismatchError, match="filled by model m"):
        second.create_collection("c", 4, {"model_id": "other"})
