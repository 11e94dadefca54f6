"""Real films with lung (and heart) truth as extra localizer training films (only their true boxes count).

The ``train`` films of a real-check folder (films.csv) become :class:`Film` s whose ``present``
mask holds the right and left lung and, where the source outlines it, the heart (cardiac
silhouette), so the box loss sees real lungs and hearts and nothing is invented for the other
regions. ``test`` films are never read here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from regionmir.anatomy import BOXED, Anatomy
from regionmir.annotations import Region, SceneGraph
from regionmir.train.localizer.data import Film, make_film

TRUTH = ("right-lung", "left-lung", "cardiac-silhouette")  # the regions real films have human boxes for


def real_films(folder: str | Path, size: int, limit: int | None = None) -> list[Film]:
    """Downsampled train films of ``folder`` that have true lung boxes (mask or films.csv), with
    their true heart box where films.csv has one."""
    from regionmir.dicom import read_image
    from regionmir.evaluation.real.films import read_films, truth_boxes

    out = []
    for film in read_films(folder, "train"):
        pixels = read_image(film.path).pixels
        truth = truth_boxes(film, pixels.shape)
        if not {"right-lung", "left-lung"} <= set(truth):
            continue
        truth = {k: b for k, b in truth.items() if k in TRUTH}
        h, w = pixels.shape
        regions = tuple(Region(Anatomy.parse(k), b) for k, b in truth.items())
        out.append(make_film(film.path.stem, pixels, SceneGraph(film.path.stem, "", "", film.view, w, h, regions), size))
        if limit and len(out) >= limit:
            break
    return out


def truth_only(films: list[Film]) -> bool:
    """True when every film carries both lung boxes, perhaps the heart's, and nothing else
    (what :func:`real_films` makes)."""
    lungs = np.array([a in (Anatomy.RIGHT_LUNG, Anatomy.LEFT_LUNG) for a in BOXED])
    allowed = np.array([a.slug in TRUTH for a in BOXED])
    return all(bool((f.present[lungs]).all()) and not (f.present & ~allowed).any() for f in films)
