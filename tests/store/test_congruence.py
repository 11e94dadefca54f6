"""Congruence: one phantom archive ingested into the embedded store and into Qdrant answers alike.

As qdrant-client's congruence tests do, the same data goes through the real ingest runner into
the embedded store (qdrant-edge) and into a second backend: qdrant-client's local mode (always)
or a Qdrant server from testcontainers (``pytest -m integration``). Then both get the same
questions: points and payloads (listed by ``Store.points``, filtered and limited), exact top-k
(ids in order up to ties, scores), approximate search after the index build against exact, count
and facet, and whole searches through :mod:`regionmir.search.searcher`.
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from regionmir.archive import Archive
from regionmir.dicom import read_image
from regionmir.inference.encoder import load_encoder
from regionmir.ingest.runner import IngestConfig, IngestSummary, run_ingest
from regionmir.search.searcher import Searcher, search_image
from regionmir.store import Filter, Hit, Range, Store
from regionmir.store.embedded import EdgeOptions, EmbeddedStore
from regionmir.store.server import ServerStore

SALT = "test-salt-congruence"  # both ingests must pseudonymise patients alike
K = 10
TOL = 1e-5  # scores are float32 cosines computed by two engines
# Small index thresholds, so that the embedded store really builds its per-anatomy HNSW graphs
# for the 432 points of the tiny archive and answers approximate searches from them.
SMALL_INDEX = EdgeOptions(full_scan_threshold_kb=1, indexing_threshold_kb=1)
SERVER_INDEX_KB = 10  # the same on the server (10 KB: low, yet within its config validation)

SECOND = ["qdrant-local", pytest.param("qdrant-server", marks=pytest.mark.integration)]


@dataclass
class Ingested:
    """A collection filled by ``run_ingest`` and the open store holding it."""

    store: Store
    name: str
    summary: IngestSummary
    archive: Path  # what was ingested (the tiny_archive fixture)
    model: Path  # and by which model (tiny_model)


@contextmanager
def regionmir_home(home: Path):
    """A fresh $REGIONMIR_HOME with the shared salt and no QDRANT_URL, for a module-scoped fixture."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REGIONMIR_HOME", str(home))
        mp.setenv("REGIONMIR_SALT", SALT)
        mp.delenv("QDRANT_URL", raising=False)
        yield mp


def tiny_data(request) -> tuple[Path, Path]:
    """``tiny_archive`` and ``tiny_model``, fetched only when needed: as arguments, these session
    fixtures would be built before ``second`` can skip for want of Docker."""
    return request.getfixturevalue("tiny_archive"), request.getfixturevalue("tiny_model")


@pytest.fixture(scope="module")
def embedded(request, tmp_path_factory):
    """The tiny archive ingested into the embedded store (default layout, small index thresholds)."""
    archive, model = tiny_data(request)
    home = tmp_path_factory.mktemp("congruence-embedded")
    with regionmir_home(home) as mp:
        mp.setattr("regionmir.store.embedded.EmbeddedStore", lambda path: EmbeddedStore(path, SMALL_INDEX))
        summary = run_ingest(IngestConfig(archive, model, workers=0))
    store = EmbeddedStore(home / "store")
    yield Ingested(store, "regions", summary, archive, model)
    store.close()


@pytest.fixture(scope="module", params=SECOND)
def second(request, tmp_path_factory):
    """The tiny archive ingested into qdrant-client's local mode or a Qdrant server."""
    url = request.getfixturevalue("qdrant_server_url") if request.param == "qdrant-server" else None
    archive, model = tiny_data(request)
    home = tmp_path_factory.mktemp(f"congruence-{request.param}")
    name = f"congruence-{uuid.uuid4().hex[:8]}"  # the server is shared by the whole session
    with regionmir_home(home) as mp:
        if url is None:
            from qdrant_client import QdrantClient

            client = QdrantClient(location=":memory:")
            mp.setattr(client, "close", lambda: None)  # the ingest closes its store; keep the data
            mp.setattr("regionmir.store.open_store", lambda *a, **k: ServerStore(client=client))
            summary = run_ingest(IngestConfig(archive, model, collection=name, workers=0))
            store = ServerStore(client=client)
        else:
            summary = run_ingest(IngestConfig(archive, model, collection=name, qdrant_url=url, workers=0))
            store = ServerStore(url=url)
            index_on_server(store, name)
    yield Ingested(store, name, summary, archive, model)
    store.close()


