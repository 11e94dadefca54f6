"""Search library: query regions, filters, exclusions, study ranking, against an ingested tiny archive."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers.ingest import ingested_home

from regionmir.anatomy import Anatomy
from regionmir.archive import Archive
from regionmir.errors import CollectionMismatchError, RegionMIRError, StoreError, StoreNotFoundError
from regionmir.regions import Box, crop_region
from regionmir.search.searcher import (
    Searcher,
    _stored_regions,
    rank_studies,
    same_image,
    search_image,
)
from regionmir.store import Filter, Hit, open_store
from regionmir.store.collection import open_existing_store

SALT = "test-salt-search"


@pytest.fixture(scope="module")
def indexed(tiny_archive, tiny_model, tmp_path_factory) -> Path:
    """A $REGIONMIR_HOME whose embedded store holds the tiny archive in collection `regions`."""
    return ingested_home(tmp_path_factory.mktemp("search-home"), tiny_archive, tiny_model, SALT)


@pytest.fixture
def env(indexed, monkeypatch):
    monkeypatch.setenv("REGIONMIR_HOME", str(indexed))
    monkeypatch.setenv("REGIONMIR_SALT", SALT)
    monkeypatch.delenv("QDRANT_URL", raising=False)
    return indexed


@pytest.fixture
def searcher(env, tiny_model):
    from regionmir.inference.encoder import load_encoder

    store = open_existing_store()
    yield Searcher(store, "regions", load_encoder(tiny_model))
    store.close()


def labeled(archive: Path) -> list[Path]:
    a = Archive(archive)
    return [p for p in a.dicom_paths() if a.regions(p.stem)]


def same_patient_pairs(archive: Path) -> tuple[Path, Path] | None:
    """Two labeled images of one patient, when the archive has such a pair."""
    import pydicom

    seen: dict[str, Path] = {}
    for p in labeled(archive):
        pid = str(pydicom.dcmread(p, stop_before_pixels=True).PatientID)
        if pid in seen:
            return seen[pid], p
        seen[pid] = p
    return None


# ----------------------------------------------------------------------------- pure helpers


def _hit(study: str, slug: str, score: float) -> Hit:
    return Hit(f"{study}-{slug}-{score}", score, {"study_id": study, "anatomy": slug, "image_id": study + "i"})


def test_rank_studies_matches_a_hand_computed_ranking():
    pools = {
        "left-lung": [_hit("A", "left-lung", 0.9), _hit("B", "left-lung", 0.8), _hit("A", "left-lung", 0.7)],
        "trachea": [_hit("B", "trachea", 0.95), _hit("C", "trachea", 0.5)],
    }
    got = rank_studies(pools, top_k=10)
    # A: left-lung 0.9, trachea absent -> pool floor 0.5  => 0.70
    # B: 0.8 and 0.95 => 0.875 ; C: left-lung absent -> floor 0.7, trachea 0.5 => 0.60
    assert [r.study_id for r in got] == ["B", "A", "C"]
    assert [round(r.score, 6) for r in got] == [0.875, 0.7, 0.6]
    assert got[1].regions == {"left-lung": 0.9, "trachea": 0.5} and got[1].matched == 1
    assert got[0].best.score == 0.95
    assert len(rank_studies(pools, top_k=2)) == 2


def _radiograph(sop: str | None, shape: tuple[int, int]):
    from regionmir.dicom import DicomHeader, Radiograph

    header = DicomHeader(sop, None, None, None, None, None, shape[0], shape[1], None)
    return Radiograph("q.dcm", header, np.zeros(shape, np.float32))


def test_an_archived_namesake_is_the_query_only_when_it_is_the_same_image():
    """IM000001.dcm names an image in every study: the name alone once took another image's boxes."""
    stored = {"left-lung": {"box": [131, 53, 190, 173], "sop_uid": "1.2.3"}}
    assert same_image(stored, _radiograph("1.2.3", (256, 256)))
    assert not same_image(stored, _radiograph("1.2.4", (256, 256)))  # another image of the same name
    unknown = {"left-lung": {"box": [131, 53, 190, 173]}}  # no SOPInstanceUID stored (or a PNG query)
    assert same_image(unknown, _radiograph(None, (256, 256)))
    assert not same_image(unknown, _radiograph(None, (8, 8)))  # its boxes do not even fit
    assert not same_image(stored, _radiograph(None, (8, 8)))


