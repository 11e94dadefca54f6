"""Search: a query region -> filtered approximate nearest neighbours -> hits; study-level ranking.

The query region comes from, in order: an explicit box; the image's own annotation when the
image is in the collection (looked up by ``image_id`` = file stem, and checked to be the same
image by SOPInstanceUID); a scene graph; the
localizer. The crop is encoded by the model that filled the collection (checked by
``model_id``) and searched among points of the same anatomy.

``--anatomy all`` ranks studies: for each region of the query, the best similarity among
that study's points of the same anatomy; a study's score is the mean over the query's
regions. A region where a study is not among the ``pool`` nearest points contributes the
pool's lowest score, an upper bound of its true best similarity (see :func:`rank_studies`).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from regionmir.anatomy import Anatomy
from regionmir.annotations import read_scene_graph
from regionmir.archive import image_id_of
from regionmir.errors import (
    ModelError,
    RegionMIRError,
    StoreError,
    StoreNotFoundError,
    UsageError,
)
from regionmir.regions import CTR_DECIMALS, Box, cardiothoracic_ratio, validate_box
from regionmir.store.collection import check_model, require_collection

log = logging.getLogger("regionmir")

IMAGE_POINTS = 64  # points listed for one image: one per anatomy (36 at most), and room to spare


class UnusableBoxError(UsageError):
    """A ``--box`` that cannot be searched with this query (outside the image, too small, ...)."""

    def __init__(self, reason: str):
        super().__init__(reason, "--box", f"--box is unusable: {reason}")


@dataclass(frozen=True)
class QueryRegion:
    """One region of the query image and where its box came from."""

    anatomy: Anatomy
    box: Box
    source: str  # "box", "archive", "scene-graph" or "localizer"
    confidence: float | None = None


@dataclass
class RegionResult:
    """Hits for one query region."""

    query: QueryRegion
    crop: np.ndarray  # (S, S) the encoder's input crop, [0, 1]
    hits: list  # list[store.Hit], best first


@dataclass
class StudyResult:
    """One study ranked by ``--anatomy all``."""

    study_id: str
    score: float  # mean over the query's regions of the best same-anatomy similarity
    regions: dict[str, float]  # slug -> best similarity (bounded where not in the pool)
    matched: int  # regions where the study was in the pool
    best: object  # the store.Hit with the highest score in this study


@dataclass
class SearchOutcome:
    """Everything `regionmir search` shows: the query, per-region hits, and study ranks for 'all'."""

    image_id: str
    in_archive: bool
    excluded_patient: bool
    radiograph: object  # dicom.Radiograph of the query
    regions: list[RegionResult]
    studies: list[StudyResult] | None = None  # only for --anatomy all
    ctr: float | None = None  # the query film's cardiothoracic ratio, when known (query_ctr)


class Searcher:
    """Searches one collection with the encoder that filled it; records stage timings.

    Args:
        store: the open :class:`~regionmir.store.Store`.
        collection: the collection to search.
        encoder: the encoder that filled it (checked by ``model_id`` and ``dim``).
        localizer: a Localizer, a zero-argument function loading one, or None.
        meta: the collection's metadata when the caller has already read it with
            :func:`~regionmir.store.collection.require_collection` (the CLI does, while the
            model loads); None: read here.

    Raises (on construction):
        StoreNotFoundError: no such collection, or it is empty.
        CollectionMismatchError: the collection was filled by another model.
    """

    def __init__(self, store, collection: str, encoder, localizer=None, meta: dict | None = None):
        self.store, self.collection, self.encoder = store, collection, encoder
        self._localizer = localizer  # a Localizer, a zero-argument loader, or None
        self.timings: dict[str, float] = defaultdict(float)  # stage -> seconds
        self.meta = require_collection(store, collection) if meta is None else meta
        check_model(self.meta, collection, encoder.model_id, encoder.dim)
        self.counts = self._timed("collection_check", store.facet, collection, "anatomy")  # slug -> points
        if not self.counts:
            raise StoreNotFoundError(
                f"Collection {collection!r} is empty. Fill it with `regionmir ingest ARCHIVE --collection {collection}`."
            )

    def _timed(self, stage: str, fn, *args, **kwargs):
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.timings[stage] += time.perf_counter() - t

    def read(self, image: str | Path):
        """The query image as a :class:`~regionmir.dicom.Radiograph` (ImageReadError if unreadable)."""
        from regionmir.dicom import read_image

        return self._timed("decode", read_image, image)

    def require(self, anatomy: Anatomy) -> None:
        """Raises StoreError when the collection has no region of ``anatomy``."""
        if not self.counts.get(anatomy.slug):
            have = ", ".join(sorted(self.counts))
            raise StoreError(
                f"Collection {self.collection!r} has no {anatomy.slug} regions (it has: {have})."
            )

    def stored_regions(self, image_id: str) -> dict[str, dict]:
        """Payloads of the collection's points of ``image_id`` by anatomy slug (empty if none)."""
        from regionmir.store import Filter

        f = Filter(must={"image_id": image_id})
        points = self._timed("lookup", self.store.points, self.collection, f, IMAGE_POINTS)
        return {p.payload["anatomy"]: p.payload for p in points}

    def archived_regions(self, image_id: str, radiograph) -> dict[str, dict]:
        """Payloads by anatomy slug of the archived image the query *is*; empty when it is none.

        The lookup is by ``image_id`` (the file name), which names no image for sure: exports
        call files IM000001.dcm in every study. A namesake counts only when :func:`same_image`.
        """
        stored = self.stored_regions(image_id)
        return stored if stored and same_image(stored, radiograph) else {}

    def query_regions(self, image, anatomy: Anatomy | None, box: Box | None = None,
                      scene_graph: Path | None = None, stored: dict | None = None) -> list[QueryRegion]:
        """The query's region(s): of ``anatomy``, or all regions when ``anatomy`` is None.

        Raises:
            UnusableBoxError: ``--box`` without one anatomy, or a box outside the image.
            AnnotationError: unreadable scene graph.
            ModelError: no source of regions (no box, annotation, scene graph or localizer).
            RegionMIRError: the query has no region of ``anatomy``.
        """
        return of_anatomy(self.film_regions(image, anatomy, box, scene_graph, stored), anatomy)

    def film_regions(self, image, anatomy: Anatomy | None, box: Box | None = None,
                     scene_graph: Path | None = None, stored: dict | None = None) -> list[QueryRegion]:
        """Every region of the query film from the first source there is (with ``box``: that box
        alone, of ``anatomy``), in vocabulary order; :meth:`query_regions` keeps ``anatomy``'s.

        Raises:
            UnusableBoxError, AnnotationError, ModelError: as :meth:`query_regions`.
        """
        h, w = image.shape
        if box is not None:
            if anatomy is None:
                raise UnusableBoxError("a box needs one --anatomy (not 'all')")
            clipped, reason = validate_box(box, w, h)
            if clipped is None:
                raise UnusableBoxError(f"{reason}; give x1,y1,x2,y2 in pixels of the {w}x{h} query image "
                                       "(from its top-left corner), at least 2 px each way")
            regions = [QueryRegion(anatomy, clipped, "box")]
        elif stored:
            regions = _stored_regions(stored, w, h)
        elif scene_graph is not None:
            sg = read_scene_graph(scene_graph)
            regions = [QueryRegion(r.anatomy, r.box, "scene-graph") for r in _first_of_each(sg)]
        else:
            regions = self._localize(image)
        return sorted(regions, key=lambda r: r.anatomy.index)

    def _localize(self, image) -> list[QueryRegion]:
        loc = self._timed("localizer_load", self._localizer) if callable(self._localizer) else self._localizer
        if loc is None:
            raise ModelError(
                "The query image is not in the collection and the model folder has no "
                "localizer.onnx: pass --box x1,y1,x2,y2 or --scene-graph FILE."
            )
        found = self._timed("localize", loc.locate, image)
        return [QueryRegion(r.anatomy, r.box, "localizer", r.confidence) for r in found]

    def encode(self, image, regions: list[QueryRegion]) -> tuple[np.ndarray, np.ndarray]:
        """``(crops (R, S, S), embeddings (R, D))`` of ``regions``."""
        crops = self._timed("encode", self.encoder.crops, image, [r.box for r in regions])
        emb, _ = self._timed("encode", self.encoder.embed, crops)
        return crops, emb

    def filter(self, anatomy: Anatomy, where: dict | None = None, study: str | None = None,
               exclude_image: str | None = None, exclude_patient: str | None = None):
        """The payload filter of a search for ``anatomy``."""
        from regionmir.store import Filter

        must = {**(where or {}), "anatomy": anatomy.slug}
        if study:
            must["study_id"] = study
        must_not = {}
        if exclude_image:
            must_not["image_id"] = exclude_image
        if exclude_patient:
            must_not["patient"] = exclude_patient
        return Filter(must=must, must_not=must_not)

    def search(self, vector: np.ndarray, flt, top_k: int = 10, exact: bool = False) -> list:
        """Nearest points to ``vector`` among those matching ``flt``, best first."""
        return self._timed("query", self.store.search, self.collection, vector, top_k, flt, exact)


