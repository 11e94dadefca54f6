"""Real films with lung truth as extra localizer training films (only their lung boxes count).

The ``train`` films of a real-check folder (films.csv) become :class:`Film` s whose ``present``
mask holds only the right and left lung, so the box loss sees real lungs and nothing is
invented for the other 27 regions. ``test`` films are never read here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from regionmir.anatomy import BOXED, Anatomy
from regionmir.annotations import Region, SceneGraph
from regionmir.train.localizer.data import Film, make_film


def real_films(folder: str | Path, size: int, limit: int | None = None) -> list[Film]:
    """Downsampled train films of ``folder`` that have true lung boxes (mask or films.csv)."""
    from regionmir.dicom import read_image
    from regionmir.evaluation.real.films import read_films, truth_boxes

    out = []
    for film in read_films(folder, "train"):
        pixels = read_image(film.path).pixels
        truth = truth_boxes(film, pixels.shape)
        if set(truth) != {"right-lung", "left-lung"}:
            continue
        h, w = pixels.shape
        regions = tuple(Region(Anatomy.parse(k), b) for k, b in truth.items())
        out.append(make_film(film.path.stem, pixels, SceneGraph(film.path.stem, "", "", film.view, w, h, regions), size))
        if limit and len(out) >= limit:
            break
    return out


def lung_only(films: list[Film]) -> bool:
    """True when every film carries lung boxes and nothing else (what :func:`real_films` makes)."""
    lungs = np.array([a in (Anatomy.RIGHT_LUNG, Anatomy.LEFT_LUNG) for a in BOXED])
    return all(np.array_equal(f.present, lungs) for f in films)