def index_on_server(store: ServerStore, name: str) -> None:
    """Lower the server's index thresholds so that it builds a graph of the tiny collection, and wait."""
    from qdrant_client import models

    store.client.update_collection(
        name,
        hnsw_config=models.HnswConfigDiff(full_scan_threshold=SERVER_INDEX_KB),
        optimizers_config=models.OptimizersConfigDiff(indexing_threshold=SERVER_INDEX_KB),
    )
    store.build_index(name)


def both(embedded: Ingested, second: Ingested) -> list[Ingested]:
    """The two collections, embedded first."""
    return [embedded, second]


def all_points(c: Ingested) -> dict[str, dict]:
    """Every point of the collection, id -> payload, listed by ``Store.points``."""
    n = c.store.count(c.name)
    listed = c.store.points(c.name, None, n + 1)
    assert len(listed) == n
    return {p.id: p.payload for p in listed}


def all_searched(c: Ingested) -> dict[str, dict]:
    """Every point of the collection, id -> payload, as an exact search of all of them finds them."""
    n = c.store.count(c.name)
    probe = np.ones(int(c.store.collection_meta(c.name)["dim"]), np.float32)
    hits = c.store.search(c.name, probe, top_k=n + 1, exact=True)
    assert len(hits) == n
    return {h.id: h.payload for h in hits}


def stored_vectors(c: Ingested, ids: list[str]) -> np.ndarray:
    """The stored vectors of ``ids`` (``(n, D)``), read with each backend's own client."""
    if isinstance(c.store, EmbeddedStore):
        records = c.store._shard(c.name).retrieve(ids, False, True)
    else:
        records = c.store.client.retrieve(c.name, ids, with_payload=False, with_vectors=True)
    by_id = {str(r.id): r.vector for r in records}
    return np.array([by_id[i] for i in ids], np.float32)


@dataclass(frozen=True)
class Query:
    """A region of a test-split image: its embedding, anatomy and the image's patient pseudonym."""

    label: str
    vector: np.ndarray  # (D,)
    anatomy: str
    patient: str


@pytest.fixture(scope="module")
def queries(embedded) -> list[Query]:
    """Every region of the test-split images, embedded by the model (not read from a store)."""
    archive, encoder = Archive(embedded.archive), load_encoder(embedded.model)
    patients = {p["image_id"]: p["patient"] for p in all_points(embedded).values()}
    out = []
    for row in archive.split("test"):
        regions = archive.regions(row.dicom_id)
        emb, _ = encoder.embed_regions(read_image(embedded.archive / row.path).pixels, [r.box for r in regions])
        out += [Query(f"{row.dicom_id[:8]}/{r.anatomy.slug}", v, r.anatomy.slug, patients[row.dicom_id])
                for r, v in zip(regions, emb)]
    assert out, "the tiny archive has no labelled test-split image"
    return out


def filters(q: Query, findings: list[str], store=None, name: str = "") -> dict[str, Filter | None]:
    """The filters every query is asked with; with ``store``, "finding-not-patient" takes the
    first finding that another patient has (so that filter can find something)."""
    other = findings[0]
    if store is not None:
        other = next((f for f in findings if store.count(name, Filter(must={"findings": f},
                                                                      must_not={"patient": q.patient}))), other)
    return {
        "none": None,
        "anatomy": Filter(must={"anatomy": q.anatomy}),
        "anatomy-not-patient": Filter(must={"anatomy": q.anatomy}, must_not={"patient": q.patient}),
        "findings": Filter(must={"findings": findings}),
        "finding-not-patient": Filter(must={"findings": other}, must_not={"patient": q.patient}),
        # the tiny archive's films have CTRs of 0.446 to 0.778 (7 of 12 above 0.5)
        "anatomy-ctr-enlarged": Filter(must={"anatomy": q.anatomy, "ctr": Range(gt=0.5)}),
        "ctr-band-not-patient": Filter(must={"ctr": Range(gte=0.45, lt=0.53)}, must_not={"patient": q.patient}),
    }