def of_anatomy(regions: list[QueryRegion], anatomy: Anatomy | None) -> list[QueryRegion]:
    """The regions of ``anatomy`` (all when None).

    Raises:
        RegionMIRError: none is of ``anatomy``.
    """
    if anatomy is None:
        return regions
    kept = [r for r in regions if r.anatomy is anatomy]
    if not kept:
        raise RegionMIRError(f"The query image has no {anatomy.slug} region in its annotation; pass --box x1,y1,x2,y2.")
    return kept


def query_ctr(stored: dict[str, dict], regions: list[QueryRegion]) -> float | None:
    """The query film's cardiothoracic ratio: the collection's (its payload ``ctr``) when the film
    is stored with one, else from its heart and lung boxes, else None (e.g. ``--box`` alone)."""
    kept = next((p["ctr"] for p in stored.values() if p.get("ctr") is not None), None)
    if kept is not None:
        return float(kept)
    ratio = cardiothoracic_ratio({r.anatomy.slug: r.box for r in regions})
    return None if ratio is None else round(float(ratio), CTR_DECIMALS)


def _first_of_each(sg) -> list:
    """The first region of each anatomy of scene graph ``sg``, as the ingest keeps them.

    A scene graph may box one anatomy twice (or 20,000 times); a query has one region per
    anatomy, so later boxes are left out, and said once.
    """
    first: dict[Anatomy, object] = {}
    for r in sg.regions:
        first.setdefault(r.anatomy, r)
    if len(first) < len(sg.regions):
        twice = sorted({r.anatomy.bbox_name for r in sg.regions if first[r.anatomy] is not r})
        log.warning("the scene graph boxes %s more than once: the first box of each is used", ", ".join(twice))
    return list(first.values())


