"""A search's options parsed, run and written as the `regionmir search --json` document.

`regionmir search` and `regionmir serve` both go through here, so the server answers exactly
what the CLI prints.
"""

from __future__ import annotations

import time
from pathlib import Path

from regionmir.anatomy import Anatomy
from regionmir.errors import UsageError
from regionmir.regions import Box
from regionmir.search.searcher import search_image
from regionmir.search.where import parse_where


def parse_query(anatomy: str, box: str | None, where: list[str]):
    """``(anatomy slug or 'all', Box or None, where conditions)`` of a query's options.

    The CLI and `regionmir serve` both parse with this.

    Raises:
        UsageError: a bad --box or --where (``option`` names it).
        UnknownAnatomyError: an unknown slug (the message lists close ones).
    """
    anatomy = "all" if anatomy.strip().lower() == "all" else Anatomy.parse(anatomy).slug
    try:
        query_box = Box.parse(box) if box else None
    except ValueError as e:
        raise UsageError(str(e), "--box") from None
    if query_box is not None and anatomy == "all":
        raise UsageError("a box needs one --anatomy (not 'all')", "--box")
    return anatomy, query_box, parse_where(where)


def run_query(searcher, image: Path, anatomy: str, query_box, scene_graph, conditions, study,
              exclude_same_patient, top_k: int, exact: bool, timings: dict):
    """:func:`~regionmir.search.searcher.search_image`, its stage times added to ``timings``.

    Raises:
        UnusableBoxError: a box outside the image (a usage error, as a box wrong on its face).
    """
    outcome = search_image(searcher, image, anatomy, query_box, scene_graph, conditions, study,
                           exclude_same_patient, top_k, exact)
    timings.update(searcher.timings)
    return outcome


def document(outcome, searcher, timings: dict, t0: float, started: float) -> dict:
    """The `--json` document of a search: what the CLI prints and what `regionmir serve` answers."""
    timings["total_in_command"] = time.perf_counter() - t0
    return {**_as_doc(outcome, searcher, timings), "started_unix": round(started, 4)}


def hit_doc(rank: int, hit) -> dict:
    p = hit.payload
    return {
        "rank": rank, "score": round(hit.score, 6), "id": hit.id, "anatomy": p.get("anatomy"),
        "study_id": p.get("study_id"), "image_id": p.get("image_id"), "box": p.get("box"),
        "findings": p.get("findings") or [], "view": p.get("view"), "ctr": p.get("ctr"), "path": p.get("path"),
    }


def _as_doc(outcome, searcher, timings: dict) -> dict:
    doc = {
        "collection": searcher.collection, "model_id": searcher.encoder.model_id,
        "query": {
            "image_id": outcome.image_id, "in_collection": outcome.in_archive, "ctr": outcome.ctr,
            "same_patient_excluded": outcome.excluded_patient,
            "regions": [{"anatomy": r.query.anatomy.slug, "box": r.query.box.as_list(), "source": r.query.source}
                        for r in outcome.regions],
        },
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
    }
    if outcome.studies is None:
        doc["results"] = [hit_doc(i, h) for i, h in enumerate(outcome.regions[0].hits, 1)]
    else:
        doc["studies"] = [
            {"rank": i, "study_id": s.study_id, "score": round(s.score, 6), "matched_regions": s.matched,
             "regions": {k: round(v, 6) for k, v in s.regions.items()}, "best": hit_doc(1, s.best)}
            for i, s in enumerate(outcome.studies, 1)
        ]
    return doc