def assert_same_ranking(a: list[Hit], b: list[Hit], a_more: list[Hit], b_more: list[Hit]) -> None:
    """Same top-k: scores equal to TOL, ids equal position by position except swaps of tied scores.

    ``a_more`` / ``b_more`` are longer lists of the same searches: a tie may reach past k, so an
    id seen only in one top-k must have the tied score in the other backend's longer list.
    """
    assert len(a) == len(b)
    np.testing.assert_allclose([h.score for h in a], [h.score for h in b], atol=TOL)
    score_a = {h.id: h.score for h in a_more}
    score_b = {h.id: h.score for h in b_more}
    for x, y in zip(a, b):
        if x.id != y.id:  # allowed only when each ranks the other's point equally
            assert abs(score_a.get(y.id, np.inf) - x.score) <= TOL, (x, y)
            assert abs(score_b.get(x.id, np.inf) - y.score) <= TOL, (x, y)
    assert len({h.id for h in a}) == len(a) and len({h.id for h in b}) == len(b)


# ----------------------------------------------------------------------------- the comparison


def test_ranking_comparison_allows_swaps_of_tied_scores_only():
    x, y, z, w = (Hit("x", 0.9, {}), Hit("y", 0.8, {}), Hit("z", 0.8, {}), Hit("w", 0.8, {}))
    assert_same_ranking([x, y, z], [x, z, y], [x, y, z], [x, z, y])
    assert_same_ranking([x, y], [x, z], [x, y, z], [x, z, y])  # the tie reaches past k = 2
    with pytest.raises(AssertionError):
        assert_same_ranking([x, y, z], [x, y, w], [x, y, z], [x, y, w])  # w is not in the other
    with pytest.raises(AssertionError):
        assert_same_ranking([x, y], [y, x], [x, y], [y, x])


# ----------------------------------------------------------------------------- the data


def test_same_points_payloads_and_vectors(second, embedded):
    a, b = all_points(embedded), all_points(second)
    assert embedded.summary.regions == second.summary.regions == len(a) > 0
    assert embedded.summary.ingested == second.summary.ingested
    assert a.keys() == b.keys()
    assert a == b  # payloads identical, findings lists and None confidences included
    assert all(isinstance(p["ctr"], float) for p in a.values())  # every film of the archive has heart and lungs
    assert a == all_searched(embedded) and b == all_searched(second)  # listing and search hold the same
    ids = sorted(a)
    np.testing.assert_allclose(stored_vectors(embedded, ids), stored_vectors(second, ids), atol=1e-6)


def test_count_and_facets_agree(second, embedded, queries):
    facets = [c.store.facet(c.name, "anatomy") for c in both(embedded, second)]
    assert facets[0] == facets[1] and sum(facets[0].values()) == embedded.summary.regions
    assert embedded.store.facet(embedded.name, "findings") == second.store.facet(second.name, "findings")
    findings = sorted(embedded.store.facet(embedded.name, "findings"))
    for slug in facets[0]:
        flt = Filter(must={"anatomy": slug})
        assert embedded.store.count(embedded.name, flt) == second.store.count(second.name, flt) == facets[0][slug]
    for flt in filters(queries[0], findings).values():
        assert embedded.store.count(embedded.name, flt) == second.store.count(second.name, flt)