def same_image(stored: dict[str, dict], radiograph) -> bool:
    """Whether the archived image of ``stored`` (its payloads) is ``radiograph``.

    The SOPInstanceUID decides where both have one; otherwise (PNG/JPEG, or points stored
    without it) every stored box must at least lie within the query image.
    """
    stored_uid = next((p["sop_uid"] for p in stored.values() if p.get("sop_uid")), None)
    query_uid = radiograph.header.sop_instance_uid
    if stored_uid and query_uid:
        return stored_uid == query_uid
    h, w = radiograph.pixels.shape
    return all(Box(*p["box"]).clip(w, h) == Box(*p["box"]) for p in stored.values())


def _stored_regions(stored: dict[str, dict], width: int, height: int) -> list[QueryRegion]:
    """The archived boxes as query regions, each checked against the query image (unusable: left out)."""
    regions = []
    for slug, payload in stored.items():
        box, _ = validate_box(Box(*payload["box"]), width, height)
        if box is not None:
            regions.append(QueryRegion(Anatomy.parse(slug), box, "archive", payload.get("confidence")))
    return regions


def rank_studies(per_region: dict[str, list], top_k: int) -> list[StudyResult]:
    """Combine per-region hit lists into a study ranking.

    ``per_region[slug]`` is the pool of nearest same-anatomy points for the query's region
    ``slug``. A study's score is the mean over the query's regions of its best similarity for
    that region; where it is not in a region's pool, the pool's lowest score stands in
    (it cannot be higher, so studies are never favoured by being absent).
    """
    best: dict[str, dict[str, object]] = defaultdict(dict)  # study -> slug -> Hit
    floors = {}
    for slug, hits in per_region.items():
        floors[slug] = hits[-1].score if hits else 0.0
        for hit in hits:
            study = str(hit.payload.get("study_id"))
            if slug not in best[study] or hit.score > best[study][slug].score:
                best[study][slug] = hit
    results = []
    for study, found in best.items():
        scores = {slug: (found[slug].score if slug in found else floors[slug]) for slug in per_region}
        top = max(found.values(), key=lambda h: h.score)
        results.append(StudyResult(study, float(np.mean(list(scores.values()))), scores, len(found), top))
    results.sort(key=lambda r: (-r.score, r.study_id))
    return results[:top_k]