def test_stored_boxes_are_checked_against_the_query_image():
    stored = {"left-lung": {"box": [131, 53, 190, 173]}, "trachea": {"box": [100, 0, 140, 300]},
              "spine": {"box": [300, 300, 320, 320]}}
    got = {r.anatomy.slug: r.box for r in _stored_regions(stored, 256, 256)}
    assert got == {"left-lung": Box(131, 53, 190, 173), "trachea": Box(100, 0, 140, 256)}  # clipped; spine out


# ----------------------------------------------------------------------------- against a store


def test_query_in_archive_uses_its_annotation_and_excludes_itself_and_its_patient(searcher, tiny_archive):
    import pydicom

    path = labeled(tiny_archive)[0]
    region = Archive(tiny_archive).regions(path.stem)[0]
    out = search_image(searcher, path, region.anatomy.slug, top_k=50)
    q = out.regions[0]
    assert out.in_archive and q.query.source == "archive" and q.query.box == Box(*region.box.as_list())
    from regionmir.dicom import read_image

    img = pydicom.dcmread(path, stop_before_pixels=True)
    assert np.allclose(q.crop, crop_region(read_image(path).pixels, q.query.box, searcher.encoder.spec))
    assert q.hits and all(h.payload["anatomy"] == region.anatomy.slug for h in q.hits)
    assert all(h.payload["image_id"] != path.stem for h in q.hits)
    own = {h.payload["patient"] for h in q.hits}
    from regionmir.privacy import pseudonym

    assert pseudonym(str(img.PatientID)) not in own
    scores = [h.score for h in q.hits]
    assert scores == sorted(scores, reverse=True)


def test_same_patient_is_included_on_request_but_never_the_image(searcher, tiny_archive):
    pair = same_patient_pairs(tiny_archive)
    if pair is None:
        pytest.skip("the tiny archive has no patient with two labeled images")
    query, other = pair
    slug = Archive(tiny_archive).regions(query.stem)[0].anatomy.slug
    excl = {h.payload["image_id"] for h in search_image(searcher, query, slug, top_k=100).regions[0].hits}
    incl = {h.payload["image_id"] for h in
            search_image(searcher, query, slug, top_k=100, exclude_same_patient=False).regions[0].hits}
    assert other.stem in incl and other.stem not in excl and query.stem not in incl


def test_a_copy_outside_the_archive_finds_its_original_first(searcher, tiny_archive, tmp_path):
    path = labeled(tiny_archive)[0]
    copy = tmp_path / "copy-of-query.dcm"
    shutil.copy(path, copy)
    sg = Archive(tiny_archive).scene_graph_path(path.stem)
    region = Archive(tiny_archive).regions(path.stem)[0]
    if sg is None:
        out = search_image(searcher, copy, region.anatomy.slug, box=region.box, exclude_same_patient=False)
        source = "box"
    else:
        out = search_image(searcher, copy, region.anatomy.slug, scene_graph=sg, exclude_same_patient=False)
        source = "scene-graph"
    q = out.regions[0]
    assert not out.in_archive and q.query.source == source
    assert q.hits[0].payload["image_id"] == path.stem and q.hits[0].score > 0.999