def test_points_lists_the_same_points_in_the_same_order(second, embedded, queries):
    payloads = list(all_points(embedded).values())
    images = sorted({p["image_id"] for p in payloads})
    findings = sorted(embedded.store.facet(embedded.name, "findings"))
    asked = [Filter(must={"image_id": i}) for i in images[:5]] + list(filters(queries[0], findings).values())
    for flt in asked:
        got = [c.store.points(c.name, flt, 1000) for c in both(embedded, second)]
        assert got[0] == got[1], flt  # ids in the same (ascending) order, payloads equal
        assert len(got[0]) == embedded.store.count(embedded.name, flt)
        assert [p.id for p in got[0]] == sorted(p.id for p in got[0])
        limited = [c.store.points(c.name, flt, 3) for c in both(embedded, second)]
        assert limited[0] == limited[1] == got[0][:3]
    one = [c.store.points(c.name, Filter(must={"image_id": images[0]}), 64) for c in both(embedded, second)]
    assert {p.payload["anatomy"] for p in one[0]} == {p["anatomy"] for p in payloads if p["image_id"] == images[0]}


# ----------------------------------------------------------------------------- searches


def test_exact_search_gives_the_same_top_k(second, embedded, queries):
    findings = sorted(embedded.store.facet(embedded.name, "findings"))
    assert findings, "the tiny archive has no findings to filter by"
    for q in queries:
        for what, flt in filters(q, findings, embedded.store, embedded.name).items():
            got = [c.store.search(c.name, q.vector, top_k=2 * K, filter=flt, exact=True)
                   for c in both(embedded, second)]
            assert got[0], (q.label, what)
            assert_same_ranking(got[0][:K], got[1][:K], got[0], got[1])


def test_approximate_search_after_build_index_recalls_exact(second, embedded, queries):
    info = embedded.store._shard(embedded.name).info()
    assert info.indexed_vectors_count == info.points_count  # the graphs exist and are searched
    for c in both(embedded, second):
        c.store.build_index(c.name)  # already done by the ingest; again, it must change nothing
        recalls = []
        for q in queries:
            for flt in (Filter(must={"anatomy": q.anatomy}),
                        Filter(must={"anatomy": q.anatomy}, must_not={"patient": q.patient}),
                        Filter(must={"anatomy": q.anatomy, "ctr": Range(gt=0.5)})):
                exact = {h.id for h in c.store.search(c.name, q.vector, top_k=K, filter=flt, exact=True)}
                approx = c.store.search(c.name, q.vector, top_k=K, filter=flt)
                assert all(h.payload["anatomy"] == q.anatomy for h in approx)
                assert "ctr" not in flt.must or all(h.payload["ctr"] > 0.5 for h in approx)
                assert not flt.must_not or all(h.payload["patient"] != q.patient for h in approx)
                recalls.append(len(exact & {h.id for h in approx}) / len(exact))
        assert np.mean(recalls) >= 0.9, (c.store.location, np.mean(recalls))


def test_search_library_gives_the_same_hits(second, embedded, tmp_path, monkeypatch):
    monkeypatch.setenv("REGIONMIR_HOME", str(tmp_path))  # as a searcher's machine: same salt, no store
    monkeypatch.setenv("REGIONMIR_SALT", SALT)
    archive, encoder = Archive(embedded.archive), load_encoder(embedded.model)
    row = archive.split("test")[0]
    image, slug = embedded.archive / row.path, archive.regions(row.dicom_id)[0].anatomy.slug
    searchers = [Searcher(c.store, c.name, encoder) for c in both(embedded, second)]
    one = [search_image(s, image, slug, top_k=K) for s in searchers]
    more = [search_image(s, image, slug, top_k=2 * K).regions[0].hits for s in searchers]
    assert all(o.in_archive and o.excluded_patient for o in one)
    (a,), (b,) = one[0].regions, one[1].regions
    assert a.hits and row.dicom_id not in {h.payload["image_id"] for h in a.hits}
    assert_same_ranking(a.hits, b.hits, *more)

    ranked = [search_image(s, image, "all", top_k=100, exact=True).studies for s in searchers]
    as_hits = [[Hit(r.study_id, r.score, {}) for r in studies] for studies in ranked]
    assert len(as_hits[0]) > 1
    assert_same_ranking(*as_hits, *as_hits)  # every study is ranked: no tie reaches past the end
    assert [{r.study_id: r.matched for r in studies} for studies in ranked] == [
        {r.study_id: r.matched for r in ranked[0]}] * 2