def search_image(
    searcher: Searcher,
    image: str | Path,
    anatomy: str,
    box: Box | None = None,
    scene_graph: Path | None = None,
    where: dict | None = None,
    study: str | None = None,
    exclude_same_patient: bool | None = None,
    top_k: int = 10,
    exact: bool = False,
    pool: int = 200,
) -> SearchOutcome:
    """Search the collection for regions (or, with ``anatomy="all"``, studies) like ``image``'s.

    The query image itself is always excluded; its patient is excluded by default when the
    image is in the collection (``exclude_same_patient=None``). An archived image of the same
    name that is another image (:func:`same_image`) is neither excluded nor used for boxes.

    Raises:
        UnknownAnatomyError, ImageReadError, StoreError, ModelError, RegionMIRError.
    """
    from regionmir.privacy import pseudonym, shown_image_id

    target = None if anatomy == "all" else Anatomy.parse(anatomy)
    if target is not None:
        searcher.require(target)
    rad = searcher.read(image)
    # the id its points were stored under: hashed where the name holds the patient's, or always
    # in a collection made with --hash-paths (regionmir.privacy.shown_image_id)
    image_id = shown_image_id(image_id_of(image), *rad.header.patient_values,
                              hash_all=bool(searcher.meta.get("hash_paths")))
    stored = searcher.archived_regions(image_id, rad)  # {}: a new image, whatever its name
    found = searcher.film_regions(rad.pixels, target, box, scene_graph, stored)
    ctr = query_ctr(stored, found)
    regions = of_anatomy(found, target)
    if target is None:
        regions = [r for r in regions if searcher.counts.get(r.anatomy.slug)]
        if not regions:
            raise StoreError(f"None of the query's regions are in collection {searcher.collection!r}.")
    exclude = bool(stored) if exclude_same_patient is None else exclude_same_patient
    patient = next((p.get("patient") for p in stored.values()), None) or pseudonym(rad.header.patient_id)
    crops, emb = searcher.encode(rad.pixels, regions)  # (R, S, S), (R, D)
    k = top_k if target is not None else max(pool, top_k)
    results = []
    for region, crop, vector in zip(regions, crops, emb):
        flt = searcher.filter(region.anatomy, where, study, image_id if stored else None,
                              patient if exclude else None)
        results.append(RegionResult(region, crop, searcher.search(vector, flt, k, exact)))
    studies = None
    if target is None:
        studies = rank_studies({r.query.anatomy.slug: r.hits for r in results}, top_k)
    return SearchOutcome(image_id, bool(stored), exclude and patient is not None, rad, results, studies, ctr)