def test_where_and_study_filters_hold_for_every_hit(searcher, tiny_archive):
    path = labeled(tiny_archive)[0]
    slug = Archive(tiny_archive).regions(path.stem)[0].anatomy.slug
    hits = search_image(searcher, path, slug, where={"view": "PA"}, top_k=100).regions[0].hits
    assert all(h.payload["view"] == "PA" for h in hits)

    store = searcher.store
    with_finding = [(a, f) for f in sorted(store.facet("regions", "findings"))
                    for a in Anatomy if store.count("regions", Filter(must={"anatomy": a.slug, "findings": f}))]
    assert with_finding, "the phantom archive has findings: the filter must be tested on some"
    anatomy, f = with_finding[0]
    n = store.count("regions", Filter(must={"anatomy": anatomy.slug, "findings": f}))
    assert n < store.count("regions", Filter(must={"anatomy": anatomy.slug}))  # the filter filters
    query = next(p for p in labeled(tiny_archive) if anatomy in {r.anatomy for r in Archive(tiny_archive).regions(p.stem)})
    hits = search_image(searcher, query, anatomy.slug, where={"findings": f}, top_k=100,
                        exclude_same_patient=False).regions[0].hits
    own = any(r.anatomy == anatomy and f in r.findings for r in Archive(tiny_archive).regions(query.stem))
    assert len(hits) == n - own and all(f in h.payload["findings"] for h in hits)  # the query is left out
    study = hits[0].payload["study_id"] if hits else None
    if study:
        hits = search_image(searcher, path, slug, study=study, top_k=100).regions[0].hits
        assert hits and all(h.payload["study_id"] == study for h in hits)


def test_exact_and_approximate_agree_on_the_tiny_collection(searcher, tiny_archive):
    path = labeled(tiny_archive)[1]
    slug = Archive(tiny_archive).regions(path.stem)[0].anatomy.slug
    a = [h.id for h in search_image(searcher, path, slug, top_k=5).regions[0].hits]
    b = [h.id for h in search_image(searcher, path, slug, top_k=5, exact=True).regions[0].hits]
    assert a == b


def test_all_ranks_studies_region_by_region(searcher, tiny_archive):
    path = labeled(tiny_archive)[0]
    out = search_image(searcher, path, "all", top_k=5)
    n_regions = len(Archive(tiny_archive).regions(path.stem))
    assert len(out.regions) == n_regions and out.studies
    scores = [s.score for s in out.studies]
    assert scores == sorted(scores, reverse=True)
    for s in out.studies:
        assert len(s.regions) == n_regions
        assert s.score == pytest.approx(np.mean(list(s.regions.values())))
    own_study = next(iter(searcher.stored_regions(path.stem).values()))["study_id"]
    assert all(s.best.payload["image_id"] != path.stem for s in out.studies)
    assert own_study not in {s.study_id for s in out.studies}  # same patient excluded by default


class Recording:
    """A store that records the calls made to it and passes them on."""

    def __init__(self, store):
        self._store, self.calls = store, []

    def __getattr__(self, attr):
        real = getattr(self._store, attr)
        if not callable(real):
            return real

        def call(*args, **kwargs):
            self.calls.append((attr, args, kwargs))
            return real(*args, **kwargs)

        return call


def test_a_query_in_the_collection_lists_its_stored_regions_with_points(env, tiny_archive, tiny_model):
    """The query's own boxes come from listing its points (Store.points), never from a fake search."""
    from regionmir.inference.encoder import load_encoder

    path = labeled(tiny_archive)[0]
    store = Recording(open_existing_store())
    try:
        searcher = Searcher(store, "regions", load_encoder(tiny_model))
        stored = searcher.stored_regions(path.stem)
        want = {r.anatomy.slug: r.box.as_list() for r in Archive(tiny_archive).regions(path.stem)}
        assert {slug: p["box"] for slug, p in stored.items()} == want
        assert all(p["image_id"] == path.stem for p in stored.values())
        assert [c[0] for c in store.calls if c[0] in ("points", "search")] == ["points"]
        assert store.calls[-1][1][1] == Filter(must={"image_id": path.stem})
        assert searcher.stored_regions("not-in-the-collection") == {}
        store.calls.clear()
        out = search_image(searcher, path, next(iter(want)), top_k=5)
        assert out.in_archive and out.regions[0].query.source == "archive"
        searched = [c for c in store.calls if c[0] == "search"]
        assert [c[0] for c in store.calls if c[0] in ("points", "search")] == ["points", "search"]
        assert searched[0][1][3].must_not["image_id"] == path.stem  # the real query leaves itself out
        assert "image_id" not in searched[0][1][3].must
    finally:
        store.close()


def test_search_never_imports_ingest(env, tiny_archive, tiny_model, tmp_path):
    """`import regionmir.search`, and a whole search with a montage, load no regionmir.ingest module."""
    path = labeled(tiny_archive)[0]
    slug = Archive(tiny_archive).regions(path.stem)[0].anatomy.slug
    code = textwrap.dedent(f"""
        import json, sys
        import regionmir.search
        imported = sorted(m for m in sys.modules if m.startswith("regionmir.ingest"))
        from regionmir.inference.encoder import load_encoder
        from regionmir.search.montage import write_montage
        from regionmir.store import open_existing_store
        store = open_existing_store()
        searcher = regionmir.search.Searcher(store, "regions", load_encoder({str(tiny_model)!r}))
        out = regionmir.search.search_image(searcher, {str(path)!r}, {slug!r}, top_k=3)
        write_montage(out, searcher.meta.get("archive_root"), {str(tmp_path / "m.png")!r}, 3)
        store.close()
        searched = sorted(m for m in sys.modules if m.startswith("regionmir.ingest"))
        print(json.dumps({{"imported": imported, "searched": searched, "hits": len(out.regions[0].hits)}}))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    assert doc == {"imported": [], "searched": [], "hits": 3}
    assert (tmp_path / "m.png").is_file()


def test_box_outside_the_image_and_box_with_all_are_refused(searcher, tiny_archive):
    path = labeled(tiny_archive)[0]
    with pytest.raises(RegionMIRError, match="outside"):
        search_image(searcher, path, "left-lung", box=Box(1e6, 1e6, 1e6 + 10, 1e6 + 10))
    with pytest.raises(RegionMIRError, match="one --anatomy"):
        search_image(searcher, path, "all", box=Box(1, 1, 20, 20))


def test_collection_errors(env, tiny_model):
    from regionmir.inference.encoder import load_encoder

    enc = load_encoder(tiny_model)
    store = open_store(path=env / "store")
    try:
        store.create_collection("other-model", enc.dim, {"model_id": "ffffffffffffffff"})
        store.create_collection("empty", enc.dim, {"model_id": enc.model_id})
        with pytest.raises(CollectionMismatchError, match=f"'other-model' was filled by model ffffffffffffffff "
                                                          rf"\({enc.dim}-d vectors\), not by model {enc.model_id}"
                                                          r".*\(--model\).*\(--collection NEW\)"):
            Searcher(store, "other-model", enc)
        with pytest.raises(CollectionMismatchError, match="ffffffffffffffff"):  # checked with given meta too
            Searcher(store, "other-model", enc, meta=store.collection_meta("other-model"))
        with pytest.raises(StoreNotFoundError, match="is empty"):
            Searcher(store, "empty", enc)
        with pytest.raises(StoreNotFoundError, match="nope"):
            Searcher(store, "nope", enc)
        s = Searcher(store, "regions", enc)
        missing = [a for a in Anatomy if a.slug not in s.counts]
        if missing:
            with pytest.raises(StoreError, match=f"no {missing[0].slug} regions"):
                s.require(missing[0])
    finally:
        store.close()


def test_no_store_yet_says_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.setenv("REGIONMIR_HOME", str(tmp_path))
    monkeypatch.delenv("QDRANT_URL", raising=False)
    with pytest.raises(StoreNotFoundError, match="regionmir ingest ARCHIVE"):
        open_existing_store()
